r"""The GLU family, ``act(gate) * value``, with one shared derivative rule.

Every gate of the gate table (:mod:`hadamard_jax._src.gates`: GLU, bilinear, ReGLU, GeGLU,
SwiGLU, QuickGeGLU, squared ReGLU, gpt-oss's clamped SwiGLU) in two layouts:

* two arrays, ``gate`` and ``value`` (``glu``, ``swiglu``, ...);
* one packed array ``x`` (``glu_packed``, ``swiglu_packed``, ...), the layout of a fused
  gate/up projection: ``layout="halves"`` (default) splits ``x`` in two halves along ``axis``,
  the FIRST half the value and the SECOND the gate, as ``jax.nn.glu``;
  ``layout="interleaved"`` takes the gate from the even and the value from the odd positions
  along ``axis`` (``x[..., ::2]``, ``x[..., 1::2]``), as gpt-oss stores them.

All go through :func:`gated` / :func:`gated_packed` and one ``jax.custom_jvp``, :func:`_gated`,
whose static arguments are the gate's :class:`~hadamard_jax._src.gates.Spec`, the layout and the
result type. Its tangent rule

.. math::
  d(\mathrm{act}(g)\, v) = \mathrm{act}'(g)\, v\, dg + \mathrm{act}(g)\, dv

is evaluated under ``jax.checkpoint`` (:func:`hadamard_jax._src.rules.checkpointed_tangent`), so
the backward pass keeps only the op's inputs (``gate`` and ``value``, or the packed ``x``: the
split happens inside the rule) and recomputes the activation. Activations are evaluated in
float32 for 16-bit inputs (:func:`hadamard_jax._src.activations.compute_dtype`); results and
gradients come back in the input dtype. Value and derivatives are finite for every finite
gate up to the dtype's largest value, and ``inf`` only where the true value is beyond the dtype
(squared ReGLU; see "Range" in :mod:`hadamard_jax._src.activations`). Integer and boolean inputs
promote to the default float dtype (as ``jax.nn.gelu`` does); complex inputs are a
``TypeError`` (the activations are real functions).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, docstrings, gates, rules
from hadamard_jax._src.checks import Shape, broadcast_cast

#: ``(dtype, weak)``: the result dtype and whether the result is weakly typed.
ResultType = tuple[np.dtype, bool]

#: The packed layouts.
LAYOUTS = ("halves", "interleaved")

#: ``None`` for two inputs, else ``(axis, layout)`` of a packed input.
Split = tuple[int, str] | None


# --- shared machinery --------------------------------------------------------------------------


def _unpack(x: jax.Array, axis: int, layout: str) -> tuple[jax.Array, jax.Array]:
    """``(gate, value)`` of a packed ``x`` (a linear map: it serves tangents too)."""
    if layout == "halves":
        value, gate = jnp.split(x, 2, axis=axis)
        return gate, value
    size = x.shape[axis]
    gate = lax.slice_in_dim(x, 0, size, 2, axis)
    value = lax.slice_in_dim(x, 1, size, 2, axis)
    return gate, value


def _operands(split: Split, shape: Shape, cdt: np.dtype, xs: Sequence[Any]) -> tuple[Any, Any]:
    """``(gate, value)`` in ``cdt`` from the op's inputs (or tangents; ``None`` stays ``None``).

    ``split is None``: ``xs = (gate, value)``, each broadcast to ``shape``. Otherwise
    ``xs = (x,)``, unpacked along ``split = (axis, layout)``. Both are linear maps, so the same
    function serves primals and tangents.
    """
    if split is None:
        gate, value = (None if x is None else broadcast_cast(x, shape, cdt) for x in xs)
        return gate, value
    (x,) = xs
    if x is None:
        return None, None
    return _unpack(jnp.asarray(x).astype(cdt), *split)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _gated(spec: gates.Spec, split: Split, shape: Shape, result: ResultType, *xs: Any):
    """``act(gate) * value`` in ``compute_dtype(dtype)``, cast to the result type.

    Args:
      spec: the gate (activation, parameters, value clamp).
      split: ``None`` for ``xs = (gate, value)``; ``(axis, layout)`` for ``xs = (x,)`` packed.
      shape: the result shape (the broadcast shape of ``gate`` and ``value``; unused if packed).
      result: ``(dtype, weak)`` of the result (floating).
    """
    gate, value = _operands(split, shape, activations.compute_dtype(result[0]), xs)
    return checks.cast(gates.evaluate(spec, gate, value)[0], *result)


@functools.partial(_gated.defjvp, symbolic_zeros=True)
def _gated_jvp(spec, split, shape, result, primals, tangents):
    out = _gated(spec, split, shape, result, *primals)
    cdt = activations.compute_dtype(result[0])

    def tangent_fn(xs, ts):
        # d(act(g) v) = act'(g) v dg + act(g) dv, all factors from one activation call.
        gate, value = _operands(split, shape, cdt, xs)
        dgate, dvalue = _operands(split, shape, cdt, ts)
        _, dh_dgate, dh_dvalue = gates.evaluate(spec, gate, value)
        tangent = rules.tangent_sum(
            [
                None if dgate is None else dh_dgate * dgate,
                None if dvalue is None else dh_dvalue * dvalue,
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
    **params: float,
) -> jax.Array:
    """The two-input gate ``name`` of :data:`hadamard_jax._src.gates.GATES`: ``act(gate) * value``.

    The entry behind :func:`glu`, :func:`swiglu` and the others, and behind the Flax modules'
    ``activation=`` choice. ``params`` are the gate's parameters (e.g. ``alpha``, ``limit``);
    ``op`` names the caller in error messages (default ``name``).
    """
    statics = (name, approximate, broadcast, op, *_flat(params))
    return _gated_checked((gate, value), statics)


def _flat(params: dict[str, Any]) -> list[Any]:
    """``params`` as ``[key0, value0, key1, value1, ...]`` in key order (static values)."""
    return [item for key in sorted(params) for item in (key, params[key])]


def _gated_impl(gate, value, name, approximate, broadcast, op, *params) -> jax.Array:
    """:func:`gated`'s checks and op (``params`` flat, as :func:`_flat` gives them)."""
    op = name if op is None else op
    spec = gates.spec_of(name, approximate, op, dict(zip(params[::2], params[1::2])))
    broadcast = checks.check_bool(broadcast, "broadcast", op)
    gate, value = checks.real_arrays((gate, value), ("gate", "value"), op)
    shapes = [jnp.shape(gate), jnp.shape(value)]
    shape = checks.result_shape(shapes, ("gate", "value"), op, broadcast)
    result = checks.result_type((gate, value), floating=True)
    return _gated_jit(spec, None, shape, result, gate, value)


_gated_checked = checks.checked_once(_gated_impl)


def gated_packed(
    name: str,
    x: ArrayLike,
    *,
    axis: int = -1,
    layout: str = "halves",
    approximate: bool = False,
    op: str | None = None,
    **params: float,
) -> jax.Array:
    """The packed form of gate ``name``: ``x`` holds value and gate along ``axis`` (``layout``)."""
    statics = (name, axis, layout, approximate, op, *_flat(params))
    return _gated_packed_checked((x,), statics)


def _gated_packed_impl(x, name, axis, layout, approximate, op, *params) -> jax.Array:
    """:func:`gated_packed`'s checks and op (``params`` flat, as :func:`_flat` gives them)."""
    op = f"{name}_packed" if op is None else op
    spec = gates.spec_of(name, approximate, op, dict(zip(params[::2], params[1::2])))
    layout = checks.check_choice(layout, "layout", op, LAYOUTS)
    (x,) = checks.real_arrays((x,), ("x",), op)
    ndim = jnp.ndim(x)
    if ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis to split, got a scalar.")
    split_axis = checks.check_axis(axis, ndim, "axis", op)
    size = jnp.shape(x)[split_axis]
    if size % 2:
        parts = "two equal halves (value, gate)" if layout == "halves" else "(gate, value) pairs"
        raise ValueError(
            f"{op}: x.shape[{axis}] = {size} along axis={axis} is odd; the {layout!r} layout "
            f"needs {parts} along the axis, got x.shape={tuple(jnp.shape(x))}."
        )
    result = checks.result_type((x,), floating=True)
    return _gated_jit(spec, (split_axis, layout), (), result, x)


_gated_packed_checked = checks.checked_once(_gated_packed_impl)


# --- two-input forms ---------------------------------------------------------------------------

_PAIR_DOC = """
    Args:
      gate: array of shape ``S``, the pre-activation gate.
      value: array of shape ``S``. With ``broadcast=True``, ``gate`` and ``value`` may have any
        shapes that broadcast NumPy-style; gradients then come back in each input's own shape.
      {{extra}}
      broadcast: allow NumPy broadcasting (off by default: unequal shapes are an error).

    Returns:
      Array of shape ``S`` (or the broadcast shape), dtype ``jnp.result_type(gate, value)``
      promoted to floating (integers and booleans give the default float dtype).

    Raises:
      ValueError: the shapes differ and ``broadcast`` is False, or they do not broadcast.
      TypeError: an argument is complex, or not an array or a number (a typed PRNG key, a
        ``fractions.Fraction``); a flag is not a bool.
"""


def glu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""Gated linear unit: ``sigmoid(gate) * value``.

    .. math::
      \mathrm{glu}(g, v)_i = \sigma(g_i)\, v_i

    The derivative rule keeps only ``gate`` and ``value`` for the backward pass and uses
    :math:`\sigma'(g) = \sigma(g)\sigma(-g)` (exact in bfloat16 and at large :math:`|g|`).

    {{pair_doc}}

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

    {{pair_doc}}

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

    {{pair_doc}}

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

    {{pair_doc}}

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

    {{pair_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import swiglu
      >>> swiglu(jnp.array([0.0, 100.0]), jnp.array([2.0, 3.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated("swiglu", gate, value, broadcast=broadcast)


def quick_geglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""QuickGeGLU: ``gate * sigmoid(1.702 gate) * value``, the QuickGELU of CLIP, gated.

    .. math::
      \mathrm{quick\_geglu}(g, v)_i = g_i\, \sigma(1.702\, g_i)\, v_i

    One ``sigmoid`` pair gives the value and the derivative (``s + 1.702 g s(1.702 g)
    s(-1.702 g)``); the limit at ``gate = -inf`` is 0.

    {{pair_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import quick_geglu
      >>> quick_geglu(jnp.array([0.0, 100.0]), jnp.array([2.0, 3.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated("quick_geglu", gate, value, broadcast=broadcast)


def squared_reglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""Squared ReGLU: ``relu(gate)**2 * value`` (the squared ReLU of Primer and Nemotron, gated).

    .. math::
      \mathrm{squared\_reglu}(g, v)_i = \max(g_i, 0)^2\, v_i

    {{pair_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import squared_reglu
      >>> squared_reglu(jnp.array([-1.0, 2.0]), jnp.array([2.0, 3.0]))
      Array([ 0., 12.], dtype=float32)
    """
    return gated("squared_reglu", gate, value, broadcast=broadcast)


def clamped_swiglu(
    gate: ArrayLike,
    value: ArrayLike,
    *,
    alpha: float = 1.702,
    limit: float = 7.0,
    broadcast: bool = False,
) -> jax.Array:
    r"""gpt-oss's clamped SwiGLU: ``g * sigmoid(alpha * g) * (v + 1)`` with clamped inputs.

    .. math::
      g' = \min(g, \ell),\quad v' = \mathrm{clip}(v, -\ell, \ell),\quad
      \mathrm{out} = g'\, \sigma(\alpha g')\, (v' + 1)

    The clamps' derivatives are JAX's: zero outside the limits and one half at a limit (as
    ``jnp.minimum``/``jnp.clip`` differentiate a tie), so gradients equal the plain
    composition's. For gpt-oss's interleaved storage use
    ``clamped_swiglu_packed(x, layout="interleaved")``.

    {{pair_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import clamped_swiglu
      >>> clamped_swiglu(jnp.array([0.0, 100.0]), jnp.array([2.0, 30.0]))
      Array([ 0.      , 55.999626], dtype=float32)
    """
    return gated("clamped_swiglu", gate, value, broadcast=broadcast, alpha=alpha, limit=limit)


# --- packed forms ------------------------------------------------------------------------------

_PACKED_DOC = """
    Args:
      x: array of shape ``(..., 2n, ...)`` with an even length ``2n`` along ``axis``. With
        ``layout="halves"`` the FIRST half is the value and the SECOND half the gate (the
        layout of ``jax.nn.glu``); with ``layout="interleaved"`` the gate is at the even and
        the value at the odd positions (``x[..., ::2]``, ``x[..., 1::2]``, as gpt-oss).
      axis: the axis to split (an int, negative allowed).
      layout: ``"halves"`` (default) or ``"interleaved"``.
      {{extra}}

    Returns:
      Array of shape ``(..., n, ...)``, dtype ``x.dtype`` promoted to floating.

    Raises:
      ValueError: the length along ``axis`` is odd, ``axis`` is out of range, ``x`` is a scalar,
        an unknown ``layout``.
      TypeError: ``x`` is complex, or not an array or a number; ``axis`` is not an int.
"""


def glu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""``jax.nn.glu`` with a derivative rule that keeps only ``x``.

    .. math::
      \mathrm{glu}(x) = x_{[:n]} \cdot \sigma(x_{[n:]})

    Bit-for-bit equal to ``jax.nn.glu(x, axis)`` for float32 and float64. For bfloat16 and
    float16 the sigmoid and the product are computed in float32 and rounded once, so results
    differ from ``jax.nn.glu`` (which rounds after each step) by rounding, usually towards the
    float32 result.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import glu_packed
      >>> glu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([1., 3.], dtype=float32)
    """
    return gated_packed("glu", x, axis=axis, layout=layout)


def bilinear_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""Packed bilinear gate: ``x[:n] * x[n:]`` along ``axis``.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import bilinear_packed
      >>> bilinear_packed(jnp.array([2.0, 3.0, -1.0, 2.0]))
      Array([-2.,  6.], dtype=float32)
    """
    return gated_packed("bilinear", x, axis=axis, layout=layout)


def reglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""Packed ReGLU: ``x[:n] * relu(x[n:])`` along ``axis``.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import reglu_packed
      >>> reglu_packed(jnp.array([2.0, 3.0, -1.0, 2.0]))
      Array([0., 6.], dtype=float32)
    """
    return gated_packed("reglu", x, axis=axis, layout=layout)


def geglu_packed(
    x: ArrayLike, axis: int = -1, *, layout: str = "halves", approximate: bool = False
) -> jax.Array:
    r"""Packed GeGLU: ``x[:n] * gelu(x[n:], approximate)`` along ``axis``.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import geglu_packed
      >>> geglu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated_packed("geglu", x, axis=axis, layout=layout, approximate=approximate)


def swiglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""Packed SwiGLU: ``x[:n] * silu(x[n:])`` along ``axis``.

    For a fused projection ``x @ W`` with ``W = concat([W_up, W_gate], axis=1)``.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import swiglu_packed
      >>> swiglu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated_packed("swiglu", x, axis=axis, layout=layout)


def quick_geglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""Packed QuickGeGLU: ``value * gate * sigmoid(1.702 gate)`` from one array.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import quick_geglu_packed
      >>> quick_geglu_packed(jnp.array([2.0, 3.0, 0.0, 100.0]))
      Array([  0., 300.], dtype=float32)
    """
    return gated_packed("quick_geglu", x, axis=axis, layout=layout)


def squared_reglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    r"""Packed squared ReGLU: ``value * relu(gate)**2`` from one array.

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import squared_reglu_packed
      >>> squared_reglu_packed(jnp.array([2.0, 3.0, -1.0, 2.0]))
      Array([ 0., 12.], dtype=float32)
    """
    return gated_packed("squared_reglu", x, axis=axis, layout=layout)


def clamped_swiglu_packed(
    x: ArrayLike,
    axis: int = -1,
    *,
    layout: str = "halves",
    alpha: float = 1.702,
    limit: float = 7.0,
) -> jax.Array:
    r"""Packed clamped SwiGLU (gpt-oss stores it ``layout="interleaved"``).

    {{packed_doc}}

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import clamped_swiglu_packed
      >>> clamped_swiglu_packed(jnp.array([0.0, 2.0, 100.0, 30.0]), layout="interleaved")
      Array([ 0.      , 55.999626], dtype=float32)
    """
    return gated_packed("clamped_swiglu", x, axis=axis, layout=layout, alpha=alpha, limit=limit)


def _fill_docs() -> None:
    """Fills the ``pair_doc`` / ``packed_doc`` placeholder of every public gate's docstring.

    The functions are found by their placeholder, so a new gate's two functions need no entry here.
    """
    approx = "approximate: use the tanh approximation of GELU (``jax.nn.gelu``'s flag)."
    clamp = (
        "alpha: the sigmoid's slope, a static number > 0 (gpt-oss: 1.702).\n"
        "limit: the clamp of gate and value, a static number > 0 (gpt-oss: 7.0)."
    )
    extras = {geglu: approx, geglu_packed: approx, clamped_swiglu: clamp}
    extras[clamped_swiglu_packed] = clamp
    for fn in list(globals().values()):
        own = getattr(fn, "__doc__", None) if callable(fn) else None
        for doc, mark in ((_PAIR_DOC, "pair_doc"), (_PACKED_DOC, "packed_doc")):
            if own and "{{" + mark + "}}" in own:
                part = docstrings.expand(doc, mark, extra=extras.get(fn, ""))
                docstrings.fill_in(fn, **{mark: part})


_fill_docs()
