r"""The GLU family, ``act(gate) * value``, with one shared derivative rule.

Every gate of the gate table (:mod:`hadamard_jax._src.gates`: GLU, bilinear, ReGLU, GeGLU,
SwiGLU, QuickGeGLU, squared ReGLU, gpt-oss's clamped SwiGLU) in two layouts:

* two arrays, ``gate`` and ``value`` (``glu``, ``swiglu``, ...);
* one packed array ``x`` (``glu_packed``, ``swiglu_packed``, ...), the layout of a fused
  gate/up projection: ``layout="halves"`` (default) splits ``x`` in two halves along ``axis``,
  the FIRST half the value and the SECOND the gate, as ``jax.nn.glu``;
  ``layout="interleaved"`` takes the gate from the even and the value from the odd positions
  along ``axis`` (``x[..., ::2]``, ``x[..., 1::2]``), as gpt-oss stores them.

Each public function is a typed one-liner whose docstring is filled from its gate's row
(:func:`documented`). All go through :func:`gated` / :func:`gated_packed` and one
``jax.custom_jvp``, :func:`_gated`, whose static arguments are the gate's
:class:`~hadamard_jax._src.gates.Spec`, the layout and the result type. Its tangent rule

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
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


# --- docstrings from the gate table ------------------------------------------------------------

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

F = TypeVar("F", bound=Callable[..., Any])


def documented(fn: F) -> F:
    """Fills the ``{{gate_doc}}`` placeholder of a public gate function from its table row.

    ``<name>`` gets its row's :class:`~hadamard_jax._src.gates.GateDoc` ``math`` and ``notes``,
    the Args/Returns/Raises of two inputs (``_PAIR_DOC``, the row's ``args`` after the common
    arguments), the example and ``see_also``; ``<name>_packed`` the same from ``packed_math``,
    ``packed_notes`` and ``_PACKED_DOC``, its example on the same numbers packed. Empty parts are
    left out; the summary line stays in the function.
    """
    name = fn.__name__
    packed = name.endswith("_packed")
    doc = gates.GATES[name.removesuffix("_packed")].doc
    math, notes = (doc.packed_math, doc.packed_notes) if packed else (doc.math, doc.notes)
    parts = [
        ".. math::\n" + textwrap.indent(textwrap.dedent(math).strip("\n"), "  ") if math else "",
        notes,
        docstrings.expand(_PACKED_DOC if packed else _PAIR_DOC, name, extra=doc.args),
        _example(name, doc.example, packed),
        "" if packed or not doc.see_also else "See also:\n" + textwrap.indent(doc.see_also, "  "),
    ]
    text = "\n\n".join(textwrap.dedent(part).strip("\n") for part in parts if part)
    return docstrings.fill_in(fn, gate_doc=text)


def _example(name: str, example: gates.Example | None, packed: bool) -> str:
    """The "Examples:" section of ``name`` (a pair or packed gate function) from ``example``."""
    if example is None:
        return ""
    if not packed:
        call = f"{name}(jnp.array({list(example.gate)}), jnp.array({list(example.value)}))"
    elif example.layout == "halves":
        call = f"{name}(jnp.array({list(example.value + example.gate)}))"
    else:
        pairs = [x for pair in zip(example.gate, example.value) for x in pair]
        call = f'{name}(jnp.array({pairs}), layout="{example.layout}")'
    lines = ["import jax.numpy as jnp", f"from hadamard_jax import {name}", call]
    return "Examples:\n" + "".join(f"  >>> {line}\n" for line in lines) + f"  {example.output}"


# --- two-input forms ---------------------------------------------------------------------------


@documented
def glu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """Gated linear unit: ``sigmoid(gate) * value``.

    {{gate_doc}}
    """
    return gated("glu", gate, value, broadcast=broadcast)


@documented
def bilinear(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """Bilinear gate (GLU without activation): ``gate * value``.

    {{gate_doc}}
    """
    return gated("bilinear", gate, value, broadcast=broadcast)


@documented
def reglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """ReGLU: ``relu(gate) * value``.

    {{gate_doc}}
    """
    return gated("reglu", gate, value, broadcast=broadcast)


@documented
def geglu(
    gate: ArrayLike, value: ArrayLike, *, approximate: bool = False, broadcast: bool = False
) -> jax.Array:
    """GeGLU: ``gelu(gate) * value``, exact (erf) GELU by default.

    {{gate_doc}}
    """
    return gated("geglu", gate, value, approximate=approximate, broadcast=broadcast)


@documented
def swiglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """SwiGLU: ``silu(gate) * value``.

    {{gate_doc}}
    """
    return gated("swiglu", gate, value, broadcast=broadcast)


@documented
def quick_geglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """QuickGeGLU: ``gate * sigmoid(1.702 gate) * value``, the QuickGELU of CLIP, gated.

    {{gate_doc}}
    """
    return gated("quick_geglu", gate, value, broadcast=broadcast)


@documented
def squared_reglu(gate: ArrayLike, value: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    """Squared ReGLU: ``relu(gate)**2 * value`` (the squared ReLU of Primer and Nemotron, gated).

    {{gate_doc}}
    """
    return gated("squared_reglu", gate, value, broadcast=broadcast)


@documented
def clamped_swiglu(
    gate: ArrayLike,
    value: ArrayLike,
    *,
    alpha: float = 1.702,
    limit: float = 7.0,
    broadcast: bool = False,
) -> jax.Array:
    """gpt-oss's clamped SwiGLU: ``g * sigmoid(alpha * g) * (v + 1)`` with clamped inputs.

    {{gate_doc}}
    """
    return gated("clamped_swiglu", gate, value, broadcast=broadcast, alpha=alpha, limit=limit)


# --- packed forms ------------------------------------------------------------------------------


@documented
def glu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """``jax.nn.glu`` with a derivative rule that keeps only ``x``.

    {{gate_doc}}
    """
    return gated_packed("glu", x, axis=axis, layout=layout)


@documented
def bilinear_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """Packed bilinear gate: ``x[:n] * x[n:]`` along ``axis``.

    {{gate_doc}}
    """
    return gated_packed("bilinear", x, axis=axis, layout=layout)


@documented
def reglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """Packed ReGLU: ``x[:n] * relu(x[n:])`` along ``axis``.

    {{gate_doc}}
    """
    return gated_packed("reglu", x, axis=axis, layout=layout)


@documented
def geglu_packed(
    x: ArrayLike, axis: int = -1, *, layout: str = "halves", approximate: bool = False
) -> jax.Array:
    """Packed GeGLU: ``x[:n] * gelu(x[n:], approximate)`` along ``axis``.

    {{gate_doc}}
    """
    return gated_packed("geglu", x, axis=axis, layout=layout, approximate=approximate)


@documented
def swiglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """Packed SwiGLU: ``x[:n] * silu(x[n:])`` along ``axis``.

    {{gate_doc}}
    """
    return gated_packed("swiglu", x, axis=axis, layout=layout)


@documented
def quick_geglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """Packed QuickGeGLU: ``value * gate * sigmoid(1.702 gate)`` from one array.

    {{gate_doc}}
    """
    return gated_packed("quick_geglu", x, axis=axis, layout=layout)


@documented
def squared_reglu_packed(x: ArrayLike, axis: int = -1, *, layout: str = "halves") -> jax.Array:
    """Packed squared ReGLU: ``value * relu(gate)**2`` from one array.

    {{gate_doc}}
    """
    return gated_packed("squared_reglu", x, axis=axis, layout=layout)


@documented
def clamped_swiglu_packed(
    x: ArrayLike,
    axis: int = -1,
    *,
    layout: str = "halves",
    alpha: float = 1.702,
    limit: float = 7.0,
) -> jax.Array:
    """Packed clamped SwiGLU (gpt-oss stores it ``layout="interleaved"``).

    {{gate_doc}}
    """
    return gated_packed("clamped_swiglu", x, axis=axis, layout=layout, alpha=alpha, limit=limit)
