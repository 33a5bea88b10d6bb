"""Timing JAX calls: compile outside the figure, block on every result, interleave competitors.

Rules every figure in the report and the asv suite follows:

* each timed call ends in ``jax.block_until_ready`` (JAX dispatches asynchronously; without the
  block a timer measures the dispatch, not the work);
* compilation and first-touch page faults are paid in a warm-up before any timer starts;
* two implementations being compared are timed **alternately** in one process (round ``r`` times
  ``a`` then ``b``, round ``r + 1`` times ``b`` then ``a``), so load from other processes on a
  shared machine hits both alike;
* a rate (GB/s, GFLOP/s) comes from the best (shortest) sample, as STREAM reports its
  "Best Rate"; a ratio is of the two best samples (:func:`best_ratio`). Load from other
  processes only ever slows a sample down, so the best sample estimates the uncontended time,
  and alternation gives both sides the same chances at it. The median of the per-round ratios
  (:func:`median_ratio`) is reported next to it as a check.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import jax

K = TypeVar("K", bound=Hashable)


class Call:
    """A zero-argument, blocking call of ``fn(*args)``, ready to be timed.

    With ``chain=True`` the result replaces the first argument after each call: the form a
    function with a donated first argument needs, since the donated buffer is consumed (and
    reused for the result) by every call.

    Args:
      fn: a jitted function.
      args: its arguments. With ``chain=True`` the first one must be owned by this ``Call``
        (pass a copy): it is donated on the first call.
      chain: feed the result back as the first argument.
    """

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], *, chain: bool = False):
        self.fn = fn
        self.args = tuple(args)
        self.chain = chain

    def __call__(self) -> Any:
        out = jax.block_until_ready(self.fn(*self.args))
        if self.chain:
            self.args = (out, *self.args[1:])
        return out


def warm_up(call: Callable[[], Any], calls: int = 2) -> float:
    """Runs ``call`` ``calls`` times (compilation, page faults); returns the last call's seconds."""
    seconds = math.inf
    for _ in range(max(1, calls)):
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    return seconds


def calls_per_sample(seconds_per_call: float, min_sample_s: float) -> int:
    """How many back-to-back calls make one sample last at least ``min_sample_s``."""
    if seconds_per_call <= 0:
        return 1000
    return max(1, min(1000, math.ceil(min_sample_s / seconds_per_call)))


def sample(call: Callable[[], Any], number: int) -> float:
    """Mean seconds per call over ``number`` back-to-back calls of ``call``."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def interleaved(
    calls: Mapping[K, Callable[[], Any]],
    *,
    rounds: int,
    min_sample_s: float = 0.005,
    warm_up_calls: int = 2,
) -> dict[K, list[float]]:
    """Times several calls alternately: one sample of each per round, order reversed each round.

    Args:
      calls: name (any hashable key) -> zero-argument blocking call (e.g. a :class:`Call`).
      rounds: samples per call.
      min_sample_s: a sample batches enough back-to-back calls to last at least this long
        (the same count for one call in every round), so microsecond calls are not timer noise.
      warm_up_calls: untimed calls of each before the first round.

    Returns:
      name -> ``rounds`` samples, each in seconds per call.
    """
    names = list(calls)
    number = {
        name: calls_per_sample(warm_up(calls[name], warm_up_calls), min_sample_s) for name in names
    }
    samples: dict[K, list[float]] = {name: [] for name in names}
    for r in range(max(1, rounds)):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(sample(calls[name], number[name]))
    return samples


def step_time_ratio(
    calls: Mapping[str, Callable[[], Any]], impl: str, baseline: str, *, repeats: int
) -> dict[str, Any]:
    """Wall time of ``calls[impl]`` over ``calls[baseline]``: whole training steps, alternately.

    One untimed warm-up call each (compilation), then ``repeats`` rounds of one call per sample
    (a step takes long enough to time alone), in alternating order (:func:`interleaved`).

    Returns:
      ``{"ratio": median of the per-round ratios, "ratios": [...], "<impl>_s": [...],
      "<baseline>_s": [...]}``; a ratio below 1 means ``impl`` is faster.

    Examples:
      >>> r = step_time_ratio({"a": lambda: None, "b": lambda: None}, "a", "b", repeats=3)
      >>> sorted(r), len(r["ratios"])
      (['a_s', 'b_s', 'ratio', 'ratios'], 3)
    """
    samples = interleaved(calls, rounds=repeats, min_sample_s=0.0, warm_up_calls=1)
    ours, theirs = samples[impl], samples[baseline]
    return {
        "ratio": median_ratio(ours, theirs),
        "ratios": [o / b for o, b in zip(ours, theirs)],
        f"{impl}_s": ours,
        f"{baseline}_s": theirs,
    }


def best(samples: Sequence[float]) -> float:
    """The shortest sample (STREAM's "Best Rate" convention)."""
    return min(samples)


def best_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """``best(numerator) / best(denominator)`` (samples from :func:`interleaved`)."""
    return best(numerator) / best(denominator)


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds ``r`` of ``numerator[r] / denominator[r]`` (from :func:`interleaved`)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def rate(amount: float, seconds: float) -> float:
    """``amount / seconds / 1e9``: GB/s for bytes, GFLOP/s for flops."""
    return amount / seconds / 1e9
