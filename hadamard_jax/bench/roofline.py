"""The roofline plot of the report: arithmetic intensity against achieved throughput.

Each measured op is a point at (flops per byte, achieved GFLOP/s), bytes counted as STREAM counts
them (:mod:`hadamard_jax.bench.kernels`). The roof is ``min(bandwidth * intensity, peak)`` with
the bandwidth of the STREAM-style ``add`` measured in the same run and the peak the best matmul
GFLOP/s measured. Element-wise ops sit far left of the ridge point (bandwidth-bound), matmul on
the right (compute-bound).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

MISSING_MESSAGE = (
    "roofline.png skipped: matplotlib is not installed (pip install 'hadamard_jax[bench]')"
)


def available() -> bool:
    """Whether matplotlib can be imported, i.e. whether :func:`plot` can draw."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # in sys.modules without a spec
        return False


_STYLE = {
    "add": ("tab:gray", "s"),
    "hadamard": ("tab:red", "o"),
    "multiply": ("tab:blue", "^"),
    "matmul": ("tab:green", "D"),
}


def _annotate(ax, figures: dict[str, Any]) -> None:
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


def plot(figures: dict[str, Any], path: str | Path) -> Path:
    """Draws the roofline of ``figures`` (from :func:`hadamard_jax.bench.report.measure`).

    Args:
      figures: the report's figures: ``ops`` rows, ``stream`` and ``matmul_peak_gflops``.
      path: where to write the PNG.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    ops = figures["ops"]
    bandwidth = figures["stream"]["gbps"]
    peak = figures["matmul_peak_gflops"] or max(r["gflops"] for r in ops)
    intensities = [r["intensity"] for r in ops]
    x = np.geomspace(min(intensities) / 4, max(intensities) * 4, 200)

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    ax.loglog(
        x,
        np.minimum(bandwidth * x, peak),
        color="black",
        lw=1.5,
        label=f"roof: {bandwidth:.0f} GB/s STREAM add, {peak:.0f} GFLOP/s matmul",
    )
    no_donation = figures["stream"].get("gbps_without_donation")
    if no_donation:
        ax.loglog(
            x,
            np.minimum(no_donation * x, peak),
            color="black",
            lw=0.8,
            ls="--",
            label=f"{no_donation:.0f} GB/s: add without donation",
        )
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
    _annotate(ax, figures)
    ax.set_xlabel("arithmetic intensity (flop / byte, bytes counted as STREAM counts them)")
    ax.set_ylabel("achieved GFLOP/s")
    machine = figures.get("machine", {})
    ax.set_title(
        f"hadamard_jax roofline: {machine.get('device', '')} "
        f"({machine.get('cpu_count', '?')} cores), filled = donated, large = n >= 4096"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
