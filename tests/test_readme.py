"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


def test_readme_gate_table_is_the_code_gate_table():
    from hadamard_jax._src.gates import markdown_table

    text = README.read_text()
    shown = text.split("<!-- gate-table -->\n", 1)[1].split("\n<!-- /gate-table -->", 1)[0]
    assert shown.strip() == markdown_table()
