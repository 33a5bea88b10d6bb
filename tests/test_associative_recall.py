"""A smoke run of examples/associative_recall.py (``--quick``): the data are what the task says,
every available mixer trains and reports an accuracy and a time in the printed format."""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "associative_recall.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("associative_recall_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batches_are_recall(example):
    rng = np.random.default_rng(0)
    tokens, targets = example.make_batch(rng, 8, 5, 12, 7)
    assert tokens.shape == targets.shape == (8, 15)
    for tok, tgt in zip(tokens, targets, strict=True):
        keys, values = tok[0:10:2], tok[1:10:2]
        assert len(set(keys)) == 5 and (keys < 12).all() and ((values >= 12) & (values < 19)).all()
        assert (tgt[:10] == -1).all() and sorted(tok[10:]) == sorted(keys)
        pairs = dict(zip(keys, values, strict=True))
        assert [pairs[q] for q in tok[10:]] == list(tgt[10:])


def test_quick_run(example, capsys):
    result = example.main(["--quick"])
    out = capsys.readouterr().out
    assert re.search(r"^associative recall: 4 pairs, T=12, .* load average \d+\.\d$", out, re.M)
    models = example.available_mixers()
    assert set(result) == set(models) and {"gdn", "rglru", "attention"} <= set(models)
    for name in models:
        line = rf"^{name} +accuracy \d\.\d{{3}} \+- \d\.\d{{3}} +time +\d+\.\d \+- +\d+\.\d s +\d+ "
        assert re.search(line + "parameters$", out, re.M), out
        r = result[name]
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["accuracy_std"] <= 0.5
        assert r["seconds"] > 0 and r["params"] > 1000


def test_flags(example):
    args = example.parse_args([])
    assert (args.pairs, args.seeds, args.quick) == (8, 3, False)
    assert example.parse_args(["--models", "gdn"]).models == ("gdn",)
    with pytest.raises(SystemExit):
        example.parse_args(["--models", "lstm"])
    with pytest.raises(SystemExit):
        example.parse_args(["--pairs", "100"])
