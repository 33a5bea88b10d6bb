"""``python -m hadamard_jax.bench [--quick] [--out DIR]`` (also ``python -m hadamard_jax``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the workloads import JAX; --help must not
    from hadamard_jax.bench.ffn_stack import Size


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
        help="float32 only, fewer sizes and rounds (about 30 s on 2 CPU cores)",
    )
    parser.add_argument(
        "--out", default="bench_out", metavar="DIR", help="output directory (default: bench_out)"
    )
    return parser


def workload_args(
    description: str, size: Size, argv: Sequence[str] | None = None
) -> tuple[Size, argparse.Namespace]:
    """Parses a workload's command line (``python -m hadamard_jax.bench.ffn_stack`` and
    ``...flax_stack``): one integer option per entry of ``size``, ``--repeats``, ``--no-time``.

    Args:
      description: the ``--help`` description.
      size: the default ``batch, d, h, layers`` (``hadamard_jax.bench.ffn_stack.SIZE``).
      argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
      ``(size, args)``: ``size`` as given on the command line, and all the parsed arguments.

    Examples:
      >>> default = {"batch": 2048, "d": 512, "h": 2048, "layers": 8}
      >>> size, args = workload_args("a workload", default, ["--layers", "2"])
      >>> size, args.repeats, args.no_time
      ({'batch': 2048, 'd': 512, 'h': 2048, 'layers': 2}, 5, False)
    """
    parser = argparse.ArgumentParser(description=description)
    for name in _SIZE_KEYS:
        parser.add_argument(f"--{name}", type=int, default=size[name])
    parser.add_argument("--repeats", type=int, default=5, help="alternation rounds of the timing")
    parser.add_argument("--no-time", action="store_true", help="memory figures only")
    args = parser.parse_args(argv)
    chosen: Size = {"batch": args.batch, "d": args.d, "h": args.h, "layers": args.layers}
    return chosen, args


_SIZE_KEYS = ("batch", "d", "h", "layers")


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
