"""The public API against its recorded list (``tests/public_api.json``).

Every public name of :mod:`hadamard_jax`, :mod:`hadamard_jax.nnx`, :mod:`hadamard_jax.linen`,
:mod:`hadamard_jax.sparse` and :mod:`hadamard_jax.bench` (each package's ``__all__``) is recorded
with, for a function, its parameters (name, kind, whether it has a default); for a class, the
parameters of its constructor (an NNX module's ``__init__``, a Linen module's or a dataclass's
fields), of its ``__call__`` and of its other public methods (``step``, ``current_mask``, ...);
for a constant, its value.

The test fails when a recorded name disappears, a parameter is lost or renamed, a parameter that
had a default loses it, a positional parameter moves or becomes keyword-only, or a constant
changes. New names and new optional parameters are allowed; the test prints them.

Re-record after an intended addition (never to hide a removal)::

    python -m tests.test_public_api --record
"""

from __future__ import annotations

import importlib
import inspect
import json
import pathlib
import sys
from typing import Any

RECORD = pathlib.Path(__file__).with_name("public_api.json")
PACKAGES = (
    "hadamard_jax",
    "hadamard_jax.nnx",
    "hadamard_jax.linen",
    "hadamard_jax.sparse",
    "hadamard_jax.bench",
)
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
#: The fields Flax adds after a Linen module's own.
FLAX_TAIL = ("parent", "name")


def _params(fn: Any, *, drop_self: bool = False) -> list[list[Any]]:
    params = list(inspect.signature(fn).parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [[p.name, p.kind.name, p.default is not inspect.Parameter.empty] for p in params]


def _own_call(cls: type) -> Any:
    """``cls.__call__`` when the library (not Python or Flax) defines it."""
    for klass in cls.__mro__:
        if "__call__" in vars(klass):
            return vars(klass)["__call__"] if klass.__module__.startswith("hadamard_jax") else None
    return None


def _methods(cls: type) -> dict[str, list[list[Any]]]:
    """The public methods the library defines on ``cls`` (``step``, ``current_mask``, ...)."""
    out = {}
    fields = getattr(cls, "__dataclass_fields__", {})  # defaults such as kernel_init
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("hadamard_jax"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in fields or name == "setup":  # setup: Flax's hook
                continue
            if isinstance(member, (classmethod, staticmethod)):
                out[name] = _params(member.__func__, drop_self=isinstance(member, classmethod))
            elif inspect.isfunction(member):
                out[name] = _params(member, drop_self=True)
    return dict(sorted(out.items()))


def _describe(obj: Any) -> dict[str, Any]:
    if inspect.isclass(obj):
        from flax import nnx

        init = obj.__init__ if issubclass(obj, nnx.Module) else obj
        entry: dict[str, Any] = {"kind": "class", "init": _params(init, drop_self=True)}
        call = _own_call(obj)
        if call is not None:
            entry["call"] = _params(call, drop_self=True)
        methods = _methods(obj)
        if methods:
            entry["methods"] = methods
        return entry
    if callable(obj):
        return {"kind": "function", "params": _params(obj)}
    if isinstance(obj, (str, int, float, bool, tuple)):
        return {"kind": "constant", "value": repr(obj)}
    return {"kind": type(obj).__name__}


def live_api() -> dict[str, dict[str, Any]]:
    """``{package: {name: description}}`` of the code as imported now."""
    api = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        api[package] = {name: _describe(getattr(module, name)) for name in sorted(module.__all__)}
        if "__version__" in api[package]:  # present, whatever the release
            api[package]["__version__"] = {"kind": "version"}
    return api


def _compare_params(where: str, old: list, new: list) -> tuple[list[str], list[str]]:
    broken, added = [], []
    new_by_name = {p[0]: p for p in new}
    has_var_kw = any(p[1] == "VAR_KEYWORD" for p in new)
    for name, kind, had_default in old:
        if name not in new_by_name:
            if not (kind == "KEYWORD_ONLY" and has_var_kw):
                broken.append(f"{where}: parameter {name!r} lost or renamed")
            continue
        _, new_kind, has_default = new_by_name[name]
        if had_default and not has_default:
            broken.append(f"{where}: parameter {name!r} lost its default (now required)")
        if kind in POSITIONAL and new_kind not in POSITIONAL:
            broken.append(f"{where}: parameter {name!r} no longer positional ({new_kind})")
        if kind == "POSITIONAL_OR_KEYWORD" and new_kind == "POSITIONAL_ONLY":
            broken.append(f"{where}: parameter {name!r} became positional-only")
    # Flax appends a Linen module's ``parent`` and ``name`` after its own fields, so a new field
    # lands before them: they are left out of the order (nobody passes them by position).
    old_pos = [p[0] for p in old if p[1] in POSITIONAL and p[0] not in FLAX_TAIL]
    new_pos = [p[0] for p in new if p[1] in POSITIONAL and p[0] not in FLAX_TAIL]
    if new_pos[: len(old_pos)] != old_pos and all(n in new_pos for n in old_pos):
        broken.append(f"{where}: positional order changed {old_pos} -> {new_pos}")
    old_names = {p[0] for p in old}
    for name, kind, has_default in new:
        if name in old_names:
            continue
        if not has_default and kind not in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            broken.append(f"{where}: new parameter {name!r} is required")
        else:
            added.append(f"{where}: new parameter {name!r}")
    return broken, added


def compare(recorded: dict, live: dict) -> tuple[list[str], list[str]]:
    """``(breaking changes, additions)`` of ``live`` against ``recorded``."""
    broken: list[str] = []
    added: list[str] = []
    for package, names in recorded.items():
        now = live.get(package, {})
        for name, old in names.items():
            where = f"{package}.{name}"
            if name not in now:
                broken.append(f"{where}: public name removed")
                continue
            new = now[name]
            if old["kind"] != new["kind"]:
                broken.append(f"{where}: was a {old['kind']}, now a {new['kind']}")
                continue
            if old["kind"] == "constant" and old["value"] != new["value"]:
                broken.append(f"{where}: value {old['value']} -> {new['value']}")
            signatures = {f: old[f] for f in ("params", "init", "call") if f in old}
            now_signatures = {f: new[f] for f in signatures if f in new}
            for method, params in old.get("methods", {}).items():
                signatures[f"method {method}"] = params
                if method in new.get("methods", {}):
                    now_signatures[f"method {method}"] = new["methods"][method]
            for field, params in signatures.items():
                if field not in now_signatures:
                    broken.append(f"{where}: {field} gone")
                    continue
                b, a = _compare_params(f"{where} ({field})", params, now_signatures[field])
                broken += b
                added += a
        added += [f"{package}.{name}: new public name" for name in now if name not in names]
    return broken, added


def test_public_api_kept():
    recorded = json.loads(RECORD.read_text())
    assert set(recorded) == set(PACKAGES)
    broken, added = compare(recorded, live_api())
    for line in added:
        print("added:", line)
    assert not broken, "public API broken:\n" + "\n".join(broken)


def test_compare_flags_breaks_and_allows_additions():
    # The comparison itself: each kind of break is caught, each allowed change passes.
    old = {
        "p": {
            "f": {
                "kind": "function",
                "params": [["x", "POSITIONAL_OR_KEYWORD", False], ["k", "KEYWORD_ONLY", True]],
            },
            "C": {"kind": "constant", "value": "'masks'"},
        }
    }

    def with_params(*params, constant="'masks'", extra=None):
        return {
            "p": {
                "f": {"kind": "function", "params": list(params)},
                "C": {"kind": "constant", "value": constant},
                **(extra or {}),
            }
        }

    x, k = ["x", "POSITIONAL_OR_KEYWORD", False], ["k", "KEYWORD_ONLY", True]
    assert compare(old, with_params(x, k)) == ([], [])
    broken, added = compare(
        old,
        with_params(
            x,
            ["y", "POSITIONAL_OR_KEYWORD", True],
            k,
            extra={"g": {"kind": "function", "params": []}},
        ),
    )
    assert not broken and len(added) == 2
    # A Linen field added before Flax's parent/name keeps the order; moving parent first breaks.
    pos = lambda n, d=True: [n, "POSITIONAL_OR_KEYWORD", d]  # noqa: E731
    linen = {
        "p": {"M": {"kind": "function", "params": [pos("a", False), pos("parent"), pos("name")]}}
    }
    grown = {
        "p": {
            "M": {
                "kind": "function",
                "params": [pos("a", False), pos("b"), pos("parent"), pos("name")],
            }
        }
    }
    assert compare(linen, grown)[0] == []
    moved = {"p": {"M": {"kind": "function", "params": [pos("b"), pos("a", False), pos("name")]}}}
    assert compare(linen, moved)[0]
    for live in (
        with_params(x),  # k lost
        with_params(x, ["k", "KEYWORD_ONLY", False]),  # k made required
        with_params(["x", "KEYWORD_ONLY", False], k),  # x no longer positional
        with_params(["z", "POSITIONAL_OR_KEYWORD", False], k),  # x renamed
        with_params(x, k, ["r", "KEYWORD_ONLY", False]),  # new required parameter
        with_params(x, k, constant="'mask'"),
        {"p": {"C": old["p"]["C"]}},  # f removed
    ):
        assert compare(old, live)[0], live


def _record() -> None:
    # One line per public name, so that a diff of the record reads as a diff of the API.
    packages = []
    for package, names in live_api().items():
        rows = ",\n".join(
            f"  {json.dumps(n)}: {json.dumps(d, sort_keys=True)}" for n, d in names.items()
        )
        packages.append(f" {json.dumps(package)}: {{\n{rows}\n }}")
    RECORD.write_text("{\n" + ",\n".join(packages) + "\n}\n")
    print(f"recorded {RECORD}")


if __name__ == "__main__":
    if "--record" in sys.argv[1:]:
        _record()
    else:
        test_public_api_kept()
        print("public API kept")
