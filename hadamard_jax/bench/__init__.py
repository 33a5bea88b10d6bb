"""Benchmarks and the benchmark report (``python -m hadamard_jax.bench``).

* :mod:`~hadamard_jax.bench.report`: :func:`run_report` / :func:`measure` and :class:`Config`;
* :mod:`~hadamard_jax.bench.kernels`: the timed kernels and how their bytes and flops count;
* :mod:`~hadamard_jax.bench.gating`: gating ops against their plain ``jax.nn`` compositions;
* :mod:`~hadamard_jax.bench.timing`: blocking, warmed-up, alternating timers;
* :mod:`~hadamard_jax.bench.ffn_stack`: the scanned gated-FFN training workload.

The asv suite in ``benchmarks/`` times the same kernels.
"""

from typing import TYPE_CHECKING

from hadamard_jax.bench.cli import main as main

if TYPE_CHECKING:  # imported lazily at run time, below
    from hadamard_jax.bench.report import Config as Config
    from hadamard_jax.bench.report import format_table as format_table
    from hadamard_jax.bench.report import measure as measure
    from hadamard_jax.bench.report import run_report as run_report


def __getattr__(name: str):
    # The report pulls in JAX kernels; import it on first use, not with the package.
    if name in ("Config", "measure", "run_report", "format_table"):
        from hadamard_jax.bench import report

        return getattr(report, name)
    raise AttributeError(f"module 'hadamard_jax.bench' has no attribute {name!r}")


__all__ = ["Config", "format_table", "main", "measure", "run_report"]
