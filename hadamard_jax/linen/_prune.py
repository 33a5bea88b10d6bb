"""Variable-level helpers for Linen models: ``prune``, ``mask_sparsity``, ``l0_penalty``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from flax.core import meta, unfreeze

from hadamard_jax._layers import pruning
from hadamard_jax._layers.options import L0_PENALTY, MASKS, PENALTIES
from hadamard_jax._src import docstrings
from hadamard_jax._src.sparsity.patterns import Pattern, table

__all__ = ["l0_penalty", "mask_sparsity", "prune"]


def _masked_kernels(variables: Any) -> tuple[dict, dict, dict[str, tuple]]:
    """Flattened params, flattened masks, and ``{name: mask path}`` of every fixed kernel mask
    (``MaskedLinear``'s ``mask``, ``GatedMLP(masked=True)``'s ``gate_mask``/``up_mask``/
    ``down_mask``)."""
    params = traverse_util.flatten_dict(unfreeze(variables.get("params", {})))
    masks = traverse_util.flatten_dict(unfreeze(variables.get(MASKS, {})))
    found = {
        "/".join(map(str, path)): path
        for path in masks
        if _kernel_path(path) is not None and _kernel_path(path) in params
    }
    return params, masks, found


def _kernel_path(mask_path: tuple) -> tuple | None:
    """``.../<prefix>mask`` -> ``.../<prefix>kernel`` (``None`` for other names)."""
    kernel = pruning.kernel_name(str(mask_path[-1]))
    return None if kernel is None else mask_path[:-1] + (kernel,)


def prune(
    variables: Any,
    sparsity: float | None,
    *,
    method: str = "magnitude",
    key: jax.Array | None = None,
    n: int | None = None,
    m: int | None = None,
    axis: int = -2,
    pattern: Pattern | str = "unstructured",
) -> dict[str, Any]:
    """Returns ``variables`` with every fixed kernel mask set (``MaskedLinear``,
    ``GatedMLP(masked=True)``).

    The Linen counterpart of :func:`hadamard_jax.nnx.prune` (same arguments and semantics):
    a mask ``masks/<path>/<prefix>mask`` next to a kernel ``params/<path>/<prefix>kernel`` is
    pruned, and the pruned kernel entries are set to zero. The input is not modified.

    A sparsity ``s`` prunes exactly ``round(s * size)`` weights (half to even, the rule of
    ``MaskedLinear(mask_type="ste", sparsity=s)``) of each kernel, or of all kernels together
    for ``"global_magnitude"``. Kernels stacked by ``nn.scan``/``nn.vmap`` (``variable_axes``
    0: ``[*stack, in, out]``) are pruned layer by layer by ``"magnitude"``, ``"random"`` and
    ``"nm"`` (``axis`` is an axis of the layer's ``[in, out]``; the default ``-2`` groups along
    the input axis, the library's one N:M convention, :func:`hadamard_jax.nm_mask`).

    ``pattern`` is what ``"magnitude"`` and ``"random"`` prune whole in each layer's kernel:

    {{PATTERNS}}

    Raises:
      TypeError, ValueError: as :func:`hadamard_jax.nnx.prune`.
    """
    checked = pruning.check_prune(sparsity, method, key, n, m, axis, pattern)
    params, masks, found = _masked_kernels(variables)
    if not found:
        raise ValueError("prune: the variables have no masked kernel (masks/.../mask).")
    kernel_of = {name: _kernel_path(path) or path for name, path in found.items()}
    kernels = {name: meta.unbox(params[p]) for name, p in kernel_of.items()}
    old = {name: meta.unbox(masks[p]) for name, p in found.items()}
    new = pruning.prune_masks(kernels, old, checked)
    for name, path in found.items():
        masks[path] = _rebox(masks[path], new[name])
        pruned = pruning.pruned_kernel(kernels[name], new[name])
        params[kernel_of[name]] = _rebox(params[kernel_of[name]], pruned)
    out = dict(unfreeze(variables))
    out["params"] = traverse_util.unflatten_dict(params)
    out[MASKS] = traverse_util.unflatten_dict(masks)
    return out


docstrings.fill_in(prune, PATTERNS=table())


def _rebox(old: Any, value: jax.Array) -> Any:
    return old.replace_boxed(value) if isinstance(old, meta.AxisMetadata) else value


def mask_sparsity(variables: Any) -> float:
    """The fraction of masked-out weights over all fixed kernel masks (what :func:`prune` sets:
    ``MaskedLinear(mask_type="fixed")`` and ``GatedMLP(masked=True)``)."""
    _, masks, found = _masked_kernels(variables)
    return pruning.sparsity_of(meta.unbox(masks[p]) for p in found.values())


def l0_penalty(variables: Any) -> jax.Array:
    """The sum of the L0 penalties of every ``HardConcreteGate`` (inside ``MaskedLinear``
    too), each with its own ``beta``, ``gamma`` and ``zeta``, as the NNX
    :func:`hadamard_jax.nnx.l0_penalty`.

    Linen variables hold ``log_alpha`` but not the gate's ``beta``/``gamma``/``zeta`` (they are
    attributes of the module), so each gate computes its own penalty during ``apply`` and sows
    it into the ``"intermediates"`` collection when that collection is mutable: pass the state
    that ``apply(..., mutable="intermediates")`` returns (or variables that contain it).
    Differentiable in the params of that ``apply``::

      y, state = model.apply(variables, x, rngs=rngs, mutable="intermediates")
      loss = task_loss(y) + lam * l0_penalty(state)

    Penalties of layers stacked by ``nn.scan`` (``variable_axes={"intermediates": 0}``) are
    summed over the stack. A single gate's penalty is also
    ``gate.apply(variables, method="l0_penalty")``.

    Raises:
      ValueError: ``variables`` hold ``log_alpha`` params but no sown penalty (the
        ``"intermediates"`` of an ``apply``), so each gate's parameters are unknown.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import MaskedLinear, l0_penalty
      >>> layer = MaskedLinear(4, mask_type="hard_concrete", beta=0.5, deterministic=True)
      >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 8)))
      >>> _, state = layer.apply(variables, jnp.ones((2, 8)), mutable="intermediates")
      >>> round(float(l0_penalty(state)), 2)
      31.53
    """
    sown = traverse_util.flatten_dict(unfreeze(variables.get(PENALTIES, {})))
    values = [v for path, v in sown.items() if L0_PENALTY in map(str, path)]
    if values:
        total = jnp.zeros((), jnp.float32)
        for v in values:
            total = total + jnp.sum(jnp.asarray(v))
        return total
    params = traverse_util.flatten_dict(unfreeze(variables.get("params", variables)))
    if any(path[-1] == "log_alpha" for path in params):
        raise ValueError(
            "l0_penalty: the variables hold hard-concrete gates (log_alpha) but no penalties "
            "sown by them; Linen variables do not record each gate's beta/gamma/zeta. Pass the "
            "state of model.apply(variables, x, mutable='intermediates')."
        )
    return jnp.zeros((), jnp.float32)
