"""The regression gate: ``python benchmarks/regression.py BASE HEAD``.

Builds both git revisions into asv's virtualenv (``asv run``, the tracked suite:
``HADAMARD_JAX_ASV=track``), compares them (``asv compare --factor 1.0``) and applies one rule
per benchmark:

* deterministic figures (unit ``bytes``, ``flops`` or ``transcendentals``: compiled cost,
  saved residuals, compiled temp memory) are gated **exactly**: any increase is a regression;
* ``track_time_ratio`` (CPU time over the plain-JAX composition, timed alternately in one
  process) is a regression when HEAD / BASE exceeds ``--factor`` (default :data:`TIME_FACTOR`,
  chosen from measured false-alarm rates: docs/benchmarking.md);
* any benchmark that ran at BASE and fails at HEAD is a regression; a gated benchmark measured
  at BASE and skipped (n/a) at HEAD is one too (its code vanished or broke);
* everything else (``time_*``, GB/s, GFLOP/s) is for the graphs and is not gated.

A timing regression must reproduce: the flagged ``track_time_ratio`` benchmarks of both
revisions are measured a second time and only those flagged again count (the exact gates need no
second look).

Exit status: 0 nothing got worse; 1 something did (each named on stderr); 2 usage or asv
failure (no comparison could be made). ``--compare-only`` skips the runs (and the confirmation)
and judges the results already stored for the two revisions.

No ``time_``/``track_`` names here: asv imports this module when it discovers benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# HEAD's CPU-time ratio may exceed BASE's by this factor before it counts as slower (then it
# must reproduce in a second measurement). Identical code on 2 shared cores moved a kernel's
# figure by up to 1.26x between processes (hadamard, the noisiest, by 1.52x over 12 runs);
# docs/benchmarking.md has the measurements and the false-alarm count.
TIME_FACTOR = 1.3
EXACT_UNITS = frozenset({"bytes", "flops", "transcendentals"})
RATIO_METHOD = "track_time_ratio"
#: The asv environment type both revisions are built into and compared in.
ENV = ("-E", "virtualenv")

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    """One row of ``asv compare``'s table."""

    mark: str
    before: str
    after: str
    ratio: str
    name: str

    @property
    def benchmark(self) -> str:
        """The benchmark's name without its parameters."""
        return self.name.split("(", 1)[0].strip()

    @property
    def method(self) -> str:
        return self.benchmark.rsplit(".", 1)[-1]


def parse_compare(text: str) -> list[Row]:
    """The rows of every table ``asv compare`` printed (github format), headers skipped."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or line.startswith("|--"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 5 or cells[0] == "Change":
            continue
        rows.append(Row(*cells))
    return rows


def _number(value: str) -> float | None:
    try:
        return float(value.lstrip("~"))
    except ValueError:
        return None


def gate(name: str, unit: str | None) -> str | None:
    """How benchmark ``name`` (with ``unit``) is gated: ``"exact"``, ``"factor"`` or ``None``."""
    if name.rsplit(".", 1)[-1] == RATIO_METHOD:
        return "factor"
    if unit in EXACT_UNITS:
        return "exact"
    return None


@dataclass(frozen=True)
class Finding:
    """A benchmark that got worse: its name with parameters, its gate, and why."""

    name: str
    kind: str  # "exact", "factor" or "failed"
    why: str

    def __str__(self) -> str:
        return f"{self.name}: {self.why}"


def judge(rows: Sequence[Row], units: Mapping[str, str | None], factor: float) -> list[Finding]:
    """Every regression in ``rows`` (from ``asv compare --factor 1.0``).

    Args:
      rows: :func:`parse_compare` of BASE against HEAD.
      units: benchmark name (no parameters) -> its unit (asv's ``benchmarks.json``).
      factor: the allowed HEAD / BASE of a ``track_time_ratio``.
    """
    worse = []
    for row in rows:
        kind = gate(row.benchmark, units.get(row.benchmark))
        if row.mark == "!":
            worse.append(Finding(row.name, "failed", f"failed at HEAD (was {row.before})"))
        elif kind is None or row.mark == "x":
            continue
        elif row.after in ("n/a", "failed") and row.before not in ("n/a", "failed"):
            worse.append(Finding(row.name, "failed", f"not measured at HEAD (was {row.before})"))
        elif kind == "exact" and row.mark == "+":
            why = f"{row.before} -> {row.after} (any increase counts)"
            worse.append(Finding(row.name, kind, why))
        elif kind == "factor":
            ratio = _number(row.ratio)
            if ratio is not None and ratio > factor:
                why = f"{row.before} -> {row.after} = {ratio:.2f}x (> {factor:g}x)"
                worse.append(Finding(row.name, kind, why))
    return worse


def load_units(results_dir: Path) -> dict[str, str | None]:
    """Benchmark name -> unit, from asv's ``benchmarks.json`` in ``results_dir``."""
    data = json.loads((results_dir / "benchmarks.json").read_text())
    return {k: v.get("unit") for k, v in data.items() if isinstance(v, dict)}


def _conf(root: Path) -> dict:
    text = (root / "asv.conf.json").read_text()
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def _rev_parse(rev: str) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"regression: not a git revision: {rev!r}\n{out.stderr}")
    return out.stdout.strip()


def _asv(asv: str, *args: str, env: Mapping[str, str], capture: bool = False):
    cmd = [*shlex.split(asv), *args]
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=dict(env), capture_output=capture, text=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/regression.py",
        description="Exit 1 if HEAD is worse than BASE on a tracked benchmark (asv, 2 builds).",
    )
    parser.add_argument("base", help="git revision to compare against (e.g. origin/main)")
    parser.add_argument("head", help="git revision under test (e.g. HEAD)")
    parser.add_argument("--factor", type=float, default=TIME_FACTOR, help="time-ratio factor")
    parser.add_argument("--machine", default=platform.node(), help="asv machine name")
    parser.add_argument("--asv", default=f"{shlex.quote(sys.executable)} -m asv")
    parser.add_argument("--compare-only", action="store_true", help="judge stored results")
    parser.add_argument("--results-dir", type=Path, help="asv results (default: asv.conf.json's)")
    args = parser.parse_args(argv)

    base, head = _rev_parse(args.base), _rev_parse(args.head)
    if base == head:
        print(
            f"regression: {args.base} and {args.head} are the same commit {base[:8]}: nothing to "
            "compare (on main, compare with HEAD~1 or a release tag)",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, HADAMARD_JAX_ASV="track")
    results_dir = args.results_dir or ROOT / _conf(ROOT).get("results_dir", "results")
    if not args.compare_only:
        _asv(args.asv, "machine", "--yes", "--machine", args.machine, env=env)
        if not _run(args, [base, head], env):
            return 2
    worse = _judge(args, base, head, env, results_dir)
    if worse is None:
        return 2
    timed = sorted(f.name for f in worse if f.kind == "factor")
    if timed and not args.compare_only:
        # A timing regression must reproduce: measure both revisions' flagged benchmarks again
        # (false alarms are rare and independent; a real slowdown shows every time).
        print(f"\nconfirming {len(timed)} timing regression(s): measuring again", file=sys.stderr)
        # asv matches -b against "name(param, ...)" for a parameterized benchmark.
        select = [arg for name in timed for arg in ("-b", "^" + re.escape(name) + "$")]
        again = _run(args, [base, head], env, select) and _judge(args, base, head, env, results_dir)
        if again is None or again is False:
            return 2
        confirmed = {f.name for f in again if f.kind == "factor"}
        worse = [f for f in worse if f.kind != "factor" or f.name in confirmed]
    if worse:
        print(f"\nPERFORMANCE REGRESSION: {len(worse)} benchmark(s) got worse:", file=sys.stderr)
        for finding in worse:
            print(f"  {finding}", file=sys.stderr)
        return 1
    print(
        f"\nno regression ({base[:8]} -> {head[:8]}): exact gate on {sorted(EXACT_UNITS)}, "
        f"{RATIO_METHOD} within {args.factor:g}x",
        file=sys.stderr,
    )
    return 0


def _run(args: argparse.Namespace, hashes: Sequence[str], env, select: Sequence[str] = ()):
    """``asv run`` of ``hashes`` (tracked suite, or the ``-b`` selection); False if asv failed."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{h}\n" for h in hashes))
    try:
        cmd = ["run", "--machine", args.machine, *ENV, "--show-stderr", *select]
        cmd.append(f"HASHFILE:{f.name}")
        run = _asv(args.asv, *cmd, env=env)
    finally:
        os.unlink(f.name)
    if run.returncode not in (0, 2):  # 2: a benchmark failed; the comparison says which
        print(f"regression: asv run exited {run.returncode}", file=sys.stderr)
        return False
    return True


def _judge(args: argparse.Namespace, base: str, head: str, env, results_dir: Path):
    """:func:`judge` of ``asv compare --factor 1.0 BASE HEAD``; None if there is no table."""
    # Only the environments `asv run` builds commits into (asv.conf.json's virtualenv matrix):
    # results of `asv run --python=same --set-commit-hash` (environment "existing") measure
    # whatever package was installed and must not be compared with built commits (they were:
    # 91 "not measured at HEAD" alarms on a comment-only commit after the README's asv steps).
    cmd = ["compare", "--factor", "1.0", "--machine", args.machine, *ENV, base, head]
    compare = _asv(args.asv, *cmd, env=env, capture=True)
    print(compare.stdout)
    rows = parse_compare(compare.stdout)
    if compare.returncode != 0 or not rows:
        print(f"regression: asv compare gave no table\n{compare.stderr}", file=sys.stderr)
        return None
    return judge(rows, load_units(results_dir), args.factor)


if __name__ == "__main__":
    sys.exit(main())
