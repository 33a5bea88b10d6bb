"""Gating ops against their plain ``jax.nn`` compositions: fwd+bwd time, ratio, saved bytes.

``time_forward_backward`` times each implementation; ``track_time_ratio`` (lower is better,
target <= 1.0) times the two alternately in one process and reports the ratio of their
best samples; ``track_saved_residual_bytes`` (lower is better) is what reverse mode keeps for the
backward pass, from abstract shapes.
"""

from __future__ import annotations

from hadamard_jax.bench import gating, timing

from . import common

NAMES = list(gating.NAMES)
IMPLS = list(gating.IMPLS)


def _measure_ratios():
    ratios = {}
    for dtype in common.DTYPES:
        for name in gating.NAMES:
            samples = gating.time_alternately(
                name,
                common.GATING_N,
                dtype,
                rounds=common.RATIO_ROUNDS,
                min_sample_s=common.MIN_SAMPLE_S,
            )
            ratios[(name, dtype)] = timing.best_ratio(samples["hadamard_jax"], samples["plain"])
    return ratios


class GatingTime:
    """Forward+backward time of a gating op, ``hadamard_jax`` or its plain composition."""

    params = [NAMES, IMPLS, common.DTYPES]
    param_names = ["op", "impl", "dtype"]

    def setup(self, op, impl, dtype):
        self.call = common.warm_call("gating", op, impl, common.GATING_N, dtype)

    def time_forward_backward(self, op, impl, dtype):
        self.call()


class GatingRatio:
    """fwd+bwd time of ``hadamard_jax`` over plain, timed alternately (lower is better)."""

    params = [NAMES, common.DTYPES]
    param_names = ["op", "dtype"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        return _measure_ratios()

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def track_time_ratio(self, ratios, op, dtype):
        return ratios[(op, dtype)]

    track_time_ratio.unit = "hadamard_jax / plain"


class GatingMemory:
    """Bytes kept for the backward pass of the op alone (lower is better)."""

    params = [NAMES, IMPLS]
    param_names = ["op", "impl"]

    def track_saved_residual_bytes(self, op, impl):
        return gating.saved_residual_bytes(op, impl, common.GATING_N, "float32")

    track_saved_residual_bytes.unit = "bytes"
