"""Figures of ``perfbook compare``: baseline vs incident bars from the key-number rows
(:func:`perfbook.compare.key_numbers`). Each function returns a Figure, or None when no row
has a number in both runs' place to draw."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from perfbook.plots import plain_text

__all__ = ["latency_bars", "resource_bars"]

BASELINE, INCIDENT = "#90a4ae", "#c62828"


def _bars(ax: Any, labels: list[str], before: list[float], after: list[float], unit: str) -> None:
    xs = range(len(labels))
    w = 0.4
    ax.bar([x - w / 2 for x in xs], before, w, label="baseline", color=BASELINE)
    ax.bar([x + w / 2 for x in xs], after, w, label="incident", color=INCIDENT)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize="small")
    ax.set_ylabel(unit)
    ax.legend(loc="best", fontsize="small")


def _done(fig: Any) -> Any:
    plain_text(fig)  # route and instance names are shown as written, never as mathtext
    fig.tight_layout()
    plt.close(fig)
    return fig


def latency_bars(rows: Sequence[dict[str, Any]]):
    """p95 per endpoint, baseline vs incident (ms; 0 where a run has no number)."""
    rows = [r for r in rows if r["group"] == "latency" and r["metric"] == "p95"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.6))
    _bars(ax, [str(r["subject"]) for r in rows], [r["baseline"] or 0 for r in rows],
          [r["incident"] or 0 for r in rows], "p95 latency (ms)")
    ax.set_title("p95 latency per endpoint: baseline vs incident")
    return _done(fig)


#: Resource rows drawn, each on its own axis (their units differ).
RESOURCES = ("CPU, worst instance", "memory, worst instance", "event-loop lag, worst instance",
             "connections (server)", "hit rate", "failure rate")


def resource_bars(rows: Sequence[dict[str, Any]]):
    """CPU, memory, event-loop lag, DB connections, cache hit rates and external failure rates,
    baseline vs incident, one small panel each."""
    panels: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["metric"] in RESOURCES and (r["baseline"] is not None or r["incident"] is not None):
            panels.setdefault(f"{r['group']}: {r['metric']}", []).append(r)
    if not panels:
        return None
    n = len(panels)
    cols = min(3, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.9 * nrows), squeeze=False)
    for ax, (title, rs) in zip(axes.flat, panels.items()):
        unit = rs[0]["unit"]
        scale, shown = (100.0, "%") if unit == "ratio" else (1000.0, "ms") if unit == "s" else (1.0, unit)
        labels = [str(r["subject"]) if r["subject"] is not None else "" for r in rs]
        _bars(ax, labels, [(r["baseline"] or 0) * scale for r in rs], [(r["incident"] or 0) * scale for r in rs],
              shown)
        ax.set_title(title, fontsize="medium")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return _done(fig)
