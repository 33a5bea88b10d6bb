"""Docstrings with shared parts, so that NNX and Linen describe an argument once and a list of
choices is read from its table (a new gate appears in every docstring that lists the gates).

A docstring holds placeholders ``{{name}}``; :func:`fill` replaces them after the class is
defined. A placeholder alone on its line takes a block of lines (argument descriptions),
indented like the placeholder; one inside a line takes a single line of text.

Example::

  >>> from hadamard_jax._layers import docstrings
  >>> @docstrings.fill(gates="``a``, ``b``", args="x: one.\\ny: two.")
  ... class Layer:
  ...     '''Gates {{gates}}.
  ...
  ...     Args:
  ...       {{args}}
  ...     '''
  >>> print(Layer.__doc__)
  Gates ``a``, ``b``.
  <BLANKLINE>
      Args:
        x: one.
        y: two.
  <BLANKLINE>
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

from hadamard_jax._src import gates

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
T = TypeVar("T")


def _quoted(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f'``"{name}"``' for name in names)


#: Every gate of the gate table, as the ``activation=`` choices of ``GLU`` and ``GatedMLP``.
GATES = _quoted(gates.NAMES)
#: The gates whose value enters as is (all but the clamped ones): ``GatedRMSNorm``'s choices.
PLAIN_GATES = _quoted([g.name for g in gates.GATES.values() if not g.clamps_value])


def expand(doc: str, parts: dict[str, str]) -> str:
    """``doc`` with every ``{{name}}`` replaced by ``parts[name]`` (see the module docstring)."""
    lines: list[str] = []
    for line in doc.splitlines():
        alone = _PLACEHOLDER.fullmatch(line.strip())
        if alone:
            indent = line[: len(line) - len(line.lstrip())]
            block = textwrap.dedent(parts[alone[1]]).strip("\n").splitlines()
            lines.extend(indent + row if row.strip() else "" for row in block)
        else:
            lines.append(_PLACEHOLDER.sub(lambda m: parts[m[1]], line))
    return "\n".join(lines) + ("\n" if doc.endswith("\n") else "")


def fill(**parts: str) -> Callable[[T], T]:
    """A class decorator: the class docstring with its placeholders replaced by ``parts``."""

    def decorate(cls: T) -> T:
        cls.__doc__ = expand(cls.__doc__ or "", parts)
        return cls

    return decorate
