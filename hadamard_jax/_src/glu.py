"""The GLU family, ``act(gate) * value``, with one shared derivative rule.

Five activations (sigmoid: GLU, identity: bilinear, relu: ReGLU, gelu: GeGLU, silu: SwiGLU) in
two layouts:

* two arrays, ``gate`` and ``value`` (``glu``, ``bilinear``, ``reglu``, ``geglu``, ``swiglu``);
* one packed array split in two halves along ``axis``, the layout of a fused gate/up projection
  and of ``jax.nn.glu``: the FIRST half is the value, the SECOND half the gate
  (``glu_packed``, ``bilinear_packed``, ``reglu_packed``, ``geglu_packed``, ``swiglu_packed``).

All ten functions go through :func:`gated` / :func:`gated_packed` and one ``jax.custom_jvp``,
:func:`_gated`, whose static arguments are the activation (from the gate table,
:mod:`hadamard_jax._src.gates`), the layout and the result type. Its tangent rule

.. math::
  d(\\mathrm{act}(g)\\, v) = \\mathrm{act}'(g)\\, v\\, dg + \\mathrm{act}(g)\\, dv

is evaluated under ``jax.checkpoint`` (:func:`hadamard_jax._src.rules.checkpointed_tangent`), so
the backward pass keeps only the op's inputs (``gate`` and ``value``, or the packed ``x``: the
split happens inside the rule) and recomputes the activation. Activations are evaluated in
float32 for 16-bit inputs (:func:`hadamard_jax._src.activations.compute_dtype`); results and
gradients come back in the input dtype. Integer and boolean inputs promote to the default float
dtype (as ``jax.nn.gelu`` does); complex inputs are a ``TypeError`` (the activations are real
functions).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, gates, rules
from hadamard_jax._src.checks import Shape, broadcast_cast

#: ``(dtype, weak)``: the result dtype and whether the result is weakly typed.
ResultType = tuple[np.dtype, bool]


# --- shared machinery --------------------------------------------------------------------------


def _operands(
    split_axis: int | None, shape: Shape, cdt: np.dtype, xs: Sequence[Any]
) -> tuple[Any, Any]:
    """``(gate, value)`` in ``cdt`` from the op's inputs (or tangents; ``None`` stays ``None``).

    ``split_axis is None``: ``xs = (gate, value)``, each broadcast to ``shape``.
    Otherwise ``xs = (x,)``, split in two along ``split_axis``: ``value, gate = split(x)``.
    Both are linear maps, so the same function serves primals and tangents.
    """
    if split_axis is None:
        gate, value = (None if x is None else broadcast_cast(x, shape, cdt) for x in xs)
        return gate, value
    (x,) = xs
    if x is None:
        return None, None
    value, gate = jnp.split(jnp.asarray(x).astype(cdt), 2, axis=split_axis)
    return gate, value


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _gated(act: str, split_axis: int | None, shape: Shape, result: ResultType, *xs: Any):
    """``act(gate) * value`` in ``compute_dtype(dtype)``, cast to the result type.

    Args:
      act: a key of :data:`hadamard_jax._src.activations.ACTIVATIONS`.
      split_axis: ``None`` for ``xs = (gate, value)``; an axis for ``xs = (x,)`` packed.
      shape: the result shape (the broadcast shape of ``gate`` and ``value``; unused if packed).
      result: ``(dtype, weak)`` of the result (floating).
    """
    gate, value = _operands(split_axis, shape, activations.compute_dtype(result[0]), xs)
    return checks.cast(activations.ACTIVATIONS[act].value(gate) * value, *result)


@functools.partial(_gated.defjvp, symbolic_zeros=True)
def _gated_jvp(act, split_axis, shape, result, primals, tangents):
    out = _gated(act, split_axis, shape, result, *primals)
    value_and_grad = activations.ACTIVATIONS[act].value_and_grad
    cdt = activations.compute_dtype(result[0])

    def tangent_fn(xs, ts):
        # d(act(g) v) = act'(g) v dg + act(g) dv, both factors from one function.
        gate, value = _operands(split_axis, shape, cdt, xs)
        dgate, dvalue = _operands(split_axis, shape, cdt, ts)
        act_g, act_grad = value_and_grad(gate)
        tangent = rules.tangent_sum(
            [
                None if dgate is None else act_grad * dgate * value,
                None if dvalue is None else act_g * dvalue,
            ]
        )
        return checks.cast(tangent, *result)

    return out, rules.checkpointed_tangent(tangent_fn, primals, tangents, out)


_gated_jit = jax.jit(_gated, static_argnums=(0, 1, 2, 3))


def gated(
    name: str,
    gate: ArrayLike,
    value: ArrayLike,
    *,
    approximate: bool = False,
    broadcast: bool = False,
    op: str | None = None,
) -> jax.Array:
    """The two-input gate ``name`` of :data:`hadamard_jax._src.gates.GATES`: ``act(gate) * value``.

    The entry behind :func:`glu`, :func:`swiglu` and the others, and behind the Flax modules'
    ``activation=`` choice. ``op`` names the caller in error messages (default ``name``).
    """
    op = name if op is None else op
    act = gates.activation_of(name, approximate, op)
    broadcast = checks.check_bool(broadcast, "broadcast", op)
    gate, value = checks.real_arrays((gate, value), ("gate", "value"), op)
    shapes = [jnp.shape(gate), jnp.shape(value)]
    shape = checks.result_shape(shapes, ("gate", "value"), op, broadcast)
    result = checks.result_type((gate, value), floating=True)
    return _gated_jit(act, None, shape, result, gate, value)


def gated_packed(
    name: str, x: ArrayLike, *, axis: int = -1, approximate: bool = False, op: str | None = None
) -> jax.Array:
    """The packed form of gate ``name``: ``x = [value | gate]`` split in halves along ``axis``."""
    op = f"{name}_packed" if op is None else op
    act = gates.activation_of(name, approximate, op)
    (x,) = checks.real_arrays((x,), ("x",), op)
    ndim = jnp.ndim(x)
    if ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis to split, got a scalar.")
    split_axis = checks.check_axis(axis, ndim, "axis", op)
    size = jnp.shape(x)[split_axis]
    if size % 2:
        raise ValueError(
            f"{op}: x.shape[{axis}] = {size} along axis={axis} is odd; the packed layout needs "
            f"two equal halves (value, gate) along the axis, got x.shape={tuple(jnp.shape(x))}."
        )
    return _gated_jit(act, split_axis, (), checks.result_type((x,), floating=True), x)


# --- two-input forms ---------------------------------------------------------------------------

_PAIR_DOC = """
    Args:
      gate: array of shape ``S``, the pre-activation gate.
      value: array of shape ``S``. With ``broadcast=True``, ``gate`` and ``value`` may have any
        shapes that broadcast NumPy-style; gradients then come back in each input's own shape.
{extra}      broadcast: allow NumPy broadcasting (off by default: unequal shapes are an error).

    Returns:
      Array of shape ``S`` (or the broadcast shape), dtype ``jnp.result_type(gate, value)``
      promoted to floating (integers and booleans give the default float dtype).

    Raises:
      ValueError: the shapes differ and ``broadcast`` is False, or they do not broadcast.
      TypeError: an argument is complex, or not an array or a number; a flag is not a bool.
"""


def glu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""Gated linear unit: ``sigmoid(gate) * value``.

    .. math::
      \mathrm{glu}(g, v)_i = \sigma(g_i)\, v_i

    The derivative rule keeps only ``gate`` and ``value`` for the backward pass and uses
    :math:`\sigma'(g) = \sigma(g)\sigma(-g)` (exact in bfloat16 and at large :math:`|g|`).
    {pair_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import glu
      >>> glu(jnp.array([0.0, 100.0]), jnp.array([2.0, 3.0]))
      Array([1., 3.], dtype=float32)

    See also:
      :func:`glu_packed` for ``jax.nn.glu``'s packed layout.
    """
    return gated("glu", gate, value, broadcast=broadcast)


def bilinear(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""Bilinear gate (GLU without activation): ``gate * value``.

    .. math::
      \mathrm{bilinear}(g, v)_i = g_i\, v_i
    {pair_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import bilinear
      >>> bilinear(jnp.array([-1.0, 2.0]), jnp.array([2.0, 3.0]))
      Array([-2.,  6.], dtype=float32)
    """
    return gated("bilinear", gate, value, broadcast=broadcast)


def reglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""ReGLU: ``relu(gate) * value``.

    .. math::
      \mathrm{reglu}(g, v)_i = \max(g_i, 0)\, v_i

    As ``jax.nn.relu``, the derivative at ``gate == 0`` is 0.
    {pair_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import reglu
      >>> reglu(jnp.array([-1.0, 2.0]), jnp.array([2.0, 3.0]))
      Array([0., 6.], dtype=float32)
    """
    return gated("reglu", gate, value, broadcast=broadcast)


def geglu(
    gate: ArrayLike, value: ArrayLike, *, approximate: bool = False, broadcast: bool = False
) -> jax.Array:
    r"""GeGLU: ``gelu(gate) * value``, exact (erf) GELU by default.

    .. math::
      \mathrm{geglu}(g, v)_i = g_i\, \Phi(g_i)\, v_i

    with :math:`\Phi` the standard normal CDF, or its tanh approximation with
    ``approximate=True`` (as ``jax.nn.gelu(gate, approximate=approximate)``).
    {pair_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import geglu
      >>> geglu(jnp.array([0.0, 100.0]), jnp.array([2.0, 3.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated("geglu", gate, value, approximate=approximate, broadcast=broadcast)


def swiglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""SwiGLU: ``silu(gate) * value``.

    .. math::
      \mathrm{swiglu}(g, v)_i = g_i\, \sigma(g_i)\, v_i

    The gated feed-forward layer of LLaMA-style models is ``swiglu(x @ W1, x @ W2) @ W3``.
    {pair_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import swiglu
      >>> swiglu(jnp.array([0.0, 100.0]), jnp.array([2.0, 3.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated("swiglu", gate, value, broadcast=broadcast)


# --- packed forms ------------------------------------------------------------------------------

_PACKED_DOC = """
    Args:
      x: array of shape ``(..., 2n, ...)`` with an even length ``2n`` along ``axis``: the FIRST
        half is the value, the SECOND half the gate (the layout of ``jax.nn.glu``).
      axis: the axis to split (an int, negative allowed).
{extra}
    Returns:
      Array of shape ``(..., n, ...)``, dtype ``x.dtype`` promoted to floating.

    Raises:
      ValueError: the length along ``axis`` is odd, ``axis`` is out of range, ``x`` is a scalar.
      TypeError: ``x`` is complex, or not an array or a number; ``axis`` is not an int.
"""


def glu_packed(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""``jax.nn.glu`` with a derivative rule that keeps only ``x``.

    .. math::
      \mathrm{glu}(x) = x_{[:n]} \cdot \sigma(x_{[n:]})

    Bit-for-bit equal to ``jax.nn.glu(x, axis)`` for float32 and float64. For bfloat16 and
    float16 the sigmoid and the product are computed in float32 and rounded once, so results
    differ from ``jax.nn.glu`` (which rounds after each step) by rounding, usually towards the
    float32 result.
    {packed_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import glu_packed
      >>> glu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([1., 3.], dtype=float32)
    """
    return gated_packed("glu", x, axis=axis)


def bilinear_packed(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Packed bilinear gate: ``x[:n] * x[n:]`` along ``axis``.
    {packed_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import bilinear_packed
      >>> bilinear_packed(jnp.array([2.0, 3.0, -1.0, 2.0]))
      Array([-2.,  6.], dtype=float32)
    """
    return gated_packed("bilinear", x, axis=axis)


def reglu_packed(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Packed ReGLU: ``x[:n] * relu(x[n:])`` along ``axis``.
    {packed_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import reglu_packed
      >>> reglu_packed(jnp.array([2.0, 3.0, -1.0, 2.0]))
      Array([0., 6.], dtype=float32)
    """
    return gated_packed("reglu", x, axis=axis)


def geglu_packed(x: ArrayLike, axis: int = -1, *, approximate: bool = False) -> jax.Array:
    r"""Packed GeGLU: ``x[:n] * gelu(x[n:], approximate)`` along ``axis``.
    {packed_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import geglu_packed
      >>> geglu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated_packed("geglu", x, axis=axis, approximate=approximate)


def swiglu_packed(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Packed SwiGLU: ``x[:n] * silu(x[n:])`` along ``axis``.

    For a fused projection ``x @ W`` with ``W = concat([W_up, W_gate], axis=1)``.
    {packed_doc}
    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import swiglu_packed
      >>> swiglu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated_packed("swiglu", x, axis=axis)


def _fill_docs() -> None:
    if glu.__doc__ is None:  # docstrings stripped (python -OO)
        return
    approx = "      approximate: use the tanh approximation of GELU (``jax.nn.gelu``'s flag).\n"
    for fn in (glu, bilinear, reglu, geglu, swiglu):
        extra = approx if fn is geglu else ""
        text = _PAIR_DOC.format(extra=extra).strip("\n")
        fn.__doc__ = (fn.__doc__ or "").replace("    {pair_doc}\n", "\n" + text + "\n\n")
    for fn in (glu_packed, bilinear_packed, reglu_packed, geglu_packed, swiglu_packed):
        extra = approx if fn is geglu_packed else ""
        text = _PACKED_DOC.format(extra=extra).strip("\n")
        fn.__doc__ = (fn.__doc__ or "").replace("    {packed_doc}\n", "\n" + text + "\n\n")


_fill_docs()
