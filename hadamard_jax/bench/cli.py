"""The report's command line: ``python -m hadamard_jax.bench`` (also ``python -m hadamard_jax``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hadamard_jax.bench.args import parser as _new_parser

PROG = "python -m hadamard_jax.bench"


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _new_parser(
        prog,
        "Measure this machine: streaming bandwidth, each op's achieved GB/s, matmul GFLOP/s, "
        "hadamard vs jnp.multiply and gating ops vs jax.nn (timed alternately), training "
        "memory. Prints a table and the missed targets; writes report.json and roofline.png. "
        "A target is what a change can regress on this backend (MISSED: something regressed "
        "or is wrong); references (aims, ideals) are shown in brackets.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="float32 only, fewer sizes and rounds (about a minute on 2 CPU cores)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a deterministic target (memory, bytes, residuals, transcendentals) "
        "is missed; timing targets stay informational",
    )
    parser.add_argument(
        "--out", default="bench_out", metavar="DIR", help="output directory, created if missing"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Runs the report from command-line arguments; returns the exit status.

    Args:
      argv: the arguments (default: ``sys.argv[1:]``).
      prog: the command name ``--help`` shows (``python -m hadamard_jax`` runs this too).

    Returns:
      0; with ``--check``, 1 when a deterministic target was missed
      (:func:`hadamard_jax.bench.report.check`).
    """
    args = _parser(prog).parse_args(argv)
    from hadamard_jax.bench.report import Config, check, run_report

    config = Config.quick() if args.quick else Config()

    def progress(line: str) -> None:
        print(line, flush=True)

    print(
        f"hadamard_jax benchmark report ({'quick' if args.quick else 'full'}) -> {args.out}",
        file=sys.stderr,
        flush=True,
    )
    figures = run_report(config, out_dir=args.out, progress=progress)
    if args.check and check(figures)["deterministic"]:
        print("--check: a deterministic target was missed (listed above)", file=sys.stderr)
        return 1
    return 0
