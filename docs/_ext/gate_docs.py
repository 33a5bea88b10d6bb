"""Sphinx extension: the pages' gate lists, generated from the gate table at build time.

A page marks a generated block with a pair of HTML comments, ``<!-- gate-functions -->`` and
``<!-- /gate-functions -->`` (the API entries of every gate's two functions, ``<name>`` and
``<name>_packed``, in table order) or ``<!-- gate-table -->`` and ``<!-- /gate-table -->`` (the
table of ``docs/guides/gates.md``, :func:`hadamard_jax._src.gates.markdown_table`). At
``source-read`` the text between the two comments is replaced by the block, so a new row of
``hadamard_jax/_src/gates.py`` appears on the pages without editing them. ``tests/test_docs.py``
reads the pages through :func:`fill` too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hadamard_jax._src import gates


def gate_functions() -> str:
    """An ``autofunction`` entry for ``hadamard_jax.<name>`` and ``<name>_packed`` of each gate."""
    names = [f"hadamard_jax.{name}{suffix}" for name in gates.GATES for suffix in ("", "_packed")]
    entries = "\n\n".join(f".. autofunction:: {name}" for name in names)
    return f"```{{eval-rst}}\n{entries}\n```"


BLOCKS: dict[str, Callable[[], str]] = {
    "gate-functions": gate_functions,
    "gate-table": gates.markdown_table,
}
_MARKED = re.compile(r"<!-- (gate-[\w-]+) -->\n.*?<!-- /\1 -->", re.S)


def fill(text: str) -> str:
    """``text`` with each marked block generated (an unknown ``gate-`` marker is a ``ValueError``;
    other comments are left alone)."""

    def block(match: re.Match[str]) -> str:
        name = match[1]
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block <!-- {name} -->; known: {list(BLOCKS)}")
        return f"<!-- {name} -->\n{BLOCKS[name]()}\n<!-- /{name} -->"

    return _MARKED.sub(block, text)


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    source[0] = fill(source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
