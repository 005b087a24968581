"""PNG plots: each headline metric against the hole-ratio bucket, and against severity for every corruption."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API draws with Agg and touches no global pyplot state


def _series(report: dict[str, Any], label: str, metric: str, keys: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """Values and interval bounds of one model's metric over condition keys (NaN where undefined)."""
    figures = [report["results"][label][key]["metrics"][metric] for key in keys]
    def number(v: float | None) -> float:
        return math.nan if v is None else v
    return (np.array([number(f["value"]) for f in figures]), np.array([number(f["ci"][0]) for f in figures]),
            np.array([number(f["ci"][1]) for f in figures]))


def _draw(ax: Any, report: dict[str, Any], metric: str, keys: list[str], x: np.ndarray) -> None:
    for label in report["results"]:
        values, low, high = _series(report, label, metric, keys)
        line, = ax.plot(x, values, marker="o", label=label)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def occlusion_plot(report: dict[str, Any]) -> bytes | None:
    """Headline metrics (one panel each) against clean and the occlusion buckets; None without buckets."""
    buckets = [c for c in report["conditions"] if c["kind"] == "occlusion"]
    if not buckets:
        return None
    headline = report["metrics"]["headline"]
    keys = ["clean", *(c["key"] for c in buckets)]
    names = ["clean", *(f"{c['bucket']}\n≤{c['hole_ratio'][1]:g}" for c in buckets)]
    fig = Figure(figsize=(4.2 * len(headline), 3.6))
    axes = fig.subplots(1, len(headline), squeeze=False)
    for ax, metric in zip(axes[0], headline, strict=True):
        _draw(ax, report, metric, keys, np.arange(len(keys)))
        ax.set_xticks(np.arange(len(keys)), names, fontsize=8)
        ax.set_xlabel("hole-ratio bucket (upper bound)", fontsize=8)
        ax.set_title(f"{metric} vs hole ratio")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def corruption_plot(report: dict[str, Any], metric: str) -> bytes | None:
    """One panel per corruption: the metric against severity (0 = clean); None without corruptions."""
    cells = [c for c in report["conditions"] if c["kind"] == "corruption"]
    names = list(dict.fromkeys(c["corruption"] for c in cells))
    if not names:
        return None
    columns = min(5, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(3.2 * columns, 2.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    for ax, name in zip(axes.ravel(), names, strict=False):
        severities = sorted(c["severity"] for c in cells if c["corruption"] == name)
        keys = ["clean", *(f"corruption/{name}/{s}" for s in severities)]
        _draw(ax, report, metric, keys, np.array([0, *severities]))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("severity", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(f"{metric} (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{metric} vs corruption severity (0 = clean)", y=1.02)
    return _png(fig)


def plot_makers(report: dict[str, Any]) -> dict[str, Callable[[], bytes | None]]:
    """File name -> a function drawing that plot (PNG bytes, or None when the report's grid lacks its data)."""
    makers: dict[str, Callable[[], bytes | None]] = {"occlusion.png": lambda: occlusion_plot(report)}
    for metric in report["metrics"]["headline"]:
        makers[f"corruptions-{metric}.png"] = lambda metric=metric: corruption_plot(report, metric)
    return makers


def plots(report: dict[str, Any]) -> dict[str, bytes]:
    """File name -> PNG bytes of every plot the report's grid supports."""
    return {name: png for name, make in plot_makers(report).items() if (png := make()) is not None}
