"""The benchmark report: measures this machine and writes a table, ``report.json`` and a roofline.

:func:`measure` runs a list of steps (each prints one progress line) and returns the figures as a
plain dict (the JSON written to ``report.json``); :func:`format_table` renders them;
:func:`run_report` does both and draws ``roofline.png``. ``python -m hadamard_jax.bench`` is the
command-line entry (:mod:`hadamard_jax.bench.cli`).

What is measured (see :mod:`hadamard_jax.bench.timing` for the timing rules and
:mod:`hadamard_jax.bench.kernels` for how bytes and flops are counted):

* the streaming bandwidth: the STREAM-style ``add`` kernel, jitted with its first argument
  donated, on ``stream_n x stream_n`` float32 arrays (far larger than the caches);
* each element-wise op's achieved GB/s, forward with and without donation and forward+backward,
  timed alternately with the ``add`` kernel so their fractions of the bandwidth compare like for
  like; ``hadamard`` donated over ``add`` donated at ``stream_n`` float32 is a reference figure
  (aim 0.9x: ``jnp.multiply`` itself measures 0.77-0.9x on a shared CPU), and the target is
  ``hadamard`` donated >= 0.9x ``jnp.multiply`` donated in the same alternation;
* matmul GFLOP/s (the compute roof);
* ``hadamard`` against ``jnp.multiply``, both jitted, timed alternately (target: median ratio
  <= 1.1, a regression limit; aim 1.02), and whether their compiled ``cost_analysis()``
  bytes accessed are equal (target);
* each gating op's fwd+bwd time over its plain ``jax.nn`` composition, alternately, at each of
  ``gating_sizes`` and ``gating_dtypes`` (target: median <= 1.3, :func:`gating_target`; the aim,
  parity from 2048^2 on, is a reference), the bytes each keeps for the backward pass (target: no
  more than plain), and the transcendentals per element of fwd+bwd, ours and plain (target:
  :func:`transcendentals_target`, what this backend's rule costs; the ideal 2 is a reference on
  XLA:CPU, which cannot share one transcendental between two outputs);
* compiled temp bytes of a scanned gated-FFN training step and of the Flax workload (targets:
  ours <= 0.6x plain; Flax ``GatedMLP`` <= 0.45x plain and <= remat), and of the linear
  recurrence (ours <= 0.55x ``lax.scan``, <= 0.2x ``associative_scan``);
* the adapters' training steps (:mod:`hadamard_jax.bench.adapters`) against HF peft's
  form-the-update way: compiled temp bytes (target: LoHa <= 0.25x peft; DoRA <= 1.0x), flops,
  step time alternated (target: LoHa <= 0.5x peft) and the residuals kept; HiRA a reference;
* the chunked matrix-state recurrences, gated linear attention
  (:mod:`hadamard_jax.bench.linear_attention`) and the gated delta rule
  (:mod:`hadamard_jax.bench.delta_rule`): compiled temp bytes of a training step per ``T``
  (targets: <= 0.1x the token-by-token ``lax.scan``, <= 0.5x the chunked algorithm under plain
  autodiff) and its time at one ``T`` (targets: <= 0.25x the token scan, <= 1.0x plain chunked).

Every target is one a change can regress on this backend: ``MISSED`` in the table means
something regressed or is wrong. :func:`check` lists the misses: deterministic ones (memory,
bytes, residuals, transcendentals; exit 1 under ``--check``) and timing ones (informational).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from hadamard_jax.bench import ffn_stack, gating, kernels, memory, timing
from hadamard_jax.bench.progress import StepProgress

#: Reference (not a target): hadamard donated over the STREAM add kernel donated.
STREAM_TARGET = 0.9
#: Target: hadamard donated over jnp.multiply donated, same alternation (an extra pass: <= 0.67).
DONATED_VS_MULTIPLY_TARGET = 0.9
#: hadamard over jnp.multiply, both jitted, median of the alternated rounds: the target is a
#: regression limit beyond shared-core noise (an extra pass over memory is >= 1.3x); the aim, a
#: reference, is MULTIPLY_RATIO_AIM (the same kernel: README's target).
MULTIPLY_RATIO_TARGET = 1.1
MULTIPLY_RATIO_AIM = 1.02
#: Reference aims of the gating ops' fwd+bwd time over plain (median of the alternated rounds):
#: parity from GATING_LARGE_N on (past the caches), GATING_SMALL_TARGET below. In fp32 the ops
#: with a transcendental sit at 0.9-1.25x on XLA:CPU (README, "Standalone gating ops"): an aim.
GATING_RATIO_TARGET = 1.0
GATING_SMALL_TARGET = 1.15
GATING_LARGE_N = 2048
#: The gating ops' timing target: the factor of the asv regression gate (beyond shared-core noise).
GATING_TIME_LIMIT = 1.3
#: Transcendentals per element of fwd+bwd for a rule that keeps only its inputs: one forward and
#: one backward (exact GELU may count erf apart: the plain count + 1). The ideal: a target where
#: the backend can share one transcendental between the two cotangents, a reference on XLA:CPU.
TRANSCENDENTALS_TARGET = 2
#: What the rules cost on XLA:CPU, which stores a shared transcendental instead of fusing its two
#: consumers: the value's own (sigmoid/silu, erfc) plus one for the derivative, recomputed in
#: the backward pass: 3 per element, 4 for exact GeGLU (erf and the density's exp).
CPU_TRANSCENDENTALS = 3
CPU_TRANSCENDENTALS_GEGLU = 4
#: Deterministic memory targets (compiled temp bytes of the training steps; README figures).
FFN_MEMORY_TARGET = 0.6
FLAX_MEMORY_TARGET = 0.45
RECURRENCE_MEMORY_TARGETS = {"lax_scan": 0.55, "associative_scan": 0.2}
#: Adapter targets, ours over peft's form-the-update step (issue 26): compiled temp bytes
#: (deterministic) and median alternated step time (timing). Ops without an entry: references.
ADAPTER_TEMP_TARGETS = {"loha": 0.25, "dora": 1.0}
ADAPTER_TIME_TARGETS = {"loha": 0.5}
#: Chunked matrix-state recurrences (issue 25), ours over each baseline: memory (compiled temp
#: bytes, deterministic) and time (median of alternated per-round ratios, timing).
LINEAR_ATTENTION_TARGETS = {
    "memory": {"token_scan": 0.1, "plain_chunked": 0.5},
    "time": {"token_scan": 0.25, "plain_chunked": 1.0},
}


@dataclasses.dataclass(frozen=True)
class Config:
    """What the report measures, and how long it samples.

    Attributes:
      stream_n: side of the float32 arrays for the streaming bandwidth and the donation target.
      sizes: sides at which each element-wise op's GB/s is measured (``stream_n`` is added).
      dtypes: dtypes of the element-wise and matmul figures.
      matmul_sizes: sides of the matmul GFLOP/s figures.
      ratio_sizes: sides of the float32 ``hadamard`` / ``jnp.multiply`` ratio.
      gating_sizes: sides of the gating ops' operands.
      gating_dtypes: dtypes of the gating ratios.
      rounds: alternation rounds for rates; ratio_rounds: for ratios.
      min_sample_s: each sample batches calls up to at least this long.
      ffn: ``batch, d, h, layers`` of the FFN-stack memory figure (compiled only, nothing
        allocated), or ``None`` to skip it.
      recurrence: ``(T, D)`` of the linear-recurrence training step (memory and time against
        ``lax.scan`` and ``associative_scan``), or ``None`` to skip it.
      sparse: ``layers, d, h`` of the sparse optimizer step (against dense adamw), or ``None``.
      adapters: ``n, r, batch`` of the adapters' training steps (LoHa, HiRA, DoRA against
        peft's way; ``n`` in = out features), or ``None`` to skip them.
      linear_attention: ``{"memory_t": (T, ...), "time_t": T or None}`` of gated linear
        attention and the gated delta rule (B=2, H=4, K=V=64 fp32): compiled temp memory at each
        ``memory_t`` and time at ``time_t``; ``None`` to skip both. The targets hold from
        T=1024 on: at short T the ops' fixed costs dominate (T=256: GLA 0.12x the token scan,
        T=64: 0.37x; both deterministic misses), so keep every ``memory_t`` >= 1024.
    """

    stream_n: int = 4096
    sizes: tuple[int, ...] = (1024, 4096)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    matmul_sizes: tuple[int, ...] = (1024, 4096)
    ratio_sizes: tuple[int, ...] = (1024, 4096)
    gating_sizes: tuple[int, ...] = (1024, 2048, 4096)
    gating_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    rounds: int = 12
    ratio_rounds: int = 21
    min_sample_s: float = 0.03
    ffn: ffn_stack.Size | None = dataclasses.field(
        default_factory=lambda: ffn_stack.Size(**ffn_stack.SIZE)
    )
    recurrence: tuple[int, int] | None = (4096, 1024)
    sparse: dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"layers": 2, "d": 512, "h": 2048}
    )
    adapters: dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"n": 4096, "r": 8, "batch": 2048}
    )
    linear_attention: dict[str, Any] | None = dataclasses.field(
        default_factory=lambda: {"memory_t": (1024, 4096, 16384), "time_t": 4096}
    )

    @classmethod
    def quick(cls) -> Config:
        """Float32 only, fewer sizes and rounds: about a minute on 2 CPU cores.

        That is the whole ``python -m hadamard_jax.bench --quick`` (JAX's import and the
        compilations included): 29 s wall time on the development machine before the adapters
        and the chunked recurrences were added. At a load of ~5 on 2 cores it took 102 s
        without them and 93 s with them (the load varied); their steps took 3 s (adapters)
        and 14 s each (the two recurrences' memory at T=1024, nearly all XLA compiling three
        training steps; the chunked ones take ~4.6 s each at any T). No recurrence is timed:
        the token scan takes ~0.3 s a step at T=1024, ~4 s at T=4096.
        """
        return cls(
            sizes=(1024,),
            dtypes=("float32",),
            matmul_sizes=(1024, 4096),
            gating_sizes=(1024,),
            gating_dtypes=("float32",),
            rounds=6,
            ratio_rounds=9,
            min_sample_s=0.02,
            recurrence=(4096, 256),
            sparse={"layers": 2, "d": 256, "h": 1024},
            adapters={"n": 1024, "r": 8, "batch": 512},
            # Memory only, at the smallest T where the targets hold (at T=256 GLA's fixed
            # costs make it 0.12x the token scan); the token scan is too slow to time here.
            linear_attention={"memory_t": (1024,), "time_t": None},
        )


Figures = dict[str, Any]
Progress = Callable[[str], None]


def _machine() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(device.device_kind),
    }


def _op_row(op: str, n: int, dtype: str, seconds: float, *, backward: bool, donated: bool):
    w = kernels.work(op, n, dtype, backward=backward)
    return {
        "op": op,
        "n": n,
        "dtype": dtype,
        "pass": "forward+backward" if backward else "forward",
        "donated": donated,
        "seconds": seconds,
        "gbps": timing.rate(w.bytes, seconds),
        "gflops": timing.rate(w.flops, seconds),
        "intensity": w.intensity,
    }


def elementwise_group(
    n: int, dtype: str, *, rounds: int, min_sample_s: float, backward: bool = True
) -> list[dict[str, Any]]:
    """Every element-wise kernel at ``(n, dtype)``, timed alternately in one process.

    Forward with and without donating ``a`` for each of :data:`kernels.ELEMENTWISE`, and
    forward+backward (not for ``add``) when ``backward``. The report and the asv suite's
    bandwidth figures both come from here.

    Returns:
      One row per kernel: ``op, n, dtype, pass, donated, seconds, gbps, gflops, intensity`` and
      ``stream_fraction``, its GB/s over ``add``'s with ``a`` donated.
    """
    calls: dict[tuple[str, bool, bool], timing.Call] = {}
    for op in kernels.ELEMENTWISE:
        calls[(op, False, True)] = kernels.forward_call(op, n, dtype, donate=True)
        calls[(op, False, False)] = kernels.forward_call(op, n, dtype)
        if backward and op != "add":
            calls[(op, True, False)] = kernels.forward_backward_call(op, n, dtype)
    samples = timing.interleaved(calls, rounds=rounds, min_sample_s=min_sample_s)
    rows = []
    for (op, back, donated), s in samples.items():
        rows.append(_op_row(op, n, dtype, timing.best(s), backward=back, donated=donated))
    reference = next(r["gbps"] for r in rows if r["op"] == "add" and r["donated"])
    for row in rows:
        row["stream_fraction"] = row["gbps"] / reference
    return rows


def _matmul(n: int, dtype: str, config: Config) -> dict[str, Any]:
    call = kernels.forward_call("matmul", n, dtype)
    samples = timing.interleaved(
        {"matmul": call}, rounds=max(3, config.rounds // 2), min_sample_s=config.min_sample_s
    )
    seconds = timing.best(samples["matmul"])
    return _op_row("matmul", n, dtype, seconds, backward=False, donated=False)


def _hadamard_vs_multiply(n: int, config: Config) -> dict[str, Any]:
    dtype = "float32"
    calls = {op: kernels.forward_call(op, n, dtype) for op in ("hadamard", "multiply")}
    samples = timing.interleaved(
        calls, rounds=config.ratio_rounds, min_sample_s=config.min_sample_s
    )
    a, b, _ = kernels.inputs("hadamard", n, dtype)
    cost = {op: kernels.cost_bytes(kernels.FORWARD[op], a, b) for op in calls}
    ratio = timing.best_ratio(samples["hadamard"], samples["multiply"])
    return {
        "n": n,
        "dtype": dtype,
        "ratio": ratio,
        "ratio_median": timing.median_ratio(samples["hadamard"], samples["multiply"]),
        "hadamard_seconds": timing.best(samples["hadamard"]),
        "multiply_seconds": timing.best(samples["multiply"]),
        "cost_bytes_hadamard": cost["hadamard"],
        "cost_bytes_multiply": cost["multiply"],
        "cost_bytes_equal": cost["hadamard"] == cost["multiply"],
        "aim": MULTIPLY_RATIO_AIM,
        "target": MULTIPLY_RATIO_TARGET,
        "met": timing.median_ratio(samples["hadamard"], samples["multiply"])
        <= MULTIPLY_RATIO_TARGET,
    }


def gating_aim(n: int) -> float:
    """The reference aim of a gating op's fwd+bwd time ratio at size ``n`` (median, ours/plain)."""
    return GATING_RATIO_TARGET if n >= GATING_LARGE_N else GATING_SMALL_TARGET


def gating_target(n: int) -> float:
    """The fwd+bwd time-ratio target of a gating op at size ``n`` (median, ours / plain).

    :data:`GATING_TIME_LIMIT` at every size: a regression limit beyond the noise of alternated
    timing on shared cores, as asv's gate; the aims (:func:`gating_aim`) are references.
    """
    del n
    return GATING_TIME_LIMIT


def transcendentals_ideal(name: str, plain: float) -> float:
    """The ideal transcendentals per element of fwd+bwd for gate ``name``, plain's count given.

    Examples:
      >>> from hadamard_jax.bench.report import transcendentals_ideal
      >>> transcendentals_ideal("swiglu", 1.0), transcendentals_ideal("geglu", 1.0)
      (2.0, 2.0)
    """
    if plain == 0:  # no transcendental in the op at all
        return 0.0
    if name == "geglu":  # erf (or erfc) and the density's exp are two
        return max(float(TRANSCENDENTALS_TARGET), plain + 1.0)
    return float(TRANSCENDENTALS_TARGET)


def transcendentals_target(name: str, plain: float, backend: str = "cpu") -> float:
    """The transcendentals-per-element target of fwd+bwd for gate ``name`` on ``backend``.

    On XLA:CPU what the rules cost there (:data:`CPU_TRANSCENDENTALS`; one more would be a
    regression); elsewhere the ideal, :func:`transcendentals_ideal`.

    Examples:
      >>> from hadamard_jax.bench.report import transcendentals_target
      >>> transcendentals_target("swiglu", 1.0), transcendentals_target("geglu", 1.0)
      (3.0, 4.0)
      >>> transcendentals_target("reglu", 0.0), transcendentals_target("swiglu", 1.0, "gpu")
      (0.0, 2.0)
    """
    ideal = transcendentals_ideal(name, plain)
    if backend != "cpu" or ideal == 0:
        return ideal
    return float(CPU_TRANSCENDENTALS_GEGLU if name == "geglu" else CPU_TRANSCENDENTALS)


def _gating(name: str, n: int, dtype: str, config: Config) -> dict[str, Any]:
    samples = gating.time_alternately(
        name, n, dtype, rounds=config.ratio_rounds, min_sample_s=config.min_sample_s
    )
    median = timing.median_ratio(samples["hadamard_jax"], samples["plain"])
    cost = {impl: gating.cost(name, impl, n, dtype) for impl in gating.IMPLS}
    ours_t, plain_t = (cost[impl]["transcendentals"] for impl in gating.IMPLS)
    t_target = transcendentals_target(name, plain_t, jax.default_backend())
    target = gating_target(n)
    saved = {impl: gating.saved_residual_bytes(name, impl, n, dtype) for impl in gating.IMPLS}
    return {
        "op": name,
        "n": n,
        "dtype": dtype,
        "ratio": timing.best_ratio(samples["hadamard_jax"], samples["plain"]),
        "ratio_median": median,
        "hadamard_jax_seconds": timing.best(samples["hadamard_jax"]),
        "plain_seconds": timing.best(samples["plain"]),
        "saved_bytes_hadamard_jax": saved["hadamard_jax"],
        "saved_bytes_plain": saved["plain"],
        "saved_bytes_met": saved["hadamard_jax"] <= saved["plain"],
        "cost_per_element": cost,
        "aim": gating_aim(n),
        "target": target,
        "met": median <= target,
        "transcendentals_ideal": transcendentals_ideal(name, plain_t),
        "transcendentals_target": t_target,
        "transcendentals_met": ours_t <= t_target,
    }


Step = tuple[str, Callable[[], str]]


def _run_elementwise(figures: Figures, config: Config, n: int, dtype: str) -> str:
    rows = elementwise_group(n, dtype, rounds=config.rounds, min_sample_s=config.min_sample_s)
    figures["ops"].extend(rows)
    had = next(r for r in rows if r["op"] == "hadamard" and r["donated"])
    add = next(r for r in rows if r["op"] == "add" and r["donated"])
    return f"add {add['gbps']:.1f} GB/s, hadamard donated {had['gbps']:.1f} GB/s"


def _run_matmul(figures: Figures, config: Config, n: int, dtype: str) -> str:
    row = _matmul(n, dtype, config)
    figures["ops"].append(row)
    return f"{row['gflops']:.0f} GFLOP/s"


def _run_ratio(figures: Figures, config: Config, n: int) -> str:
    row = _hadamard_vs_multiply(n, config)
    figures["hadamard_vs_multiply"].append(row)
    return f"ratio {row['ratio']:.3f}, cost bytes equal: {row['cost_bytes_equal']}"


def _run_gating(figures: Figures, config: Config, name: str, n: int, dtype: str) -> str:
    row = _gating(name, n, dtype, config)
    figures["gating"].append(row)
    return f"fwd+bwd ratio {row['ratio_median']:.3f} (median)"


def _run_memory(figures: Figures, size: ffn_stack.Size) -> str:
    temp = memory.ffn_temp_bytes(**size)
    ratios = {gate: row["hadamard_jax"] / row["plain"] for gate, row in temp.items()}
    figures["training_memory"] = {
        "size": dict(size),
        "temp_bytes": temp,
        "ratio": ratios,
        "target": FFN_MEMORY_TARGET,
        "met": all(r <= FFN_MEMORY_TARGET for r in ratios.values()),
    }
    flax = memory.flax_figures(**size)
    figures["flax_memory"] = flax
    ratio = flax["gated_mlp"] / flax["plain"]
    figures["flax_memory_target"] = {
        "ratio": ratio,
        "target": FLAX_MEMORY_TARGET,
        "met": ratio <= FLAX_MEMORY_TARGET and flax["gated_mlp"] <= flax["remat"],
    }
    return "compiled"


#: Targets of the linear recurrence (ours over the better plain step) and the sparse step.
RECURRENCE_TIME_TARGET = 0.8
SPARSE_STEP_TARGET = 1.15


def _run_recurrence(figures: Figures, config: Config, t: int, d: int) -> str:
    from hadamard_jax.bench import recurrence

    temp = {impl: int(recurrence.compiled_temp_bytes(impl, t, d)) for impl in recurrence.IMPLS}
    samples = recurrence.time_samples(
        t, d, rounds=config.ratio_rounds, min_sample_s=config.min_sample_s
    )
    ratio = recurrence.time_ratios(samples)["vs_best"]
    memory_ratios = {k: temp["hadamard_jax"] / temp[k] for k in RECURRENCE_MEMORY_TARGETS}
    figures["recurrence"] = {
        "t": t,
        "d": d,
        "temp_bytes": temp,
        "memory_ratio": memory_ratios,
        "memory_target": RECURRENCE_MEMORY_TARGETS,
        "memory_met": all(memory_ratios[k] <= v for k, v in RECURRENCE_MEMORY_TARGETS.items()),
        "time_ratio": ratio,
        "target": RECURRENCE_TIME_TARGET,
        "met": ratio <= RECURRENCE_TIME_TARGET,
    }
    return f"time ratio {ratio:.3f}, temp {_mib(temp['hadamard_jax'])}"


def _run_sparse(figures: Figures, config: Config, size: dict[str, int]) -> str:
    from hadamard_jax.bench import sparse_step

    r = sparse_step.measure(**size, repeats=config.ratio_rounds, min_sample_s=config.min_sample_s)
    figures["sparse_step"] = {
        "size": dict(size),
        "ratio": r["ratio"],
        "best_ratio": r["best_ratio"],
        "update_ratio": r["update_ratio"],
        "target": SPARSE_STEP_TARGET,
        "met": r["ratio"] <= SPARSE_STEP_TARGET,
    }
    return f"sparse/dense {r['ratio']:.3f}, update step/dense {r['update_ratio']:.1f}"


def _slow_rounds(config: Config) -> int:
    """Alternation rounds of the steps whose calls take up to seconds: 3 to 5 (their scripts' 5)."""
    return min(5, max(3, config.rounds // 2))


def _run_adapters(figures: Figures, config: Config, size: dict[str, int]) -> str:
    from hadamard_jax.bench import adapters

    n, r, batch = size["n"], size["r"], size["batch"]
    table = adapters.rows(adapters.REPORT_OPS, n=n, r=r, batch=batch, rounds=_slow_rounds(config))
    for row in table:
        op = row["op"]
        row["temp_target"] = ADAPTER_TEMP_TARGETS.get(op)
        row["temp_met"] = row["temp_target"] is None or row["temp_ratio"] <= row["temp_target"]
        row["time_target"] = ADAPTER_TIME_TARGETS.get(op)
        row["time_met"] = row["time_target"] is None or row["time_ratio"] <= row["time_target"]
    figures["adapters"] = {"size": dict(size), "rows": table}
    return ", ".join(
        f"{r['op']} temp {r['temp_ratio']:.3f}x, time {r['time_ratio']:.2f}x" for r in table
    )


#: The chunked recurrences of the report: name in the figures, module, and its plain impl.
LINEAR_ATTENTION_OPS = {
    "gated_linear_attention": ("linear_attention", "chunked_plain"),
    "gated_delta_rule": ("delta_rule", "plain_chunked"),
}


def _linear_attention_row(op: str, plain: str, row: dict[str, Any]) -> dict[str, Any]:
    """One of the two modules' rows in the report's form (the same keys for both ops)."""
    kind = row["kind"]
    unit = "mib" if kind == "memory" else "ms"
    impls = {"token_scan": "token_scan", "plain_chunked": plain, "hadamard_jax": "hadamard_jax"}
    ratio = {"token_scan": row["vs_token_scan"], "plain_chunked": row["vs_plain_chunked"]}
    target = LINEAR_ATTENTION_TARGETS[kind]
    out = {
        "op": op,
        "kind": kind,
        "T": row["T"],
        unit: {name: row[f"{impl}_{unit}"] for name, impl in impls.items()},
        "ratio": ratio,
        "target": target,
        "met": {k: v <= target[k] for k, v in ratio.items()},
    }
    if kind == "time":
        err = row.get("grad_rel_err", row.get("grad_err_hadamard_jax"))
        out["grad_rel_err"] = err
    return out


def _run_linear_attention(figures: Figures, config: Config, op: str, spec: dict[str, Any]) -> str:
    import importlib

    module_name, plain = LINEAR_ATTENTION_OPS[op]
    module = importlib.import_module(f"hadamard_jax.bench.{module_name}")
    rounds = _slow_rounds(config)
    memory_t, time_t = tuple(spec["memory_t"]), spec.get("time_t")
    if module_name == "linear_attention":
        raw = module.rows(growth_t=memory_t, time_t=time_t, rounds=rounds)
    else:
        t = time_t if time_t is not None else memory_t[0]
        raw = module.rows(t=t, growth=memory_t, rounds=rounds, time=time_t is not None)
    table = [_linear_attention_row(op, plain, r) for r in raw]
    section = figures["linear_attention"] or {"targets": LINEAR_ATTENTION_TARGETS, "rows": []}
    section["rows"].extend(table)
    figures["linear_attention"] = section
    last = table[-1]
    what = "time" if last["kind"] == "time" else "temp"
    return (
        f"{what} at T={last['T']}: {last['ratio']['token_scan']:.3f}x token scan, "
        f"{last['ratio']['plain_chunked']:.3f}x plain chunked"
    )


def _elementwise_groups(config: Config) -> list[tuple[int, str]]:
    """``(n, dtype)`` of every element-wise group; ``stream_n`` float32 always (the roof)."""
    sizes = sorted(set(config.sizes) | {config.stream_n})
    groups = [(n, dtype) for dtype in config.dtypes for n in sizes]
    if (config.stream_n, "float32") not in groups:
        groups.append((config.stream_n, "float32"))
    return groups


def _steps(config: Config, figures: Figures) -> list[Step]:
    """The report as ``(label, run)`` steps; ``run`` fills ``figures`` and returns a summary."""
    run = functools.partial
    steps: list[Step] = [
        (f"element-wise {n}x{n} {dtype}", run(_run_elementwise, figures, config, n, dtype))
        for n, dtype in _elementwise_groups(config)
    ]
    steps += [
        (f"matmul {n}x{n} {dtype}", run(_run_matmul, figures, config, n, dtype))
        for dtype in config.dtypes
        for n in config.matmul_sizes
    ]
    steps += [
        (f"hadamard / jnp.multiply {n}x{n} float32", run(_run_ratio, figures, config, n))
        for n in config.ratio_sizes
    ]
    steps += [
        (f"gating {name} {n}x{n} {dtype}", run(_run_gating, figures, config, name, n, dtype))
        for dtype in config.gating_dtypes
        for n in config.gating_sizes
        for name in gating.NAMES
    ]
    if config.ffn is not None:
        label = "training memory (compiled temp bytes)"
        steps.append((label, run(_run_memory, figures, config.ffn)))
    if config.recurrence is not None:
        t, d = config.recurrence
        steps.append((f"linear recurrence {t}x{d}", run(_run_recurrence, figures, config, t, d)))
    if config.sparse is not None:
        steps.append(("sparse optimizer step", run(_run_sparse, figures, config, config.sparse)))
    if config.adapters is not None:
        size = config.adapters
        label = f"adapters n={size['n']} r={size['r']} batch={size['batch']}"
        steps.append((label, run(_run_adapters, figures, config, size)))
    if config.linear_attention is not None:
        spec = config.linear_attention
        ts = ", ".join(str(t) for t in spec["memory_t"])
        timed = f", time T={spec['time_t']}" if spec.get("time_t") is not None else ""
        steps += [
            (f"{op} memory T={ts}{timed}", run(_run_linear_attention, figures, config, op, spec))
            for op in LINEAR_ATTENTION_OPS
        ]
    return steps


def _summarise(figures: Figures, config: Config) -> None:
    """Adds the streaming bandwidth, the matmul peak and the donation target to ``figures``."""
    ops = figures["ops"]

    def find(op, n, dtype, donated, backward=False):
        return next(
            r
            for r in ops
            if r["op"] == op
            and r["n"] == n
            and r["dtype"] == dtype
            and r["donated"] == donated
            and (r["pass"] == "forward+backward") == backward
        )

    n = config.stream_n
    add = find("add", n, "float32", True)
    had = find("hadamard", n, "float32", True)
    mul = find("multiply", n, "float32", True)
    figures["stream"] = {
        "kernel": "add, jitted, first argument donated",
        "n": n,
        "dtype": "float32",
        "gbps": add["gbps"],
        "gbps_without_donation": find("add", n, "float32", False)["gbps"],
    }
    matmuls = [r["gflops"] for r in ops if r["op"] == "matmul"]
    figures["matmul_peak_gflops"] = max(matmuls) if matmuls else None
    fraction = had["gbps"] / add["gbps"]
    vs_multiply = had["gbps"] / mul["gbps"]
    figures["targets"] = {
        "hadamard_donated_stream_fraction": {"value": fraction, "reference": STREAM_TARGET},
        "hadamard_donated_vs_multiply": {
            "value": vs_multiply,
            "target": DONATED_VS_MULTIPLY_TARGET,
            "met": vs_multiply >= DONATED_VS_MULTIPLY_TARGET,
        },
        "hadamard_vs_multiply_max_ratio": _worst(figures["hadamard_vs_multiply"], "ratio"),
        "gating_max_ratio": _worst(figures["gating"], "ratio_median"),
    }


def _worst(rows: list[dict[str, Any]], key: str) -> float | None:
    return max((r[key] for r in rows), default=None)


def measure(config: Config, *, progress: Progress | None = print) -> Figures:
    """Measures everything in ``config``; returns the figures (a JSON-serialisable dict).

    Args:
      config: what to measure (:meth:`Config.quick`: about a minute on 2 cores).
      progress: called with one line per step as it finishes (``None``: silent). While a step
        runs, a bar is drawn on standard error if it is a terminal
        (:class:`~hadamard_jax.bench.progress.StepProgress`); elsewhere, the lines alone.

    Returns:
      ``{"machine", "config", "ops", "stream", "matmul_peak_gflops", "targets",
      "hadamard_vs_multiply", "gating", "training_memory", "flax_memory",
      "flax_memory_target", "recurrence", "sparse_step", "adapters", "linear_attention",
      "seconds"}``.
    """
    start = time.perf_counter()
    figures: Figures = {
        "machine": _machine(),
        "config": dataclasses.asdict(config),
        "ops": [],
        "hadamard_vs_multiply": [],
        "gating": [],
        "training_memory": None,
        "flax_memory": None,
        "flax_memory_target": None,
        "recurrence": None,
        "sparse_step": None,
        "adapters": None,
        "linear_attention": None,
    }
    steps = _steps(config, figures)
    bar = StepProgress(len(steps), emit=progress) if progress is not None else None
    for label, run in steps:
        if bar is not None:
            bar.start(label)
        step_start = time.perf_counter()
        summary = run()
        if bar is not None:
            bar.done(summary, seconds=time.perf_counter() - step_start)
    _summarise(figures, config)
    figures["seconds"] = time.perf_counter() - start
    return figures


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _met(row: dict[str, Any]) -> str:
    """``"met"`` or ``"MISSED"``: whether ``row`` met its target."""
    return _met_flag(row["met"])


def _met_flag(met: bool) -> str:
    return "met" if met else "MISSED"


TARGETS_NOTE = (
    "Targets are what a change can regress on this backend: MISSED means something regressed "
    "or is wrong. In brackets, references: the time aims (gating: parity; fp32 ops with a "
    "transcendental sit at 0.9-1.25x on XLA:CPU) and the ideal transcendental count (2: needs "
    "a backend that fuses a shared transcendental's two consumers; XLA:CPU stores it instead)."
)
RATIO_NOTE = (
    "ratio (best; median): best = best(ours) / best(plain) over samples timed alternately; "
    "median = median of the per-round ratios. Best can exceed median."
)


def format_table(figures: Figures) -> str:
    """The figures as plain-text tables (Markdown pipe tables, readable in a terminal)."""
    out = []
    stream = figures["stream"]
    out.append(
        f"Streaming bandwidth (STREAM add, jitted, donated, {stream['n']}x{stream['n']} "
        f"{stream['dtype']}): {stream['gbps']:.1f} GB/s "
        f"({stream['gbps_without_donation']:.1f} GB/s without donation)"
    )
    if figures["matmul_peak_gflops"] is not None:
        out.append(f"Matmul peak: {figures['matmul_peak_gflops']:.0f} GFLOP/s")
    reference = figures["targets"]["hadamard_donated_stream_fraction"]
    target = figures["targets"]["hadamard_donated_vs_multiply"]
    out.append(
        f"hadamard donated / STREAM add: {reference['value']:.2f}x "
        f"(reference: aim >= {reference['reference']})"
    )
    out.append(
        f"hadamard donated / jnp.multiply donated: {target['value']:.2f}x "
        f"(target >= {target['target']}: {_met(target)})"
    )
    out.append("")
    out.append("| op | n | dtype | pass | donated | time | GB/s | x STREAM | GFLOP/s |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in figures["ops"]:
        fraction = f"{r['stream_fraction']:.2f}" if "stream_fraction" in r else "-"
        out.append(
            f"| {r['op']} | {r['n']} | {r['dtype']} | {r['pass']} "
            f"| {'yes' if r['donated'] else 'no'} "
            f"| {r['seconds'] * 1e3:.3f} ms | {r['gbps']:.1f} | {fraction} | {r['gflops']:.1f} |"
        )
    out.append("")
    out.append(RATIO_NOTE)
    out.append("")
    out.append(
        "| hadamard / jnp.multiply (jitted, alternately) | n | ratio (best; median) | "
        "target (aim) | cost_analysis bytes: equal |"
    )
    out.append("|---|---|---|---|---|")
    for r in figures["hadamard_vs_multiply"]:
        out.append(
            f"| forward, {r['dtype']} | {r['n']} | {r['ratio']:.3f}; {r['ratio_median']:.3f} "
            f"| median <= {r['target']} {_met(r)} ({r.get('aim', r['target'])}) "
            f"| {_met_flag(r['cost_bytes_equal'])} ({r['cost_bytes_hadamard']:.0f} vs "
            f"{r['cost_bytes_multiply']:.0f}) |"
        )
    out.append("")
    out.append(
        "| gating op (fwd+bwd vs plain jax.nn, alternately) | n | dtype "
        "| ratio (best; median) | target (aim) | saved for backward: ours | plain | target "
        "| transcendentals/element: ours | plain | target (ideal) |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in figures["gating"]:
        cost = r["cost_per_element"]
        out.append(
            f"| {r['op']} | {r['n']} | {r['dtype']} | {r['ratio']:.3f}; {r['ratio_median']:.3f} "
            f"| median <= {r['target']} {_met(r)} ({r['aim']}) "
            f"| {_mib(r['saved_bytes_hadamard_jax'])} | {_mib(r['saved_bytes_plain'])} "
            f"| <= plain {_met_flag(r['saved_bytes_met'])} "
            f"| {cost['hadamard_jax']['transcendentals']:.0f} "
            f"| {cost['plain']['transcendentals']:.0f} "
            f"| <= {r['transcendentals_target']:.0f} {_met_flag(r['transcendentals_met'])} "
            f"({r['transcendentals_ideal']:.0f}) |"
        )
    out.append("")
    out.append(TARGETS_NOTE)
    memory_table = _memory_table(figures)
    if memory_table:
        out.append("")
        out.extend(memory_table)
    return "\n".join(out)


def _memory_table(figures: Figures) -> list[str]:
    training = figures.get("training_memory") or {}
    temp = training.get("temp_bytes")
    lines = []
    if temp:
        size = training["size"]
        impls = list(next(iter(temp.values())))
        lines.append(
            f"Training step, {size['layers']} gated FFN layers under lax.scan (batch "
            f"{size['batch']}, d {size['d']}, h {size['h']}): compiled temp memory"
        )
        lines.append("| gate | " + " | ".join(impls) + " |")
        ratio = training.get("ratio", {})
        if ratio:
            lines[-1] += " ours / plain | target |"
        lines.append("|---|" + "---|" * (len(impls) + (2 if ratio else 0)))
        for gate, row in temp.items():
            flag = ""
            if gate in ratio:
                met = ratio[gate] <= training["target"]
                flag = f" {ratio[gate]:.3f} | <= {training['target']} {_met_flag(met)} |"
            lines.append(f"| {gate} | " + " | ".join(_mib(row[i]) for i in impls) + " |" + flag)
    flax = figures.get("flax_memory")
    if flax:
        lines.append("")
        values = ", ".join(
            f"{k} {_mib(v) if isinstance(v, (int, float)) else v}" for k, v in flax.items()
        )
        line = f"Flax NNX GatedMLP stack, same size and loss, compiled temp memory: {values}"
        flax_target = figures.get("flax_memory_target")
        if flax_target:
            line += (
                f"; gated_mlp / plain {flax_target['ratio']:.3f} (<= {flax_target['target']} "
                f"and <= remat: {_met(flax_target)})"
            )
        lines.append(line)
    rec = figures.get("recurrence")
    if rec:
        temps = ", ".join(f"{k} {_mib(v)}" for k, v in rec["temp_bytes"].items())
        lines.append("")
        lines.append(
            f"Linear recurrence training step, T={rec['t']} D={rec['d']} fp32: compiled temp "
            f"memory {temps}"
            + (
                "; ours / "
                + ", ".join(
                    f"{k} {v:.3f} (<= {rec['memory_target'][k]})"
                    for k, v in rec["memory_ratio"].items()
                )
                + f": {_met_flag(rec['memory_met'])}"
                if "memory_ratio" in rec
                else ""
            )
            + f"; time ours / better plain {rec['time_ratio']:.3f} (<= {rec['target']} {_met(rec)})"
        )
    sparse = figures.get("sparse_step")
    if sparse:
        lines.append("")
        lines.append(
            f"Sparse optimizer step (adamw, {sparse['size']}): sparse / dense "
            f"{sparse['ratio']:.3f} (<= {sparse['target']} {_met(sparse)}); a mask-update step "
            f"{sparse['update_ratio']:.1f} dense steps"
        )
    for table in (_adapters_table(figures), _linear_attention_table(figures)):
        if table:
            lines.append("")
            lines.extend(table)
    return lines


def _target_cell(value: float, target: float | None, met: bool) -> str:
    if target is None:
        return f"{value:.3f} (reference)"
    return f"{value:.3f} (<= {target} {_met_flag(met)})"


def _adapters_table(figures: Figures) -> list[str]:
    section = figures.get("adapters")
    if not section:
        return []
    size = section["size"]
    rows = section["rows"]
    dtype = rows[0]["dtype"] if rows else "float32"
    lines = [
        f"Adapter training steps, in = out = {size['n']}, r = {size['r']}, batch "
        f"{size['batch']}, {dtype}: ours against peft's form-the-update way "
        "(time: median of alternated per-round ratios)",
        "| op | temp ours / peft | temp ratio (target) | GFLOP ours / peft | step ours / peft "
        "| time ratio (target) | residuals kept: ours / peft |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {_mib(r['temp_ours'])} / {_mib(r['temp_peft'])} "
            f"| {_target_cell(r['temp_ratio'], r['temp_target'], r['temp_met'])} "
            f"| {r['flops_ours'] / 1e9:.2f} / {r['flops_peft'] / 1e9:.2f} "
            f"| {r['time_ours_s'] * 1e3:.1f} ms / {r['time_peft_s'] * 1e3:.1f} ms "
            f"| {_target_cell(r['time_ratio'], r['time_target'], r['time_met'])} "
            f"| {len(r['residuals_ours'])} / {len(r['residuals_peft'])} arrays |"
        )
    return lines


def _linear_attention_table(figures: Figures) -> list[str]:
    section = figures.get("linear_attention")
    if not section or not section["rows"]:
        return []
    lines = [
        "Chunked matrix-state recurrences, B=2 H=4 K=V=64 fp32, jit(value_and_grad): compiled "
        "temp memory and step time (median of alternated rounds), ours against the "
        "token-by-token lax.scan and the chunked algorithm under plain autodiff",
        "| op | T | figure | token scan | plain chunked | hadamard_jax | / token scan (target) "
        "| / plain chunked (target) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in section["rows"]:
        if r["kind"] == "memory":
            cells = [_mib(r["mib"][k] * 2**20) for k in ("token_scan", "plain_chunked")]
            ours = _mib(r["mib"]["hadamard_jax"] * 2**20)
        else:
            cells = [f"{r['ms'][k]:.1f} ms" for k in ("token_scan", "plain_chunked")]
            ours = f"{r['ms']['hadamard_jax']:.1f} ms"
        ratios = [
            _target_cell(r["ratio"][k], r["target"][k], r["met"][k])
            for k in ("token_scan", "plain_chunked")
        ]
        lines.append(
            f"| {r['op']} | {r['T']} | {r['kind']} | {cells[0]} | {cells[1]} | {ours} "
            f"| {ratios[0]} | {ratios[1]} |"
        )
    return lines


def check(figures: Figures) -> dict[str, list[str]]:
    """The missed targets of ``figures``, deterministic and timing apart.

    Deterministic targets come from compiled code (the same on every run of one version on one
    backend): ``cost_analysis()`` bytes of ``hadamard`` against ``jnp.multiply``, the bytes each
    gating op keeps for the backward pass, its transcendentals per element, and the compiled temp
    memory of the training steps. Timing targets are ratios of alternated timings; they depend on
    the machine's load. References (aims, ideals) are never misses.

    Returns:
      ``{"deterministic": [...], "timing": [...]}``, one line per missed target.

    Examples:
      >>> from hadamard_jax.bench.report import check
      >>> check({"gating": [], "hadamard_vs_multiply": []})
      {'deterministic': [], 'timing': []}
    """
    det: list[str] = []
    tim: list[str] = []
    for r in figures.get("hadamard_vs_multiply", []):
        where = f"hadamard / jnp.multiply {r['n']}x{r['n']} {r['dtype']}"
        if not r["cost_bytes_equal"]:
            det.append(
                f"{where}: cost_analysis bytes {r['cost_bytes_hadamard']:.0f} vs "
                f"{r['cost_bytes_multiply']:.0f}"
            )
        if not r["met"]:
            tim.append(f"{where}: median time ratio {r['ratio_median']:.3f} > {r['target']}")
    for r in figures.get("gating", []):
        where = f"{r['op']} {r['n']}x{r['n']} {r['dtype']}"
        if not r.get("saved_bytes_met", True):
            det.append(
                f"{where}: keeps {r['saved_bytes_hadamard_jax']} bytes for the backward "
                f"pass, plain {r['saved_bytes_plain']}"
            )
        if not r["transcendentals_met"]:
            ours = r["cost_per_element"]["hadamard_jax"]["transcendentals"]
            det.append(
                f"{where}: {ours:.0f} transcendentals per element > "
                f"{r['transcendentals_target']:.0f}"
            )
        if not r["met"]:
            tim.append(f"{where}: median fwd+bwd ratio {r['ratio_median']:.3f} > {r['target']}")
    training = figures.get("training_memory") or {}
    for gate, ratio in training.get("ratio", {}).items():
        if ratio > training["target"]:
            det.append(
                f"FFN stack training step, {gate}: temp ours / plain {ratio:.3f} > "
                f"{training['target']}"
            )
    flax = figures.get("flax_memory_target")
    if flax and not flax["met"]:
        det.append(
            f"Flax GatedMLP stack: temp / plain {flax['ratio']:.3f} (<= {flax['target']}) "
            "or above remat"
        )
    rec = figures.get("recurrence")
    if rec:
        for k, v in rec.get("memory_ratio", {}).items():
            if v > rec["memory_target"][k]:
                det.append(
                    f"linear recurrence: temp ours / {k} {v:.3f} > {rec['memory_target'][k]}"
                )
        if not rec["met"]:
            tim.append(f"linear recurrence: time ratio {rec['time_ratio']:.3f} > {rec['target']}")
    for r in (figures.get("adapters") or {}).get("rows", []):
        where = f"adapter {r['op']} n={r['n']} r={r['r']} batch={r['batch']}"
        if not r["temp_met"]:
            det.append(f"{where}: temp ours / peft {r['temp_ratio']:.3f} > {r['temp_target']}")
        if not r["time_met"]:
            tim.append(f"{where}: median time ratio {r['time_ratio']:.3f} > {r['time_target']}")
    for r in (figures.get("linear_attention") or {}).get("rows", []):
        misses = det if r["kind"] == "memory" else tim
        what = "temp" if r["kind"] == "memory" else "median time"
        for k, met in r["met"].items():
            if not met:
                misses.append(
                    f"{r['op']} T={r['T']}: {what} ours / {k} {r['ratio'][k]:.3f} > "
                    f"{r['target'][k]}"
                )
    sparse = figures.get("sparse_step")
    if sparse and not sparse["met"]:
        tim.append(f"sparse optimizer step: ratio {sparse['ratio']:.3f} > {sparse['target']}")
    target = (figures.get("targets") or {}).get("hadamard_donated_vs_multiply")
    if target and not target["met"]:
        tim.append(
            f"hadamard donated / jnp.multiply donated {target['value']:.2f} < {target['target']}"
        )
    return {"deterministic": det, "timing": tim}


def format_check(misses: dict[str, list[str]]) -> str:
    """One summary line, then each missed target (``check``'s result)."""
    det, tim = misses["deterministic"], misses["timing"]
    lines = [
        f"Targets missed: {len(det)} deterministic (memory, bytes, residuals, transcendentals), "
        f"{len(tim)} timing (informational)"
    ]
    lines += [f"  MISSED (deterministic): {line}" for line in det]
    lines += [f"  MISSED (timing): {line}" for line in tim]
    return "\n".join(lines)


def write_json(figures: Figures, path: Path) -> Path:
    """Writes ``figures`` as indented JSON to ``path``; returns ``path``."""
    path.write_text(json.dumps(figures, indent=2, sort_keys=False) + "\n")
    return path


def run_report(
    config: Config | None = None,
    *,
    out_dir: str | os.PathLike[str] = "bench_out",
    progress: Progress | None = print,
) -> Figures:
    """Measures, writes ``report.json``, prints the table, then draws ``roofline.png``.

    The JSON and the table come first, so a failed or skipped plot loses no measurement. Without
    matplotlib the plot is skipped with a one-line message naming the ``bench`` extra.

    Args:
      config: what to measure (default: the full :class:`Config`).
      out_dir: directory for ``report.json`` and ``roofline.png`` (created if missing).
      progress: receives the progress lines, the table and the closing lines (``None``: silent).

    Returns:
      The figures, with ``"files"`` giving the paths written (``"roofline"``: ``None`` when
      skipped).
    """
    from hadamard_jax.bench import roofline

    config = config or Config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = measure(config, progress=progress)
    png = out / "roofline.png" if roofline.available() else None
    figures["files"] = {"json": str(out / "report.json"), "roofline": str(png) if png else None}
    write_json(figures, out / "report.json")
    say = progress or _silent
    say("")
    say(format_table(figures))
    say("")
    say(format_check(check(figures)))
    say("")
    if png is None:
        say(f"Wrote {out / 'report.json'}; {roofline.MISSING_MESSAGE}")
        return figures
    roofline.plot(figures, png)
    say(f"Wrote {out / 'report.json'} and {png}")
    return figures


def _silent(line: str) -> None:
    del line
