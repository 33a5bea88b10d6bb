"""The argument descriptions and choice lists that NNX and Linen docstrings share, so an
argument is described once and a list of choices is read from its table (a new gate appears in
every docstring that lists the gates). Filling goes through :mod:`hadamard_jax._src.docstrings`
(``{{NAME}}`` placeholders); :func:`fill` and :func:`expand` are re-exported from there.
"""

from __future__ import annotations

from hadamard_jax._src import gates
from hadamard_jax._src.docstrings import expand, fill

__all__ = ["GATES", "PLAIN_GATES", "expand", "fill"]


def _quoted(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f'``"{name}"``' for name in names)


#: Every gate of the gate table, as the ``activation=`` choices of ``GLU`` and ``GatedMLP``.
GATES = _quoted(gates.NAMES)
#: The gates whose value enters as is (all but the clamped ones): ``GatedRMSNorm``'s choices.
PLAIN_GATES = _quoted([g.name for g in gates.GATES.values() if not g.clamps_value])
