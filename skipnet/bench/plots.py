"""Accuracy against cost (MACs or latency), paper style: the one plotting code for skipnet-bench
and the pipeline report."""

from __future__ import annotations

import os
from typing import Any

from ..common.plot import pyplot, save_png


def figure(ncols: int = 1, width: float = 5.5):
    """A matplotlib figure with ``ncols`` axes (Agg backend), or a UserError naming the extra."""
    fig, axes = pyplot().subplots(1, ncols, figsize=(width * ncols, 4.2), squeeze=False)
    return fig, list(axes[0])


def draw_accuracy(ax, points: list[dict[str, Any]], x: str, xlabel: str) -> None:
    """Scatter top-1 (%) against ``x``: one point per dict {"label", "model", "top1" (0..1), x, "int8"};
    SkipNet red, baselines blue, int8 circles, float squares."""
    for p in points:
        if p.get(x) is None or p.get("top1") is None:
            continue
        color = "tab:red" if p["model"].startswith("skipnet") else "tab:blue"
        ax.scatter(p[x], 100 * p["top1"], color=color, marker="o" if p.get("int8") else "s")
        ax.annotate(p["label"], (p[x], 100 * p["top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)


def save(fig, path: str | os.PathLike, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
