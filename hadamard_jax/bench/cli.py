"""``python -m hadamard_jax.bench [--quick] [--out DIR]`` (also ``python -m hadamard_jax``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hadamard_jax.bench",
        description=(
            "Measure this machine: streaming bandwidth, each op's achieved GB/s, matmul GFLOP/s, "
            "hadamard vs jnp.multiply and gating ops vs jax.nn (timed alternately), training "
            "memory. Prints a table; writes report.json and roofline.png."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="float32 only, fewer sizes and rounds (under 45 s on 2 cores)",
    )
    parser.add_argument(
        "--out", default="bench_out", metavar="DIR", help="output directory (default: bench_out)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the report from command-line arguments; returns the exit status (0)."""
    from hadamard_jax.bench.report import Config, run_report

    args = _parser().parse_args(argv)
    config = Config.quick() if args.quick else Config()

    def progress(line: str) -> None:
        print(line, flush=True)

    print(
        f"hadamard_jax benchmark report ({'quick' if args.quick else 'full'}) -> {args.out}",
        file=sys.stderr,
        flush=True,
    )
    run_report(config, out_dir=args.out, progress=progress)
    return 0
