"""Model-level helpers: ``prune`` every masked layer, report sparsity, sum L0 penalties."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hadamard_jax._layers import pruning
from hadamard_jax._src import docstrings
from hadamard_jax._src.sparsity.patterns import Pattern, table
from hadamard_jax.nnx._common import MaskVar
from hadamard_jax.nnx._masks import HardConcreteGate

__all__ = ["l0_penalty", "mask_sparsity", "masks_of", "prune"]


def _mask_pairs(model: nnx.Module) -> dict[str, tuple[nnx.Module, str, str]]:
    """Every fixed mask with its kernel: ``{path: (module, mask attr, kernel attr)}``.

    A ``MaskVar`` attribute ``<prefix>mask`` pairs with the ``nnx.Param`` ``<prefix>kernel``
    of the same module (``MaskedLinear.mask``/``kernel``, ``GatedMLP.gate_mask``/``gate_kernel``
    with ``masked=True``). Masks without a kernel (``Mask``) are not pruned.
    """
    pairs = {}
    for path, module in nnx.iter_modules(model):
        for attr, var in vars(module).items():
            kernel = pruning.kernel_name(attr) if isinstance(var, MaskVar) else None
            if kernel is not None and isinstance(getattr(module, kernel, None), nnx.Param):
                pairs["/".join(map(str, (*path, attr)))] = (module, attr, kernel)
    return pairs


def prune(
    model: nnx.Module,
    sparsity: float | None,
    *,
    method: str = "magnitude",
    key: jax.Array | None = None,
    n: int | None = None,
    m: int | None = None,
    axis: int = -2,
    pattern: Pattern | str = "unstructured",
) -> nnx.Module:
    """Sets every fixed mask of ``model`` in place: ``MaskedLinear(mask_type="fixed")`` and
    ``GatedMLP(masked=True)`` kernels.

    The pruned kernel entries are also set to zero. The forward pass selects ``kernel`` with
    the mask, so pruned weights are exactly zero and get exactly zero gradient: they stay zero
    through further training with any optax optimizer (start a fresh optimizer state after
    pruning, so no momentum from before pruning moves the stored zeros). Pruning again only
    removes more weights (new masks are ANDed with the old ones).

    Counts are exact: a sparsity ``s`` prunes ``round(s * size)`` weights (Python's ``round``,
    half to even; 5 weights at ``s = 0.5`` keep 3) of each kernel, or of all kernels together
    for ``"global_magnitude"`` -- the same rule as ``MaskedLinear(mask_type="ste",
    sparsity=s)``.

    Stacked layers (``nnx.vmap``/``nnx.scan`` over layers) have kernels ``[*stack, in, out]``
    (any number of leading stack axes): ``"magnitude"``, ``"random"`` and ``"nm"`` prune each
    layer on its own (exact counts per layer, ``axis`` an axis of the layer's ``[in, out]``);
    ``"global_magnitude"`` ranks every weight of every layer together.

    Args:
      model: an NNX module (searched recursively).
      sparsity: fraction of each kernel (``"magnitude"``, ``"random"``) or of all masked
        kernels together (``"global_magnitude"``) to prune; for ``"nm"`` ``None`` or
        ``1 - n/m``.
      method: how weights are chosen:

        {{METHODS}}

      key: PRNG key for ``"random"``.
      n, m, axis: the N:M pattern of ``method="nm"``. ``axis`` is an axis of each layer's
        ``[in, out]`` kernel; the default ``-2`` (same as ``0``) groups along the input axis,
        the library's one N:M convention (:func:`hadamard_jax.nm_mask`), ``-1``/``1`` along
        the output axis.
      pattern: what ``"magnitude"`` and ``"random"`` prune whole in each layer's ``[in, out]``
        kernel (the pattern objects of :func:`hadamard_jax.sparse.sparsify` and the mask
        makers, or the name of one that needs no arguments; default ``"unstructured"``):

        {{PATTERNS}}

        ``sparsity`` is the fraction of units pruned (``NM``: ``None`` or ``1 - n/m``).

    Returns:
      ``model`` (mutated).

    Raises:
      TypeError: a ``sparsity``, ``n``, ``m`` or ``axis`` that is not a static number (a
        string, a bool, an array), a ``method`` that is not a string.
      ValueError: unknown method, a sparsity outside ``[0, 1]``, ``m < 1``, ``n`` outside
        ``[0, m]``, missing ``key``/``n``/``m``, or no masked layer in the model.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import MaskedLinear, prune, mask_sparsity
      >>> layer = MaskedLinear(8, 8, rngs=nnx.Rngs(0))
      >>> _ = prune(layer, 0.5, method="nm", n=2, m=4)
      >>> mask_sparsity(layer)
      0.5
      >>> from hadamard_jax import Channel
      >>> layer = MaskedLinear(8, 8, rngs=nnx.Rngs(0))
      >>> _ = prune(layer, 0.25, pattern=Channel(axis=-1))  # 2 of the 8 output units
      >>> int(layer.mask[...].all(axis=0).sum())
      6
    """
    checked = pruning.check_prune(sparsity, method, key, n, m, axis, pattern)
    pairs = _mask_pairs(model)
    if not pairs:
        raise ValueError(
            "prune: the model has no masked kernel (MaskedLinear with mask_type='fixed' or "
            "GatedMLP with masked=True)."
        )
    kernels = {name: getattr(mod, k)[...] for name, (mod, _, k) in pairs.items()}
    masks = {name: getattr(mod, m_)[...] for name, (mod, m_, _) in pairs.items()}
    new = pruning.prune_masks(kernels, masks, checked)
    for name, (mod, mask_attr, kernel_attr) in pairs.items():
        getattr(mod, mask_attr)[...] = new[name]
        getattr(mod, kernel_attr)[...] = pruning.pruned_kernel(kernels[name], new[name])
    return model


docstrings.fill_in(prune, PATTERNS=table(), METHODS=pruning.methods_doc())


def mask_sparsity(model: nnx.Module) -> float:
    """The fraction of masked-out weights over all fixed masks of kernels (what :func:`prune`
    sets)."""
    return pruning.sparsity_of(getattr(mod, m_)[...] for mod, m_, _ in _mask_pairs(model).values())


def l0_penalty(model: nnx.Module) -> jax.Array:
    """The sum of ``l0_penalty()`` over every :class:`HardConcreteGate` in ``model``."""
    gates = [g for _, g in nnx.iter_modules(model) if isinstance(g, HardConcreteGate)]
    return sum((g.l0_penalty() for g in gates), jnp.zeros((), jnp.float32))


def masks_of(model: nnx.Module) -> Any:
    """``nnx.state(model, MaskVar)``: every mask of the model."""
    return nnx.state(model, MaskVar)
