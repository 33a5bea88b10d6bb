"""The tracked figures: what the regression command gates on, measured in two processes.

Two measurements, each one asv ``setup_cache`` (one process, one JAX import):

* :func:`deterministic`: XLA's compiled ``cost_analysis()`` (bytes accessed, flops,
  transcendentals) of each kernel's forward+backward, the bytes reverse mode keeps for the
  backward pass of each gating op, and ``memory_analysis()`` temp bytes of three training steps.
  They change only when the compiled code changes: the regression command gates them exactly.
* :func:`timings`: every kernel of :data:`TIMED` against its plain-JAX composition, all timed
  alternately in one process (one sample of each per round, order reversed each round, as
  :func:`hadamard_jax.bench.timing.interleaved` does), in CPU time, so load from other
  processes hits both sides of every ratio alike. The figure (:func:`ratio`) compares the
  fastest samples of the two sides; the regression command gates it with a factor
  (``regression.TIME_FACTOR``, chosen from measurements: docs/benchmarking.md).

Nothing here imports JAX at module level: the asv processes that only read a figure from the
cache stay cheap (~0.1 s instead of ~1.5 s), and this module imports on any commit. A figure
whose code the installed commit lacks (an older ``hadamard_jax.bench``) is recorded as
:data:`MISSING` and its benchmark is skipped (asv shows n/a), not failed.

This module defines no ``time_``/``track_`` names: asv would take them for benchmarks.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import common

SMOKE = common.SMOKE

MISSING = "missing"


def gate_rows() -> list[tuple[str, bool]]:
    """``(name, has an approximate form)`` of each ``Gate(...)`` row of the gate table, in table
    order, read from ``hadamard_jax/_src/gates.py`` with ``ast`` (importing it imports JAX)."""
    source = Path(__file__).resolve().parent.parent / "hadamard_jax" / "_src" / "gates.py"
    calls = [
        node
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Gate"
    ]
    rows = []
    for call in sorted(calls, key=lambda node: (node.lineno, node.col_offset)):
        name, _, approximate = (ast.literal_eval(arg) for arg in call.args[:3])
        rows.append((name, approximate is not None))
    return rows


def _gating_ops() -> list[str]:
    ops = []
    for name, approximate in gate_rows():
        ops += [name, f"{name}_tanh"] if approximate else [name]
    return [*ops, "glu_packed", "highway"]


# The gating ops of hadamard_jax.bench.gating: every gate of the table (and ``<name>_tanh``, its
# approximate form), the packed GLU and the highway gate, read without importing JAX.
GATING = common.axis(_gating_ops(), "swiglu")
# Kernels with a compiled cost: the Hadamard product forward, forward+backward, and the gating
# ops' forward+backward, all in hadamard_jax's implementation.
COSTED = [*common.axis(["hadamard", "hadamard_vjp"]), *GATING]
# Timed against plain JAX: the same kernels, and three training steps.
STEPS = common.axis(["ffn_swiglu", "ffn_geglu", "flax_gated_mlp"], ["ffn_swiglu", "flax_gated_mlp"])
TIMED = [*COSTED, *STEPS]
COST_KINDS = ["bytes", "flops", "transcendentals"]
# The gating ops' implementations: the library's rule and the plain jax.nn composition.
IMPLS = ["hadamard_jax", "plain"]

# Sizes. The deterministic figures compile from abstract shapes (nothing is allocated).
ELEMENTWISE_N = 64 if SMOKE else 2048  # hadamard vs jnp.multiply: 48 MiB, past the caches
GATING_N = 16 if SMOKE else 1024
MEMORY_SIZE = (
    {"batch": 8, "d": 8, "h": 16, "layers": 2}
    if SMOKE
    else {"batch": 2048, "d": 512, "h": 2048, "layers": 8}  # ffn_stack.SIZE: the README's
)
# Training steps timed: small enough for ~25 ms a step on 2 cores.
STEP_SIZE = (
    {"batch": 8, "d": 8, "h": 16, "layers": 2}
    if SMOKE
    else {"batch": 128, "d": 256, "h": 1024, "layers": 4}
)
# Alternation: rounds per kernel, and the shortest sample (calls are batched up to it).
ROUNDS = 2 if SMOKE else 96
MIN_SAMPLE_S = 0.0 if SMOKE else 0.005
# Copies of each kernel's operands at different addresses, rotated over the rounds.
PLACEMENTS = 2 if SMOKE else 8


def _guard(fn: Callable[[], Any]) -> Any:
    """``fn()``, or :data:`MISSING` if the installed commit lacks what it needs."""
    try:
        return fn()
    except (ImportError, AttributeError, TypeError, KeyError) as exc:
        return f"{MISSING}: {type(exc).__name__}: {exc}"


def deterministic() -> dict[str, Any]:
    """Every deterministic figure of the installed commit, keyed ``(kind, name)``.

    Keys: ``("cost_<bytes|flops|transcendentals>", kernel)`` for kernel in :data:`COSTED`,
    ``("saved_residual_bytes", op)`` and ``("transcendentals_per_element", op, impl)`` for op in
    :data:`GATING` and impl in :data:`IMPLS`, ``("temp_bytes", step)`` for
    step in :data:`STEPS`. Values are numbers, or a :data:`MISSING` string.
    """
    out: dict[Any, Any] = {}
    for kernel in COSTED:
        cost = _guard(lambda kernel=kernel: _cost(kernel))
        for kind in COST_KINDS:
            out[(f"cost_{kind}", kernel)] = cost if isinstance(cost, str) else cost[kind]
    for op in GATING:
        out[("saved_residual_bytes", op)] = _guard(lambda op=op: _saved(op))
        for impl in IMPLS:
            out[("transcendentals_per_element", op, impl)] = _guard(
                lambda op=op, impl=impl: _transcendentals(op, impl)
            )
    for step in STEPS:
        out[("temp_bytes", step)] = _guard(lambda step=step: _temp_bytes(step))
    return out


def _cost(kernel: str) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    from hadamard_jax.bench import gating, kernels

    if kernel in ("hadamard", "hadamard_vjp"):
        n = ELEMENTWISE_N
        shape = jax.ShapeDtypeStruct((n, n), jnp.float32)
        if kernel == "hadamard":
            analysis = kernels.cost_analysis(kernels.FORWARD["hadamard"], shape, shape)
        else:
            analysis = kernels.cost_analysis(
                kernels.FORWARD_BACKWARD["hadamard"], shape, shape, shape
            )
        return {
            "bytes": float(analysis.get("bytes accessed", 0.0)),
            "flops": float(analysis.get("flops", 0.0)),
            "transcendentals": float(analysis.get("transcendentals", 0.0)),
        }
    per_element = gating.cost(kernel, "hadamard_jax", GATING_N, "float32")
    return {kind: per_element[kind] * GATING_N * GATING_N for kind in COST_KINDS}


def _transcendentals(op: str, impl: str) -> float:
    from hadamard_jax.bench import gating

    return gating.cost(op, impl, GATING_N, "float32")["transcendentals"]


def _saved(op: str) -> int:
    from hadamard_jax.bench import gating

    return gating.saved_residual_bytes(op, "hadamard_jax", GATING_N, "float32")


def _temp_bytes(step: str) -> int:
    from hadamard_jax.bench import ffn_stack, flax_stack

    if step == "flax_gated_mlp":
        return flax_stack.compiled_temp_bytes("gated_mlp", **MEMORY_SIZE)
    return ffn_stack.compiled_temp_bytes(step.removeprefix("ffn_"), "hadamard_jax", **MEMORY_SIZE)


def _calls(kernel: str) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """``{"ours": (jitted fn, args), "plain": (jitted fn, args)}`` of ``kernel``."""
    import jax

    from hadamard_jax.bench import ffn_stack, flax_stack, gating, kernels

    if kernel in ("hadamard", "hadamard_vjp"):
        make = kernels.forward_call if kernel == "hadamard" else kernels.forward_backward_call
        calls = {"ours": make("hadamard", ELEMENTWISE_N, "float32")}
        calls["plain"] = make("multiply", ELEMENTWISE_N, "float32")
    elif kernel in GATING:
        calls = {
            side: gating.forward_backward_call(kernel, impl, GATING_N, "float32")
            for side, impl in (("ours", "hadamard_jax"), ("plain", "plain"))
        }
    else:
        size = STEP_SIZE
        layers, d, h = size["layers"], size["d"], size["h"]
        kp, kx = jax.random.split(jax.random.key(0))
        x = jax.random.normal(kx, (size["batch"], d))
        out = {}
        if kernel == "flax_gated_mlp":
            for side, impl in (("ours", "gated_mlp"), ("plain", "plain")):
                _, state = flax_stack.split_stack(impl, kp, layers=layers, d=d, h=h)
                out[side] = (flax_stack.train_step(impl, layers=layers, d=d, h=h), (state, x))
            return out
        params = ffn_stack.init_params(kp, layers=layers, d=d, h=h)
        gate = kernel.removeprefix("ffn_")
        for side, impl in (("ours", "hadamard_jax"), ("plain", "plain")):
            out[side] = (ffn_stack.cached_train_step(gate, impl), (params, x))
        return out
    return {side: (call.fn, call.args) for side, call in calls.items()}


def _placements(args: tuple[Any, ...], count: int) -> list[tuple[Any, ...]]:
    """``count`` copies of ``args``, each in freshly allocated buffers at shifted addresses.

    A process's timing of a memory-bound kernel depends on where its buffers landed (cache-set
    conflicts of the physical pages: one process measured geglu at 0.75x plain, others at
    1.17x). Rotating over several placements averages that out within one process.
    """
    import jax
    import jax.numpy as jnp

    copies, pads = [], []
    for k in range(count):
        pads.append(jnp.zeros((1 + 1021 * k,), jnp.float32))  # shifts the next allocations
        copies.append(jax.tree.map(lambda x: jnp.array(x, copy=True), args))
    jax.block_until_ready((copies, pads))
    return copies


def timings(
    *, rounds: int = ROUNDS, min_sample_s: float = MIN_SAMPLE_S, placements: int = PLACEMENTS
) -> dict[str, Any]:
    """Samples of every kernel of :data:`TIMED`, ours and plain, all timed alternately.

    Every call is compiled and warmed up first. Then each round takes one sample of every call
    (``kernel/ours`` next to ``kernel/plain``; the order reversed each round), a sample being
    enough back-to-back calls to last ``min_sample_s`` of CPU time; round ``r`` runs on the
    operands' placement ``r % placements`` (:func:`_placements`). A burst of load from another
    process lands in a few rounds of every kernel, not in all rounds of one.

    Each sample is recorded twice: CPU seconds of this process per call (``time.process_time``:
    all its threads; time the scheduler gives to other processes does not count) and wall
    seconds per call (``"<side>_wall"``, for GB/s). The loop is here, not in
    :mod:`hadamard_jax.bench.timing`, because asv runs this module against old commits too.

    Returns:
      ``{kernel: {"ours": [...], "plain": [...], "ours_wall": [...], "plain_wall": [...]}}``,
      or ``{kernel: "missing: ..."}`` for a kernel the installed commit lacks.
    """
    import importlib
    import time

    timing = _guard(lambda: importlib.import_module("hadamard_jax.bench.timing"))
    if isinstance(timing, str):  # a commit before hadamard_jax.bench.timing
        return dict.fromkeys(TIMED, timing)
    calls: dict[tuple[str, str], list[Any]] = {}
    out: dict[str, Any] = {}
    for kernel in TIMED:
        pair = _guard(lambda kernel=kernel: _calls(kernel))
        if isinstance(pair, str):
            out[kernel] = pair
            continue
        for side, (fn, args) in pair.items():
            calls[(kernel, side)] = [timing.Call(fn, a) for a in _placements(args, placements)]
    number = {}
    for name, variants in calls.items():
        timing.warm_up(variants[0], 2)  # compiles
        for call in variants[1:]:
            call()
        start = time.process_time()
        variants[0]()
        number[name] = timing.calls_per_sample(time.process_time() - start, min_sample_s)
    names = list(calls)
    for r in range(max(1, rounds)):
        for name in names if r % 2 == 0 else reversed(names):
            call, k = calls[name][r % len(calls[name])], number[name]
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(k):
                call()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            kernel, side = name
            samples = out.setdefault(kernel, {})
            samples.setdefault(side, []).append(cpu / k)
            samples.setdefault(f"{side}_wall", []).append(wall / k)
    return out


def ratio(samples: dict[str, list[float]]) -> float:
    """The gated statistic: mean of ours' fastest samples over mean of plain's, CPU time.

    The fastest ``max(3, rounds // 12)`` samples of each side (8 of 96): load from other
    processes only ever lengthens a sample, and alternation gives both sides the same chances
    at an uncontended one. Measured on 2 shared cores (docs/benchmarking.md), across 8 processes
    timing identical code, this moved by at most 1.26x; the median of per-round ratios moved by
    1.8x (under heavy load plain geglu's CPU time inflates more than ours), the ratio of the
    single fastest samples by 1.35x (one lucky sample).
    """
    import statistics

    ours, plain = sorted(samples["ours"]), sorted(samples["plain"])
    k = max(3, len(ours) // 12)
    return statistics.fmean(ours[:k]) / statistics.fmean(plain[:k])


def median_ratio(samples: dict[str, list[float]]) -> float:
    """The median over rounds of ``ours[r] / plain[r]`` (CPU time), shown next to :func:`ratio`."""
    import statistics

    return statistics.median(o / p for o, p in zip(samples["ours"], samples["plain"]))


def work_bytes(kernel: str) -> float:
    """Bytes of one call of ``kernel`` counted as STREAM counts them (for GB/s, display only)."""
    n = ELEMENTWISE_N if kernel.startswith("hadamard") else GATING_N
    if kernel == "hadamard":
        arrays = 3
    elif kernel == "hadamard_vjp":
        arrays = 6
    elif kernel == "highway":
        arrays = 8
    elif kernel == "glu_packed":
        arrays = 2 + 2 * 2  # ct, out; x and dx are (n, 2n)
    else:
        arrays = 6
    return float(arrays * n * n * 4)
