"""What both ``prune`` functions share: pairing masks with kernels, the new masks, sparsity.

A fixed mask named ``<prefix>mask`` belongs to the kernel ``<prefix>kernel`` of the same
module: ``MaskedLinear``'s ``mask``/``kernel`` and ``GatedMLP(masked=True)``'s
``gate_mask``/``gate_kernel``, ``up_mask``/``up_kernel``, ``down_mask``/``down_kernel``. A mask
without such a kernel (``Mask``) is not pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

import hadamard_jax as hj
from hadamard_jax._layers import functional
from hadamard_jax._layers.options import PruneOptions

MASK_SUFFIX, KERNEL_SUFFIX = "mask", "kernel"


def kernel_name(mask_name: str) -> str | None:
    """The kernel of the mask ``mask_name`` (``"gate_mask"`` -> ``"gate_kernel"``), or ``None``
    for a name that is not a kernel mask."""
    if not mask_name.endswith(MASK_SUFFIX):
        return None
    return mask_name[: -len(MASK_SUFFIX)] + KERNEL_SUFFIX


#: The rank of one layer's kernel ``[in, out]``; leading axes beyond it are stack axes.
KERNEL_NDIM = 2


def _per_layer(mask_of_layer: Any, w: jax.Array, *keys: jax.Array) -> jax.Array:
    """``mask_of_layer(layer, *layer_keys)`` for each 2-D layer of ``w = [*stack, in, out]``."""
    stack = w.shape[: w.ndim - KERNEL_NDIM]
    if not stack:
        return mask_of_layer(w, *keys)
    layers = w.reshape((-1,) + w.shape[len(stack) :])
    keys = tuple(jax.random.split(k, layers.shape[0]) for k in keys)
    return jax.vmap(mask_of_layer)(layers, *keys).reshape(w.shape)


def prune_masks(
    kernels: Mapping[Any, jax.Array], masks: Mapping[Any, jax.Array], options: PruneOptions
) -> dict[Any, jax.Array]:
    """New boolean masks for the kernels ``{name: [*stack, in, out]}`` given their masks.

    Kernels stacked by ``nnx.vmap``/``nnx.scan`` or Linen ``nn.scan``/``nn.vmap`` have leading
    stack axes (any number) before the layer's own ``[in, out]``: the per-layer methods
    (``"magnitude"``, ``"random"``, ``"nm"``) rank each layer on its own, ``options.axis``
    refers to the layer's ``[in, out]``; ``"global_magnitude"`` ranks all weights of all
    kernels together. Scores are the magnitudes of the *masked* kernels, so weights pruned
    before rank lowest, and every new mask is ANDed with the old one: pruning again never
    revives a weight.
    """
    sparsity, method = options.sparsity, options.method
    effective = {
        k: functional.unsharded(jnp.where(masks[k], kernels[k], jnp.zeros((), kernels[k].dtype)))
        for k in kernels
    }
    for name, w in effective.items():
        if w.ndim < KERNEL_NDIM:
            raise ValueError(
                f"prune: the kernel {name!r} has shape {w.shape}; expected [*stack, in, out]."
            )
    if method == "global_magnitude":
        new = hj.global_magnitude_masks(effective, sparsity)
    elif method == "magnitude":
        new = {
            k: _per_layer(lambda layer: hj.magnitude_mask(layer, sparsity), w)
            for k, w in effective.items()
        }
    elif method == "random":
        keys = jax.random.split(options.key, max(1, len(effective)))
        new = {
            k: _per_layer(lambda layer, kk: hj.random_mask(kk, layer.shape, sparsity), w, kk)
            for kk, (k, w) in zip(keys, effective.items())
        }
    else:
        new = {
            k: hj.nm_mask(w, options.n, options.m, axis=w.ndim - KERNEL_NDIM + options.axis)
            for k, w in effective.items()
        }
    return {k: jnp.logical_and(new[k].astype(bool), masks[k].astype(bool)) for k in kernels}


def pruned_kernel(kernel: jax.Array, mask: jax.Array) -> jax.Array:
    """``kernel`` with the entries that ``mask`` prunes set to zero (what ``prune`` stores)."""
    return jnp.where(mask, kernel, jnp.zeros((), kernel.dtype))


def sparsity_of(masks: Iterable[jax.Array]) -> float:
    """The fraction of ``False`` entries over all ``masks`` together (0 for none)."""
    masks = list(masks)
    total = sum(int(mask.size) for mask in masks)
    if total == 0:
        return 0.0
    return 1.0 - sum(int(jnp.count_nonzero(mask)) for mask in masks) / total
