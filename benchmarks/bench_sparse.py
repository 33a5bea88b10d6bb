"""Sparse training: one optimizer step under ``hadamard_jax.sparse.sparsify`` vs dense adamw.

The workload is :mod:`hadamard_jax.bench.sparse_step` (stacked FFN weights; the jitted steps are
built once per process at module level, ``setup`` only makes the arrays and warms up).
``time_step`` times each step kind; ``track_time_ratio`` (lower is better; target <= 1.15 for
``"sparse"``, a step without mask update) times them alternately in one process and reports the
median of the per-round ratios to the dense step. The size is smaller than the report's FFN
(``python -m hadamard_jax.bench.sparse_step`` runs that) because a mask update sorts every layer.
"""

from __future__ import annotations

from hadamard_jax.bench import sparse_step, timing

from . import common

IMPLS = list(sparse_step.IMPLS)
SIZE = {"layers": 2, "d": 256, "h": 1024}


class SparseStepTime:
    """Seconds per optimizer step: dense, sparse (no mask update), sparse with mask update."""

    params = [IMPLS]
    param_names = ["impl"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, impl):
        self.call = sparse_step.make_call(impl, **SIZE)
        timing.warm_up(self.call, 2)

    def time_step(self, impl):
        self.call()


class SparseStepRatio:
    """Step time over the dense step, timed alternately (lower is better)."""

    params = [["sparse", "sparse_update"]]
    param_names = ["impl"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        r = sparse_step.measure(**SIZE, repeats=common.RATIO_ROUNDS)
        return {"sparse": r["ratio"], "sparse_update": r["update_ratio"]}

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def track_time_ratio(self, ratios, impl):
        return ratios[impl]

    track_time_ratio.unit = "sparse / dense"
