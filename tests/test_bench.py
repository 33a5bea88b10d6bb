"""The benchmark machinery at tiny sizes: report, CLI, kernels' byte counts, and the asv suite.

Timing figures are not asserted (they belong to the benchmarks); what is asserted is
deterministic: files written, table contents, STREAM byte counts against XLA's cost analysis,
saved-residual bytes, and that every asv benchmark's setup and one call run.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import itertools
import json
import math
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hadamard_jax.bench import cli, gating, kernels, progress, report, roofline, timing

ROOT = Path(__file__).resolve().parent.parent

TINY = report.Config(
    stream_n=64,
    sizes=(32,),
    dtypes=("float32",),
    matmul_sizes=(32,),
    ratio_sizes=(32, 64),
    gating_sizes=(16,),
    gating_dtypes=("float32",),
    rounds=2,
    ratio_rounds=3,
    min_sample_s=0.0,
    ffn={"batch": 8, "d": 8, "h": 16, "layers": 2},
    recurrence=(16, 8),
    sparse={"layers": 1, "d": 8, "h": 16},
    adapters={"n": 32, "r": 2, "batch": 8},
    linear_attention={"memory_t": (16,), "time_t": 16},
)


def _recurrence_rows(plain: str, memory_t, time_t, extra):
    """Rows in the form of ``linear_attention.rows`` / ``delta_rule.rows`` (their keys).

    The real ones compile three training steps per ``T`` (seconds each, at any size:
    tests/test_delta_rule.py and tests/test_gated_linear_attention.py run them); the report's
    handling of their rows is what is tested here.
    """
    out = []
    for t in memory_t:
        mib = {"token_scan": 4.0 * t, plain: 1.0 * t, "hadamard_jax": 0.2 * t}
        out.append(
            {
                "kind": "memory",
                "T": t,
                **{f"{k}_mib": v for k, v in mib.items()},
                "vs_token_scan": 0.05,
                "vs_plain_chunked": 0.2,
            }
        )
    if time_t is not None:
        ms = {"token_scan": 40.0, plain: 10.0, "hadamard_jax": 8.0}
        out.append(
            {
                "kind": "time",
                "T": time_t,
                **{f"{k}_ms": v for k, v in ms.items()},
                "vs_token_scan": 0.2,
                "vs_plain_chunked": 0.8,
                **extra,
            }
        )
    return out


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    from hadamard_jax.bench import delta_rule, linear_attention

    out = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            linear_attention,
            "rows",
            lambda *, growth_t, time_t, rounds: _recurrence_rows(
                "chunked_plain", growth_t, time_t, {"grad_err_hadamard_jax": 1e-7}
            ),
        )
        mp.setattr(
            delta_rule,
            "rows",
            lambda *, t, growth, rounds, time: _recurrence_rows(
                "plain_chunked", growth, t if time else None, {"grad_rel_err": 1e-7}
            ),
        )
        figures = report.run_report(TINY, out_dir=out, progress=lines.append)
    return figures, out, lines


def test_report_writes_json_png_and_prints_table(tiny_report):
    figures, out, lines = tiny_report
    saved = json.loads((out / "report.json").read_text())
    assert saved["stream"] == figures["stream"]
    assert (out / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [line for line in lines if line.startswith("[")]
    # element-wise x2, matmul, ratios x2, gating, memory, recurrence, sparse step, adapters,
    # gated linear attention, gated delta rule
    n_steps = 2 + 1 + 2 + len(gating.NAMES) + 1 + 1 + 1 + 1 + 2
    assert len(steps) == n_steps and steps[-1].startswith(f"[{n_steps}/{n_steps}]")
    text = "\n".join(lines)
    rec, sparse = saved["recurrence"], saved["sparse_step"]
    assert set(rec["temp_bytes"]) == {"lax_scan", "associative_scan", "hadamard_jax"}
    assert rec["temp_bytes"]["hadamard_jax"] < rec["temp_bytes"]["lax_scan"]
    assert rec["met"] == (rec["time_ratio"] <= rec["target"])
    assert sparse["met"] == (sparse["ratio"] <= sparse["target"]) and sparse["update_ratio"] > 0
    assert "Linear recurrence training step, T=16 D=8 fp32" in text
    assert "Sparse optimizer step (adamw" in text
    assert "Streaming bandwidth (STREAM add, jitted, donated, 64x64 float32)" in text
    assert "| op | n | dtype | pass | donated |" in text
    assert str(out / "roofline.png") in text


def test_report_figures_are_consistent(tiny_report):
    figures, _, _ = tiny_report
    ops = figures["ops"]
    # 2 sizes x (3 ops x 2 donation + 2 fwd+bwd) element-wise rows, then 1 matmul row.
    assert len(ops) == 2 * 8 + 1
    for row in ops:
        work = kernels.work(row["op"], row["n"], row["dtype"], backward=row["pass"] != "forward")
        assert row["gbps"] == pytest.approx(work.bytes / row["seconds"] / 1e9)
        assert row["gflops"] == pytest.approx(work.flops / row["seconds"] / 1e9)
    add = next(r for r in ops if r["op"] == "add" and r["n"] == 64 and r["donated"])
    had = next(r for r in ops if r["op"] == "hadamard" and r["n"] == 64 and r["donated"])
    mul = next(r for r in ops if r["op"] == "multiply" and r["n"] == 64 and r["donated"])
    reference = figures["targets"]["hadamard_donated_stream_fraction"]
    assert figures["stream"]["gbps"] == add["gbps"]
    assert reference["value"] == pytest.approx(had["gbps"] / add["gbps"])
    assert "met" not in reference and reference["reference"] == 0.9  # a reference, not a target
    target = figures["targets"]["hadamard_donated_vs_multiply"]
    assert target["value"] == pytest.approx(had["gbps"] / mul["gbps"])
    assert target["met"] == (target["value"] >= 0.9)
    assert figures["matmul_peak_gflops"] == max(r["gflops"] for r in ops if r["op"] == "matmul")


def test_report_hadamard_costs_what_multiply_costs(tiny_report):
    figures, _, _ = tiny_report
    rows = figures["hadamard_vs_multiply"]
    assert [r["n"] for r in rows] == [32, 64]
    for r in rows:
        assert r["cost_bytes_equal"], r
        assert r["cost_bytes_hadamard"] == kernels.work("hadamard", r["n"], "float32").bytes
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0


def test_report_gating_and_memory(tiny_report):
    figures, _, _ = tiny_report
    rows = {r["op"]: r for r in figures["gating"]}
    assert set(rows) == set(gating.NAMES)
    array = 16 * 16 * 4
    for name, r in rows.items():
        inputs = 3 if name == "highway" else 2
        assert r["saved_bytes_hadamard_jax"] == inputs * array, name
        assert r["saved_bytes_plain"] >= r["saved_bytes_hadamard_jax"], name
    assert rows["swiglu"]["saved_bytes_plain"] == 5 * array
    for name in ("bilinear", "reglu", "highway"):  # no activation: nothing to recompute
        cost = rows[name]["cost_per_element"]
        assert cost["hadamard_jax"]["transcendentals"] == cost["plain"]["transcendentals"] == 0
    cost = rows["swiglu"]["cost_per_element"]
    assert cost["plain"]["transcendentals"] >= 1 and cost["hadamard_jax"]["flops"] > 0
    temp = figures["training_memory"]["temp_bytes"]
    assert set(temp) == {"swiglu", "geglu"}
    assert all(set(v) == {"plain", "hadamard_jax", "remat"} for v in temp.values())
    assert all(b > 0 for v in temp.values() for b in v.values())


def test_table_says_met_or_missed_per_target_and_explains_best_median(tiny_report):
    figures, _, _ = tiny_report
    figures = copy.deepcopy(figures)
    # Was: only the target was printed, so a missed one (1.106 at 4096) looked like a pass.
    missed = figures["hadamard_vs_multiply"][-1]
    missed.update(ratio=1.206, ratio_median=1.15, met=False)
    figures["hadamard_vs_multiply"][0].update(ratio=0.99, ratio_median=1.0, met=True)
    figures["gating"][0].update(ratio=1.4, ratio_median=1.4, met=False)
    lines = report.format_table(figures).splitlines()
    row = next(line for line in lines if "| 1.206; 1.150 |" in line)
    assert "| median <= 1.1 MISSED (1.02) |" in row
    assert "| median <= 1.1 met (1.02) |" in next(
        line for line in lines if "| 0.990; 1.000 |" in line
    )
    gate = next(line for line in lines if line.startswith(f"| {figures['gating'][0]['op']} |"))
    assert f"| median <= {report.gating_target(16)} MISSED (1.15) |" in gate
    # Two targets per ratio row (time, cost bytes); a gating row has three (time, saved bytes,
    # transcendentals). References are in brackets, never "met" or "MISSED".
    prefixes = [(f"| forward, float32 | {r['n']} |", 2) for r in figures["hadamard_vs_multiply"]]
    prefixes += [(f"| {r['op']} | {r['n']} | {r['dtype']} |", 3) for r in figures["gating"]]
    for prefix, targets in prefixes:
        (line,) = [line for line in lines if line.startswith(prefix)]
        assert line.count(" met") + line.count(" MISSED") == targets, line
    note = next(line for line in lines if line.startswith("ratio (best; median)"))
    assert "best(ours) / best(plain)" in note and "median of the per-round ratios" in note


def test_gating_targets_are_the_median_per_size_and_transcendentals(tiny_report):
    figures, _, _ = tiny_report
    assert report.gating_aim(1024) == report.GATING_SMALL_TARGET > 1.0
    assert report.gating_aim(2048) == report.gating_aim(4096) == 1.0
    assert report.gating_target(1024) == report.gating_target(4096) == report.GATING_TIME_LIMIT
    backend = jax.default_backend()
    for r in figures["gating"]:
        assert r["target"] == report.gating_target(r["n"]) and r["aim"] == report.gating_aim(r["n"])
        assert r["met"] == (r["ratio_median"] <= r["target"]), r
        ours, plain = (r["cost_per_element"][i]["transcendentals"] for i in gating.IMPLS)
        target = report.transcendentals_target(r["op"], plain, backend)
        assert r["transcendentals_target"] == target
        assert r["transcendentals_met"] == (ours <= target), r
        # On this backend the rules meet their transcendental and residual targets: a miss is a
        # regression, not a known limit (the ideal 2 is a reference on XLA:CPU).
        assert r["transcendentals_met"] and r["saved_bytes_met"], r
        assert r["transcendentals_ideal"] == report.transcendentals_ideal(r["op"], plain)
    assert figures["targets"]["gating_max_ratio"] == max(
        r["ratio_median"] for r in figures["gating"]
    )
    full = report.Config()
    assert full.gating_sizes == (1024, 2048, 4096)
    assert full.gating_dtypes == ("float32", "bfloat16")


def test_roofline_draws_gating_ops_and_a_cache_roof(tiny_report):
    import matplotlib.pyplot as plt

    figures, _, _ = tiny_report
    points = roofline.gating_points(figures)
    assert {(p["op"], p["impl"]) for p in points} == {
        (name, impl) for name in gating.NAMES for impl in gating.IMPLS
    }
    for p in points:
        row = next(r for r in figures["gating"] if r["op"] == p["op"])
        flops = row["cost_per_element"][p["impl"]]["flops"] * 16 * 16
        nbytes = (8 if p["op"] == "highway" else 6) * 16 * 16 * 4
        assert p["intensity"] == pytest.approx(flops / nbytes)
        assert p["gflops"] == pytest.approx(flops / row[f"{p['impl']}_seconds"] / 1e9)
    # Element-wise only: a 32x32 matmul's GB/s sometimes beat them (was a flaky failure).
    small = [
        r["gbps"]
        for r in figures["ops"]
        if r["n"] == 32 and r["pass"] == "forward" and r["op"] != "matmul"
    ]
    assert roofline.cache_roof(figures) == (32, max(small))
    fig = roofline.draw(figures)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    for name in gating.NAMES:  # was: not drawn at all
        assert f"{name} fwd+bwd" in legend, legend
    # Was: three pairs of gating ops drawn in the same colour and marker.
    style = roofline.gating_style(list(gating.NAMES))
    colours, markers = zip(*style.values())
    assert len(set(colours)) == len(set(markers)) == len(gating.NAMES), style
    assert any(label.startswith("cache-resident (n=32)") for label in legend), legend


def test_check_lists_deterministic_misses_apart_from_timing(tiny_report):
    figures, _, _ = tiny_report
    figures = copy.deepcopy(figures)
    for r in figures["gating"]:  # timing misses alone do not gate
        r.update(met=False, ratio_median=2.0)
    figures["sparse_step"].update(met=False)
    misses = report.check(figures)
    assert len(misses["timing"]) >= len(figures["gating"]) + 1
    assert not [m for m in misses["deterministic"] if "transcendentals" in m or "keeps" in m]
    gate = figures["gating"][0]
    gate.update(transcendentals_met=False, saved_bytes_met=False)
    figures["hadamard_vs_multiply"][0]["cost_bytes_equal"] = False
    figures["training_memory"]["ratio"]["swiglu"] = 0.9
    det = report.check(figures)["deterministic"]
    assert sum(gate["op"] in m and ("transcendentals" in m or "keeps" in m) for m in det) == 2
    assert any("cost_analysis bytes" in m for m in det)
    assert any("FFN stack training step, swiglu: temp ours / plain 0.900 > 0.6" in m for m in det)
    text = report.format_check(report.check(figures))
    assert text.startswith("Targets missed: ") and "MISSED (deterministic): " in text


def test_report_has_the_adapters_and_the_chunked_recurrences(tiny_report):
    figures, out, lines = tiny_report
    saved = json.loads((out / "report.json").read_text())
    adapters, recurrences = saved["adapters"], saved["linear_attention"]
    assert adapters["size"] == {"n": 32, "r": 2, "batch": 8}
    rows = {r["op"]: r for r in adapters["rows"]}
    assert set(rows) == {"loha", "hira", "dora"}
    for r in rows.values():
        assert r["temp_ours"] > 0 and r["temp_peft"] > 0 and r["time_ours_s"] > 0
        assert r["temp_ratio"] == pytest.approx(r["temp_ours"] / r["temp_peft"])
        assert r["residuals_ours"] and r["residuals_peft"]
    assert rows["loha"]["temp_target"] == 0.25 and rows["loha"]["time_target"] == 0.5
    assert rows["hira"]["temp_target"] is None and rows["hira"]["temp_met"]  # a reference
    assert rows["loha"]["temp_met"] == (rows["loha"]["temp_ratio"] <= 0.25)
    ops = [(r["op"], r["kind"], r["T"]) for r in recurrences["rows"]]
    assert ops == [
        ("gated_linear_attention", "memory", 16),
        ("gated_linear_attention", "time", 16),
        ("gated_delta_rule", "memory", 16),
        ("gated_delta_rule", "time", 16),
    ]
    for r in recurrences["rows"]:  # the same keys for both ops
        figure = r["mib"] if r["kind"] == "memory" else r["ms"]
        assert set(figure) == {"token_scan", "plain_chunked", "hadamard_jax"}
        assert set(r["ratio"]) == set(r["met"]) == {"token_scan", "plain_chunked"}
        assert r["ratio"] == (
            {"token_scan": 0.05, "plain_chunked": 0.2}
            if r["kind"] == "memory"
            else {"token_scan": 0.2, "plain_chunked": 0.8}
        )
        assert r["met"] == {k: v <= r["target"][k] for k, v in r["ratio"].items()}
        assert r["target"] == report.LINEAR_ATTENTION_TARGETS[r["kind"]]
        assert figure["plain_chunked"] == r["T"] * (1.0 if r["kind"] == "memory" else 0) or (
            r["kind"] == "time" and figure["plain_chunked"] == 10.0 and r["grad_rel_err"] == 1e-7
        )
    text = "\n".join(lines)
    assert "Adapter training steps, in = out = 32, r = 2, batch 8" in text
    assert "| loha |" in text and "(reference)" in text
    assert "| gated_delta_rule | 16 | memory |" in text
    assert "| gated_linear_attention | 16 | time |" in text


def test_check_flags_adapter_and_recurrence_memory_as_deterministic(tiny_report):
    figures, _, _ = tiny_report
    figures = copy.deepcopy(figures)
    for r in figures["adapters"]["rows"]:
        r.update(temp_met=True, time_met=True)
    for r in figures["linear_attention"]["rows"]:
        r["met"] = {k: True for k in r["met"]}
    base = report.check(figures)
    loha = next(r for r in figures["adapters"]["rows"] if r["op"] == "loha")
    loha.update(time_ratio=0.9, time_met=False)  # slow: timing only
    slow = next(r for r in figures["linear_attention"]["rows"] if r["kind"] == "time")
    slow["met"]["plain_chunked"] = False
    slow["ratio"]["plain_chunked"] = 1.7
    misses = report.check(figures)
    assert misses["deterministic"] == base["deterministic"]
    new = [m for m in misses["timing"] if m not in base["timing"]]
    assert len(new) == 2 and any("adapter loha" in m and "0.900 > 0.5" in m for m in new)
    assert any("time ours / plain_chunked 1.700 > 1.0" in m for m in new)
    loha.update(temp_ratio=0.6, temp_met=False)  # too much memory: deterministic
    big = next(
        r
        for r in figures["linear_attention"]["rows"]
        if r["kind"] == "memory" and r["op"] == "gated_delta_rule"
    )
    big["met"]["token_scan"] = False
    big["ratio"]["token_scan"] = 0.3
    det = [m for m in report.check(figures)["deterministic"] if m not in base["deterministic"]]
    assert len(det) == 2 and any("temp ours / peft 0.600 > 0.25" in m for m in det)
    assert any("gated_delta_rule T=16: temp ours / token_scan 0.300 > 0.1" in m for m in det)


def test_cli_check_exits_1_on_a_deterministic_miss_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report.Config, "quick", classmethod(lambda cls: TINY))
    clean = {"deterministic": [], "timing": ["a slow row"]}
    monkeypatch.setattr(report, "check", lambda figures: clean)
    assert cli.main(["--quick", "--check", "--out", str(tmp_path)]) == 0
    missed = {"deterministic": ["a row"], "timing": []}
    monkeypatch.setattr(report, "check", lambda figures: missed)
    assert cli.main(["--quick", "--check", "--out", str(tmp_path)]) == 1
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0  # without --check: informational
    assert "--check: a deterministic target was missed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module, prog",
    [
        ("hadamard_jax", "python -m hadamard_jax"),
        ("hadamard_jax.bench", "python -m hadamard_jax.bench"),
        ("hadamard_jax.bench.ffn_stack", "python -m hadamard_jax.bench.ffn_stack"),
        ("hadamard_jax.bench.flax_stack", "python -m hadamard_jax.bench.flax_stack"),
        ("hadamard_jax.bench.sparse_step", "python -m hadamard_jax.bench.sparse_step"),
        ("hadamard_jax.bench.gating", "python -m hadamard_jax.bench.gating"),
        ("hadamard_jax.bench.recurrence", "python -m hadamard_jax.bench.recurrence"),
    ],
)
def test_every_entry_point_help_names_its_command_and_defaults(module, prog):
    # Was: `python -m hadamard_jax --help` said `usage: python -m hadamard_jax.bench`, the
    # workloads `usage: ffn_stack.py` with neither help nor defaults for their flags.
    env = dict(os.environ, COLUMNS="200")
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout
    assert out.startswith(f"usage: {prog} [-h]"), out
    flags = [line for line in out.splitlines() if line.startswith("  --")]
    assert flags, out
    for line in flags:  # each flag documented, with its default
        assert "(default: " in line and len(line.split()) > 3, line


def test_cli_quick_runs_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report.Config, "quick", classmethod(lambda cls: TINY))
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "hadamard / jnp.multiply" in out
    assert "Targets missed: " in out
    assert "\r" not in out + err and "\x1b" not in out + err  # not a terminal: plain lines
    assert (tmp_path / "report.json").exists() and (tmp_path / "roofline.png").exists()


def test_cli_without_matplotlib_writes_json_and_table(tmp_path, monkeypatch, capsys):
    # Was: measured, then crashed importing matplotlib before report.json was written.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(report.Config, "quick", classmethod(lambda cls: TINY))
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| op | n | dtype | pass | donated |" in out
    skipped = [line for line in out.splitlines() if "roofline.png skipped" in line]
    assert len(skipped) == 1 and "hadamard_jax[bench]" in skipped[0]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["files"]["roofline"] is None and saved["stream"]["n"] == TINY.stream_n
    assert not (tmp_path / "roofline.png").exists()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_step_progress_draws_a_bar_only_on_a_terminal(terminal):
    live = _Terminal() if terminal else io.StringIO()
    lines: list[str] = []
    bar = progress.StepProgress(3, emit=lines.append, live=live)
    for i in range(3):
        bar.start(f"step {i}")
        bar.done(f"summary {i}", seconds=0.5)
    assert lines == [f"[ {i + 1}/3] step {i}: summary {i} (0.5 s)" for i in range(3)]
    if terminal:
        drawn = live.getvalue()
        assert "\r" in drawn and "1/3 step 0 ..." in drawn and "[####################]" not in drawn
        assert drawn.endswith("\r\x1b[K")  # the bar is erased after the last step
    else:
        assert live.getvalue() == ""
    assert not any("\r" in line for line in lines)


def test_step_progress_isatty():
    assert not progress.isatty(io.StringIO())
    assert progress.isatty(_Terminal())
    assert not progress.isatty(None)
    closed = io.StringIO()
    closed.close()
    assert not progress.isatty(closed)


@pytest.mark.parametrize(
    "op, dtype",
    [(op, dtype) for op in kernels.ELEMENTWISE for dtype in kernels.DTYPES]
    # A bfloat16 matmul runs in float32 on CPU: XLA's count then includes the conversions.
    + [("matmul", "float32")],
)
def test_stream_byte_count_matches_cost_analysis(op, dtype):
    a, b, _ = kernels.inputs(op, 32, dtype)
    assert kernels.cost_bytes(kernels.FORWARD[op], a, b) == kernels.work(op, 32, dtype).bytes


def test_work_counts():
    assert kernels.work("hadamard", 4096, "float32") == (4096.0**2, 12 * 4096.0**2)
    assert kernels.work("multiply", 8, "bfloat16", backward=True) == (3 * 64.0, 6 * 64 * 2.0)
    assert kernels.work("matmul", 8, "float32", backward=True).flops == 6 * 8.0**3
    with pytest.raises(ValueError, match="kernels: op must be one of"):
        kernels.work("divide", 8, "float32")
    with pytest.raises(ValueError, match="donation"):
        kernels.forward_call("matmul", 8, "float32", donate=True)


@pytest.mark.parametrize("op", ["add", "hadamard", "multiply"])
def test_donated_chain_stays_in_range(op):
    call = kernels.forward_call(op, 32, "float32", donate=True)
    a0 = np.asarray(kernels.inputs(op, 32, "float32")[0])
    for _ in range(5):
        out = call()
    assert call.args[0] is out
    np.testing.assert_allclose(np.asarray(out), a0, rtol=1e-5)
    assert np.asarray(kernels.inputs(op, 32, "float32")[0]).shape == (32, 32)  # not consumed


def test_forward_backward_call_matches_jnp():
    out, da, db = kernels.forward_backward_call("hadamard", 16, "float32")()
    a, b, ct = kernels.inputs("hadamard", 16, "float32")
    np.testing.assert_array_equal(out, a * b)
    np.testing.assert_array_equal(da, ct * b)
    np.testing.assert_array_equal(db, ct * a)


def test_interleaved_and_ratio():
    counter = {"a": 0, "b": 0}

    def make(name):
        def call():
            counter[name] += 1
            return jax.block_until_ready(jnp.ones(4))

        return call

    samples = timing.interleaved({"a": make("a"), "b": make("b")}, rounds=4, min_sample_s=0.0)
    assert [len(s) for s in samples.values()] == [4, 4]
    assert counter == {"a": 2 + 4, "b": 2 + 4}  # warm-up calls, then one call per sample
    assert timing.median_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 1.0]) == 4.0
    assert timing.best_ratio([2.0, 4.0, 9.0], [4.0, 1.0, 1.0]) == 2.0
    assert timing.rate(3e9, 1.5) == 2.0
    assert timing.calls_per_sample(0.001, 0.01) == 10


# --- the asv suite --------------------------------------------------------------------------

_PREFIXES = ("time_", "track_", "peakmem_", "mem_", "timeraw_")
_BENCH_MODULES = ("benchmarks.common", "benchmarks.figures")


def _reload_suite():
    import benchmarks

    for name in _BENCH_MODULES:
        importlib.reload(importlib.import_module(name))
    modules = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("bench_"):
            modules.append(importlib.reload(importlib.import_module(f"benchmarks.{info.name}")))
    return modules


@pytest.fixture
def suite(request, monkeypatch):
    """The benchmark modules as asv imports them under ``HADAMARD_JAX_ASV=<param>``."""
    monkeypatch.setenv("HADAMARD_JAX_ASV", request.param)
    yield _reload_suite()
    monkeypatch.undo()
    _reload_suite()


def _benchmarks(modules):
    """``(cls, method name)`` of every benchmark asv discovers in ``modules``."""
    for module in modules:
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__ and name[0] != "_":
                for method in dir(cls):
                    if method.startswith(_PREFIXES):
                        yield cls, method


@pytest.mark.parametrize("suite", ["smoke"], indirect=True)
def test_every_benchmark_runs_at_its_smallest_params(suite):
    ran = set()
    classes = {cls for cls, _ in _benchmarks(suite)}
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        methods = [m for m in dir(cls) if m.startswith(_PREFIXES)]
        params = getattr(cls, "params", [])
        assert len(getattr(cls, "param_names", [])) == len(params), cls
        combos = itertools.product(*params) if params else [()]
        bench = cls()
        cache = (bench.setup_cache(),) if hasattr(cls, "setup_cache") else ()
        for combo in combos:
            try:
                if hasattr(bench, "setup"):
                    bench.setup(*cache, *combo)
            except NotImplementedError:
                continue  # a combination the class skips (e.g. donated matmul)
            for method in methods:
                value = getattr(bench, method)(*cache, *combo)
                if method.startswith("track_"):
                    assert isinstance(value, (int, float)) and value >= 0, (cls, method, combo)
            ran.add(cls.__name__)
            break  # the first combination that runs
    expected = {
        # tracked
        "Cost",
        "SavedResidual",
        "Transcendentals",
        "TempMemory",
        "TimeRatio",
        "Throughput",
        # deep grid
        "Forward",
        "ForwardBackward",
        "Bandwidth",
        "StreamFraction",
        "MatmulThroughput",
        "GatingTime",
        "GatingRatio",
        "GatingMemory",
        "TrainingMemory",
        "FlaxMemory",
    }
    assert expected <= ran, expected - ran


@pytest.mark.parametrize("suite", ["track"], indirect=True)
def test_tracked_suite_is_lower_is_better_and_gated(suite):
    from benchmarks import regression

    found = {}
    for cls, method in _benchmarks(suite):
        unit = getattr(getattr(cls, method), "unit", None)
        found[f"{cls.__module__}.{cls.__name__}.{method}"] = unit
        assert method.startswith("track_"), (cls, method)  # no time_: absolute time is drift
    tracked = {k.split(".", 1)[1]: u for k, u in found.items() if ".bench_tracked." in k}
    assert tracked == {
        "bench_tracked.Cost.track_cost_bytes": "bytes",
        "bench_tracked.Cost.track_cost_flops": "flops",
        "bench_tracked.Cost.track_cost_transcendentals": "transcendentals",
        "bench_tracked.SavedResidual.track_saved_residual_bytes": "bytes",
        "bench_tracked.TempMemory.track_temp_bytes": "bytes",
        "bench_tracked.Transcendentals.track_transcendentals_per_element": "transcendentals",
        "bench_tracked.TimeRatio.track_time_ratio": "x plain JAX",
        "bench_tracked.Throughput.track_gbps": "GB/s",
    }
    for name, unit in tracked.items():
        kind = regression.gate(name, unit)
        # Every tracked figure is gated, but GB/s (higher is better: display only).
        assert (kind is None) == (unit == "GB/s"), (name, unit, kind)
    assert regression.gate("bench_tracked.TimeRatio.track_time_ratio", "x plain JAX") == "factor"
    assert regression.gate("bench_tracked.Cost.track_cost_bytes", "bytes") == "exact"
    deep = {"Forward", "GatingTime", "TrainingMemory", "Bandwidth"}
    assert not deep & {k.split(".")[2] for k in found}  # the deep grid only when asked


def test_gating_ratio_table_has_a_line_per_gate_size_and_dtype():
    lines = list(gating.ratio_table([8, 16], ["float32"], rounds=2, min_sample_s=0.0))
    assert lines[0].startswith("dtype") and len(lines) == 1 + 2 * len(gating.NAMES)
    for line, (n, name) in zip(lines[1:], itertools.product([8, 16], gating.NAMES)):
        dtype, size, op, median, best, counts = line.split()
        assert (dtype, int(size), op) == ("float32", n, name)
        assert float(median) > 0 and float(best) > 0
        ours, plain = (
            gating.cost(name, impl, n, "float32")["transcendentals"] for impl in gating.IMPLS
        )
        assert counts == f"{ours:.0f}|{plain:.0f}"


@pytest.mark.parametrize("suite", ["track"], indirect=True)
def test_asv_gating_axis_lists_every_gate_of_the_table(suite):
    # Was: the three gates added with the gate table were not tracked (the axis is spelled out
    # so that discovery needs no JAX).
    from benchmarks import figures

    assert figures.GATING == list(gating.NAMES)


def test_asv_gate_rows_are_the_gate_table():
    # figures.GATING reads the rows from the source of hadamard_jax/_src/gates.py (importing it
    # would import JAX): the same gates, in table order, with the same approximate forms.
    from benchmarks import figures
    from hadamard_jax._src import gates

    table = [(gate.name, gate.approximate is not None) for gate in gates.GATES.values()]
    assert figures.gate_rows() == table


def test_benchmark_modules_import_without_jax():
    # A benchmark that only reads a figure from setup_cache must not pay JAX's import (~1.5 s
    # a process), and discovery must work on commits whose hadamard_jax lacks the bench code.
    code = (
        "import sys, pkgutil, importlib, benchmarks\n"
        "for m in pkgutil.iter_modules(benchmarks.__path__):\n"
        "    importlib.import_module('benchmarks.' + m.name)\n"
        "print(sorted(k for k in ('jax', 'hadamard_jax') if k in sys.modules))\n"
    )
    for mode in ("track", "deep", "smoke"):
        env = {**os.environ, "HADAMARD_JAX_ASV": mode}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]", (mode, out.stdout)


def test_figures_skip_what_an_old_commit_lacks(monkeypatch):
    from benchmarks import common, figures
    from hadamard_jax.bench import gating

    monkeypatch.delattr(gating, "cost")  # as in commits before gating.cost existed
    value = figures._guard(lambda: figures._cost("swiglu"))
    assert isinstance(value, str) and value.startswith(figures.MISSING)
    with pytest.raises(NotImplementedError):
        common.skip_if_missing(value)
    common.skip_if_missing(1.0)


def test_figures_ratio_uses_the_fastest_samples():
    from benchmarks import figures

    samples = {"ours": [2.0] * 20 + [9.0] * 4, "plain": [1.0] * 20 + [0.1]}
    # k = max(3, 24 // 12) = 3 fastest of each: one lucky plain sample cannot double the ratio.
    assert figures.ratio(samples) == pytest.approx(2.0 / ((0.1 + 1.0 + 1.0) / 3))
    assert figures.median_ratio({"ours": [2.0, 4.0, 9.0], "plain": [1.0, 1.0, 1.0]}) == 4.0


_T = "bench_tracked."
_ROWS = [
    ("", "50331648.0", "50331648.0", "1.00", _T + "Cost.track_cost_bytes('hadamard')"),
    ("+", "8.39M", "12.6M", "1.50", _T + "SavedResidual.track_saved_residual_bytes('swiglu')"),
    ("+", "491M", "491M", "1.00", _T + "TempMemory.track_temp_bytes('ffn_swiglu')"),
    ("+", "1.0", "1.2", "~1.20", _T + "TimeRatio.track_time_ratio('glu')"),
    ("+", "1.0", "1.7", "1.70", _T + "TimeRatio.track_time_ratio('hadamard')"),
    ("-", "1.2", "0.6", "0.50", _T + "TimeRatio.track_time_ratio('reglu')"),
    ("+", "10.0", "30.0", "3.00", _T + "Throughput.track_gbps('hadamard')"),
    ("!", "1.0", "failed", "n/a", _T + "TimeRatio.track_time_ratio('swiglu')"),
    ("", "3145728.0", "n/a", "n/a", _T + "Cost.track_cost_flops('geglu')"),
    ("", "n/a", "2.0", "n/a", _T + "Cost.track_cost_flops('new_op')"),
    ("", "1.00s", "n/a", "n/a", "bench_hadamard.Forward.time_forward(256)"),
]


def _table(rows):
    """A table as ``asv compare`` prints it (github format)."""
    head = (
        "| Change | Before [29dd9f5e] <main> | After [779b3ea4] | Ratio | Benchmark (Parameter) |"
    )
    lines = ["All benchmarks:", "", head, "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


_COMPARE = _table(_ROWS)
_UNITS = {
    "bench_tracked.Cost.track_cost_bytes": "bytes",
    "bench_tracked.Cost.track_cost_flops": "flops",
    "bench_tracked.SavedResidual.track_saved_residual_bytes": "bytes",
    "bench_tracked.TempMemory.track_temp_bytes": "bytes",
    "bench_tracked.TimeRatio.track_time_ratio": "x plain JAX",
    "bench_tracked.Throughput.track_gbps": "GB/s",
    "bench_hadamard.Forward.time_forward": "seconds",
}


def test_regression_judges_a_compare_table():
    from benchmarks import regression

    rows = regression.parse_compare(_COMPARE)
    assert len(rows) == 11 and rows[0].name == "bench_tracked.Cost.track_cost_bytes('hadamard')"
    worse = regression.judge(rows, _UNITS, factor=1.3)
    flagged = [finding.name for finding in worse]
    assert flagged == [
        "bench_tracked.SavedResidual.track_saved_residual_bytes('swiglu')",
        # 491M -> 491M: the rounded display hides the change; asv's '+' (factor 1.0) does not
        "bench_tracked.TempMemory.track_temp_bytes('ffn_swiglu')",
        "bench_tracked.TimeRatio.track_time_ratio('hadamard')",  # 1.70 > 1.3; glu's 1.20 is not
        "bench_tracked.TimeRatio.track_time_ratio('swiglu')",  # failed at HEAD
        "bench_tracked.Cost.track_cost_flops('geglu')",  # measured at BASE, gone at HEAD
    ]  # GB/s (display), an improvement, a new benchmark and an ungated time_ are not flagged
    assert [f.kind for f in worse] == ["exact", "exact", "factor", "failed", "failed"]
    assert str(worse[2]).startswith("bench_tracked.TimeRatio.track_time_ratio('hadamard'): 1.0")
    assert regression.judge(rows, _UNITS, factor=2.0)[2].kind == "failed"  # 1.70 within 2x


def _fake_asv(tmp_path, table):
    script = tmp_path / "fake_asv.py"
    script.write_text(
        f"import sys\ntable = {table!r}\nprint(table if sys.argv[1] == 'compare' else '')\n"
    )
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    (results / "benchmarks.json").write_text(
        json.dumps({**{k: {"unit": u} for k, u in _UNITS.items()}, "version": 2})
    )
    return ["--asv", f"{sys.executable} {script}", "--results-dir", str(results), "--compare-only"]


def test_regression_command_exit_status(tmp_path, capsys):
    from benchmarks import regression

    args = _fake_asv(tmp_path, _COMPARE)
    assert regression.main(["HEAD~1", "HEAD", *args]) == 1
    err = capsys.readouterr().err
    assert "5 benchmark(s) got worse" in err and "track_time_ratio('hadamard')" in err
    same = "\n".join(
        line
        for line in _COMPARE.splitlines()
        if "| +" not in line and "| !" not in line and "n/a" not in line
    )
    assert regression.main(["HEAD~1", "HEAD", *_fake_asv(tmp_path, same)]) == 0
    assert "no regression" in capsys.readouterr().err
    assert regression.main(["HEAD", "HEAD", *args]) == 2  # main vs main: nothing compared
    assert "same commit" in capsys.readouterr().err
    assert regression.main(["HEAD~1", "HEAD", *_fake_asv(tmp_path, "no table")]) == 2


def test_asv_conf_parses_and_names_the_suite():
    from benchmarks import regression

    conf = regression._conf(ROOT)
    assert conf["benchmark_dir"] == "benchmarks" and conf["launch_method"] == "spawn"
    assert conf["results_dir"] == ".asv/results"


def test_regression_confirms_a_timing_regression_by_measuring_again(tmp_path, capsys):
    from benchmarks import regression

    slower = [row for row in _ROWS if "'hadamard'" in row[4] and "TimeRatio" in row[4]]
    calls = tmp_path / "calls.txt"
    script = tmp_path / "fake_asv.py"
    script.write_text(
        "import sys\n"
        f"tables = {[_table(slower), _table(_ROWS[:1])]!r}\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'compare':\n"
        f"    n = open({str(calls)!r}).read().count('compare ') - 1\n"
        "    print(tables[min(n, 1)])\n"
    )
    results = tmp_path / "results"
    results.mkdir()
    (results / "benchmarks.json").write_text(
        json.dumps({k: {"unit": u} for k, u in _UNITS.items()})
    )
    args = ["--asv", f"{sys.executable} {script}", "--results-dir", str(results)]
    # Flagged once (1.70x), gone when measured again: a false alarm, exit 0.
    assert regression.main(["HEAD~1", "HEAD", *args]) == 0
    runs = [line for line in calls.read_text().splitlines() if line.startswith("run ")]
    selected = "-b ^bench_tracked\\.TimeRatio\\.track_time_ratio\\('hadamard'\\)$"
    assert len(runs) == 2 and selected in runs[1]
    assert "confirming 1 timing regression(s)" in capsys.readouterr().err
    # Flagged both times: exit 1.
    calls.unlink()
    script.write_text(script.read_text().replace("min(n, 1)", "0"))
    assert regression.main(["HEAD~1", "HEAD", *args]) == 1
    assert "track_time_ratio('hadamard')" in capsys.readouterr().err


def test_timings_skip_on_a_commit_without_the_timing_module(monkeypatch):
    # Was: asv run over history failed (setup_cache ImportError) at the bench placeholder commit.
    from benchmarks import figures

    monkeypatch.setitem(sys.modules, "hadamard_jax.bench.timing", None)
    out = figures.timings()
    assert set(out) == set(figures.TIMED)
    assert all(v.startswith(figures.MISSING) for v in out.values())
