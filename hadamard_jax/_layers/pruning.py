"""What both ``prune`` functions share: pairing masks with kernels, the new masks, sparsity.

A fixed mask named ``<prefix>mask`` belongs to the kernel ``<prefix>kernel`` of the same
module: ``MaskedLinear``'s ``mask``/``kernel`` and ``GatedMLP(masked=True)``'s
``gate_mask``/``gate_kernel``, ``up_mask``/``up_kernel``, ``down_mask``/``down_kernel``. A mask
without such a kernel (``Mask``) is not pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import hadamard_jax as hj
from hadamard_jax._layers import functional
from hadamard_jax._src import checks
from hadamard_jax._src.sparsity.patterns import NM, Pattern, Unstructured, as_pattern

MASK_SUFFIX, KERNEL_SUFFIX = "mask", "kernel"

#: The ``method=`` values of ``prune``: how weights are scored (read by its docstring).
PRUNE_METHODS: dict[str, str] = {
    "magnitude": "the smallest ``|w|`` of each layer, in units of ``pattern``",
    "global_magnitude": "one threshold over all masked kernels together (single weights)",
    "random": "uniformly at random in each layer, in units of ``pattern`` (needs ``key``)",
    "nm": (
        '``"magnitude"`` with ``pattern=NM(n, m, axis)``: keep the ``n`` largest of every '
        "``m`` consecutive weights along ``axis`` (2:4 is ``n=2, m=4``)"
    ),
}


def methods_doc() -> str:
    """The bullet list of :data:`PRUNE_METHODS` for a docstring."""
    return "\n".join(f"* ``{name!r}``: {text}." for name, text in PRUNE_METHODS.items())


def kernel_name(mask_name: str) -> str | None:
    """The kernel of the mask ``mask_name`` (``"gate_mask"`` -> ``"gate_kernel"``), or ``None``
    for a name that is not a kernel mask."""
    if not mask_name.endswith(MASK_SUFFIX):
        return None
    return mask_name[: -len(MASK_SUFFIX)] + KERNEL_SUFFIX


#: The rank of one layer's kernel ``[in, out]``; leading axes beyond it are stack axes.
KERNEL_NDIM = 2


class PruneOptions(NamedTuple):
    """``prune``'s arguments, checked: see :func:`check_prune`."""

    sparsity: float
    method: str  # "magnitude", "global_magnitude" or "random" ("nm" is a pattern)
    key: Any
    pattern: Pattern


def _nm_pattern(sparsity: Any, n: Any, m: Any, axis: Any, op: str) -> NM:
    """``method="nm"``: the pattern ``NM(n, m, axis)``, ``axis`` an axis of ``[in, out]``."""
    if n is None or m is None:
        raise ValueError(f"{op}: method='nm' needs n= and m= (keep n of every m).")
    m_ = checks.static_int(m, "m", op, lo=1)
    n_ = checks.static_int(n, "n", op, lo=0, hi=m_)
    pattern = NM(n_, m_, checks.check_axis(axis, KERNEL_NDIM, "axis", op))
    if sparsity is not None:
        given = checks.static_fraction(sparsity, "sparsity", op)
        if abs(given - pattern.sparsity()) > 1e-12:
            raise ValueError(
                f"{op}: sparsity={sparsity!r} contradicts n={n_}, m={m_} "
                f"(sparsity {pattern.sparsity()})."
            )
    return pattern


def check_prune(
    sparsity: Any,
    method: Any,
    key: Any,
    n: Any,
    m: Any,
    axis: Any,
    pattern: Any = "unstructured",
    op: str = "prune",
) -> PruneOptions:
    """``prune``'s arguments.

    ``method="nm"`` is ``method="magnitude"`` with ``pattern=NM(n, m, axis)`` (``axis`` an
    axis of a layer's own 2-D kernel ``[in, out]``, also for stacked kernels
    ``[*stack, in, out]``). A pattern that implies its sparsity (:class:`NM`) takes
    ``sparsity=None`` or that value.
    """
    method = checks.check_choice(method, "method", op, tuple(PRUNE_METHODS))
    pattern = as_pattern(pattern, "pattern", op).validate(op)
    if method == "nm":
        if not isinstance(pattern, Unstructured):
            raise ValueError(f"{op}: method='nm' sets the pattern; pass pattern=NM(n, m, axis).")
        pattern, method = _nm_pattern(sparsity, n, m, axis, op), "magnitude"
    if method == "global_magnitude" and not isinstance(pattern, Unstructured):
        raise ValueError(f"{op}: method='global_magnitude' ranks single weights only.")
    implied = pattern.sparsity()
    if sparsity is None:
        if implied is None:
            raise TypeError(f"{op}: sparsity is required for method={method!r}, got None.")
        value = implied
    else:
        value = checks.static_fraction(sparsity, "sparsity", op)
    if implied is not None and abs(value - implied) > 1e-12:
        raise ValueError(f"{op}: sparsity={sparsity!r} contradicts {pattern} ({implied}).")
    if method == "random" and key is None:
        raise ValueError(f"{op}: method='random' needs key= (a jax.random key).")
    return PruneOptions(value, method, key, pattern)


def _per_layer(mask_of_layer: Any, w: jax.Array, *keys: jax.Array) -> jax.Array:
    """``mask_of_layer(layer, *layer_keys)`` for each 2-D layer of ``w = [*stack, in, out]``."""
    stack = w.shape[: w.ndim - KERNEL_NDIM]
    if not stack:
        return mask_of_layer(w, *keys)
    layers = w.reshape((-1,) + w.shape[len(stack) :])
    keys = tuple(jax.random.split(k, layers.shape[0]) for k in keys)
    return jax.vmap(mask_of_layer)(layers, *keys).reshape(w.shape)


def _random_mask(w: jax.Array, key: jax.Array, options: PruneOptions, op: str) -> jax.Array:
    """A uniformly random mask of ``w`` in ``options.pattern`` (per layer)."""
    sparsity, pattern = options.sparsity, options.pattern
    if isinstance(pattern, Unstructured):  # one permutation per layer (random_mask)
        return _per_layer(lambda layer, k: hj.random_mask(k, layer.shape, sparsity), w, key)
    b = w.ndim - KERNEL_NDIM
    checked = pattern.check(w.shape, b, op, array="kernel")
    kept = checked.kept(sparsity, checked.units(w.shape, b), op)
    return checked.expand(checked.keep(checked.random_scores(key, w.shape, b), kept), w.shape, b)


def prune_masks(
    kernels: Mapping[Any, jax.Array], masks: Mapping[Any, jax.Array], options: PruneOptions
) -> dict[Any, jax.Array]:
    """New boolean masks for the kernels ``{name: [*stack, in, out]}`` given their masks.

    Kernels stacked by ``nnx.vmap``/``nnx.scan`` or Linen ``nn.scan``/``nn.vmap`` have leading
    stack axes (any number) before the layer's own ``[in, out]``: ``"magnitude"`` and
    ``"random"`` rank each layer on its own in ``options.pattern`` (whose axes are axes of the
    layer's ``[in, out]``); ``"global_magnitude"`` ranks all weights of all kernels together.
    Scores are the magnitudes of the *masked* kernels, so weights pruned before rank lowest,
    and every new mask is ANDed with the old one: pruning again never revives a weight.
    """
    sparsity, method, pattern = options.sparsity, options.method, options.pattern
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
    elif method == "random":
        keys = jax.random.split(options.key, max(1, len(effective)))
        new = {
            k: _random_mask(w, kk, options, f"prune ({k})")
            for kk, (k, w) in zip(keys, effective.items())
        }
    else:
        new = {
            k: pattern.mask(
                w, sparsity, batch_dims=w.ndim - KERNEL_NDIM, op=f"prune ({k})", array="kernel"
            )
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
