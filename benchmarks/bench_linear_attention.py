"""Gated linear attention: the token ``lax.scan``, the chunked algorithm with plain autodiff, ours.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (or ``smoke``: the first of each; CI). The
workload is :mod:`hadamard_jax.bench.linear_attention`: ``jax.jit(jax.value_and_grad)`` of
``sum(o * w) + sum(S_T)`` at ``B=2, H=4, K=V=64`` in float32, at small ``T`` (the issue's
``T = 4096`` is in ``python -m hadamard_jax.bench.linear_attention``). Lower is better:

* ``time_step``: one training step of each implementation;
* ``track_temp_bytes``: the compiled step's ``memory_analysis().temp_size_in_bytes``;
* ``track_time_ratio_wall``: ours over the chunked algorithm with plain autodiff, the median of
  per-round ratios of the three timed alternately in one process (target <= 1.0).

No JAX import at module level (see :mod:`benchmarks.common`); commits without the workload are
skipped.
"""

from __future__ import annotations

import functools

from . import common

IMPLS = common.axis(["token_scan", "chunked_plain", "hadamard_jax"], ["hadamard_jax"])
LENGTHS = common.axis([256, 1024])


@functools.cache
def _warm_call(impl: str, t: int):
    from hadamard_jax.bench import linear_attention, timing

    call = timing.Call(linear_attention.train_step(impl, t), linear_attention.inputs(t))
    timing.warm_up(call, 2)
    return call


@functools.cache
def _ratio(t: int, rounds: int) -> float:
    from hadamard_jax.bench import linear_attention, timing

    samples = linear_attention.time_samples(t, rounds=rounds, min_sample_s=common.MIN_SAMPLE_S)
    return timing.median_ratio(samples["hadamard_jax"], samples["chunked_plain"])


class LinearAttentionTime:
    """One fwd+bwd training step of each implementation."""

    params = [IMPLS, LENGTHS]
    param_names = ["impl", "T"]

    def setup(self, impl, t):
        self.call = common.require(lambda: _warm_call(impl, t))

    def time_step(self, impl, t):
        self.call()


class LinearAttentionMemory:
    """Compiled temp bytes of the training step."""

    params = [IMPLS, LENGTHS]
    param_names = ["impl", "T"]

    def track_temp_bytes(self, impl, t):
        def temp():
            from hadamard_jax.bench import linear_attention

            return linear_attention.compiled_temp_bytes(impl, t)

        return common.require(temp)

    track_temp_bytes.unit = "bytes"


class LinearAttentionRatio:
    """Our step time over the chunked algorithm's with plain autodiff (target <= 1.0)."""

    params = [LENGTHS]
    param_names = ["T"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def track_time_ratio_wall(self, t):
        return common.require(lambda: _ratio(t, common.RATIO_ROUNDS))

    track_time_ratio_wall.unit = "x chunked plain"


if not common.DEEP:
    del LinearAttentionTime, LinearAttentionMemory, LinearAttentionRatio
