"""The gated feed-forward block ``(act(x Wg + bg) * (x Wu + bu)) Wd + bd`` as one fused op.

One ``jax.custom_jvp`` covers the whole block. Its tangent rule is linear in every tangent and is
evaluated under ``jax.checkpoint`` (the pattern of :mod:`hadamard_jax._src.rules`), with one
twist: the primal gate pre-activation ``g = x Wg + bg`` and up projection ``u = x Wu + bu`` are
computed *outside* the checkpoint and handed to it as inputs. Reverse mode therefore keeps only
``x``, ``g``, ``u`` (and the weights, which are arguments anyway) and recomputes the hidden
``h = act(g) * u`` from ``g`` and ``u`` in the backward pass: element-wise work only, no matmul is
run twice. A plain composition also keeps ``act(g)`` (and its pieces) and ``h``.

Dropout on the hidden layer is an optional ``hidden_mask`` input: ``h = act(g) * u * mask * scale``
with ``scale = hidden_scale`` a static Python float. A boolean mask (``scale = 1 / keep``) costs
one byte per hidden unit in the backward pass; it is an input of the op, so the op stays a pure
function of its arguments and the caller owns the random key.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, gates, rules

OP = "gated_mlp"


class Static(NamedTuple):
    """The static (hashable) options of the fused block.

    Attributes:
      gate: the gate's :class:`~hadamard_jax._src.gates.Spec` (from the gate table).
      precision: ``jax.lax.Precision`` (or a pair) of the three matmuls.
      scale: the Python float multiplied into the hidden layer.
      dtype: the result and storage dtype.
      compute: the dtype of matmul accumulation and the activation.
    """

    gate: gates.Spec
    precision: Any
    scale: float
    dtype: np.dtype
    compute: np.dtype


# --- the computation, shared by the primal and the tangent rule ------------------------------


def _cast(a: Any, dtype: np.dtype) -> jax.Array:
    return jnp.asarray(a).astype(dtype)


def _dot(a: jax.Array, w: jax.Array, precision: Any, dtype, compute) -> jax.Array:
    """``a @ w`` over the last axis of ``a``, accumulated in ``compute``, cast to ``dtype``."""
    out = lax.dot_general(
        _cast(a, dtype),
        _cast(w, dtype),
        (((a.ndim - 1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=compute,
    )
    return out.astype(dtype)


def _add_bias(y: jax.Array, b: Any, dtype) -> jax.Array:
    return y if b is None else y + jnp.broadcast_to(_cast(b, dtype), y.shape)


def _hidden(static: Static, h, mask) -> jax.Array:
    """``h * mask * scale`` from the gated ``h = act(g) * u`` in ``compute``, cast to ``dtype``."""
    if mask is not None:
        h = h * jnp.broadcast_to(_cast(mask, static.compute), h.shape)
    if static.scale != 1.0:
        h = h * jnp.asarray(static.scale, static.compute)
    return h.astype(static.dtype)


def _gate(static: Static, g: jax.Array, u: jax.Array):
    """``(h, dh/dg, dh/du)`` of ``h = act(g) * u`` in ``compute`` (:func:`gates.evaluate`)."""
    return gates.evaluate(static.gate, g.astype(static.compute), u.astype(static.compute))


def _projections(static: Static, x, wg, wu, bg, bu):
    precision, dtype, compute = static.precision, static.dtype, static.compute
    g = _add_bias(_dot(x, wg, precision, dtype, compute), bg, dtype)
    u = _add_bias(_dot(x, wu, precision, dtype, compute), bu, dtype)
    return g, u


def _forward(static: Static, x, wg, wu, wd, bg, bu, bd, mask):
    g, u = _projections(static, x, wg, wu, bg, bu)
    h = _hidden(static, _gate(static, g, u)[0], mask)
    return _add_bias(_dot(h, wd, static.precision, static.dtype, static.compute), bd, static.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _block(static: Static, x, wg, wu, wd, bg, bu, bd, mask):
    return _forward(static, x, wg, wu, wd, bg, bu, bd, mask)


@functools.partial(_block.defjvp, symbolic_zeros=True)
def _block_jvp(static: Static, primals, tangents):
    precision, scale, dtype, compute = static.precision, static.scale, static.dtype, static.compute
    x, wg, wu, wd, bg, bu, bd, mask = primals
    # Primal projections OUTSIDE the checkpoint: they become the residuals of reverse mode.
    g, u = _projections(static, x, wg, wu, bg, bu)
    h = _hidden(static, _gate(static, g, u)[0], mask)
    out = _add_bias(_dot(h, wd, precision, dtype, compute), bd, dtype)

    def tangent_fn(ps, ts):
        x, wg, wu, wd, _, _, _, mask, g, u = ps
        tx, twg, twu, twd, tbg, tbu, tbd, tmask = ts

        def dproj(w, tw, tb):
            # d(x W + b) = dx W + x dW + db
            terms = [
                None if tx is None else _dot(tx, w, precision, dtype, compute),
                None if tw is None else _dot(x, tw, precision, dtype, compute),
                None if tb is None else jnp.broadcast_to(_cast(tb, dtype), g.shape),
            ]
            return rules.sum_terms(terms)

        dg, du = dproj(wg, twg, tbg), dproj(wu, twu, tbu)
        h, dh_dg, dh_du = _gate(static, g, u)
        m = None if mask is None else jnp.broadcast_to(_cast(mask, compute), h.shape)
        # dh = (dh/dg dg + dh/du du) m s + h dm s
        dh = rules.sum_terms(
            [
                None if dg is None else dh_dg * dg.astype(compute),
                None if du is None else dh_du * du.astype(compute),
            ]
        )
        if dh is not None and m is not None:
            dh = dh * m
        if tmask is not None:
            dm = jnp.broadcast_to(_cast(tmask, compute), h.shape)
            dh = rules.sum_terms([dh, h * dm])
        if dh is not None and scale != 1.0:
            dh = dh * jnp.asarray(scale, compute)
        terms = [
            None if dh is None else _dot(dh.astype(dtype), wd, precision, dtype, compute),
            None if twd is None else _dot(_hidden(static, h, mask), twd, precision, dtype, compute),
            None if tbd is None else jnp.broadcast_to(_cast(tbd, dtype), out.shape),
        ]
        return rules.tangent_sum(terms).astype(dtype)

    tangent = rules.checkpointed_tangent(
        tangent_fn, (x, wg, wu, wd, bg, bu, bd, mask, g, u), tangents, out
    )
    return out, tangent


_block_jit = jax.jit(_block, static_argnums=(0,))


# --- validation ---------------------------------------------------------------------------


def _check_matrix(w: Any, name: str) -> tuple[int, int]:
    shape = jnp.shape(w)
    if len(shape) != 2:
        raise ValueError(f"{OP}: {name} must be a matrix, got {name}.shape={shape}.")
    return shape


def _check_bias(b: Any, name: str, size: int, wname: str) -> None:
    if b is None:
        return
    if jnp.shape(b) != (size,):
        raise ValueError(
            f"{OP}: {name}.shape={jnp.shape(b)} must be ({size},), the output size of {wname}."
        )


def _check_shapes(x, wg, wu, wd, bg, bu, bd, mask) -> None:
    xs = jnp.shape(x)
    if len(xs) < 1:
        raise ValueError(f"{OP}: x must have at least one axis (features), got x.shape={xs}.")
    d, h = _check_matrix(wg, "w_gate")
    if d != xs[-1]:
        raise ValueError(
            f"{OP}: w_gate.shape={(d, h)} must have {xs[-1]} rows, the last axis of x.shape={xs}."
        )
    if jnp.shape(wu) != (d, h):
        raise ValueError(f"{OP}: w_up.shape={jnp.shape(wu)} must equal w_gate.shape={(d, h)}.")
    hd, d_out = _check_matrix(wd, "w_down")
    if hd != h:
        raise ValueError(
            f"{OP}: w_down.shape={(hd, d_out)} must have {h} rows, the hidden size of "
            f"w_gate.shape={(d, h)}."
        )
    _check_bias(bg, "b_gate", h, "w_gate")
    _check_bias(bu, "b_up", h, "w_up")
    _check_bias(bd, "b_down", d_out, "w_down")
    if mask is not None:
        hidden = xs[:-1] + (h,)
        ms = jnp.shape(mask)
        if len(ms) != len(hidden) or any(m not in (1, n) for m, n in zip(ms, hidden)):
            raise ValueError(
                f"{OP}: hidden_mask.shape={ms} must broadcast to the hidden shape {hidden} "
                "with the same rank (sizes equal or 1)."
            )


def gated_mlp(
    x: ArrayLike,
    w_gate: ArrayLike,
    w_up: ArrayLike,
    w_down: ArrayLike,
    *,
    activation: str = "swiglu",
    approximate: bool = False,
    b_gate: ArrayLike | None = None,
    b_up: ArrayLike | None = None,
    b_down: ArrayLike | None = None,
    hidden_mask: ArrayLike | None = None,
    hidden_scale: float = 1.0,
    precision: Any = None,
) -> jax.Array:
    r"""The gated feed-forward block of a transformer, fused into one op with its own rule.

    .. math::
      g = x W_g + b_g, \quad u = x W_u + b_u, \quad
      h = \mathrm{act}(g) \odot u \odot m \cdot s, \quad y = h W_d + b_d

    The derivative rule keeps only ``x``, ``g`` and ``u`` (besides the weights) for the
    backward pass and recomputes ``h`` from them, element-wise; no matmul is run twice. Inside a
    ``lax.scan`` over layers this is less memory than a plain composition and no more than
    ``jax.checkpoint(policy=dots_saveable)`` (see :mod:`hadamard_jax.bench.flax_stack`). Forward
    and reverse mode, ``hessian``, ``vmap``, ``jax.checkpoint`` and ``lax.scan`` all work.

    Dtypes: the result has dtype ``jnp.result_type`` of the inputs (``hidden_mask`` excluded);
    for bfloat16/float16 the matmuls accumulate and the activation is evaluated in float32, and
    ``g``, ``u``, ``h``, the output and all cotangents are in the input dtypes.

    Args:
      x: inputs, shape ``[..., d]``.
      w_gate: gate kernel, shape ``[d, hidden]``.
      w_up: up (value) kernel, shape ``[d, hidden]``.
      w_down: down kernel, shape ``[hidden, d_out]``.
      activation: a gate of the gate table (:data:`hadamard_jax._src.gates.NAMES`):
        ``"swiglu"`` (SiLU), ``"geglu"`` (GELU), ``"reglu"`` (ReLU), ``"glu"`` (sigmoid),
        ``"bilinear"`` (identity), ``"quick_geglu"``, ``"squared_reglu"`` or
        ``"clamped_swiglu"`` (gpt-oss, with its default ``alpha=1.702, limit=7``).
      approximate: with ``activation="geglu"``, use the tanh approximation of GELU.
      b_gate: optional bias of the gate projection, shape ``[hidden]``.
      b_up: optional bias of the up projection, shape ``[hidden]``.
      b_down: optional bias of the down projection, shape ``[d_out]``.
      hidden_mask: optional mask multiplied into ``h``, e.g. a dropout keep-mask; same rank as
        ``[..., hidden]`` with each size equal or 1. Boolean masks are cheapest (one byte per
        unit kept for the backward pass); a floating mask is differentiable.
      hidden_scale: a Python float multiplied into ``h``, e.g. ``1 / keep_probability`` for
        inverted dropout.
      precision: ``jax.lax.Precision`` (or a pair) for the three matmuls.

    Returns:
      ``y``, shape ``[..., d_out]``.

    Raises:
      ValueError: unknown ``activation``; shapes that do not chain (``w_gate`` rows vs the last
        axis of ``x``, ``w_up`` vs ``w_gate``, ``w_down`` rows vs ``hidden``, bias sizes, the
        mask shape).
      TypeError: an argument that is not an array, inputs that are not floating point, a
        non-float ``hidden_scale``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import gated_mlp
      >>> x = jnp.ones((2, 4))
      >>> wg, wu, wd = jnp.ones((4, 8)), jnp.ones((4, 8)) / 4, jnp.ones((8, 3)) / 8
      >>> gated_mlp(x, wg, wu, wd, activation="reglu")  # relu(4) * 1, averaged over 8
      Array([[4., 4., 4.],
             [4., 4., 4.]], dtype=float32)
      >>> jax.grad(lambda x: gated_mlp(x, wg, wu, wd).sum())(x).shape
      (2, 4)
    """
    optional = (b_gate, b_up, b_down, hidden_mask)
    arrays = (x, w_gate, w_up, w_down, *[a for a in optional if a is not None])
    given = [a is not None for a in optional]
    return _gated_mlp_checked(arrays, (activation, approximate, hidden_scale, precision, *given))


def _gated_mlp_impl(*packed: Any) -> jax.Array:
    """:func:`gated_mlp`'s checks and op: ``packed = (x, w_gate, w_up, w_down, *given optional
    arrays, activation, approximate, hidden_scale, precision, *which optional are given)``."""
    *arrays, activation, approximate, hidden_scale, precision = packed[:-4]
    x, w_gate, w_up, w_down, *rest = arrays
    given = iter(rest)
    b_gate, b_up, b_down, hidden_mask = (next(given) if g else None for g in packed[-4:])
    spec = gates.spec_of(activation, approximate, OP)
    args = {"x": x, "w_gate": w_gate, "w_up": w_up, "w_down": w_down}
    optional = {"b_gate": b_gate, "b_up": b_up, "b_down": b_down, "hidden_mask": hidden_mask}
    args = {k: checks.as_array(v, k, OP) for k, v in args.items()}
    optional = {k: (None if v is None else checks.as_array(v, k, OP)) for k, v in optional.items()}
    scale = checks.static_real(hidden_scale, "hidden_scale", OP)
    x, wg, wu, wd = args.values()
    bg, bu, bd, mask = optional.values()
    _check_shapes(x, wg, wu, wd, bg, bu, bd, mask)
    dtype, _ = checks.result_type([a for a in (x, wg, wu, wd, bg, bu, bd) if a is not None])
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{OP}: needs floating-point inputs, got dtypes giving {jnp.dtype(dtype).name}."
        )
    if isinstance(precision, list):
        precision = tuple(precision)
    static = Static(spec, precision, scale, dtype, activations.compute_dtype(dtype))
    return _block_jit(static, x, wg, wu, wd, bg, bu, bd, mask)


_gated_mlp_checked = checks.checked_once(_gated_mlp_impl)
