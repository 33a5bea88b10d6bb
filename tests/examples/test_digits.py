"""A shortened run of examples/digits.py: it learns, and pruning reaches its sparsity with
pruned weights exactly zero through fine-tuning."""

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "digits.py"


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_run_learns_and_prunes(digits, capsys):
    result = digits.main(
        [
            "--epochs",
            "5",
            "--finetune-epochs",
            "3",
            "--width",
            "64",
            "--hidden",  # width == hidden: fewer kernel shapes, 33 compilations instead of 48
            "64",
            "--seed",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "dense test accuracy" in out and "pruned test accuracy" in out and "[####" in out
    assert out.startswith("jax ") and ", flax " in out.splitlines()[0]  # the versions
    assert "\r" not in out  # captured output is not a terminal: no redrawn lines
    assert result["dense_accuracy"] > 0.85  # chance is 0.1
    assert result["pruned_accuracy"] > 0.7
    assert abs(result["sparsity"] - 0.9) < 1e-4
    assert result["pruned_weights_zero"] == 1.0
    # The change is signed as pruned - dense (was "+0.83 points lost" for a loss).
    change = 100 * (result["pruned_accuracy"] - result["dense_accuracy"])
    assert f"{change:+.2f} points)" in out


def test_seeds_report_mean_and_spread(digits, capsys):
    values = [0.975, 0.98, 0.985]
    assert digits.spread(values) == "98.00 +- 0.41 (97.50 .. 98.50)"
    args = ["--epochs", "1", "--finetune-epochs", "1", "--width", "64", "--hidden", "64"]
    result = digits.main([*args, "--seeds", "2", "--seed", "1"])
    out = capsys.readouterr().out
    assert "seed 1:" in out and "seed 2:" in out and "over 2 seeds (1..2)" in out
    runs = result["runs"]
    assert len(runs) == 2
    assert result["dense_accuracy"] == sum(r["dense_accuracy"] for r in runs) / 2
    assert f"dense test accuracy:  {digits.spread([r['dense_accuracy'] for r in runs])}" in out


def test_flags(digits):
    args = digits.parse_args(["--sparsity", "0.5", "--method", "magnitude"])
    assert args.sparsity == 0.5 and args.method == "magnitude" and args.epochs == 60
    assert args.seeds == 1
    with pytest.raises(SystemExit):
        digits.parse_args(["--method", "nope"])
