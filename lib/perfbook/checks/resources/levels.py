"""Judging a window against the runbook's levels (part of :mod:`perfbook.checks.resources`;
the Resource Utilization Targets, see the package docstring): the verdict of a value, the
sustained and recurring levels of a series, window statistics, the evidence every finding
carries and the per-instance findings built from them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding

#: Areas of the verdict table, by finding code, in the runbook's order.
AREAS = {"instance.down": "Instances up", "monitoring.gap": "Instances up", "latency.slo_breach": "Response time", "errors.high_rate": "Error rate (5xx)",
         "cpu.saturation": "CPU", "memory.pressure": "Memory", "memory.growth": "Memory growth",
         "eventloop.lag": "Event-loop lag", "db.connections": "DB connections"}

MB = 1024 * 1024


def level_verdict(value: float | None, level: Any) -> str:
    """``critical`` at or above ``level.critical``, ``warning`` at or above ``level.warning``,
    ``ok`` below, ``no data`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if value >= level.critical:
        return "critical"
    if value >= level.warning:
        return "warning"
    return "ok"


def _clean_series(series: pd.DataFrame | None) -> pd.DataFrame:
    if series is None or series.empty or "value" not in series.columns:
        return pd.DataFrame(columns=["timestamp", "instance", "value"])
    df = series.copy()
    if "instance" not in df.columns:
        df["instance"] = "(all)"
    df["instance"] = df["instance"].astype(object).where(df["instance"].notna(), "(unknown)").astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df[df["value"].notna() & np.isfinite(df["value"])]


def sustained_level(values: pd.Series, timestamps: pd.Series | None = None, *, q: float,
                    min_hold_s: float) -> float:
    """The level a series reached or exceeded for at least ``1 - q`` of its samples *and*
    at least ``min_hold_s`` seconds: the k-th largest value, k = max(⌈(1-q)·n⌉,
    ⌈min_hold_s / sample interval⌉), at most n. With q = 0.9 over a long window this is
    the 90th percentile; over a short one a single spike (which a gauge with its own
    rolling window repeats for a few scrapes) does not make a level."""
    v = np.sort(values.to_numpy(dtype=float))[::-1]
    n = len(v)
    if n == 0:
        return float("nan")
    k = math.ceil((1 - q) * n - 1e-9)
    if timestamps is not None and n > 1:
        interval = pd.Series(pd.to_datetime(timestamps)).sort_values().diff().dt.total_seconds().median()
        if interval and interval > 0:
            k = max(k, math.ceil(min_hold_s / interval - 1e-9))
    return float(v[min(max(k, 1), n) - 1])


def recurring_level(values: pd.Series, timestamps: pd.Series | None = None, *, q: float,
                    min_hold_s: float) -> float:
    """The level a gauge that summarises each scrape interval (prom-client's event-loop
    p99/max: the delays since the previous scrape) reached *again and again*: the highest
    level L reached in at least max(⌈(1-q)·n⌉, 2) scrapes whose first and last are at
    least ``min_hold_s`` apart (each scrape standing for one scrape interval).

    Such a gauge shows a 300 ms block only in the scrape after it, so "held for 20 s" means
    "recurring over 20 s", not "20 s of scrapes in a row": a loop blocked every two
    seconds over 40 s is sustained, a single GC pause or scheduling hiccup is not, however
    long the window. On a window shorter than ``min_hold_s`` this is the smallest sample
    (nothing is a level yet)."""
    v = values.to_numpy(dtype=float)
    n = len(v)
    if n == 0:
        return float("nan")
    if n == 1:
        return float(v[0])
    order = np.argsort(-v, kind="stable")
    k0 = min(max(math.ceil((1 - q) * n - 1e-9), 2), n)
    if timestamps is None:
        return float(v[order[k0 - 1]])
    t = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
    secs = (t - t.min()).dt.total_seconds().to_numpy()
    interval = float(np.median(np.diff(np.sort(secs)))) if n > 1 else 0.0
    lo, hi = secs[order[:k0]].min(), secs[order[:k0]].max()
    for k in range(k0, n + 1):
        if k > k0:
            s = secs[order[k - 1]]
            lo, hi = min(lo, s), max(hi, s)
        if hi - lo + interval >= min_hold_s - 1e-9:
            return float(v[order[k - 1]])
    return float(v[order[n - 1]])


def _recurring_text(q: float, min_hold_s: float) -> str:
    return f"level reached in ≥ {1 - q:.0%} of the scrapes, recurring over ≥ {min_hold_s:g} s"


def window_stats(series: pd.DataFrame | None, *, q: float, min_hold_s: float, level_fn: Any = None) -> pd.DataFrame:
    """Per instance: ``samples``, ``sustained`` (``level_fn``, default
    :func:`sustained_level`, with ``q`` and ``min_hold_s``: settings.diagnostics.sustained_quantile
    and sustained_for), ``max``, ``mean``, ``last`` of a series over the window."""
    level_fn = level_fn or sustained_level
    df = _clean_series(series)
    cols = ["instance", "samples", "sustained", "max", "mean", "last"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    has_t = "timestamp" in df.columns
    if has_t:
        df = df.sort_values("timestamp")
    rows = []
    for inst, g in df.groupby("instance"):
        rows.append({"instance": inst, "samples": len(g),
                     "sustained": level_fn(g["value"], g["timestamp"] if has_t else None, q=q, min_hold_s=min_hold_s),
                     "max": g["value"].max(), "mean": g["value"].mean(), "last": g["value"].iloc[-1]})
    return pd.DataFrame(rows, columns=cols)


def _sustained_text(q: float, min_hold_s: float) -> str:
    return f"level held ≥ {1 - q:.0%} of the window and ≥ {min_hold_s:g} s"


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "%":
        return f"{value:.0f} %" if value >= 10 else f"{value:.1f} %"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ratio":
        return f"{value * 100:.1f} %" if value < 0.1 else f"{value * 100:.0f} %"
    if unit == "MB/min":
        return f"{value:.1f} MB/min"
    return f"{value:.0f}"


def _evidence(observed: float, unit: str, statistic: str, level: Any, **extra: Any) -> dict[str, Any]:
    return {"observed": observed, "unit": unit, "statistic": statistic, "normal": level.normal,
            "warning": level.warning, "critical": level.critical, **extra}


def _per_instance_findings(code: str, what: str, stats: pd.DataFrame, column: str, unit: str, statistic: str,
                           level: Any, recommendation: str, extra_cols: Iterable[str] = ()) -> list[Finding]:
    """One finding per instance at Warning/Critical; one ``ok`` (subject: all instances,
    observed: the worst) when none is."""
    found = []
    extra_cols = list(extra_cols)
    over = stats[stats["verdict"].isin(["warning", "critical"])]
    for rec in over.to_dict("records"):
        limit = level.critical if rec["verdict"] == "critical" else level.warning
        found.append(Finding(
            code, rec["verdict"],
            f"{what} {_fmt(rec[column], unit)} on {rec['instance']} ({statistic}; "
            f"{rec['verdict']} at {_fmt(limit, unit)})",
            subject=str(rec["instance"]),
            evidence=_evidence(rec[column], unit, statistic, level, instance=rec["instance"],
                               instances=len(stats), instances_over=len(over),
                               **{c: rec.get(c) for c in extra_cols}),
            recommendation=recommendation))
    judged = stats[stats["verdict"] != "no data"]
    if not found and not judged.empty:
        worst = judged.sort_values(column, ascending=False).iloc[0]
        found.append(Finding(
            code, "ok", f"{what} {_fmt(worst[column], unit)} at most ({statistic}), under the warning "
                        f"level {_fmt(level.warning, unit)} on all {len(judged)} instance(s)",
            subject="all instances",
            evidence=_evidence(worst[column], unit, statistic, level, instance=worst["instance"],
                               instances=len(judged))))
    return found
