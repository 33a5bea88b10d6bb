"""Deep grid: the Hadamard product against ``jnp.multiply`` and ``jnp.matmul``: time, GB/s.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (every size, dtype, op, donation) or ``smoke``
(the first of each; CI). Not gated by the regression command: the tracked ratio and costs of
``hadamard`` are in :mod:`benchmarks.bench_tracked`.

Bytes are counted as STREAM counts them (:mod:`hadamard_jax.bench.kernels`): an element-wise
forward pass moves 3 arrays, forward+backward 6. The bandwidth reference is the STREAM-style
``add`` kernel, built the same way (jitted, same donation policy, same byte count) and timed
alternately with the others in the same process.
"""

from __future__ import annotations

from . import common

ELEMENTWISE = ["add", "hadamard", "multiply"]
COMPARED = common.axis(["hadamard", "multiply", "matmul"])
DONATED = [False, True]


class Forward(common.TimeSettings):
    """Forward time of ``op(a, b)`` on ``(n, n)`` arrays, optionally with ``a`` donated."""

    params = [common.SIZES, common.DTYPES, COMPARED, DONATED]
    param_names = ["n", "dtype", "op", "donated"]

    def setup(self, n, dtype, op, donated):
        if donated and op == "matmul":
            raise NotImplementedError("a matmul cannot write over its input")
        self.call = common.warm_call("forward", op, n, dtype, donated)

    def time_forward(self, n, dtype, op, donated):
        self.call()


class ForwardBackward(common.TimeSettings):
    """Forward pass and both cotangents, ``(op(a, b), *vjp(ct))``, jitted together."""

    params = [common.SIZES, common.DTYPES, COMPARED]
    param_names = ["n", "dtype", "op"]

    def setup(self, n, dtype, op):
        self.call = common.warm_call("forward_backward", op, n, dtype)

    def time_forward_backward(self, n, dtype, op):
        self.call()


def _measure_bandwidth():
    """GB/s of every element-wise forward kernel, per ``(n, dtype)`` group, timed alternately."""
    from hadamard_jax.bench import report

    figures = {}
    for n in common.SIZES:
        for dtype in common.DTYPES:
            rows = report.elementwise_group(
                n, dtype, rounds=common.ROUNDS, min_sample_s=common.MIN_SAMPLE_S, backward=False
            )
            for row in rows:
                figures[(n, dtype, row["op"], row["donated"])] = row["gbps"]
    return figures


class _BandwidthFigures:
    """Shares one ``setup_cache`` (one measurement, one process) between the bandwidth classes."""

    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        try:
            return common.require(_measure_bandwidth)
        except NotImplementedError as exc:
            return str(exc)

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, figures, *params):
        common.skip_if_missing(figures)


class Bandwidth(_BandwidthFigures):
    """Achieved GB/s of the element-wise forward kernels, with and without donating ``a``.

    All kernels of one ``(n, dtype)`` are timed alternately in ``setup_cache``. Higher is better
    here, but asv shows lower as better: this figure is for display.
    """

    params = [common.SIZES, common.DTYPES, common.axis(ELEMENTWISE, "hadamard"), DONATED]
    param_names = ["n", "dtype", "op", "donated"]

    def track_gbps(self, figures, n, dtype, op, donated):
        return figures[(n, dtype, op, donated)]

    track_gbps.unit = "GB/s"


class StreamFraction(_BandwidthFigures):
    """GB/s over the STREAM-style ``add`` kernel with the same donation policy, same run.

    The issue's target: ``hadamard`` with ``a`` donated >= 0.9 at 4096 float32. For display.
    """

    params = [common.SIZES, common.DTYPES, common.axis(["hadamard", "multiply"]), DONATED]
    param_names = ["n", "dtype", "op", "donated"]

    def track_stream_fraction(self, figures, n, dtype, op, donated):
        return figures[(n, dtype, op, donated)] / figures[(n, dtype, "add", donated)]

    track_stream_fraction.unit = "x STREAM add"


class MatmulThroughput:
    """Achieved matmul GFLOP/s (``2 n^3`` flops per call), best of a few calls. For display."""

    params = [common.SIZES, common.DTYPES]
    param_names = ["n", "dtype"]

    def setup(self, n, dtype):
        self.call = common.warm_call("forward", "matmul", n, dtype, False)

    def track_gflops(self, n, dtype):
        from hadamard_jax.bench import kernels, timing

        samples = timing.interleaved(
            {"matmul": self.call}, rounds=3, min_sample_s=common.MIN_SAMPLE_S, warm_up_calls=0
        )
        return timing.rate(kernels.work("matmul", n, dtype).flops, timing.best(samples["matmul"]))

    track_gflops.unit = "GFLOP/s"


if not common.DEEP:
    del Forward, ForwardBackward, Bandwidth, StreamFraction, MatmulThroughput
