"""Figures of ``perfbook compare``: baseline vs incident bars from the key-number rows
(:func:`perfbook.compare.key_numbers`). Each function returns a Figure, or None when no row
has a number in both runs' place to draw."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt

from perfbook.plots import plain_text

__all__ = ["latency_bars", "resource_bars"]

BASELINE, INCIDENT = "#90a4ae", "#c62828"


NAN = float("nan")


def _bars(ax: Any, labels: list[str], before: list[float | None], after: list[float | None], unit: str,
          log: bool = False) -> None:
    """Paired bars; a run without a number gets no bar and a "no data" mark (never a 0 bar).
    ``log``: a log axis when the values span more than two decades (4 ms next to 4 s)."""
    xs = range(len(labels))
    w = 0.4
    b = [NAN if v is None else v for v in before]
    a = [NAN if v is None else v for v in after]
    ax.bar([x - w / 2 for x in xs], b, w, label="baseline", color=BASELINE)
    ax.bar([x + w / 2 for x in xs], a, w, label="incident", color=INCIDENT)
    shown = [v for v in b + a if not math.isnan(v) and v > 0]
    if log and shown and max(shown) / min(shown) > 100:
        ax.set_yscale("log")
    bottom = min(shown) if ax.get_yscale() == "log" and shown else 0
    for vals, dx in ((b, -w / 2), (a, w / 2)):
        for x, v in zip(xs, vals):
            if math.isnan(v):
                ax.text(x + dx, bottom, "no data", rotation=90, ha="center", va="bottom", fontsize="x-small",
                        color="#666")
    ax.set_xlim(-0.6, len(labels) - 0.4)  # a missing (NaN) bar must not shrink the axis
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
    """p95 per endpoint, baseline vs incident (ms; a log axis when they span decades)."""
    rows = [r for r in rows if r["group"] == "latency" and r["metric"] == "p95"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.6))
    _bars(ax, [str(r["subject"]) for r in rows], [r["baseline"] for r in rows],
          [r["incident"] for r in rows], "p95 latency (ms)", log=True)
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
        _bars(ax, labels, [None if r["baseline"] is None else r["baseline"] * scale for r in rs],
              [None if r["incident"] is None else r["incident"] * scale for r in rs], shown)
        ax.set_title(title, fontsize="medium")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return _done(fig)


def comparison_figures(comparison: dict[str, Any]) -> list[tuple[Any, str]]:
    """The plots of compare.html (``report.write_comparison(..., figures=...)``), drawn from
    the comparison as written (redacted): p95 per endpoint and resources, baseline vs incident."""
    rows = comparison.get("key_numbers") or []
    return [(latency_bars(rows), "p95 latency per endpoint, baseline vs incident"),
            (resource_bars(rows), "resources, baseline vs incident")]
