"""The gate table: every gated activation ``act(gate) * value`` the library offers, in one place.

Each :class:`Gate` row names a gate and the activation it applies
(:data:`hadamard_jax._src.activations.ACTIVATIONS`). Everything that offers a choice of gate
reads this table: the two-input and packed ops of :mod:`hadamard_jax._src.glu`, the fused
:func:`hadamard_jax.gated_mlp`, the ``activation=`` argument of the Flax ``GLU`` and
``GatedMLP`` modules, the error messages that list the choices, and the tests.

Adding a gate is one row here (plus, for a new activation, one row of ``ACTIVATIONS``) and its
public names (``<name>`` and ``<name>_packed`` in ``glu.py``, exported from ``hadamard_jax``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hadamard_jax._src import checks


class Gate(NamedTuple):
    """A gated activation ``act(gate) * value``.

    Attributes:
      name: the public name (the function, and the ``activation=`` value of the modules).
      activation: the key in ``ACTIVATIONS`` of ``act``.
      approximate: the key of the activation used with ``approximate=True`` (``None``: the
        gate has no approximate form and ``approximate=True`` is an error).
      formula: ``act(g)`` in words, for docs and error messages.
    """

    name: str
    activation: str
    approximate: str | None
    formula: str


#: The gates, by name.
GATES: dict[str, Gate] = {
    gate.name: gate
    for gate in (
        Gate("glu", "sigmoid", None, "sigmoid(g)"),
        Gate("bilinear", "identity", None, "g"),
        Gate("reglu", "relu", None, "relu(g)"),
        Gate("geglu", "gelu", "gelu_tanh", "gelu(g) = g Phi(g), exact (erf)"),
        Gate("swiglu", "silu", None, "silu(g) = g sigmoid(g)"),
    )
}

#: The gate names, in table order (the ``activation=`` choices).
NAMES: tuple[str, ...] = tuple(GATES)


def activation_of(name: Any, approximate: Any, op: str, arg: str = "activation") -> str:
    """The ``ACTIVATIONS`` key for gate ``name``, checking both arguments.

    Raises:
      TypeError: ``name`` is not a string; ``approximate`` is not a bool.
      ValueError: ``name`` is not in the table; ``approximate=True`` for a gate without an
        approximate form.
    """
    gate = GATES[checks.check_choice(name, arg, op, NAMES)]
    if not checks.check_bool(approximate, "approximate", op):
        return gate.activation
    if gate.approximate is None:
        with_approx = [g.name for g in GATES.values() if g.approximate is not None]
        raise ValueError(f"{op}: approximate=True applies to {arg} in {with_approx}, not {name!r}.")
    return gate.approximate


def markdown_table() -> str:
    """The gate table as the Markdown table shown in the README (a test keeps them equal)."""
    lines = [
        "| gate | ops | `act(g)` | `approximate=True` |",
        "|---|---|---|---|",
    ]
    for gate in GATES.values():
        approx = f"`{gate.approximate}`" if gate.approximate else ""
        ops = f"`{gate.name}(gate, value)`, `{gate.name}_packed(x, axis=-1)`"
        lines.append(f"| `{gate.name}` | {ops} | {gate.formula} | {approx} |")
    return "\n".join(lines)
