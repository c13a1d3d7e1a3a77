"""Figures of the caching, rate-limiting and external-API sections.

matplotlib, one function per figure; each returns the Figure (the notebook displays it)
or None when there is nothing to draw. Titled, units on the axes, times in UTC.
"""
from __future__ import annotations

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import PercentFormatter

from perfbook.plots import finish

__all__ = ["hit_rate_over_time", "hit_rate_bars", "rejections_by_route", "rejections_bars", "dependency_latency"]

_BAND = {"open": ("#c62828", 0.18), "half-open": ("#e08a00", 0.18)}


def _time_axis(ax) -> None:
    locator = mdates.AutoDateLocator(tz="UTC")
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    ax.set_xlabel("time (UTC)")


def hit_rate_over_time(series: pd.DataFrame | None, target: float = 0.60):
    """Hit rate per cache and overall (bold) over the window, with the target line."""
    if series is None or series.empty or series["hit_rate"].notna().sum() == 0:
        return None
    fig, ax = plt.subplots()
    for name, g in series.groupby("cache"):
        g = g.sort_values("timestamp")
        ax.plot(g["timestamp"], g["hit_rate"], label=name,
                linewidth=2.4 if name == "overall" else 1.2, color="black" if name == "overall" else None)
    ax.axhline(target, color="#c62828", linestyle="--", linewidth=1.2, label=f"target {target:.0%}")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("hit rate")
    ax.set_title("Cache hit rate over the window")
    _time_axis(ax)
    ax.legend(loc="best", fontsize="small")
    return finish(fig)


def hit_rate_bars(rates: pd.DataFrame, target: float = 0.60):
    """Snapshot mode (no series): hit rate per cache as bars, with the target line."""
    d = rates[rates["hit_rate"].notna()]
    if d.empty:
        return None
    fig, ax = plt.subplots()
    colours = ["#c62828" if r < target else "#2e7d32" for r in d["hit_rate"]]
    ax.bar(d["cache"].astype(str), d["hit_rate"], color=colours)
    ax.axhline(target, color="#c62828", linestyle="--", linewidth=1.2, label=f"target {target:.0%}")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("hit rate")
    ax.set_xlabel("cache")
    ax.set_title("Cache hit rate per cache")
    ax.legend(loc="best", fontsize="small")
    return finish(fig)


def rejections_by_route(series: pd.DataFrame | None, top: int = 8, method_label: str = "method",
                        route_label: str = "route"):
    """429 answers per second by endpoint over the window (the ``top`` endpoints by total)."""
    if series is None or series.empty or series["value"].sum() <= 0:
        return None
    d = series.copy()
    d["endpoint"] = d[method_label].astype(str) + " " + d[route_label].astype(str)
    totals = d.groupby("endpoint")["value"].sum().sort_values(ascending=False)
    fig, ax = plt.subplots()
    for name in totals.index[:top]:
        if totals[name] <= 0:
            continue
        g = d[d["endpoint"] == name].groupby("timestamp")["value"].sum().sort_index()
        ax.plot(g.index, g.values, label=name)
    ax.set_ylabel("429 responses / s")
    ax.set_ylim(bottom=0)
    ax.set_title("Rate-limit rejections (HTTP 429) by route")
    _time_axis(ax)
    ax.legend(loc="best", fontsize="small")
    return finish(fig)


def rejections_bars(table: pd.DataFrame):
    """Snapshot mode: 429 answers per endpoint as bars."""
    d = table[table["rejected_429"].fillna(0) > 0]
    if d.empty:
        return None
    fig, ax = plt.subplots()
    ax.barh(d["endpoint"].astype(str), d["rejected_429"], color="#e08a00")
    ax.set_xlabel("429 responses")
    ax.set_title("Rate-limit rejections (HTTP 429) by route")
    return finish(fig)


def dependency_latency(latency: pd.DataFrame | None, timeout_for,
                       bands: pd.DataFrame | None = None, dependency_of=lambda b: b):
    """Per dependency: p50/p95/p99 over time, its timeout as a dashed line and the
    breaker's open / half-open intervals as shaded bands. One panel per dependency."""
    names = sorted(set(latency["service"].dropna())) if latency is not None and len(latency) else []
    if bands is not None and len(bands):
        names = sorted(set(names) | {dependency_of(b) for b in bands["breaker"]})
    if not names:
        return None
    fig, axes = plt.subplots(len(names), 1, sharex=True, squeeze=False,
                             figsize=(9, 2.8 * len(names) + 0.6))
    for ax, name in zip(axes[:, 0], names):
        if latency is not None and len(latency):
            g = latency[latency["service"] == name].sort_values("timestamp")
            for col, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
                if col in g.columns and g[col].notna().any():
                    ax.plot(g["timestamp"], g[col], linestyle=style, label=col)
        t = timeout_for(name) if callable(timeout_for) else (timeout_for or {}).get(name)
        if t:
            ax.axhline(t, color="#c62828", linestyle="--", linewidth=1.2, label=f"timeout {t:g} s")
        if bands is not None and len(bands):
            seen = set()
            for rec in bands[bands["breaker"].map(dependency_of) == name].to_dict("records"):
                colour, alpha = _BAND[rec["state"]]
                label = f"breaker {rec['state']}" if rec["state"] not in seen else None
                seen.add(rec["state"])
                ax.axvspan(rec["start"], rec["end"], color=colour, alpha=alpha, label=label, linewidth=0)
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name}: call latency, timeout and breaker state")
        ax.legend(loc="upper left", fontsize="small")
    _time_axis(axes[-1, 0])
    return finish(fig)
