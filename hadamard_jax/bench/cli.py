"""``python -m hadamard_jax.bench [--quick] [--out DIR]`` (also ``python -m hadamard_jax``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence


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


def workload_args(
    description: str, size: Mapping[str, int], argv: Sequence[str] | None = None
) -> tuple[dict[str, int], argparse.Namespace]:
    """Parses a workload's command line (``python -m hadamard_jax.bench.ffn_stack`` and
    ``...flax_stack``): one integer option per entry of ``size``, ``--repeats``, ``--no-time``.

    Args:
      description: the ``--help`` description.
      size: the default ``batch, d, h, layers`` (``hadamard_jax.bench.ffn_stack.SIZE``).
      argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
      ``(size, args)``: ``size`` as given on the command line, and all the parsed arguments.

    Examples:
      >>> size, args = workload_args("a workload", {"d": 512, "layers": 8}, ["--layers", "2"])
      >>> size, args.repeats, args.no_time
      ({'d': 512, 'layers': 2}, 5, False)
    """
    parser = argparse.ArgumentParser(description=description)
    for name, default in size.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--repeats", type=int, default=5, help="alternation rounds of the timing")
    parser.add_argument("--no-time", action="store_true", help="memory figures only")
    args = parser.parse_args(argv)
    return {name: getattr(args, name) for name in size}, args


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
