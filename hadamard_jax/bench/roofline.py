"""The roofline plot of the report: arithmetic intensity against achieved throughput.

Each measured op is a point at (flops per byte, achieved GFLOP/s), bytes counted as STREAM counts
them (:mod:`hadamard_jax.bench.kernels`). The roof is ``min(bandwidth * intensity, peak)`` with
the bandwidth of the STREAM-style ``add`` measured in the same run at ``stream_n`` (far larger
than the caches) and the peak the best matmul GFLOP/s measured. Element-wise ops sit far left of
the ridge point (bandwidth-bound), matmul on the right (compute-bound).

Two more things are drawn:

* the gating ops' fwd+bwd (:mod:`hadamard_jax.bench.gating`), ours filled and the plain
  ``jax.nn`` composition hollow: flops from XLA's ``cost_analysis()`` of each, bytes as STREAM
  counts them (:func:`~hadamard_jax.bench.gating.stream_bytes`), time the best sample the
  report measured;
* a cache roof (dotted): arrays of the smaller sizes (``n=1024``: 4 MiB each) fit in cache, so
  their points can sit above the STREAM roof. The dotted line is the best element-wise rate
  measured at the smallest size, labelled ``cache-resident (n=...)``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

MISSING_MESSAGE = (
    "roofline.png skipped: matplotlib is not installed (pip install 'hadamard_jax[bench]')"
)

Figures = dict[str, Any]

_STYLE = {
    "add": ("tab:gray", "s"),
    "hadamard": ("tab:red", "o"),
    "multiply": ("tab:blue", "^"),
    "matmul": ("tab:green", "D"),
}
#: One colour and one marker per gating op (eleven of each; none of ``_STYLE``'s).
_GATING_COLORS = (
    "navy",
    "darkorange",
    "teal",
    "magenta",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "black",
    "gold",
)
_GATING_MARKERS = ("v", "<", ">", "p", "h", "P", "X", "*", "d", "8", "H")


def gating_style(names: list[str]) -> dict[str, tuple[str, str]]:
    """``{op: (colour, marker)}``: a distinct colour and a distinct marker for each gating op.

    Examples:
      >>> style = gating_style(["glu", "swiglu"])
      >>> style["glu"] != style["swiglu"]
      True
    """
    n = len(_GATING_MARKERS)
    return {
        name: (_GATING_COLORS[i % n], _GATING_MARKERS[(i + i // n) % n])
        for i, name in enumerate(names)
    }


def available() -> bool:
    """Whether matplotlib can be imported, i.e. whether :func:`plot` can draw."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules without a spec
        return False


def gating_points(figures: Figures) -> list[dict[str, Any]]:
    """One roofline point per gating row and implementation (fwd+bwd).

    Returns:
      ``{"op", "impl", "n", "dtype", "intensity", "gflops", "gbps"}`` dicts: XLA's flops per
      STREAM-counted byte, and those flops and bytes over the best measured time.

    Examples:
      >>> row = {"op": "swiglu", "n": 1024, "dtype": "float32", "hadamard_jax_seconds": 1e-3,
      ...        "plain_seconds": 2e-3, "cost_per_element": {"hadamard_jax": {"flops": 12.0},
      ...        "plain": {"flops": 6.0}}}
      >>> points = gating_points({"gating": [row]})
      >>> [(p["impl"], p["intensity"], round(p["gbps"], 2)) for p in points]
      [('hadamard_jax', 0.5, 25.17), ('plain', 0.25, 12.58)]
    """
    from hadamard_jax.bench import gating

    points = []
    for row in figures.get("gating", []):
        n, dtype = row["n"], row["dtype"]
        nbytes = gating.stream_bytes(row["op"], n, dtype)
        for impl in gating.IMPLS:
            flops = row["cost_per_element"][impl]["flops"] * float(n) * n
            seconds = row[f"{impl}_seconds"]
            point = {"op": row["op"], "impl": impl, "n": n, "dtype": dtype}
            point.update(
                intensity=flops / nbytes, gflops=flops / seconds / 1e9, gbps=nbytes / seconds / 1e9
            )
            points.append(point)
    return points


def cache_roof(figures: Figures) -> tuple[int, float] | None:
    """``(n, GB/s)``: the best element-wise forward rate at the smallest size below ``stream_n``.

    ``None`` if every element-wise size is ``stream_n`` (nothing cache-resident was measured).

    Examples:
      >>> ops = [{"op": "add", "n": 1024, "pass": "forward", "gbps": 150.0},
      ...        {"op": "hadamard", "n": 1024, "pass": "forward", "gbps": 160.0},
      ...        {"op": "add", "n": 4096, "pass": "forward", "gbps": 90.0},
      ...        {"op": "matmul", "n": 1024, "pass": "forward", "gbps": 5.0}]
      >>> cache_roof({"ops": ops, "stream": {"n": 4096}})
      (1024, 160.0)
    """
    rows = [
        r
        for r in figures["ops"]
        if r["op"] != "matmul" and r["pass"] == "forward" and r["n"] < figures["stream"]["n"]
    ]
    if not rows:
        return None
    n = min(r["n"] for r in rows)
    return n, max(r["gbps"] for r in rows if r["n"] == n)


def _draw_roofs(ax, figures: Figures, x, peak: float) -> None:
    import numpy as np

    stream = figures["stream"]
    bandwidth = stream["gbps"]
    label = f"roof: {bandwidth:.0f} GB/s STREAM add (n={stream['n']}), {peak:.0f} GFLOP/s matmul"
    ax.loglog(x, np.minimum(bandwidth * x, peak), color="black", lw=1.5, label=label)
    no_donation = stream.get("gbps_without_donation")
    if no_donation:
        label = f"{no_donation:.0f} GB/s: add without donation"
        ax.loglog(x, np.minimum(no_donation * x, peak), color="black", lw=0.8, ls="--", label=label)
    cache = cache_roof(figures)
    if cache is not None:
        n, gbps = cache
        label = f"cache-resident (n={n}): {gbps:.0f} GB/s, best element-wise rate there"
        ax.loglog(x, np.minimum(gbps * x, peak), color="tab:orange", lw=1.0, ls=":", label=label)


def _draw_ops(ax, ops: list[dict[str, Any]]) -> None:
    """The element-wise and matmul rows: filled = donated (or matmul), large = n >= 4096."""
    seen = set()
    for row in ops:
        color, marker = _STYLE.get(row["op"], ("tab:purple", "x"))
        filled = row["donated"] or row["op"] == "matmul"
        label = row["op"] if row["op"] not in seen else None
        seen.add(row["op"])
        ax.scatter(
            row["intensity"],
            row["gflops"],
            s=30 + 40 * (row["n"] >= 4096),
            marker=marker,
            edgecolors=color,
            facecolors=color if filled else "none",
            label=label,
            zorder=3,
        )


def _draw_gating(ax, points: list[dict[str, Any]]) -> None:
    """The gating ops, fwd+bwd: one colour and marker per op, filled = ours, hollow = plain."""
    style = gating_style(list(dict.fromkeys(p["op"] for p in points)))
    for point in points:
        color, marker = style[point["op"]]
        ours = point["impl"] == "hadamard_jax"
        first = ours and point is next(p for p in points if p["op"] == point["op"])
        ax.scatter(
            point["intensity"],
            point["gflops"],
            s=28,
            marker=marker,
            edgecolors=color,
            facecolors=color if ours else "none",
            label=f"{point['op']} fwd+bwd" if first else None,
            zorder=3,
        )


def _annotate(ax, figures: Figures) -> None:
    """Labels the donation target's point and the matmul peak; the legend covers the rest."""
    stream = figures["stream"]
    peak = max((r["gflops"] for r in figures["ops"] if r["op"] == "matmul"), default=None)
    for row in figures["ops"]:
        target = (
            row["op"] == "hadamard"
            and row["donated"]
            and row["n"] == stream["n"]
            and row["dtype"] == stream["dtype"]
        )
        if target:
            text = f"hadamard donated {row['n']}x{row['n']}: {row['stream_fraction']:.2f}x STREAM"
        elif row["op"] == "matmul" and row["gflops"] == peak:
            text = f"matmul {row['n']} {row['dtype']}: {row['gflops']:.0f} GFLOP/s"
        else:
            continue
        ax.annotate(
            text,
            (row["intensity"], row["gflops"]),
            fontsize=7,
            xytext=(-60, -14),
            textcoords="offset points",
        )


def _decorate(ax, figures: Figures) -> None:
    ax.set_xlabel("arithmetic intensity (flop / byte, bytes counted as STREAM counts them)")
    ax.set_ylabel("achieved GFLOP/s")
    machine = figures.get("machine", {})
    ax.set_title(
        f"hadamard_jax roofline: {machine.get('device', '')} ({machine.get('cpu_count', '?')} "
        "cores)\nelement-wise: filled = donated, large = n >= 4096; "
        "gating ops fwd+bwd: filled = ours, hollow = plain jax.nn",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def draw(figures: Figures):
    """The roofline of ``figures`` as a matplotlib ``Figure`` (drawn with the Agg backend).

    Args:
      figures: the report's figures (:func:`hadamard_jax.bench.report.measure`): ``ops`` rows,
        ``stream``, ``matmul_peak_gflops`` and ``gating`` rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ops = figures["ops"]
    points = gating_points(figures)
    peak = figures["matmul_peak_gflops"] or max(r["gflops"] for r in ops)
    intensities = [r["intensity"] for r in ops] + [p["intensity"] for p in points]
    x = np.geomspace(min(intensities) / 4, max(intensities) * 4, 200)

    fig, ax = plt.subplots(figsize=(11, 6), dpi=110)
    _draw_roofs(ax, figures, x, peak)
    _draw_ops(ax, ops)
    _draw_gating(ax, points)
    _annotate(ax, figures)
    _decorate(ax, figures)
    fig.tight_layout()
    return fig


def plot(figures: Figures, path: str | Path) -> Path:
    """Draws the roofline of ``figures`` (see :func:`draw`) into the PNG file ``path``.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = draw(figures)
    fig.savefig(path)
    plt.close(fig)
    return path
