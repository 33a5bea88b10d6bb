"""Deep grid: gating ops against their plain ``jax.nn`` compositions, every op, impl and dtype.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (or ``smoke``: the first of each; CI). The
tracked, gated figures of the same ops (float32) are in :mod:`benchmarks.bench_tracked`.

``time_forward_backward`` times each implementation; ``track_time_ratio_wall`` times the two
alternately in one process at 1024^2, 2048^2 and 4096^2 and reports the median of the per-round
ratios (wall time; lower is better); ``track_saved_residual_bytes`` (lower is better) is what
reverse mode keeps for the backward pass, from abstract shapes.
"""

from __future__ import annotations

from . import common, figures

NAMES = common.axis(figures.GATING, "swiglu")
IMPLS = ["hadamard_jax", "plain"]


def _measure_ratios():
    from hadamard_jax.bench import gating, timing

    ratios = {}
    for dtype in common.DTYPES:
        for n in common.GATING_SIZES:
            for name in NAMES:
                samples = gating.time_alternately(
                    name,
                    n,
                    dtype,
                    rounds=common.RATIO_ROUNDS,
                    min_sample_s=common.MIN_SAMPLE_S,
                )
                ratios[(name, n, dtype)] = timing.median_ratio(
                    samples["hadamard_jax"], samples["plain"]
                )
    return ratios


class GatingTime(common.TimeSettings):
    """Forward+backward time of a gating op, ``hadamard_jax`` or its plain composition."""

    params = [NAMES, IMPLS, common.DTYPES]
    param_names = ["op", "impl", "dtype"]

    def setup(self, op, impl, dtype):
        self.call = common.warm_call("gating", op, impl, common.GATING_N, dtype)

    def time_forward_backward(self, op, impl, dtype):
        self.call()


class GatingRatio:
    """fwd+bwd wall time of ``hadamard_jax`` over plain, timed alternately: the median of the
    per-round ratios (the report's target: <= 1.0 from 2048^2 on, <= 1.15 at 1024^2)."""

    params = [NAMES, common.GATING_SIZES, common.DTYPES]
    param_names = ["op", "n", "dtype"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        try:
            return common.require(_measure_ratios)
        except NotImplementedError as exc:
            return str(exc)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, ratios, op, n, dtype):
        common.skip_if_missing(ratios)

    def track_time_ratio_wall(self, ratios, op, n, dtype):
        return ratios[(op, n, dtype)]

    track_time_ratio_wall.unit = "x plain JAX"


class GatingMemory:
    """Bytes kept for the backward pass of the op alone, both impls (lower is better)."""

    params = [NAMES, IMPLS]
    param_names = ["op", "impl"]

    def track_saved_residual_bytes(self, op, impl):
        def saved():
            from hadamard_jax.bench import gating

            return gating.saved_residual_bytes(op, impl, common.GATING_N, "float32")

        return common.require(saved)

    track_saved_residual_bytes.unit = "bytes"


if not common.DEEP:
    del GatingTime, GatingRatio, GatingMemory
