"""Shared parameters and set-up of the asv suite, and the choice of grid.

``HADAMARD_JAX_ASV`` (environment variable, read at import by discovery and by every benchmark
process alike) selects what asv discovers:

* ``track`` (default): only the tracked suite (:mod:`benchmarks.bench_tracked`, about 2 minutes
  a commit on 2 cores): what ``benchmarks/regress.sh`` gates on and ``asv run`` over history
  records;
* ``deep``: the tracked suite and the full grids (``bench_hadamard``, ``bench_gating``,
  ``bench_memory``: every size, dtype, op and implementation);
* ``smoke``: everything at its smallest parameters and tiny sizes (CI: ``run_quick.sh``).

A module's deep classes are deleted at its end unless :data:`DEEP`.

JAX timing hygiene (the rules a new benchmark follows; docs/benchmarking.md, "Adding a benchmark
module"):

* no benchmark module imports JAX at module level: a benchmark that only reads a figure from a
  ``setup_cache`` runs in ~0.1 s instead of ~1.5 s, and discovery works on any commit;
* the jitted kernels are built once, at import, in :mod:`hadamard_jax.bench.kernels` and
  :mod:`hadamard_jax.bench.gating` (asv_runner re-runs ``setup`` before every timed call, so a
  ``jax.jit`` built in ``setup`` would retrace every time);
* ``setup`` compiles and warms up a call once per process (:func:`warm_call`, cached), so the
  timed calls contain no compile time (``warmup_time = 0``);
* every timed call ends in ``jax.block_until_ready`` (:class:`hadamard_jax.bench.timing.Call`);
* a figure that needs code the installed commit lacks is skipped (``NotImplementedError``, asv
  shows n/a), not failed: ``asv run`` over old commits records what exists.
"""

from __future__ import annotations

import functools
import os

MODE = os.environ.get("HADAMARD_JAX_ASV", "track")
if MODE not in ("track", "deep", "smoke"):
    raise ValueError(f"HADAMARD_JAX_ASV must be 'track', 'deep' or 'smoke', got {MODE!r}")
SMOKE = MODE == "smoke"
# The deep grid's classes exist (deep: every parameter; smoke: the first of each).
DEEP = MODE != "track"


def axis(values, smoke=None):
    """A parameter axis: every value, or in smoke mode only ``smoke`` (a value or a list of
    values; default the first value)."""
    values = list(values)
    if not SMOKE:
        return values
    if smoke is None:
        return values[:1]
    return list(smoke) if isinstance(smoke, (list, tuple)) else [smoke]


SIZES = axis([256, 1024, 4096])
DTYPES = axis(["float32", "bfloat16"])

# Rounds of alternation for the rates and ratios measured in setup_cache.
ROUNDS = 1 if SMOKE else 5
RATIO_ROUNDS = 1 if SMOKE else 9
MIN_SAMPLE_S = 0.0 if SMOKE else 0.01
# Side of the gating ops' operands.
GATING_N = 16 if SMOKE else 1024
# Sides of the gating ops' time ratios in the deep grid: cache-resident, and past the caches.
GATING_SIZES = [16] if SMOKE else [1024, 2048, 4096]
# setup_cache measurements run many kernels; asv's default benchmark timeout is 60 s.
SETUP_CACHE_TIMEOUT = 900


class TimeSettings:
    """asv's sampling settings for a ``time_`` benchmark of a warmed-up jitted call.

    One round (each round is another process: interpreter start, JAX import, compilation), no
    warm-up (``setup`` compiled and ran the call), 5 to 20 samples within 2 s, each at least
    10 ms of back-to-back calls.
    """

    rounds = 1
    repeat = (5, 20, 2.0)
    warmup_time = 0.0
    sample_time = 0.01


def skip_if_missing(value):
    """Raises ``NotImplementedError`` (asv: skipped, n/a) if ``value`` is a missing marker."""
    if isinstance(value, str):
        raise NotImplementedError(value)


def require(fn):
    """``fn()``; ``NotImplementedError`` (asv: skipped) if the installed commit lacks its code."""
    try:
        return fn()
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"not in this commit: {type(exc).__name__}: {exc}") from exc


@functools.cache
def warm_call(kind: str, *key):
    """A warmed-up blocking call, built once per process and reused by every ``setup``.

    Args:
      kind: ``"forward"`` (key ``op, n, dtype, donated``), ``"forward_backward"`` (key
        ``op, n, dtype``) or ``"gating"`` (key ``name, impl, n, dtype``).
    """

    def build():
        from hadamard_jax.bench import gating, kernels, timing

        if kind == "forward":
            op, n, dtype, donated = key
            call = kernels.forward_call(op, n, dtype, donate=donated)
        elif kind == "forward_backward":
            call = kernels.forward_backward_call(*key)
        elif kind == "gating":
            call = gating.forward_backward_call(*key)
        else:
            raise ValueError(f"benchmarks: unknown call kind {kind!r}")
        timing.warm_up(call, 2)
        return call

    return require(build)
