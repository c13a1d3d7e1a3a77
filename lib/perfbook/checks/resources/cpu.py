"""CPU saturation (runbook Issue 1 §2; part of :mod:`perfbook.checks.resources`): the
sustained CPU level per instance, what moves with it, and the limits by instance.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Diagnostics
from .coverage import _no_data
from .levels import _per_instance_findings, _sustained_text, level_verdict, window_stats
from .memory import _max_by_instance

# --------------------------------------------------------------------------- CPU

CPU_ADVICE = ("Immediate (runbook Issue 1 §2): scale up CPU (`flyctl scale vm dedicated-cpu-1x`) or add "
              "instances (`flyctl scale count 3`). Then find the hot path: the bottlenecks section shows which "
              "routes move with CPU; profile with `node --cpu-prof` (or `clinic doctor`) and look for synchronous "
              "work on the event loop, large JSON parsing, regexes on big strings; move CPU-heavy work to worker "
              "threads or background jobs.")


def cpu_saturation(cpu: pd.DataFrame | None, level: Any, *, settings: Diagnostics,
                   metric: str = "process_cpu_seconds_total",
                   correlated: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``cpu.saturation``: each instance's CPU % (``rate(process_cpu_seconds_total) * 100``)
    at its sustained level over the window (:func:`sustained_level` with
    ``settings.sustained_quantile`` and ``settings.sustained_for``), against
    ``thresholds.cpu_percent``.

    ``correlated`` (:func:`cpu_route_correlation`): the routes whose busy time moves with
    CPU (r ≥ ``settings.correlation_min_r``, at most three) go into each warning/critical
    finding as ``moves_with``.
    """
    q, min_hold_s = settings.sustained_quantile, settings.sustained_for
    stats = window_stats(cpu, q=q, min_hold_s=min_hold_s)
    if stats.empty:
        return stats, _no_data("cpu.saturation", "CPU", metric)
    stats["verdict"] = [level_verdict(v, level) for v in stats["sustained"]]
    statistic = _sustained_text(q, min_hold_s) if stats["samples"].max() > 1 else "rate between two scrapes"
    table = stats.rename(columns={"sustained": "cpu_sustained_pct", "max": "cpu_max_pct",
                                  "mean": "cpu_mean_pct", "last": "cpu_last_pct"})
    found = _per_instance_findings("cpu.saturation", "CPU", stats.rename(columns={"sustained": "v"}).assign(
        cpu_max_pct=stats["max"]), "v", "%", statistic, level, CPU_ADVICE, ["cpu_max_pct", "samples"])
    movers = moving_with_cpu(correlated, min_r=settings.correlation_min_r)
    for f in found:
        if f.severity in ("warning", "critical") and movers:
            f.evidence["moves_with"] = movers
            f.title += f"; moves with {movers[0].split(' (')[0]}"
    return table, found


def moving_with_cpu(correlated: pd.DataFrame | None, *, min_r: float, top: int = 3) -> list[str]:
    """``["GET /api/analytics/summary (r=0.82, 40 % of busy time)", ...]``: the routes of a
    :func:`cpu_route_correlation` table whose busy time correlates with CPU at ``min_r``
    or more, strongest first."""
    if correlated is None or correlated.empty:
        return []
    c = correlated[correlated["r_busy"] >= min_r].sort_values("r_busy", ascending=False).head(top)
    return [f"{r['endpoint']} (r={r['r_busy']:.2f}, {r['busy_share']:.0%} of busy time)" for r in c.to_dict("records")]


def limits_by_instance(series: pd.DataFrame | None) -> dict[str, float]:
    """Per instance, the largest value of a limit gauge (e.g. the heap limit) in the window."""
    return {k: float(v) for k, v in _max_by_instance(series).items() if v and v > 0}
