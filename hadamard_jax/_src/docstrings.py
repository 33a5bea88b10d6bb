"""The one way the library fills docstrings from its tables (gates, patterns, paths, shared
argument descriptions), so a new table entry appears in every docstring that lists the choices.

A docstring holds placeholders ``{{NAME}}``. A placeholder alone on its line takes a block of
lines (argument descriptions, bullet lists), dedented and indented like the placeholder; one
inside a line takes a single line of text. :func:`fill` (a decorator) and :func:`fill_in` (a
call) replace them once the object is defined. A placeholder without a part, or a part without a
placeholder, is a ``ValueError``, so a typo fails at import; under ``python -OO`` docstrings are
``None`` (and a Linen dataclass gets its signature as ``__doc__``), and there is nothing to fill.

Example::

  >>> from hadamard_jax._src import docstrings
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
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
T = TypeVar("T")


def choices(values: Iterable[Any]) -> str:
    """``values`` as docstring prose: ````True``, ``False`` or ``"abba"````."""
    words = [f"``{v!r}``" if isinstance(v, bool) else f'``"{v}"``' for v in values]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)


def expand(doc: str, where: str = "a docstring", /, **parts: str) -> str:
    """``doc`` with every ``{{NAME}}`` replaced by ``parts[NAME]`` (see the module docstring).

    Raises:
      ValueError: a placeholder of ``doc`` has no part, or a part has no placeholder in ``doc``.
    """
    found = set(_PLACEHOLDER.findall(doc))
    if found != set(parts):
        problems = [f"{{{{{name}}}}} has no text" for name in sorted(found - set(parts))]
        problems += [f"no placeholder {{{{{name}}}}}" for name in sorted(set(parts) - found)]
        raise ValueError(f"the docstring of {where}: {'; '.join(problems)}.")
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


def fill_in(obj: T, /, **parts: str) -> T:
    """Replaces the placeholders of ``obj.__doc__`` by ``parts`` (nothing under ``python -OO``)."""
    doc = getattr(obj, "__doc__", None)
    if doc is None or sys.flags.optimize >= 2:  # a dataclass under -OO gets its signature
        return obj
    obj.__doc__ = expand(doc, repr(obj), **parts)
    return obj


def fill(**parts: str) -> Callable[[T], T]:
    """A decorator: :func:`fill_in` of the decorated object with ``parts``."""

    def decorate(obj: T) -> T:
        return fill_in(obj, **parts)

    return decorate
