"""The highway / gated-residual combination ``gate * transform + (1 - gate) * carry``."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, rules
from hadamard_jax._src.checks import Shape, broadcast_cast

_NAMES = ("transform", "gate", "carry")

#: ``(dtype, weak)``: the result dtype and whether the result is weakly typed.
ResultType = tuple[np.dtype, bool]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _highway(shape: Shape, result: ResultType, transform: Any, gate: Any, carry: Any):
    """``gate * transform + (1 - gate) * carry`` in ``compute_dtype``, cast to the result type."""
    cdt = activations.compute_dtype(result[0])
    t, g, c = (broadcast_cast(x, shape, cdt) for x in (transform, gate, carry))
    return checks.cast(g * t + (1 - g) * c, *result)


@functools.partial(_highway.defjvp, symbolic_zeros=True)
def _highway_jvp(shape, result, primals, tangents):
    out = _highway(shape, result, *primals)
    cdt = activations.compute_dtype(result[0])

    def tangent_fn(xs, ts):
        # d(g t + (1 - g) c) = g dt + (t - c) dg + (1 - g) dc.
        t, g, c = (broadcast_cast(x, shape, cdt) for x in xs)
        dt, dg, dc = (None if x is None else broadcast_cast(x, shape, cdt) for x in ts)
        tangent = rules.tangent_sum(
            [
                None if dt is None else g * dt,
                None if dg is None else (t - c) * dg,
                None if dc is None else (1 - g) * dc,
            ]
        )
        return checks.cast(tangent, *result)

    return out, rules.checkpointed_tangent(tangent_fn, primals, tangents, out)


_highway_jit = jax.jit(_highway, static_argnums=(0, 1))


def highway(
    transform: ArrayLike, gate: ArrayLike, carry: ArrayLike, *, broadcast: bool = False
) -> jax.Array:
    r"""The highway / gated-residual combination of a transform and a carry.

    .. math::
      y_i = g_i\, T_i + (1 - g_i)\, C_i

    ``gate`` is used as given (already in ``[0, 1]``, e.g. ``jax.nn.sigmoid(x @ W_g)``): the
    op applies no activation. The derivative rule keeps only the three inputs for the backward
    pass (the plain composition also keeps ``1 - gate``), and works under every JAX transform.
    16-bit inputs are combined in float32 and rounded once; complex inputs are rejected.

    Args:
      transform: array of shape ``S``, the transformed path :math:`T` (e.g. ``layer(x)``).
      gate: array of shape ``S``, the gate :math:`g`, values in ``[0, 1]``.
      carry: array of shape ``S``, the carried path :math:`C` (e.g. ``x``).
      broadcast: allow NumPy broadcasting between the three arrays (e.g. one gate per
        feature); gradients then come back in each input's own shape.

    Returns:
      Array of shape ``S`` (or the broadcast shape), dtype ``jnp.result_type(transform, gate,
      carry)`` promoted to floating.

    Raises:
      ValueError: the shapes differ and ``broadcast`` is False, or they do not broadcast.
      TypeError: an argument is complex, or not an array or a number; ``broadcast`` is not a
        bool.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import highway
      >>> highway(jnp.array([1.0, 1.0]), jnp.array([0.25, 1.0]), jnp.array([5.0, 5.0]))
      Array([4., 1.], dtype=float32)
    """
    return _highway_checked((transform, gate, carry), (broadcast,))


def _highway_impl(transform: Any, gate: Any, carry: Any, broadcast: Any) -> jax.Array:
    """:func:`highway`'s checks and op."""
    op = "highway"
    broadcast = checks.check_bool(broadcast, "broadcast", op)
    arrays = checks.real_arrays((transform, gate, carry), _NAMES, op)
    shape = checks.result_shape([jnp.shape(x) for x in arrays], _NAMES, op, broadcast)
    return _highway_jit(shape, checks.result_type(arrays, floating=True), *arrays)


_highway_checked = checks.checked_once(_highway_impl)
