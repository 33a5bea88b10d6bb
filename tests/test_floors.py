"""The version floors declared in pyproject.toml are the ones CI tests (``.ci/floors.txt``)."""

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line!r}: one '>=' floor per dependency"
        floors[req.name] = lower[0]
    return floors


def _pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = Version(version)
    return pins


def test_every_dependency_floor_is_the_pin_ci_tests():
    declared, pinned = _declared(), _pinned()
    assert declared.keys() == pinned.keys(), (sorted(declared), sorted(pinned))
    for name, floor in declared.items():
        assert pinned[name] == floor, (
            f"{name}: pyproject says >={floor}, .ci/floors.txt {pinned[name]}"
        )


def test_requires_python_is_the_floor_environment():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = SpecifierSet(project["requires-python"])
    assert "3.11" in spec and "3.10" not in spec, spec  # jax >= 0.7 needs Python >= 3.11
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in spec
    run = (ROOT / ".ci" / "run").read_text()
    assert "python3.11 -m venv" in run and ".ci/floors.txt" in run
