"""A shortened run of examples/sequential_digits.py: it learns above chance and prints its
progress as plain lines (stdout is not a terminal under pytest) and the test accuracy."""

import importlib.util
import pathlib
import re

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "sequential_digits.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("sequential_digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_run_learns(example, capsys):
    argv = ["--epochs", "3", "--width", "16", "--hidden", "32", "--depth", "1", "--lr", "1e-2"]
    result = example.main([*argv, "--seed", "1"])
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out  # no bar drawn off a terminal
    assert re.search(r"^\[ 1/3\] epoch 1: loss \d+\.\d{4} \(\d+\.\d s\)$", out, re.M), out
    assert re.search(r"^test accuracy: \d\.\d{4} \(train \d\.\d{4}\); \d+\.\d s on ", out, re.M)
    assert re.search(r"^seed 1, jax \S+, jaxlib \S+, flax \S+, optax ", out, re.M)
    assert "64 pixels; rglru, depth 1, width 16" in out
    assert result["test_accuracy"] > 0.3  # chance is 0.1


def test_flags(example):
    args = example.parse_args([])
    assert (args.cell, args.epochs, args.seed) == ("rglru", 20, 0)
    assert example.parse_args(["--cell", "mingru"]).cell == "mingru"
    with pytest.raises(SystemExit):
        example.parse_args(["--cell", "lstm"])
