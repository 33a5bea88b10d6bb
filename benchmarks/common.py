"""Shared parameters and set-up of the asv suite.

JAX timing hygiene (FIELD-NOTES.md, "asv with JAX"):

* the jitted kernels are built once, at import, in :mod:`hadamard_jax.bench.kernels` and
  :mod:`hadamard_jax.bench.gating` (asv_runner re-runs ``setup`` before every timed call, so a
  ``jax.jit`` built in ``setup`` would retrace every time);
* ``setup`` compiles and warms up a call once per process (:func:`warm_call`, cached), so
  ``--quick``'s single timed call contains no compile time;
* every timed call ends in ``jax.block_until_ready`` (:class:`hadamard_jax.bench.timing.Call`);
* rates and ratios come from one measurement per class, in ``setup_cache``, timing the
  competitors alternately in one process (:func:`hadamard_jax.bench.timing.interleaved`).

asv counts lower as better for ``track_`` too: GB/s, GFLOP/s and the STREAM fraction are for
display (a drop shows as an improvement); regressions are gated on the ``time_`` benchmarks and
on the lower-is-better ``track_`` figures (time ratios, bytes).
"""

from __future__ import annotations

import functools

SIZES = [256, 1024, 4096]
DTYPES = ["float32", "bfloat16"]

# Rounds of alternation for the rates and ratios measured in setup_cache.
ROUNDS = 5
RATIO_ROUNDS = 9
MIN_SAMPLE_S = 0.01
# Side of the gating ops' operands.
GATING_N = 1024
# setup_cache measurements run many kernels; asv's default benchmark timeout is 60 s.
SETUP_CACHE_TIMEOUT = 900


@functools.cache
def warm_call(kind: str, *key):
    """A warmed-up blocking call, built once per process and reused by every ``setup``.

    Args:
      kind: ``"forward"`` (key ``op, n, dtype, donated``), ``"forward_backward"`` (key
        ``op, n, dtype``) or ``"gating"`` (key ``name, impl, n, dtype``).
    """
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
