"""The documentation site: its API reference is complete, its guides run, and the release files
(LICENSE, CHANGELOG, the README's tested versions) agree with the code and ``pyproject.toml``.

Sphinx is not needed here: the reference pages are parsed as text. The build itself (with
warnings as errors) runs in ``.ci/run``.
"""

import importlib
import importlib.util
import pathlib
import re

import pytest

import hadamard_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = [
    "hadamard_jax",
    "hadamard_jax.nnx",
    "hadamard_jax.linen",
    "hadamard_jax.sparse",
    "hadamard_jax.bench",
]
# Pages with ```python blocks: every guide, and any other page that has some.
PAGES = sorted(
    path.relative_to(DOCS).as_posix()
    for path in DOCS.rglob("*.md")
    if "_build" not in path.parts and "```python\n" in path.read_text()
)


def gate_docs():
    """The docs' extension that generates the gate blocks of the pages (``docs/_ext``)."""
    spec = importlib.util.spec_from_file_location("gate_docs", DOCS / "_ext" / "gate_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_text(path: pathlib.Path) -> str:
    """A page as Sphinx reads it: its generated gate blocks filled in."""
    return gate_docs().fill(path.read_text())


def documented_names() -> set[str]:
    """Every name an ``.. autofunction::``, ``autoclass``, ``(auto)data`` of docs/api documents
    (the generated gate entries included)."""
    directive = r"(?:auto)?(?:function|class|data|attribute|exception)"
    pattern = re.compile(rf"^\.\. {directive}::\s+(\S+)", re.M)
    return {
        name for page in (DOCS / "api").glob("*.md") for name in pattern.findall(page_text(page))
    }


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_is_in_the_reference(module):
    public = importlib.import_module(module).__all__
    missing = sorted(
        f"{module}.{name}" for name in public if f"{module}.{name}" not in documented_names()
    )
    assert not missing, f"add these to a page of docs/api/: {missing}"


def test_every_documented_name_exists():
    # A renamed or removed function must leave the reference too (autodoc would only warn).
    for name in sorted(documented_names()):
        module, _, attribute = name.rpartition(".")
        assert module in PUBLIC_MODULES, name
        assert attribute in importlib.import_module(module).__all__, name


def test_the_guides_are_found():
    assert {f"guides/{name}.md" for name in ["getting_started", "gates", "sparse_training"]} <= set(
        PAGES
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    # A page's blocks run in order in one namespace, as a reader runs them one after another.
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    namespace: dict = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/{page} block {index}", "exec"), namespace)


def test_gate_blocks_are_generated_from_the_gate_table():
    from hadamard_jax._src.gates import GATES, markdown_table

    text = page_text(DOCS / "guides" / "gates.md")
    shown = text.split("<!-- gate-table -->\n", 1)[1].split("\n<!-- /gate-table -->", 1)[0]
    assert shown == markdown_table()
    assert len(shown.splitlines()) == 2 + len(GATES)
    api = page_text(DOCS / "api" / "hadamard_jax.md")
    for name in GATES:
        for function in (name, f"{name}_packed"):
            assert f".. autofunction:: hadamard_jax.{function}\n" in api, function
    # Other marked blocks are left alone; a misspelt gate block is an error, not an empty list.
    assert (
        gate_docs().fill("<!-- other -->\nx\n<!-- /other -->")
        == "<!-- other -->\nx\n<!-- /other -->"
    )
    with pytest.raises(ValueError, match="gate-tabel"):
        gate_docs().fill("<!-- gate-tabel -->\n<!-- /gate-tabel -->")


def pyproject() -> dict:
    import tomllib  # Python >= 3.11 (imported here: ruff's isort sees it as stdlib from py311 only)

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pyproject_versions_line() -> str:
    """The README's tested-versions line as ``pyproject.toml`` determines it."""
    project = pyproject()
    floors = [f"Python {project['requires-python'].replace('>=', '>= ')}"]
    for requirement in project["dependencies"]:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement).groups()
        floors.append(f"{name} >= {floor}")
    return "Tested versions: " + ", ".join(floors) + "."


def test_readme_states_the_pyproject_floors():
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- versions -->\n", 1)[1].split("\n<!-- /versions -->", 1)[0]
    expected = pyproject_versions_line()
    assert expected in shown, f"README.md's versions block must contain: {expected}"


def test_changelog_has_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", changelog, flags=re.M)
    assert versions and versions[0] == hadamard_jax.__version__


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    project = pyproject()
    assert project["license"] == "Apache-2.0" and "LICENSE" in project["license-files"]
