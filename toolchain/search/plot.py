"""Plot the shared front (accuracy against logical bits per weight) with each profile's chosen point.

Uses matplotlib's object API on an Agg canvas (no pyplot, no global backend switch) and writes PNG and SVG
atomically; the SVG carries no date and fixed element ids, so the same result gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from toolchain.io import atomic_write_bytes
from toolchain.profiles import DeviceProfile
from toolchain.search.select import SearchResult


def plot_front(result: SearchResult, path: Path | str, profiles: Sequence[DeviceProfile] = ()) -> tuple[Path, Path]:
    """Write `path` with .png and .svg suffixes; returns both paths. `profiles` adds budget lines."""
    fig = _figure(result, profiles)
    stem = Path(path).with_suffix("")
    out = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "edgeq", "svg.fonttype": "none"}):
            fig.savefig(buf, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else None)
        target = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(target, buf.getvalue())
        out.append(target)
    return out[0], out[1]


def _figure(result: SearchResult, profiles: Sequence[DeviceProfile]) -> Figure:
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(
        [p.avg_bits for p in result.evaluated],
        [p.accuracy for p in result.evaluated],
        s=10,
        color="0.75",
        label="evaluated",
    )
    front = sorted(result.front, key=lambda p: p.avg_bits)
    ax.step(
        [p.avg_bits for p in front],
        [p.accuracy for p in front],
        where="post",
        color="tab:blue",
        marker="o",
        markersize=3,
        label="Pareto front",
    )
    colors = matplotlib.colormaps["tab10"]
    budgets = {p.name: p.budget.max_avg_bits for p in profiles}
    for k, s in enumerate(result.selections):
        color = colors(k % 10)
        ax.scatter(
            [s.cost.avg_bits],
            [s.metrics.accuracy],
            s=60,
            marker="*",
            color=color,
            zorder=3,
            label=f"{s.profile}: {s.cost.avg_bits:.2f} bits, {s.metrics.accuracy:.1f} %",
        )
        if budgets.get(s.profile) is not None:
            ax.axvline(budgets[s.profile], color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("logical bits per weight (scale overhead included)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Configuration search: {result.evaluations} evaluations, seed {result.seed}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
