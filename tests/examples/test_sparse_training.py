"""A shortened run of examples/sparse_training.py: the table's structure and exact sparsities."""

import importlib.util
import pathlib

import pytest

from hadamard_jax._src.checks import count_of

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "sparse_training.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("sparse_training_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_run_prints_the_table_with_exact_sparsity(example, capsys):
    rows = example.main(
        [
            "--methods", "rigl",
            "--sparsities", "0.95",
            "--distribution", "uniform",
            "--epochs", "1",
            "--width", "32",
            "--hidden", "64",
            "--update-every", "5",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| method | target sparsity | test accuracy")
    assert len(lines) == 2 + 1 and "\r" not in out  # header, rule, 1 row; no bar off a tty
    assert "[ 1/1] rigl 0.95 seed 0: accuracy" in out
    # Kernels of the width-32 model: 64x32, 32x64 (gate, up), 64x32 (down), 32x10.
    sizes = [64 * 32, 32 * 64, 32 * 64, 64 * 32, 32 * 10]
    exact = sum(count_of(0.95, n) for n in sizes) / sum(sizes)
    (row,) = rows
    assert row["sparsity"] == exact and row["zero"] == 1.0
    assert 0.0 <= row["accuracy"] <= 1.0
    assert f"{exact:.4f}" in lines[-1] and "| yes |" in lines[-1]


def test_flags(example):
    args = example.parse_args([])
    assert args.sparsities == [0.9, 0.95] and args.distribution == "erk"
    with pytest.raises(SystemExit):
        example.parse_args(["--methods", "lottery"])
