"""Import rules of the library, checked on the source with :mod:`ast` (a linter rule, not a test
of behaviour):

* no module imports a private name (``_x``, or a module path through ``_x``) from another
  top-level package of the library: ``hadamard_jax.nnx`` may not reach into
  ``hadamard_jax.linen._...`` or ``hadamard_jax.sparse._...``. The shared internals
  ``hadamard_jax._src`` and ``hadamard_jax._layers`` may be imported by any package, their
  public names only;
* the front ends do not import each other: ``hadamard_jax.linen`` nothing of
  ``hadamard_jax.nnx`` and the reverse;
* no import cycle among the modules of the library (``hadamard_jax.bench`` included), counting
  the imports a module runs when it is imported (module level, not ``if TYPE_CHECKING:`` and not
  inside functions).

Violations that are known and waiting for a fix are listed in ``KNOWN_PRIVATE`` and
``KNOWN_CYCLES``: the lists may only shrink (a listed violation that is gone fails the test
until it is struck off, so the list stays true).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "hadamard_jax"
SHARED = {"_src", "_layers"}

#: (importing module, imported module, name): private imports across packages, to be removed.
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()
#: Import cycles (each as its sorted modules), to be removed.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_name(path: pathlib.Path) -> str:
    parts = ["hadamard_jax", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, pathlib.Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    """The top-level package of ``module``: ``nnx``, ``linen``, ``_src``, ... (``""``: root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and f"hadamard_jax.{parts[1]}" in _packages() else ""


def _packages() -> set[str]:
    return {m for m, p in MODULES.items() if p.name == "__init__.py" and m != "hadamard_jax"}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, runtime: bool) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` of ``module``'s imports.

    ``runtime=True``: only those run at import (module level, outside ``if TYPE_CHECKING:``);
    otherwise every import statement, function bodies included.
    """
    tree = ast.parse(MODULES[module].read_text())
    if runtime:
        nodes, todo = [], list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If):
                todo += node.orelse if _is_type_checking(node) else node.body + node.orelse
            elif isinstance(node, ast.Try):
                todo += node.body + node.orelse + node.finalbody
                todo += [s for h in node.handlers for s in h.body]
            elif isinstance(node, ast.With):
                todo += node.body
            else:
                nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    out: list[tuple[str, str | None]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            out += [(source, a.name) for a in node.names]
    return [(m, n) for m, n in out if m == "hadamard_jax" or m.startswith("hadamard_jax.")]


def _target(source: str, name: str | None) -> str:
    """The library module an import loads: ``from a import b`` loads ``a.b`` if it is one."""
    if name is not None and f"{source}.{name}" in MODULES:
        return f"{source}.{name}"
    while source not in MODULES:
        source = source.rpartition(".")[0]
    return source


def private_imports() -> set[tuple[str, str, str]]:
    found = set()
    for module in MODULES:
        home = _package(module)
        for source, name in _imports(module, runtime=False):
            target = _target(source, name)
            there = _package(target)
            if there == home or not there:
                continue
            path = target.split(".")[1:]
            private_path = there not in SHARED and any(p.startswith("_") for p in path)
            private_name = name is not None and name.startswith("_") and target == source
            if private_path or private_name:
                found.add((module, source, name or ""))
    return found


def front_end_imports() -> set[tuple[str, str]]:
    found = set()
    for module in MODULES:
        home = _package(module)
        for source, name in _imports(module, runtime=False):
            there = _package(_target(source, name))
            if {home, there} == {"nnx", "linen"}:
                found.add((module, source))
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        module: {_target(s, n) for s, n in _imports(module, runtime=True)} - {module}
        for module in MODULES
    }


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_private_import_across_packages():
    found = private_imports()
    assert found <= KNOWN_PRIVATE, sorted(found - KNOWN_PRIVATE)
    fixed = sorted(KNOWN_PRIVATE - found)
    assert not fixed, ("fixed: strike them off KNOWN_PRIVATE", fixed)


def test_front_ends_do_not_import_each_other():
    assert not front_end_imports(), sorted(front_end_imports())


def test_no_import_cycle():
    found = cycles(import_graph())
    assert found <= KNOWN_CYCLES, sorted(found - KNOWN_CYCLES)
    fixed = sorted(KNOWN_CYCLES - found)
    assert not fixed, ("fixed: strike them off KNOWN_CYCLES", fixed)


def test_the_rules_catch_what_they_should():
    # The checks themselves, on small graphs and names.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": set()}) == set()
    assert _package("hadamard_jax.nnx._glu") == "nnx" and _package("hadamard_jax") == ""
    assert _target("hadamard_jax.bench", "gating") == "hadamard_jax.bench.gating"
    assert _target("hadamard_jax", "hadamard") == "hadamard_jax"
    assert len(MODULES) > 50 and "hadamard_jax.bench.cli" in MODULES
    graph = import_graph()
    assert "hadamard_jax.bench.gating" in graph["hadamard_jax.bench.report"]
    assert "hadamard_jax.bench.report" not in graph["hadamard_jax.bench.cli"]  # in a function
