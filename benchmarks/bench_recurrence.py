"""The linear recurrence ``h_t = a_t h_{t-1} + b_t``: ``lax.scan``, ``associative_scan``, ours.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (or ``smoke``: the first of each; CI). The
workload is :mod:`hadamard_jax.bench.recurrence`: ``jax.jit(jax.value_and_grad)`` of
``sum(h * w)`` in float32, at small sizes (the issue's sizes, 16 MiB per array, are in
``python -m hadamard_jax.bench.recurrence``). Lower is better for every figure:

* ``time_step``: one training step of each implementation;
* ``track_temp_bytes``: the compiled step's ``memory_analysis().temp_size_in_bytes``
  (deterministic, from abstract shapes);
* ``track_time_ratio_wall``: ours over the better of ``lax.scan`` and ``associative_scan``, the
  median of per-round ratios of the three timed alternately in one process (target <= 0.8).

No JAX import at module level (see :mod:`benchmarks.common`); commits without the workload are
skipped.
"""

from __future__ import annotations

import functools

from . import common

IMPLS = common.axis(["lax_scan", "associative_scan", "hadamard_jax"], ["hadamard_jax"])
#: T x D; the same three shapes as the issue's (square-ish, long and narrow, short and wide).
SIZES = common.axis(["64x2048", "1024x256", "16384x16"])


def _shape(size: str) -> tuple[int, int]:
    t, d = size.split("x")
    return int(t), int(d)


@functools.cache
def _warm_call(impl: str, size: str):
    from hadamard_jax.bench import recurrence, timing

    call = timing.Call(recurrence.train_step(impl), recurrence.inputs(*_shape(size)))
    timing.warm_up(call, 2)
    return call


@functools.cache
def _ratio(size: str, rounds: int) -> float:
    from hadamard_jax.bench import recurrence

    samples = recurrence.time_samples(
        *_shape(size), rounds=rounds, min_sample_s=common.MIN_SAMPLE_S
    )
    return recurrence.time_ratios(samples)["vs_best"]


class RecurrenceTime:
    """One fwd+bwd training step of each implementation."""

    params = [IMPLS, SIZES]
    param_names = ["impl", "size"]

    def setup(self, impl, size):
        self.call = common.require(lambda: _warm_call(impl, size))

    def time_step(self, impl, size):
        self.call()


class RecurrenceMemory:
    """Compiled temp bytes of the training step."""

    params = [IMPLS, SIZES]
    param_names = ["impl", "size"]

    def track_temp_bytes(self, impl, size):
        def temp():
            from hadamard_jax.bench import recurrence

            return recurrence.compiled_temp_bytes(impl, *_shape(size))

        return common.require(temp)

    track_temp_bytes.unit = "bytes"


class RecurrenceRatio:
    """Our step time over the better plain one, timed alternately (target <= 0.8)."""

    params = [SIZES]
    param_names = ["size"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def track_time_ratio_wall(self, size):
        return common.require(lambda: _ratio(size, common.RATIO_ROUNDS))

    track_time_ratio_wall.unit = "x better plain"


if not common.DEEP:
    del RecurrenceTime, RecurrenceMemory, RecurrenceRatio
