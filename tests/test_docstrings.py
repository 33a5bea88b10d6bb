"""The one docstring filler (``hadamard_jax._src.docstrings``): blocks, inline text, typos.

Under ``python -OO`` filling is a no-op: ``test_import_under_python_OO`` below.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import pytest

from hadamard_jax._src import docstrings


def _obj(doc: str):
    def f():
        pass

    f.__doc__ = doc
    return f


def test_block_is_indented_like_its_placeholder_and_inline_text_stays_in_line():
    f = _obj("Pick {{KIND}}.\n\n    Args:\n      {{ARGS}}\n    Done.\n")
    docstrings.fill_in(f, KIND="``a`` or ``b``", ARGS="  x: one.\n\n    more.\n  y: two.\n")
    assert f.__doc__ == (
        "Pick ``a`` or ``b``.\n\n    Args:\n      x: one.\n\n        more.\n"
        "      y: two.\n    Done.\n"
    )


def test_an_empty_block_removes_its_line():
    assert docstrings.expand("a\n  {{X}}\nb", X="") == "a\nb"


def test_a_part_without_its_placeholder_is_an_error_naming_it():
    f = _obj("Choices: {{PATTERN}}.")  # the part below is misspelt
    with pytest.raises(ValueError, match=r"no placeholder \{\{PATTERNS\}\}.*"):
        docstrings.fill(PATTERNS="x")(f)
    assert f.__doc__ == "Choices: {{PATTERN}}."


def test_a_placeholder_without_its_part_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"\{\{GATES\}\} has no text"):
        docstrings.fill_in(_obj("{{GATES}} and {{PATHS}}"), PATHS="p")


def test_no_docstring_is_left_alone():
    f = _obj("")
    f.__doc__ = None
    assert docstrings.fill_in(f, X="x").__doc__ is None


def test_choices_quotes_strings_and_not_bools():
    assert docstrings.choices((True, False, "abba")) == '``True``, ``False`` or ``"abba"``'


def test_import_under_python_OO():
    script = (
        "import hadamard_jax as hj, hadamard_jax.nnx, hadamard_jax.linen, hadamard_jax.bench;"
        "print(float(hj.swiglu(1.0, 2.0)))"
    )
    result = subprocess.run(
        [sys.executable, "-OO", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert abs(float(result.stdout) - float(jax.nn.silu(1.0) * 2.0)) < 1e-6
