"""The gate table: every gated activation ``act(gate) * value`` the library offers, in one place.

Each :class:`Gate` row names a gate, the activation it applies
(:data:`hadamard_jax._src.activations.ACTIVATIONS`), its static parameters and whether the value
is clamped. Everything that offers a choice of gate reads this table: the two-input and packed
ops of :mod:`hadamard_jax._src.glu`, the fused :func:`hadamard_jax.gated_mlp`, the
``activation=`` argument of the Flax ``GLU`` and ``GatedMLP`` modules, the error messages that
list the choices, the docs' gate table (``docs/guides/gates.md``) and the tests. Both derivative
rules (the GLU family's and ``gated_mlp``'s) evaluate a gate through :func:`evaluate`, so they
agree at every input.

Adding a gate touches three files: one row here (plus, for a new activation, one row of
``ACTIVATIONS``), its two public functions ``<name>`` and ``<name>_packed`` in ``glu.py`` (typed
one-liners whose docstrings are filled from the row) and their export from ``hadamard_jax``.
The row carries the functions' docstrings (:class:`GateDoc`) and its plain
``jax.nn`` composition (``plain``): the reference the tests (float64 values and derivatives
included) and the benchmarks (:mod:`hadamard_jax.bench.gating`) compare the op with, collected
in :data:`PLAIN`. The asv parameter list (``benchmarks/figures.py`` reads the rows' names
without importing JAX), the docs' API entries and gate table (built by ``docs/_ext/gate_docs.py``)
follow the table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hadamard_jax._src import activations, checks


class Example(NamedTuple):
    """A gate's doctest example: ``<name>(gate, value)`` and ``<name>_packed(x)`` on the same
    numbers (``x`` is ``value + gate`` for ``layout="halves"``, the pairs ``(gate, value)`` for
    ``"interleaved"``), both printing ``output``."""

    gate: tuple[float, ...]
    value: tuple[float, ...]
    output: str
    layout: str = "halves"


class GateDoc(NamedTuple):
    """The prose of a gate's two public functions, between the summary line (which stays in the
    function, where IDEs read it) and the end; :func:`hadamard_jax._src.glu.documented` puts it
    together with the Args, Returns and Raises of each layout. Empty parts are left out.

    Attributes:
      math: the ``.. math::`` formula of ``<name>(gate, value)`` (LaTeX, one or more lines).
      notes: remarks after it.
      example: the doctest example of both functions (``None``: none).
      see_also: the text of a closing "See also:" section of ``<name>``.
      packed_math: ``math`` of ``<name>_packed(x)``.
      packed_notes: ``notes`` of ``<name>_packed(x)``.
      args: the Args lines of the gate's own arguments (its ``params``, ``approximate``), in
        both functions after the common ones.
    """

    math: str = ""
    notes: str = ""
    example: Example | None = None
    see_also: str = ""
    packed_math: str = ""
    packed_notes: str = ""
    args: str = ""


class Gate(NamedTuple):
    """A gated activation ``act(gate) * value`` (``act(gate) * (clip(value) + 1)`` if clamped).

    Attributes:
      name: the public name (the function, and the ``activation=`` value of the modules).
      activation: the key in ``ACTIVATIONS`` of ``act``.
      approximate: the key of the activation used with ``approximate=True`` (``None``: the
        gate has no approximate form and ``approximate=True`` is an error).
      formula: ``act(g)`` in words, for docs and error messages.
      params: the gate's static parameters and their defaults, passed to the activation in
        this order (e.g. ``(("alpha", 1.702), ("limit", 7.0))``).
      clamps_value: the value enters as ``clip(value, -limit, limit) + 1`` (gpt-oss).
      plain: ``act(g, *params)`` as a user writes it with ``jax.nn``/``jax.numpy``, independently
        of ``ACTIVATIONS``: the reference of the tests and the benchmarks (:data:`PLAIN`).
      plain_approximate: the same for the approximate form (``None`` without one).
      doc: the prose of its two public functions (:class:`GateDoc`), given with
        :meth:`with_doc`.
    """

    name: str
    activation: str
    approximate: str | None
    formula: str
    params: tuple[tuple[str, float], ...] = ()
    clamps_value: bool = False
    plain: Callable[..., jax.Array] | None = None
    plain_approximate: Callable[..., jax.Array] | None = None
    doc: GateDoc = GateDoc()

    def with_doc(self, **parts: Any) -> Gate:
        """This row with its docstring parts, the fields of :class:`GateDoc`."""
        return self._replace(doc=GateDoc(**parts))


def _plain_clamped_silu(g: jax.Array, alpha: float, limit: float) -> jax.Array:
    g = jnp.minimum(g, limit)
    return g * jax.nn.sigmoid(alpha * g)


#: The gates, in table order (read through :data:`GATES`).
_ROWS: tuple[Gate, ...] = (
    Gate("glu", "sigmoid", None, "sigmoid(g)", plain=jax.nn.sigmoid).with_doc(
        math=r"\mathrm{glu}(g, v)_i = \sigma(g_i)\, v_i",
        notes=r"""
        The derivative rule keeps only ``gate`` and ``value`` for the backward pass and uses
        :math:`\sigma'(g) = \sigma(g)\sigma(-g)` (exact in bfloat16 and at large :math:`|g|`).
        """,
        example=Example((0.0, 100.0), (2.0, 3.0), "Array([1., 3.], dtype=float32)"),
        see_also=":func:`glu_packed` for ``jax.nn.glu``'s packed layout.",
        packed_math=r"\mathrm{glu}(x) = x_{[:n]} \cdot \sigma(x_{[n:]})",
        packed_notes="""
        Bit-for-bit equal to ``jax.nn.glu(x, axis)`` for float32 and float64. For bfloat16 and
        float16 the sigmoid and the product are computed in float32 and rounded once, so results
        differ from ``jax.nn.glu`` (which rounds after each step) by rounding, usually towards the
        float32 result.
        """,
    ),
    Gate("bilinear", "identity", None, "g", plain=lambda g: g).with_doc(
        math=r"\mathrm{bilinear}(g, v)_i = g_i\, v_i",
        example=Example((-1.0, 2.0), (2.0, 3.0), "Array([-2.,  6.], dtype=float32)"),
    ),
    Gate("reglu", "relu", None, "relu(g)", plain=jax.nn.relu).with_doc(
        math=r"\mathrm{reglu}(g, v)_i = \max(g_i, 0)\, v_i",
        notes="As ``jax.nn.relu``, the derivative at ``gate == 0`` is 0.",
        example=Example((-1.0, 2.0), (2.0, 3.0), "Array([0., 6.], dtype=float32)"),
    ),
    Gate(
        "geglu",
        "gelu",
        "gelu_tanh",
        "gelu(g) = g Phi(g), exact (erf)",
        plain=functools.partial(jax.nn.gelu, approximate=False),
        plain_approximate=functools.partial(jax.nn.gelu, approximate=True),
    ).with_doc(
        math=r"\mathrm{geglu}(g, v)_i = g_i\, \Phi(g_i)\, v_i",
        notes=r"""
        with :math:`\Phi` the standard normal CDF, or its tanh approximation with
        ``approximate=True`` (as ``jax.nn.gelu(gate, approximate=approximate)``).
        """,
        example=Example((0.0, 100.0), (2.0, 3.0), "Array([  0., 300.], dtype=float32)"),
        args="approximate: use the tanh approximation of GELU (``jax.nn.gelu``'s flag).",
    ),
    Gate("swiglu", "silu", None, "silu(g) = g sigmoid(g)", plain=jax.nn.silu).with_doc(
        math=r"\mathrm{swiglu}(g, v)_i = g_i\, \sigma(g_i)\, v_i",
        notes="""
        The gated feed-forward layer of LLaMA-style models is ``swiglu(x @ W1, x @ W2) @ W3``.
        """,
        example=Example((0.0, 100.0), (2.0, 3.0), "Array([  0., 300.], dtype=float32)"),
        packed_notes="""
        For a fused projection ``x @ W`` with ``W = concat([W_up, W_gate], axis=1)``.
        """,
    ),
    Gate(
        "quick_geglu",
        "quick_gelu",
        None,
        "g sigmoid(1.702 g) (CLIP's QuickGELU)",
        plain=lambda g: g * jax.nn.sigmoid(1.702 * g),
    ).with_doc(
        math=r"\mathrm{quick\_geglu}(g, v)_i = g_i\, \sigma(1.702\, g_i)\, v_i",
        notes="""
        One ``sigmoid`` pair gives the value and the derivative (``s + 1.702 g s(1.702 g)
        s(-1.702 g)``); the limit at ``gate = -inf`` is 0.
        """,
        example=Example((0.0, 100.0), (2.0, 3.0), "Array([  0., 300.], dtype=float32)"),
    ),
    Gate(
        "squared_reglu",
        "squared_relu",
        None,
        "relu(g)^2 (Primer)",
        plain=lambda g: jnp.square(jax.nn.relu(g)),
    ).with_doc(
        math=r"\mathrm{squared\_reglu}(g, v)_i = \max(g_i, 0)^2\, v_i",
        example=Example((-1.0, 2.0), (2.0, 3.0), "Array([ 0., 12.], dtype=float32)"),
    ),
    Gate(
        "clamped_swiglu",
        "clamped_silu",
        None,
        "min(g, limit) sigmoid(alpha min(g, limit)), value clip(v, -limit, limit) + 1 (gpt-oss)",
        params=(("alpha", 1.702), ("limit", 7.0)),
        clamps_value=True,
        plain=_plain_clamped_silu,
    ).with_doc(
        math=r"""
        g' = \min(g, \ell),\quad v' = \mathrm{clip}(v, -\ell, \ell),\quad
        \mathrm{out} = g'\, \sigma(\alpha g')\, (v' + 1)
        """,
        notes="""
        The clamps' derivatives are JAX's: zero outside the limits and one half at a limit (as
        ``jnp.minimum``/``jnp.clip`` differentiate a tie), so gradients equal the plain
        composition's. For gpt-oss's interleaved storage use
        ``clamped_swiglu_packed(x, layout="interleaved")``.
        """,
        example=Example(
            (0.0, 100.0), (2.0, 30.0), "Array([ 0.      , 55.999626], dtype=float32)", "interleaved"
        ),
        args=(
            "alpha: the sigmoid's slope, a static number > 0 (gpt-oss: 1.702).\n"
            "limit: the clamp of gate and value, a static number > 0 (gpt-oss: 7.0)."
        ),
    ),
)

#: The gates, by name: the table every consumer reads.
GATES: dict[str, Gate] = {gate.name: gate for gate in _ROWS}

#: The gate names, in table order (the ``activation=`` choices).
NAMES: tuple[str, ...] = tuple(GATES)

Plain = tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]


def _plain_of(gate: Gate, act: Callable[..., jax.Array]) -> Plain:
    """``(act, value)`` at the row's default parameters: the output is ``act(g) * value(v)``."""
    defaults = dict(gate.params)
    values = tuple(defaults.values())

    def plain_act(g: jax.Array) -> jax.Array:
        return act(g, *values)

    def plain_value(v: jax.Array) -> jax.Array:
        if not gate.clamps_value:
            return v
        return jnp.clip(v, -defaults["limit"], defaults["limit"]) + 1.0

    return plain_act, plain_value


def _plain_table() -> dict[str, Plain]:
    table = {}
    for gate in GATES.values():
        if gate.plain is not None:
            table[gate.name] = _plain_of(gate, gate.plain)
        if gate.plain_approximate is not None:
            table[f"{gate.name}_tanh"] = _plain_of(gate, gate.plain_approximate)
    return table


#: The plain ``jax.nn`` composition of every gate (and of its approximate form, as
#: ``"<name>_tanh"``) at its default parameters, from the rows' ``plain`` fields, as
#: ``(act, value)``: the output is ``act(gate) * value(v)`` (``value`` is the identity except
#: for a clamped gate). The reference of the tests and of :mod:`hadamard_jax.bench.gating`.
PLAIN: dict[str, Plain] = _plain_table()


class Spec(NamedTuple):
    """What a derivative rule needs of a gate: static and hashable.

    Attributes:
      activation: key of ``ACTIVATIONS``.
      params: the activation's static parameters, in the row's order.
      value_limit: ``None``, or the ``limit`` of a clamped value ``clip(v, -limit, limit) + 1``.
    """

    activation: str
    params: tuple[float, ...] = ()
    value_limit: float | None = None


def spec_of(
    name: Any,
    approximate: Any,
    op: str,
    params: Mapping[str, Any] | None = None,
    arg: str = "activation",
) -> Spec:
    """The :class:`Spec` of gate ``name``, checking every argument.

    Args:
      name: a gate name (:data:`NAMES`).
      approximate: a bool; ``True`` only for a gate with an approximate form.
      op: the caller, for messages.
      params: values for the gate's parameters (missing ones take the row's defaults).
      arg: the argument's name, for messages.

    Raises:
      TypeError: ``name`` is not a string; ``approximate`` is not a bool; a parameter is not
        a static number.
      ValueError: ``name`` is not in the table; ``approximate=True`` for a gate without an
        approximate form; an unknown parameter; a parameter out of range.
    """
    gate = GATES[checks.check_choice(name, arg, op, tuple(GATES))]
    activation = gate.activation
    if checks.check_bool(approximate, "approximate", op):
        if gate.approximate is None:
            with_approx = [g.name for g in GATES.values() if g.approximate is not None]
            raise ValueError(
                f"{op}: approximate=True applies to {arg} in {with_approx}, not {name!r}."
            )
        activation = gate.approximate
    given = dict(params or {})
    unknown = sorted(set(given) - {key for key, _ in gate.params})
    if unknown:
        allowed = [key for key, _ in gate.params]
        raise ValueError(f"{op}: gate {name!r} takes parameters {allowed}, not {unknown}.")
    values = tuple(
        checks.static_real(given.get(key, default), key, op, lambda v: v > 0, "a number > 0")
        for key, default in gate.params
    )
    limit = dict(zip((key for key, _ in gate.params), values)).get("limit")
    return Spec(activation, values, limit if gate.clamps_value else None)


def plain_spec_of(name: Any, op: str) -> Spec:
    """The :class:`Spec` of a gate whose value enters as is (not clamped), or a ``ValueError``.

    For ops that apply a gate's activation to something other than a free value (the gated
    RMS norm)."""
    spec = spec_of(name, False, op)
    if spec.value_limit is not None:
        raise ValueError(f"{op}: activation={name!r} transforms its value; use a plain gate.")
    return spec


def activation_of(name: Any, approximate: Any, op: str, arg: str = "activation") -> str:
    """The ``ACTIVATIONS`` key of gate ``name`` (checking both arguments; see :func:`spec_of`)."""
    return spec_of(name, approximate, op, arg=arg).activation


def evaluate(spec: Spec, gate: jax.Array, value: jax.Array):
    """``(h, dh/dgate, dh/dvalue)`` of ``h = act(gate) * value'`` from one activation call.

    ``value' = value``, or ``clip(value, -limit, limit) + 1`` for a clamped gate. The forward
    pass takes ``h`` (XLA drops the derivatives), the rules take all three, so the value and
    both derivatives agree at every input (``dh/dvalue`` is ``act(gate)`` bit for bit for an
    unclamped gate).
    """
    row = activations.ACTIVATIONS[spec.activation]
    act, act_grad = row.value_and_grad(gate, *spec.params)
    if spec.value_limit is None:
        dh_dvalue, value_in = act, value
    else:
        limit = spec.value_limit
        dh_dvalue = act * activations.clamp_grad(value, -limit, limit)
        value_in = jax.numpy.clip(value, -limit, limit) + 1.0
    if row.scaled is not None:  # products grouped to stay finite wherever they are
        h, dh_dgate = row.scaled(gate, value_in, *spec.params)
    else:
        h, dh_dgate = act * value_in, act_grad * value_in
    return h, dh_dgate, dh_dvalue


def markdown_table() -> str:
    """The gate table as the Markdown table shown in ``docs/guides/gates.md`` (a test keeps them
    equal)."""
    lines = [
        "| gate | ops | `act(g)` | parameters | `approximate=True` |",
        "|---|---|---|---|---|",
    ]
    for gate in GATES.values():
        approx = f"`{gate.approximate}`" if gate.approximate else ""
        params = ", ".join(f"`{key}={value}`" for key, value in gate.params)
        ops = f"`{gate.name}(gate, value)`, `{gate.name}_packed(x)`"
        lines.append(f"| `{gate.name}` | {ops} | {gate.formula} | {params} | {approx} |")
    return "\n".join(lines)
