"""The gate table: every gated activation ``act(gate) * value`` the library offers, in one place.

Each :class:`Gate` row names a gate, the activation it applies
(:data:`hadamard_jax._src.activations.ACTIVATIONS`), its static parameters and whether the value
is clamped. Everything that offers a choice of gate reads this table: the two-input and packed
ops of :mod:`hadamard_jax._src.glu`, the fused :func:`hadamard_jax.gated_mlp`, the
``activation=`` argument of the Flax ``GLU`` and ``GatedMLP`` modules, the error messages that
list the choices, the docs' gate table (``docs/guides/gates.md``) and the tests. Both derivative
rules (the GLU family's and ``gated_mlp``'s) evaluate a gate through :func:`evaluate`, so they
agree at every input.

Adding a gate is one row here (plus, for a new activation, one row of ``ACTIVATIONS``) and its
public names (``<name>`` and ``<name>_packed`` in ``glu.py``, exported from ``hadamard_jax``).
The row carries its plain ``jax.nn`` composition (``plain``): the reference the tests and the
benchmarks (:mod:`hadamard_jax.bench.gating`) compare the op with, collected in :data:`PLAIN`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hadamard_jax._src import activations, checks


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
    """

    name: str
    activation: str
    approximate: str | None
    formula: str
    params: tuple[tuple[str, float], ...] = ()
    clamps_value: bool = False
    plain: Callable[..., jax.Array] | None = None
    plain_approximate: Callable[..., jax.Array] | None = None


def _plain_clamped_silu(g: jax.Array, alpha: float, limit: float) -> jax.Array:
    g = jnp.minimum(g, limit)
    return g * jax.nn.sigmoid(alpha * g)


#: The gates, by name.
GATES: dict[str, Gate] = {
    gate.name: gate
    for gate in (
        Gate("glu", "sigmoid", None, "sigmoid(g)", plain=jax.nn.sigmoid),
        Gate("bilinear", "identity", None, "g", plain=lambda g: g),
        Gate("reglu", "relu", None, "relu(g)", plain=jax.nn.relu),
        Gate(
            "geglu",
            "gelu",
            "gelu_tanh",
            "gelu(g) = g Phi(g), exact (erf)",
            plain=functools.partial(jax.nn.gelu, approximate=False),
            plain_approximate=functools.partial(jax.nn.gelu, approximate=True),
        ),
        Gate("swiglu", "silu", None, "silu(g) = g sigmoid(g)", plain=jax.nn.silu),
        Gate(
            "quick_geglu",
            "quick_gelu",
            None,
            "g sigmoid(1.702 g) (CLIP's QuickGELU)",
            plain=lambda g: g * jax.nn.sigmoid(1.702 * g),
        ),
        Gate(
            "squared_reglu",
            "squared_relu",
            None,
            "relu(g)^2 (Primer)",
            plain=lambda g: jnp.square(jax.nn.relu(g)),
        ),
        Gate(
            "clamped_swiglu",
            "clamped_silu",
            None,
            "min(g, limit) sigmoid(alpha min(g, limit)), value clip(v, -limit, limit) + 1 "
            "(gpt-oss)",
            params=(("alpha", 1.702), ("limit", 7.0)),
            clamps_value=True,
            plain=_plain_clamped_silu,
        ),
    )
}

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
    gate = GATES[checks.check_choice(name, arg, op, NAMES)]
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
