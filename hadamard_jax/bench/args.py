"""Command-line parsing shared by the benchmark entry points (no JAX import: ``--help`` is fast).

Every parser names the command a user types (``prog``) and shows each flag's default
(:class:`argparse.ArgumentDefaultsHelpFormatter`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypedDict, cast

SIZE_KEYS = ("batch", "d", "h", "layers")


class Size(TypedDict):
    """The size of a workload: ``batch`` rows of width ``d``, hidden ``h``, ``layers`` layers."""

    batch: int
    d: int
    h: int
    layers: int


class SizeOptions(TypedDict, total=False):
    """Some entries of a :class:`Size`, given as keyword arguments; :func:`sized` fills in the
    others."""

    batch: int
    d: int
    h: int
    layers: int


def sized(options: SizeOptions, default: Size) -> Size:
    """``default`` with the entries given in ``options``.

    Raises:
      TypeError: ``options`` has a key that is not a size.

    Examples:
      >>> sized({"layers": 2}, {"batch": 8, "d": 4, "h": 16, "layers": 1})
      {'batch': 8, 'd': 4, 'h': 16, 'layers': 2}
    """
    unknown = sorted(set(options) - set(SIZE_KEYS))
    if unknown:
        raise TypeError(f"unexpected size arguments {unknown}; a size has {list(SIZE_KEYS)}.")
    return cast(Size, {**default, **options})


SIZE_HELP = {
    "batch": "rows of the input batch",
    "d": "model width (input and output of each layer)",
    "h": "hidden width of each gated layer",
    "layers": "number of layers, scanned with lax.scan",
}


def parser(
    prog: str,
    description: str,
    *,
    rounds: tuple[str, int] | None = None,
    no_time: bool = False,
) -> argparse.ArgumentParser:
    """An :class:`argparse.ArgumentParser` for ``prog`` that prints each flag's default.

    Args:
      prog: the command a user types, shown by ``--help``.
      description: the ``--help`` description.
      rounds: ``(flag, default)`` of the option counting the alternated rounds of the timing
        (``("--repeats", 5)``), or ``None`` for none.
      no_time: add ``--no-time`` (memory figures only).
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    if rounds is not None:
        flag, default = rounds
        p.add_argument(flag, type=int, default=default, help="alternated rounds of the timing")
    if no_time:
        p.add_argument("--no-time", action="store_true", help="memory figures only, no timing")
    return p


def workload_args(
    prog: str,
    description: str,
    size: Size,
    argv: Sequence[str] | None = None,
) -> tuple[Size, argparse.Namespace]:
    """Parses a workload's command line (``python -m hadamard_jax.bench.ffn_stack`` and
    ``...flax_stack``): one integer option per entry of ``size``, ``--repeats``, ``--no-time``.

    Args:
      prog: the command a user types, shown by ``--help``.
      description: the ``--help`` description.
      size: the default ``batch, d, h, layers`` (``hadamard_jax.bench.ffn_stack.SIZE``).
      argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
      ``(size, args)``: ``size`` as given on the command line, and all the parsed arguments.

    Examples:
      >>> default = {"batch": 2048, "d": 512, "h": 2048, "layers": 8}
      >>> size, args = workload_args("prog", "a workload", default, ["--layers", "2"])
      >>> size, args.repeats, args.no_time
      ({'batch': 2048, 'd': 512, 'h': 2048, 'layers': 2}, 5, False)
    """
    p = parser(prog, description, rounds=("--repeats", 5), no_time=True)
    for name in SIZE_KEYS:
        p.add_argument(f"--{name}", type=int, default=size[name], help=SIZE_HELP[name])
    args = p.parse_args(argv)
    chosen: Size = {"batch": args.batch, "d": args.d, "h": args.h, "layers": args.layers}
    return chosen, args
