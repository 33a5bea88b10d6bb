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


def prune_masks(
    kernels: Mapping[Any, jax.Array], masks: Mapping[Any, jax.Array], options: PruneOptions
) -> dict[Any, jax.Array]:
    """New boolean masks for the kernels ``{name: [in, out]}`` given their current masks.

    Scores are the magnitudes of the *masked* kernels, so weights pruned before rank lowest,
    and every new mask is ANDed with the old one: pruning again never revives a weight.
    """
    sparsity, method = options.sparsity, options.method
    effective = {
        k: functional.unsharded(jnp.where(masks[k], kernels[k], jnp.zeros((), kernels[k].dtype)))
        for k in kernels
    }
    if method == "magnitude":
        new = {k: hj.magnitude_mask(w, sparsity) for k, w in effective.items()}
    elif method == "global_magnitude":
        new = hj.global_magnitude_masks(effective, sparsity)
    elif method == "random":
        keys = jax.random.split(options.key, max(1, len(effective)))
        new = {
            k: hj.random_mask(kk, w.shape, sparsity) for kk, (k, w) in zip(keys, effective.items())
        }
    else:
        new = {
            k: hj.nm_mask(w, options.n, options.m, axis=options.axis) for k, w in effective.items()
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
