"""Workload: the linear recurrence ``h_t = a_t h_{t-1} + b_t``, three ways, trained.

The loss is ``sum(h * w)`` of ``h = recurrence(a, b, h0)`` over ``[T, D]`` float32 arrays,
differentiated in ``a``, ``b`` and ``h0`` by ``jax.jit(jax.value_and_grad(loss))``:

* ``"lax_scan"``: a sequential ``lax.scan``, differentiated by JAX (keeps two ``[T, D]``
  arrays for the backward pass);
* ``"associative_scan"``: ``lax.associative_scan`` of the affine maps ``(a, b)``, differentiated
  by JAX (keeps the levels of the tree);
* ``"hadamard_jax"``: :func:`hadamard_jax.linear_scan`, whose rule keeps the states ``h`` only.

Figures: compiled ``memory_analysis().temp_size_in_bytes`` (deterministic, from abstract
shapes), wall time of the three steps timed alternately in one process
(:func:`hadamard_jax.bench.timing.interleaved`), and the largest relative difference of the
gradients from ``lax.scan``'s. Jitted steps are cached at module level for the asv suite.

Run ``python -m hadamard_jax.bench.recurrence`` (``--repeats N``, ``--no-time``).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hadamard_jax._src.linear_scan import linear_scan
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import kernels, timing

IMPLS = ("lax_scan", "associative_scan", "hadamard_jax")
#: (T, D) of the speed and memory targets.
SIZES = ((4096, 1024), (65536, 64), (256, 8192))
#: T of the growth table, at D = GROWTH_D.
GROWTH_T = (1024, 4096, 16384, 65536)
GROWTH_D = 64
#: Targets: temp memory over associative_scan's and lax.scan's, time over the better plain one.
TARGETS = {"memory_vs_associative": 0.2, "memory_vs_lax_scan": 0.55, "time_vs_best": 0.8}

Recurrence = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def scan_recurrence(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """``h`` by a sequential ``lax.scan`` over axis 0 (JAX's own autodiff)."""

    def step(h, x):
        h = x[0] * h + x[1]
        return h, h

    return lax.scan(step, h0, (a, b))[1]


def associative_recurrence(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """``h`` by ``lax.associative_scan`` of the affine maps ``h -> a h + b`` over axis 0."""
    b = b.at[0].add(a[0] * h0)

    def compose(first, second):
        return second[0] * first[0], second[0] * first[1] + second[1]

    return lax.associative_scan(compose, (a, b))[1]


def ours(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """``h`` by :func:`hadamard_jax.linear_scan`."""
    return linear_scan(a, b, h0=h0)


_RECURRENCES: dict[str, Recurrence] = {
    "lax_scan": scan_recurrence,
    "associative_scan": associative_recurrence,
    "hadamard_jax": ours,
}


def make_loss(impl: str) -> Callable[..., jax.Array]:
    """``loss(a, b, h0, w) = sum(recurrence(a, b, h0) * w)`` for ``impl`` in :data:`IMPLS`."""
    if impl not in _RECURRENCES:
        raise ValueError(f"recurrence: impl must be one of {IMPLS}, got {impl!r}.")
    recurrence = _RECURRENCES[impl]

    def loss(a, b, h0, w):
        return jnp.sum(recurrence(a, b, h0) * w)

    return loss


@functools.cache
def train_step(impl: str) -> jax.stages.Wrapped:
    """``jit(value_and_grad(loss, argnums=(0, 1, 2)))``: ``(a, b, h0, w) -> (loss, grads)``."""
    return jax.jit(jax.value_and_grad(make_loss(impl), argnums=(0, 1, 2)))


def inputs(t: int, d: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """``(a, b, h0, w)``: decays uniform in ``[0.5, 1)``, the rest standard normal, float32."""
    ka, kb, kh, kw = jax.random.split(jax.random.key(seed), 4)
    a = jax.random.uniform(ka, (t, d), minval=0.5, maxval=1.0)
    return (
        a,
        jax.random.normal(kb, (t, d)),
        jax.random.normal(kh, (d,)),
        jax.random.normal(kw, (t, d)),
    )


@functools.cache
def compiled_temp_bytes(impl: str, t: int, d: int) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the compiled step (abstract shapes; cached)."""
    f32 = jnp.float32
    args = [jax.ShapeDtypeStruct(s, f32) for s in ((t, d), (t, d), (d,), (t, d))]
    return kernels.temp_bytes(train_step(impl), *args)


def gradient_error(t: int, d: int) -> float:
    """Largest ``max|g - g_scan| / max|g_scan|`` over the gradients of ``a``, ``b``, ``h0``."""
    args = inputs(t, d)
    _, ref = train_step("lax_scan")(*args)
    _, got = train_step("hadamard_jax")(*args)
    errors = []
    for g, r in zip(got, ref):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        errors.append(float(np.max(np.abs(g - r)) / np.max(np.abs(r))))
    return max(errors)


def time_samples(
    t: int, d: int, *, rounds: int = 7, min_sample_s: float = 0.05
) -> dict[str, list[float]]:
    """Seconds per step of each impl, ``rounds`` alternated samples each (warm-up excluded)."""
    args = inputs(t, d)
    calls = {impl: timing.Call(train_step(impl), args) for impl in IMPLS}
    return timing.interleaved(calls, rounds=rounds, min_sample_s=min_sample_s)


def time_ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """Median per-round ratios of ``hadamard_jax`` over each plain impl and over the better one."""
    ours_s = samples["hadamard_jax"]
    best = [min(s, a) for s, a in zip(samples["lax_scan"], samples["associative_scan"])]
    return {
        "vs_lax_scan": timing.median_ratio(ours_s, samples["lax_scan"]),
        "vs_associative": timing.median_ratio(ours_s, samples["associative_scan"]),
        "vs_best": timing.median_ratio(ours_s, best),
    }


def _met(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def memory_table(sizes: Sequence[tuple[int, int]] = SIZES) -> list[str]:
    """Markdown rows: temp memory of the three steps and our ratios, with the targets."""
    rows = [
        "| T x D | lax.scan | associative_scan | hadamard_jax | / assoc (<= 0.2) "
        "| / lax.scan (<= 0.55) |",
        "|---|---|---|---|---|---|",
    ]
    for t, d in sizes:
        mib = {impl: compiled_temp_bytes(impl, t, d) / 2**20 for impl in IMPLS}
        r_assoc = mib["hadamard_jax"] / mib["associative_scan"]
        r_scan = mib["hadamard_jax"] / mib["lax_scan"]
        rows.append(
            f"| {t} x {d} | {mib['lax_scan']:.1f} MiB | {mib['associative_scan']:.1f} MiB | "
            f"{mib['hadamard_jax']:.1f} MiB | {r_assoc:.3f} "
            f"{_met(r_assoc, TARGETS['memory_vs_associative'])} | {r_scan:.3f} "
            f"{_met(r_scan, TARGETS['memory_vs_lax_scan'])} |"
        )
    return rows


def growth_table(ts: Sequence[int] = GROWTH_T, d: int = GROWTH_D) -> list[str]:
    """Markdown rows: temp memory against ``T`` at width ``d`` (linear in ``T``: MiB per 1k)."""
    rows = [
        f"| T (D={d}) | lax.scan | associative_scan | hadamard_jax | hadamard_jax per 1k steps |",
        "|---|---|---|---|---|",
    ]
    for t in ts:
        mib = {impl: compiled_temp_bytes(impl, t, d) / 2**20 for impl in IMPLS}
        rows.append(
            f"| {t} | {mib['lax_scan']:.2f} MiB | {mib['associative_scan']:.2f} MiB | "
            f"{mib['hadamard_jax']:.2f} MiB | {mib['hadamard_jax'] * 1024 / t:.3f} MiB |"
        )
    return rows


def time_table(sizes: Sequence[tuple[int, int]] = SIZES, *, rounds: int = 7) -> list[str]:
    """Markdown rows: median step times, our median ratios, and the gradient error."""
    rows = [
        "| T x D | lax.scan | associative_scan | hadamard_jax | / lax.scan | / assoc "
        "| / better (<= 0.8) | grad rel. err. vs lax.scan |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, d in sizes:
        samples = time_samples(t, d, rounds=rounds)
        ms = {impl: statistics.median(samples[impl]) * 1e3 for impl in IMPLS}
        r = time_ratios(samples)
        rows.append(
            f"| {t} x {d} | {ms['lax_scan']:.1f} ms | {ms['associative_scan']:.1f} ms | "
            f"{ms['hadamard_jax']:.1f} ms | {r['vs_lax_scan']:.3f} | {r['vs_associative']:.3f} | "
            f"{r['vs_best']:.3f} {_met(r['vs_best'], TARGETS['time_vs_best'])} | "
            f"{gradient_error(t, d):.1e} |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    """Prints the memory, growth and time tables (``--no-time``: memory only)."""
    parser = _args.parser(_PROG, _DESCRIPTION, rounds=("--repeats", 7), no_time=True)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float32\n")
    print("Compiled temp memory of jit(value_and_grad(sum(h * w))):")
    print("\n".join(memory_table()))
    print("\nGrowth in T:")
    print("\n".join(growth_table()))
    if not args.no_time:
        print(f"\nTime per step (median of {args.repeats} alternated rounds):")
        print("\n".join(time_table(rounds=args.repeats)))


_PROG = "python -m hadamard_jax.bench.recurrence"
_DESCRIPTION = (
    "h_t = a_t h_{t-1} + b_t, fp32, jit(value_and_grad(sum(h * w))): "
    "lax.scan vs associative_scan vs hadamard_jax.linear_scan."
)


if __name__ == "__main__":  # pragma: no cover
    main()
