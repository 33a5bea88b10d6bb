"""Sparse training: one optimizer step under ``hadamard_jax.sparse.sparsify`` vs dense adamw.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (or ``smoke``; CI). The workload is
:mod:`hadamard_jax.bench.sparse_step` (stacked FFN weights; the jitted steps are built once per
process at module level, ``setup`` only makes the arrays and warms up). ``time_step`` times each
step kind; ``track_time_ratio_wall`` (lower is better; target <= 1.15 for ``"sparse"``, a step
without mask update) times them alternately in one process and reports the median of the
per-round ratios to the dense step. The size is smaller than the report's FFN
(``python -m hadamard_jax.bench.sparse_step`` runs that). No JAX import at module level.
"""

from __future__ import annotations

from . import common

IMPLS = common.axis(["dense", "sparse", "sparse_update"], ["sparse"])
SIZE = {"layers": 2, "d": 256, "h": 1024}


class SparseStepTime:
    """Seconds per optimizer step: dense, sparse (no mask update), sparse with mask update."""

    params = [IMPLS]
    param_names = ["impl"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, impl):
        def warm():
            from hadamard_jax.bench import sparse_step, timing

            call = sparse_step.make_call(impl, **SIZE)
            timing.warm_up(call, 2)
            return call

        self.call = common.require(warm)

    def time_step(self, impl):
        self.call()


class SparseStepRatio:
    """Step time over the dense step, timed alternately (lower is better)."""

    params = [common.axis(["sparse", "sparse_update"])]
    param_names = ["impl"]
    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        def measure():
            from hadamard_jax.bench import sparse_step

            r = sparse_step.measure(**SIZE, repeats=common.RATIO_ROUNDS)
            return {"sparse": r["ratio"], "sparse_update": r["update_ratio"]}

        return common.require(measure)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def track_time_ratio_wall(self, ratios, impl):
        return ratios[impl]

    track_time_ratio_wall.unit = "sparse / dense"


if not common.DEEP:
    del SparseStepTime, SparseStepRatio
