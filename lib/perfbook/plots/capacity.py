"""Figures of the capacity sections: load balancing, scaling, load and stress tests.

matplotlib, one function per figure; each returns the Figure (the notebook displays it)
or None when there is nothing to draw. Titled, units on the axes, times in UTC.
"""
from __future__ import annotations

import math

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

from perfbook.plots import finish

__all__ = ["instances_over_time", "instance_bars", "cpu_vs_target", "throughput_trend",
           "stress_latency", "stress_throughput", "load_timeline"]

HOT = "#c62828"
TARGET = "#c62828"


def _time_axis(ax) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz="UTC"))
    ax.set_xlabel("time (UTC)")


def _users_axis(ax, users) -> None:
    """Log x axis labelled with the stages' user counts only."""
    ax.set_xscale("log")
    ticks = sorted(set(int(u) for u in users))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("concurrent users")


# --------------------------------------------------------------------------- load balancing


_UNITS = {"rps": ("request rate", "req/s"), "cpu": ("CPU", "% of one core"),
          "memory": ("resident memory", "MiB"), "p95": ("p95 latency", "ms"),
          "concurrency": ("in-flight requests", "requests")}


def instances_over_time(series: pd.DataFrame, measures=("rps", "cpu"), hot: str | None = None):
    """One panel per measure, one line per instance; the hot instance in red."""
    if series is None or series.empty:
        return None
    measures = [m for m in measures if m in set(series["measure"])]
    if not measures:
        return None
    fig, axes = plt.subplots(len(measures), 1, figsize=(9, 2.6 * len(measures)), sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], measures):
        d = series[series["measure"] == m]
        name, unit = _UNITS.get(m, (m, ""))
        for inst, g in d.groupby("instance"):
            g = g.sort_values("timestamp")
            y = g["value"] / (1024 ** 2) if m == "memory" else (g["value"] * 1000 if m == "p95" else g["value"])
            ax.plot(g["timestamp"], y, label=str(inst), color=HOT if inst == hot else None,
                    linewidth=2.2 if inst == hot else 1.2)
        ax.set_ylabel(f"{name} ({unit})")
        ax.set_title(f"{name[0].upper()}{name[1:]} per instance")
        ax.legend(loc="best", fontsize="small")
    _time_axis(axes[-1, 0])
    return finish(fig)


def instance_bars(summary: pd.DataFrame, hot: str | None = None):
    """Snapshot mode: request rate and CPU per instance, side by side."""
    if summary is None or summary.empty:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    colours = [HOT if i == hot else "#1565c0" for i in summary["instance"]]
    a1.bar(summary["instance"].astype(str), summary["rps"], color=colours)
    a1.set_ylabel("req/s")
    a1.set_title("Request rate per instance")
    a2.bar(summary["instance"].astype(str), summary["cpu_mean"], color=colours)
    a2.set_ylabel("CPU (% of one core)")
    a2.set_title("CPU per instance")
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_xlabel("instance")
    return finish(fig)


# --------------------------------------------------------------------------- scaling


def cpu_vs_target(series: pd.DataFrame, target: float = 70.0):
    """CPU per instance over the window, with the runbook's 70 % scale-out line."""
    if series is None or series.empty or "cpu" not in set(series["measure"]):
        return None
    fig, ax = plt.subplots()
    for inst, g in series[series["measure"] == "cpu"].groupby("instance"):
        g = g.sort_values("timestamp")
        ax.plot(g["timestamp"], g["value"], label=str(inst))
    ax.axhline(target, color=TARGET, linestyle="--", linewidth=1.2, label=f"scale-out line {target:g} %")
    ax.set_ylabel("CPU (% of one core)")
    ax.set_title("CPU per instance against the scale-out line")
    ax.legend(loc="best", fontsize="small")
    _time_axis(ax)
    return finish(fig)


def throughput_trend(total: pd.DataFrame, trend: dict | None = None, capacity_rps: float | None = None):
    """Total request rate over the window, its Theil–Sen trend line, and what the current
    instances can carry at the target utilization."""
    if total is None or total.empty:
        return None
    fig, ax = plt.subplots()
    t = total.sort_values("timestamp")
    ax.plot(t["timestamp"], t["value"], label="total req/s", color="#1565c0")
    if trend and trend.get("slope_per_s") is not None and not math.isnan(trend.get("slope_per_s", math.nan)):
        x0 = t["timestamp"].iloc[0]
        secs = (t["timestamp"] - x0).dt.total_seconds()
        ax.plot(t["timestamp"], trend["intercept"] + trend["slope_per_s"] * secs, linestyle=":", color="black",
                label=f"trend {trend['slope_per_s'] * 60:+.2f} req/s per min")
    if capacity_rps:
        ax.axhline(capacity_rps, color=TARGET, linestyle="--", linewidth=1.2,
                   label=f"capacity of current instances at target CPU ({capacity_rps:.0f} req/s)")
    ax.set_ylabel("requests per second")
    ax.set_title("Total throughput over the window")
    ax.legend(loc="best", fontsize="small")
    _time_axis(ax)
    return finish(fig)


# --------------------------------------------------------------------------- load / stress tests


def stress_latency(stages: pd.DataFrame, endpoints: pd.DataFrame | None = None, breaking: dict | None = None):
    """p50/p95/p99 (all requests) and each endpoint's p95 against users, its target dotted;
    the breaking stage marked."""
    climb = stages[stages["kind"].isin(["stage", "load"])] if stages is not None and not stages.empty else None
    if climb is None or climb.empty:
        return None
    measured = pd.to_numeric(climb[["p50_ms", "p95_ms", "p99_ms"]].stack(), errors="coerce")
    if not (measured > 0).any():   # no stage served a request: nothing to draw on a log axis
        return None
    climb = climb.assign(**{c: pd.to_numeric(climb[c], errors="coerce") for c in ("p50_ms", "p95_ms", "p99_ms")})
    fig, ax = plt.subplots()
    for col, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
        ax.plot(climb["users"], climb[col], style, marker="o", color="black", label=f"{col[:3]} all requests")
    if endpoints is not None and not endpoints.empty:
        ep = endpoints[endpoints["kind"].isin(["stage", "load"])]
        for name, g in ep.groupby("endpoint", sort=False):
            line, = ax.plot(g["users"], g["p95_ms"], marker=".", linewidth=1, label=f"p95 {name}")
            target = g["target_p95_ms"].dropna()
            if len(target):
                ax.axhline(float(target.iloc[0]), color=line.get_color(), linestyle=":", linewidth=1)
    if breaking:
        ax.axvline(breaking["users"], color=HOT, linewidth=1.5, label=f"breaking point ({breaking['users']} users)")
    _users_axis(ax, climb["users"])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("response time (ms, log)")
    ax.set_title("Latency against load (dotted: each endpoint's p95 target)")
    ax.legend(loc="best", fontsize="x-small")
    return finish(fig)


def stress_throughput(stages: pd.DataFrame, breaking: dict | None = None):
    """Requests per second and error rate against users, with the recovery stage shown."""
    if stages is None or stages.empty:
        return None
    climb = stages[stages["kind"].isin(["stage", "load"])]
    rec = stages[stages["kind"] == "recovery"]
    fig, ax = plt.subplots()
    ax.plot(climb["users"], climb["rps"], marker="o", color="#1565c0", label="throughput")
    if len(rec):
        ax.scatter(rec["users"], rec["rps"], marker="s", color="#2e7d32", zorder=3, label="recovery stage")
    if breaking:
        ax.axvline(breaking["users"], color=HOT, linewidth=1.5, label=f"breaking point ({breaking['users']} users)")
    _users_axis(ax, climb["users"])
    ax.set_ylabel("requests per second")
    ax2 = ax.twinx()
    ax2.plot(climb["users"], 100 * climb["failed_rate"].fillna(0), color=HOT, linestyle="--", marker="x",
             label="failed requests")
    ax2.set_ylabel("failed requests (%)")
    ax2.set_ylim(bottom=0)
    ax2.spines["right"].set_visible(True)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="best", fontsize="small")
    ax.set_title("Throughput and failures against load")
    return finish(fig)


def load_timeline(history: pd.DataFrame):
    """Locust's per-second history over the whole test, stage by stage: users and req/s
    above (from the growth of the total request count, second by second), p95 (locust's
    "current" p95, over its last 10 s) below."""
    if history is None or history.empty:
        return None
    h = history.sort_values("timestamp")
    fig, (ax, ax3) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True)
    ax2 = ax.twinx()
    for i, (_stage, g) in enumerate(h.groupby("stage", sort=False)):
        secs = g["timestamp"].diff().dt.total_seconds()
        rps = (g["requests_total"].diff() / secs).where(lambda v: v >= 0)  # negative: stats reset
        ax.plot(g["timestamp"], rps, color="#1565c0", marker=".", label="req/s" if i == 0 else None)
        ax2.step(g["timestamp"], g["users"], where="post", color="grey", linewidth=1,
                 label="users" if i == 0 else None)
        ax3.plot(g["timestamp"], g["p95_ms"], color=HOT, linewidth=1.2, label="p95" if i == 0 else None)
    ax.set_ylabel("requests per second")
    ax2.set_ylabel("users")
    ax2.set_ylim(bottom=0)
    ax2.spines["right"].set_visible(True)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize="small")
    ax.set_title("The test as it ran (locust's per-second history, one segment per stage)")
    ax3.set_ylabel("p95 (ms, last 10 s)")
    ax3.set_ylim(bottom=0)
    _time_axis(ax3)
    return finish(fig)
