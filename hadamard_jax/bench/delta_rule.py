"""Workload: the gated delta rule (Gated DeltaNet), three ways, trained.

The loss is ``sum(o * w) + sum(final_state)`` of ``(o, final_state) = f(q, k, v, log_alpha,
beta)`` at ``[B, T, H, K]`` float32 (L2-normalised keys, ``log_alpha`` in ``[-0.1, 0]``, ``beta``
in ``[0, 1]``), differentiated in all five inputs by ``jax.jit(jax.value_and_grad(loss))``:

* ``"token_scan"``: a ``lax.scan`` over tokens (``S <- alpha S``, ``u = beta (v - S^T k)``,
  ``S += k u^T``, ``o = S^T q``), differentiated by JAX (keeps a ``[K, V]`` state per token);
* ``"plain_chunked"``: the same chunked algorithm as :func:`hadamard_jax.gated_delta_rule`
  (``hadamard_jax._src.delta_rule._scan``), differentiated by JAX with no rule (the MaxText
  way: every chunk's intermediates are kept for the backward pass);
* ``"hadamard_jax"``: :func:`hadamard_jax.gated_delta_rule`, whose rule keeps the inputs and
  the chunk-boundary states only.

Figures: compiled ``memory_analysis().temp_size_in_bytes`` (deterministic, from abstract
shapes), and wall time of the three steps timed alternately in one process
(:func:`hadamard_jax.bench.timing.interleaved`). :func:`rows` returns them as dicts for a report.

Run ``python -m hadamard_jax.bench.delta_rule`` (``--help``).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hadamard_jax._src import chunked as _chunked
from hadamard_jax._src import delta_rule as _dr
from hadamard_jax._src.delta_rule import gated_delta_rule
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import kernels, timing

IMPLS = ("token_scan", "plain_chunked", "hadamard_jax")
#: (B, H, K, V) of the figures; T varies.
SHAPE = (2, 4, 64, 64)
#: T of the time and memory targets, and of the memory-growth table.
T_TARGET = 4096
GROWTH_T = (1024, 4096, 16384)
CHUNK = 64
#: Targets (issue 25): ours over the token scan and over plain chunked autodiff.
TARGETS = {
    "time_vs_token_scan": 0.25,
    "memory_vs_token_scan": 0.1,
    "time_vs_plain_chunked": 1.0,
    "memory_vs_plain_chunked": 0.5,
}

Op = Callable[..., tuple[jax.Array, jax.Array]]


def token_scan(q, k, v, log_alpha, beta):
    """``(o, final_state)`` token by token (``lax.scan`` over ``T``), JAX's autodiff."""
    b, _, h, kd = q.shape
    scale = kd**-0.5

    def step(s, x):
        q_t, k_t, v_t, la_t, b_t = x
        s = jnp.exp(la_t)[..., None, None] * s
        u = b_t[..., None] * (v_t - jnp.einsum("bhk,bhkv->bhv", k_t, s))
        s = s + k_t[..., :, None] * u[..., None, :]
        return s, scale * jnp.einsum("bhk,bhkv->bhv", q_t, s)

    s0 = jnp.zeros((b, h, kd, v.shape[-1]), q.dtype)
    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, log_alpha, beta))
    s, o = lax.scan(step, s0, xs)
    return jnp.moveaxis(o, 0, 1), s


def plain_chunked(q, k, v, log_alpha, beta):
    """The library's chunked algorithm with no derivative rule (JAX's autodiff through it)."""
    b, t, h, kd = q.shape
    chunk = min(CHUNK, t)
    xs = [
        _chunked.to_blocks(x.astype(jnp.float32), t, chunk)
        for x in (q * kd**-0.5, k, v, log_alpha, beta)
    ]
    o, s = _dr._scan(xs, jnp.zeros((b, h, kd, v.shape[-1]), jnp.float32))
    return _chunked.from_blocks(o, t), s


def ours(q, k, v, log_alpha, beta):
    """:func:`hadamard_jax.gated_delta_rule` (chunk size :data:`CHUNK`)."""
    return gated_delta_rule(q, k, v, log_alpha, beta, chunk_size=CHUNK)


_OPS: dict[str, Op] = {
    "token_scan": token_scan,
    "plain_chunked": plain_chunked,
    "hadamard_jax": ours,
}


@functools.cache
def train_step(impl: str) -> jax.stages.Wrapped:
    """``jit(value_and_grad(loss, argnums=0..4))``: ``(q, k, v, log_alpha, beta, w) -> ...``."""
    if impl not in _OPS:
        raise ValueError(f"delta_rule: impl must be one of {IMPLS}, got {impl!r}.")
    loss = kernels.output_and_state_loss(_OPS[impl])
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))


def _shapes(t: int) -> list[tuple[int, ...]]:
    b, h, kd, vd = SHAPE
    return [(b, t, h, kd), (b, t, h, kd), (b, t, h, vd), (b, t, h), (b, t, h), (b, t, h, vd)]


def inputs(t: int, seed: int = 0) -> list[jax.Array]:
    """``(q, k, v, log_alpha, beta, w)`` float32 at length ``t`` (drawn by NumPy)."""
    rng = np.random.default_rng(seed)
    q, k, v, la, beta, w = (rng.standard_normal(s) for s in _shapes(t))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    la = -0.1 * rng.uniform(size=la.shape)
    beta = rng.uniform(size=beta.shape)
    return [jax.device_put(x.astype(np.float32)) for x in (q, k, v, la, beta, w)]


@functools.cache
def compiled_temp_bytes(impl: str, t: int) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the compiled step (abstract shapes; cached)."""
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in _shapes(t)]
    return kernels.temp_bytes(train_step(impl), *args)


def gradient_error(t: int) -> float:
    """Largest ``max|g - g_token| / max|g_token|`` over the five gradients."""
    args = inputs(t)
    _, ref = train_step("token_scan")(*args)
    _, got = train_step("hadamard_jax")(*args)
    errs = [
        float(np.max(np.abs(np.asarray(g) - np.asarray(r))) / np.max(np.abs(np.asarray(r))))
        for g, r in zip(got, ref)
    ]
    return max(errs)


def time_samples(t: int, *, rounds: int = 5) -> dict[str, list[float]]:
    """Seconds per step of each impl, ``rounds`` alternated samples (warm-up excluded)."""
    args = inputs(t)
    calls = {impl: timing.Call(train_step(impl), args) for impl in IMPLS}
    return timing.interleaved(calls, rounds=rounds, min_sample_s=0.0, warm_up_calls=1)


def rows(
    *, t: int = T_TARGET, growth: Sequence[int] = GROWTH_T, rounds: int = 5, time: bool = True
) -> list[dict[str, Any]]:
    """The figures as dicts: one ``"memory"`` row per ``T`` in ``growth`` and, with ``time``, one
    ``"time"`` row at ``t``. Ratios are ours over each baseline, with ``met`` per target.

    Memory rows: ``{"kind": "memory", "T", "<impl>_mib"..., "vs_token_scan", "vs_plain_chunked",
    "met_token_scan", "met_plain_chunked"}``. The time row: ``{"kind": "time", "T",
    "<impl>_ms"... (medians), "vs_token_scan", "vs_plain_chunked" (medians of the per-round
    ratios), the ``met_*`` flags, "grad_rel_err"}``.
    """
    out: list[dict[str, Any]] = []
    for length in growth:
        mib = {impl: compiled_temp_bytes(impl, length) / 2**20 for impl in IMPLS}
        ratios = (
            mib["hadamard_jax"] / mib["token_scan"],
            mib["hadamard_jax"] / mib["plain_chunked"],
        )
        out.append(
            {
                "kind": "memory",
                "T": length,
                **{f"{impl}_mib": mib[impl] for impl in IMPLS},
                **_versus("memory", *ratios),
            }
        )
    if time:
        samples = time_samples(t, rounds=rounds)
        ours_s = samples["hadamard_jax"]
        ratios = [timing.median_ratio(ours_s, samples[b]) for b in ("token_scan", "plain_chunked")]
        out.append(
            {
                "kind": "time",
                "T": t,
                **{f"{impl}_ms": statistics.median(samples[impl]) * 1e3 for impl in IMPLS},
                **_versus("time", *ratios),
                "grad_rel_err": gradient_error(t),
            }
        )
    return out


def _versus(kind: str, r_tok: float, r_plain: float) -> dict[str, Any]:
    """The ratios of a row against both baselines and whether each meets its ``kind`` target."""
    return {
        "vs_token_scan": r_tok,
        "vs_plain_chunked": r_plain,
        "met_token_scan": r_tok <= TARGETS[f"{kind}_vs_token_scan"],
        "met_plain_chunked": r_plain <= TARGETS[f"{kind}_vs_plain_chunked"],
    }


def _met(flag: bool) -> str:
    return "met" if flag else "MISSED"


def markdown(table: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of :func:`rows`' output (a memory table, then the time table)."""
    b, h, kd, vd = SHAPE
    lines = [
        f"Memory (compiled temp, B={b} H={h} K={kd} V={vd}, fp32, jit(value_and_grad)):",
        "",
        "| T | token scan | plain chunked | hadamard_jax | / token scan (<= 0.1) "
        "| / plain chunked (<= 0.5) |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        if r["kind"] == "memory":
            lines.append(
                f"| {r['T']} | {r['token_scan_mib']:.1f} MiB | {r['plain_chunked_mib']:.1f} MiB "
                f"| {r['hadamard_jax_mib']:.1f} MiB | {r['vs_token_scan']:.3f} "
                f"{_met(r['met_token_scan'])} | {r['vs_plain_chunked']:.3f} "
                f"{_met(r['met_plain_chunked'])} |"
            )
    timed = [r for r in table if r["kind"] == "time"]
    if timed:
        lines += [
            "",
            "Time (median step, alternated in one process):",
            "",
            "| T | token scan | plain chunked | hadamard_jax | / token scan (<= 0.25) "
            "| / plain chunked (<= 1.0) | grad rel. err. vs token scan |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in timed:
            lines.append(
                f"| {r['T']} | {r['token_scan_ms']:.0f} ms | {r['plain_chunked_ms']:.0f} ms "
                f"| {r['hadamard_jax_ms']:.0f} ms | {r['vs_token_scan']:.3f} "
                f"{_met(r['met_token_scan'])} | {r['vs_plain_chunked']:.3f} "
                f"{_met(r['met_plain_chunked'])} | {r['grad_rel_err']:.1e} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the tables; returns the exit status (0)."""
    parser = _args.parser(_PROG, _DESCRIPTION, rounds=("--rounds", 5), no_time=True)
    parser.add_argument("--t", type=int, default=T_TARGET, help="T of the time table")
    parser.add_argument(
        "--growth", type=int, nargs="+", default=list(GROWTH_T), help="T of the memory table"
    )
    args = parser.parse_args(argv)
    table = rows(t=args.t, growth=args.growth, rounds=args.rounds, time=not args.no_time)
    print("\n".join(markdown(table)))
    return 0


_PROG = "python -m hadamard_jax.bench.delta_rule"
_DESCRIPTION = (
    "Gated delta rule: jit(value_and_grad) of a scalar loss at B=2, H=4, K=V=64, fp32; "
    "hadamard_jax.gated_delta_rule against a token-by-token lax.scan and the same "
    "chunked algorithm with plain autodiff: compiled temp memory at several T, and "
    "step time (timed alternately in one process) at one T."
)


if __name__ == "__main__":
    raise SystemExit(main())
