"""Workload: gated linear attention (GLA, a gate per key dimension), three ways, trained.

The loss is ``sum(o * w) + sum(S_T)`` of ``o, S_T = gla(q, k, v, log_g, S_0)`` at ``B = 2, H = 4,
K = V = 64`` in float32, differentiated in all five inputs by
``jax.jit(jax.value_and_grad(loss))``:

* ``"token_scan"``: the recurrence token by token in a ``lax.scan``, differentiated by JAX
  (keeps a ``[K, V]`` state per token and head);
* ``"chunked_plain"``: the same chunked algorithm as the op (the library's forward function),
  differentiated by JAX with no rule: the way MaxText-style code runs it;
* ``"hadamard_jax"``: :func:`hadamard_jax.gated_linear_attention` (chunk 64), whose rule keeps
  the inputs and the chunk-boundary states only.

Gates are GLA's, ``log_g = logsigmoid(x) / 16``. Figures: compiled
``memory_analysis().temp_size_in_bytes`` (from abstract shapes), wall time of the three steps
timed alternately in one process (:func:`hadamard_jax.bench.timing.interleaved`), and the
largest relative difference of the gradients from the token scan's.

Run ``python -m hadamard_jax.bench.linear_attention`` (``--repeats N``, ``--no-time``,
``--time-t T``); :func:`rows` gives the figures as dicts for a report.
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

from hadamard_jax._src import gated_linear_attention as gla
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import kernels, timing

IMPLS = ("token_scan", "chunked_plain", "hadamard_jax")
#: Batch, heads, key and value width of the issue's workload.
B, H, K, V = 2, 4, 64, 64
CHUNK = 64
#: T of the time table and of the memory growth table.
TIME_T = 4096
GROWTH_T = (1024, 4096, 16384)
#: Targets, ours over each baseline.
TARGETS = {
    "time_vs_token_scan": 0.25,
    "memory_vs_token_scan": 0.1,
    "time_vs_plain_chunked": 1.0,
    "memory_vs_plain_chunked": 0.5,
}


def token_scan(q, k, v, log_g, h0, scale: float):
    """``(o, S_T)`` token by token (``lax.scan`` over time; JAX's own autodiff)."""

    def step(s, x):
        qt, kt, vt, gt = x
        s = jnp.exp(gt)[..., None] * s + kt[..., :, None] * vt[..., None, :]
        return s, scale * jnp.einsum("bhk,bhkv->bhv", qt, s)

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, log_g))
    last, o = lax.scan(step, h0, xs)
    return jnp.moveaxis(o, 0, 1), last


def chunked_plain(q, k, v, log_g, h0, scale: float, length: int):
    """``(o, S_T)`` by the op's own chunked forward function, with no derivative rule."""
    cfg = gla._Config(length, CHUNK, False, scale)
    o, last, _ = gla._forward_batched(cfg, q, k, v, log_g, h0)
    return o, last


def ours(q, k, v, log_g, h0, scale: float):
    """``(o, S_T)`` by :func:`hadamard_jax.gated_linear_attention`."""
    return gla.gated_linear_attention(
        q, k, v, log_g, initial_state=h0, scale=scale, chunk_size=CHUNK
    )


def make_loss(impl: str, length: int) -> Callable[..., jax.Array]:
    """``loss(q, k, v, log_g, h0, w) = sum(o * w) + sum(S_T)`` for ``impl`` in :data:`IMPLS`."""
    scale = K**-0.5
    fns = {
        "token_scan": functools.partial(token_scan, scale=scale),
        "chunked_plain": functools.partial(chunked_plain, scale=scale, length=length),
        "hadamard_jax": functools.partial(ours, scale=scale),
    }
    if impl not in fns:
        raise ValueError(f"linear_attention: impl must be one of {IMPLS}, got {impl!r}.")
    return kernels.output_and_state_loss(fns[impl])


@functools.cache
def train_step(impl: str, length: int) -> jax.stages.Wrapped:
    """``jit(value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))``."""
    return jax.jit(jax.value_and_grad(make_loss(impl, length), argnums=(0, 1, 2, 3, 4)))


def shapes(t: int) -> list[tuple[int, ...]]:
    """The shapes of ``(q, k, v, log_g, h0, w)``."""
    return [(B, t, H, K), (B, t, H, K), (B, t, H, V), (B, t, H, K), (B, H, K, V), (B, t, H, V)]


def inputs(t: int, seed: int = 0) -> tuple[jax.Array, ...]:
    """``(q, k, v, log_g, h0, w)``: standard normal, ``log_g = logsigmoid(N(0, 1)) / 16``."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes(t)]
    arrays[3] = (-np.logaddexp(0.0, -arrays[3]) / 16).astype(np.float32)
    return tuple(jax.device_put(a) for a in arrays)


@functools.cache
def compiled_temp_bytes(impl: str, t: int) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the compiled step (abstract shapes; cached)."""
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes(t)]
    return kernels.temp_bytes(train_step(impl, t), *args)


def gradient_error(t: int) -> dict[str, float]:
    """Largest ``max|g - g_scan| / max|g_scan|`` over the five gradients, per impl."""
    args = inputs(t)
    _, ref = train_step("token_scan", t)(*args)
    out = {}
    for impl in IMPLS[1:]:
        _, got = train_step(impl, t)(*args)
        errors = []
        for g, r in zip(got, ref):
            g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
            errors.append(float(np.max(np.abs(g - r)) / np.max(np.abs(r))))
        out[impl] = max(errors)
    return out


def time_samples(t: int, *, rounds: int = 5, min_sample_s: float = 0.0) -> dict[str, list[float]]:
    """Seconds per step of each impl, ``rounds`` alternated samples each (warm-up excluded)."""
    args = inputs(t)
    calls = {impl: timing.Call(train_step(impl, t), args) for impl in IMPLS}
    return timing.interleaved(calls, rounds=rounds, min_sample_s=min_sample_s, warm_up_calls=1)


def _met(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def rows(
    *, growth_t: Sequence[int] = GROWTH_T, time_t: int | None = TIME_T, rounds: int = 5
) -> list[dict[str, Any]]:
    """The figures as dicts: one ``"memory"`` row per ``T`` and one ``"time"`` row at ``time_t``.

    Memory rows: ``{"kind": "memory", "T", "<impl>_mib", "vs_token_scan", "vs_plain_chunked"}``;
    the time row: ``{"kind": "time", "T", "<impl>_ms" (medians), "vs_token_scan",
    "vs_plain_chunked" (medians of per-round ratios), "grad_err_<impl>"}``.
    """
    out: list[dict[str, Any]] = []
    for t in growth_t:
        mib = {impl: compiled_temp_bytes(impl, t) / 2**20 for impl in IMPLS}
        out.append(
            {
                "kind": "memory",
                "T": t,
                **{f"{impl}_mib": mib[impl] for impl in IMPLS},
                "vs_token_scan": mib["hadamard_jax"] / mib["token_scan"],
                "vs_plain_chunked": mib["hadamard_jax"] / mib["chunked_plain"],
            }
        )
    if time_t is not None:
        samples = time_samples(time_t, rounds=rounds)
        errors = gradient_error(time_t)
        out.append(
            {
                "kind": "time",
                "T": time_t,
                **{f"{impl}_ms": statistics.median(samples[impl]) * 1e3 for impl in IMPLS},
                "vs_token_scan": timing.median_ratio(
                    samples["hadamard_jax"], samples["token_scan"]
                ),
                "vs_plain_chunked": timing.median_ratio(
                    samples["hadamard_jax"], samples["chunked_plain"]
                ),
                **{f"grad_err_{impl}": err for impl, err in errors.items()},
            }
        )
    return out


def format_rows(table: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines for :func:`rows`' output."""
    lines = [
        f"Compiled temp memory of jit(value_and_grad(loss)), B={B}, H={H}, K=V={K}, fp32:",
        "",
        "| T | token scan | chunked, plain autodiff | hadamard_jax | / token scan (<= 0.1) "
        "| / chunked plain (<= 0.5) |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        if r["kind"] != "memory":
            continue
        lines.append(
            f"| {r['T']} | {r['token_scan_mib']:.1f} MiB | {r['chunked_plain_mib']:.1f} MiB | "
            f"{r['hadamard_jax_mib']:.1f} MiB | {r['vs_token_scan']:.3f} "
            f"{_met(r['vs_token_scan'], TARGETS['memory_vs_token_scan'])} | "
            f"{r['vs_plain_chunked']:.3f} "
            f"{_met(r['vs_plain_chunked'], TARGETS['memory_vs_plain_chunked'])} |"
        )
    for r in table:
        if r["kind"] != "time":
            continue
        lines += [
            "",
            "Time per step (medians; ratios: medians of per-round ratios, alternated):",
            "",
            "| T | token scan | chunked plain | hadamard_jax | / token scan (<= 0.25) "
            "| / chunked plain (<= 1.0) | grad rel. err. vs token scan |",
            "|---|---|---|---|---|---|---|",
            f"| {r['T']} | {r['token_scan_ms']:.0f} ms | {r['chunked_plain_ms']:.0f} ms | "
            f"{r['hadamard_jax_ms']:.0f} ms | {r['vs_token_scan']:.3f} "
            f"{_met(r['vs_token_scan'], TARGETS['time_vs_token_scan'])} | "
            f"{r['vs_plain_chunked']:.3f} "
            f"{_met(r['vs_plain_chunked'], TARGETS['time_vs_plain_chunked'])} | "
            f"{r['grad_err_hadamard_jax']:.1e} |",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    """Prints the memory table (T = 1k, 4k, 16k) and the time table (T = 4k)."""
    parser = _args.parser(_PROG, _DESCRIPTION, rounds=("--repeats", 5), no_time=True)
    parser.add_argument("--time-t", type=int, default=TIME_T, help="T of the time table")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float32\n")
    table = rows(time_t=None if args.no_time else args.time_t, rounds=args.repeats)
    print("\n".join(format_rows(table)))


_PROG = "python -m hadamard_jax.bench.linear_attention"
_DESCRIPTION = (
    "Gated linear attention, B=2 H=4 K=V=64 fp32, jit(value_and_grad): token "
    "lax.scan vs the chunked algorithm with plain autodiff vs "
    "hadamard_jax.gated_linear_attention."
)


if __name__ == "__main__":  # pragma: no cover
    main()
