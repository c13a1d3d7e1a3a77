"""Figures and the coloured verdict table of the quick-diagnostics and bottlenecks sections.

matplotlib, one function per figure; each returns the Figure (the notebook displays it)
or None when there is nothing to draw. Titled, units on the axes, times in UTC. Levels
are drawn as the runbook's table has them: a yellow band from Warning to Critical, a red
one above Critical.
"""
from __future__ import annotations

import html
import math
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from perfbook.checks.resources import MB
from perfbook.plots import finish, plain_text
from perfbook.tables import NO_MATH

__all__ = ["show", "bullets_html", "latency_over_time", "level_over_time", "lag_over_time", "memory_over_time", "cpu_and_routes",
           "verdict_html", "open_next_html"]

WARN_BAND = ("#f9a825", 0.13)
CRIT_BAND = ("#c62828", 0.12)


def show(fig, missing: str = "") -> None:
    """Display a figure in the notebook; when there is none, the ``missing`` note (if any)."""
    from IPython.display import HTML, display
    if fig is not None:
        display(fig)
    elif missing:
        display(HTML(f"<p><i>{html.escape(missing)}</i></p>"))


def bullets_html(title: str, items: list[str]) -> str:
    """A titled list of escaped sentences (a section's conclusion)."""
    e = html.escape
    lis = "".join(f"<li>{e(i)}</li>" for i in items)
    return (f"<div style='border-left:4px solid #455a64;padding:4px 12px;background:#f5f7f8'>"
            f"<p style='margin:2px 0'><b>{e(title)}</b></p><ul style='margin:2px 0'>{lis}</ul></div>")


def _time_axis(ax, max_ticks: int = 6) -> None:
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=max_ticks, tz="UTC"))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz="UTC"))
    ax.set_xlabel("time (UTC)")


def _legend(ax, **kw) -> None:
    """Legend outside the plot area, on the right: it never hides a line."""
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kw)


def _bands(ax, warning: float, critical: float, top: float, scale: float = 1.0) -> float:
    """Warning/critical bands; returns the y limit that shows them and the data."""
    w, c = warning * scale, critical * scale
    ymax = max(top, c * 1.15)
    ax.axhspan(w, c, color=WARN_BAND[0], alpha=WARN_BAND[1], lw=0, label=f"warning ≥ {_num(w)}")
    ax.axhspan(c, ymax, color=CRIT_BAND[0], alpha=CRIT_BAND[1], lw=0, label=f"critical ≥ {_num(c)}")
    ax.set_ylim(0, ymax)
    return ymax


def _num(x: float) -> str:
    return f"{x:g}" if abs(x) >= 1 else f"{x:.3g}"


def latency_over_time(series: pd.DataFrame | None, title: str = "Latency per endpoint over the window"):
    """Small multiples, one per endpoint: p50/p95/p99 (seconds) over time, the p95 target
    dashed. ``series``: :func:`perfbook.checks.latency.percentile_series_for_plot`."""
    if series is None or series.empty or series["p95"].notna().sum() == 0:
        return None
    names = list(dict.fromkeys(series.sort_values("ratio", ascending=False)["endpoint"]))
    n = len(names)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9 if cols == 2 else 8, 2.6 * rows + 0.6), squeeze=False)
    for ax, name in zip(axes.flat, names):
        g = series[series["endpoint"] == name].sort_values("timestamp")
        for col, style in (("p50", dict(color="#90a4ae", lw=1)), ("p95", dict(color="#1565c0", lw=1.8)),
                           ("p99", dict(color="#6a1b9a", lw=1, ls=":"))):
            ax.plot(g["timestamp"], g[col], label=col, **style)
        target = g["p95_target"].dropna()
        if len(target):
            t = target.iloc[0]
            ax.axhline(t, color="#c62828", ls="--", lw=1.2, label="p95 target")
            ax.axhspan(2 * t, max(ax.get_ylim()[1], 2.2 * t), color=CRIT_BAND[0], alpha=0.08, lw=0,
                       label="over 2× target (critical)")
            ax.set_title(f"{name} (p95 target {_num(t)} s)", fontsize="medium")
        else:
            ax.set_title(f"{name} (no target)", fontsize="medium")
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        _time_axis(ax, 4)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small", frameon=False)
    fig.suptitle(title)
    plain_text(fig)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    plt.close(fig)
    return fig


def level_over_time(series: pd.DataFrame | None, level: Any, title: str, ylabel: str, scale: float = 1.0):
    """One line per instance of a level (CPU %, memory %...) with the Warning/Critical
    bands. ``scale`` multiplies values and levels (e.g. 1000 for seconds → ms)."""
    if series is None or series.empty:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    top = 0.0
    for inst, g in series.groupby("instance"):
        g = g.sort_values("timestamp")
        ax.plot(g["timestamp"], g["value"] * scale, label=str(inst), lw=1.3,
                marker="o" if len(g) < 3 else None)
        top = max(top, float((g["value"] * scale).max()))
    _bands(ax, level.warning, level.critical, top * 1.1, scale)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _time_axis(ax)
    _legend(ax)
    return finish(fig)


def lag_over_time(lag: pd.DataFrame | None, lag_p99: pd.DataFrame | None, level: Any,
                  lag_max: pd.DataFrame | None = None):
    """Event-loop lag per instance in ms: the max gauge (dashed: the worst delay since the
    previous scrape), the p99 gauge (solid) and the lag gauge (dotted), with the
    Warning/Critical bands (runbook: 50 ms / 100 ms)."""
    frames = [f for f in (lag, lag_p99, lag_max) if f is not None and not f.empty]
    if not frames:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    top = 0.0
    colours: dict[str, Any] = {}
    for frame, style, what in ((lag_max, "--", "max"), (lag_p99, "-", "p99"), (lag, ":", "lag")):
        if frame is None or frame.empty:
            continue
        for inst, g in frame.groupby("instance"):
            g = g.sort_values("timestamp")
            line, = ax.plot(g["timestamp"], g["value"] * 1000, ls=style, lw=1.3, color=colours.get(inst),
                            label=f"{inst} {what}")
            colours.setdefault(inst, line.get_color())
            top = max(top, float(g["value"].max() * 1000))
    _bands(ax, level.warning, level.critical, top * 1.1, 1000)
    ax.set_ylabel("event-loop lag (ms)")
    ax.set_title("Event-loop lag over the window (max gauge dashed, p99 solid, lag gauge dotted)")
    _time_axis(ax)
    _legend(ax)
    return finish(fig)


def memory_over_time(heap_used: pd.DataFrame | None, rss: pd.DataFrame | None, level: Any,
                     limits: dict[str, float] | float | None = None, growth: pd.DataFrame | None = None):
    """Heap used (solid) and RSS (dotted) per instance in MB, the limit (dashed) with the
    memory Warning/Critical bands as shares of it, and the fitted growth line of any
    instance flagged as growing."""
    if (heap_used is None or heap_used.empty) and (rss is None or rss.empty):
        return None
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    top = 0.0
    colours: dict[str, Any] = {}
    for frame, style, what in ((heap_used, "-", "heap used"), (rss, ":", "RSS")):
        if frame is None or frame.empty:
            continue
        for inst, g in frame.groupby("instance"):
            g = g.sort_values("timestamp")
            line, = ax.plot(g["timestamp"], g["value"] / MB, ls=style, lw=1.3, color=colours.get(inst),
                            label=f"{inst} {what}")
            colours.setdefault(inst, line.get_color())
            top = max(top, float(g["value"].max() / MB))
    limit = None
    if isinstance(limits, dict) and limits:
        limit = max(limits.values())
    elif isinstance(limits, (int, float)) and limits:
        limit = float(limits)
    if limit:
        lim_mb = limit / MB
        ax.axhline(lim_mb, color="black", ls="--", lw=1, label=f"limit {lim_mb:.0f} MB")
        ax.axhspan(lim_mb * level.warning / 100, lim_mb * level.critical / 100, color=WARN_BAND[0],
                   alpha=WARN_BAND[1], lw=0, label=f"warning ≥ {level.warning:g} %")
        ax.axhspan(lim_mb * level.critical / 100, lim_mb * 1.05, color=CRIT_BAND[0], alpha=CRIT_BAND[1], lw=0,
                   label=f"critical ≥ {level.critical:g} %")
        top = max(top, lim_mb * 1.05)
    if growth is not None and not growth.empty:
        steepest = growth[growth["grows"]].sort_values("slope_mb_per_min", ascending=False).drop_duplicates("instance")
        for rec in steepest.to_dict("records"):
            frame = heap_used if rec["metric"] == "heap used" else rss
            g = frame[frame["instance"] == rec["instance"]].sort_values("timestamp")
            if len(g):
                ax.plot([g["timestamp"].iloc[0], g["timestamp"].iloc[-1]], [rec["start_mb"], rec["end_mb"]],
                        color="#c62828", lw=2, alpha=0.7,
                        label=f"trend {rec['instance']} +{rec['slope_mb_per_min']:.1f} MB/min")
    ax.set_ylim(0, top * 1.05 if top else 1)
    ax.set_ylabel("memory (MB)")
    ax.set_title("Memory over the window: heap used (solid), RSS (dotted)")
    _time_axis(ax)
    _legend(ax)
    return finish(fig)


def cpu_and_routes(cpu: pd.DataFrame | None, busy: pd.DataFrame | None, routes: list[str], level: Any,
                   method_label: str = "method", route_label: str = "route"):
    """Total CPU % per instance (left axis, with bands) and the busy seconds per second of
    the given routes (right axis): does a route's work rise and fall with CPU?"""
    if cpu is None or cpu.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.8))
    top = 0.0
    for inst, g in cpu.groupby("instance"):
        g = g.sort_values("timestamp")
        ax.plot(g["timestamp"], g["value"], lw=1.3, label=f"CPU {inst}")
        top = max(top, float(g["value"].max()))
    _bands(ax, level.warning, level.critical, top * 1.1)
    ax.set_ylabel("CPU (% of one core)")
    _time_axis(ax)
    if busy is not None and not busy.empty and routes:
        ax2 = ax.twinx()
        b = busy.copy()
        b["endpoint"] = b[method_label].astype(str) + " " + b[route_label].astype(str)
        for name in routes:
            g = b[b["endpoint"] == name].groupby("timestamp")["value"].sum()
            ax2.plot(g.index, g.values, ls="--", lw=1.2, label=f"{name} busy")
        ax2.set_ylabel("route busy (s of handling per s)")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize="x-small", loc="lower left", bbox_to_anchor=(1.12, 0.0), borderaxespad=0)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0)
    ax.set_title("CPU per instance and the busiest routes' handling time")
    return finish(fig)


# --------------------------------------------------------------------------- HTML tables

_VERDICT_STYLE = {
    "critical": ("#fdecea", "#c62828", "CRITICAL"),
    "warning": ("#fff6e0", "#e08a00", "WARNING"),
    "ok": ("#eef8ee", "#2e7d32", "OK"),
    "not checked": ("#f3e8fd", "#6a1b9a", "NOT CHECKED"),
}


def _badge(verdict: str) -> str:
    _bg, fg, label = _VERDICT_STYLE.get(verdict, ("#f5f5f5", "#616161", verdict.upper()))
    return (f"<span style='background:{fg};color:white;padding:1px 6px;border-radius:3px;"
            f"font-size:0.85em;font-weight:bold;white-space:nowrap'>{html.escape(label)}</span>")


def verdict_html(table: pd.DataFrame, caption: str = "") -> str:
    """The verdict table (:func:`perfbook.checks.resources.verdict_table`) as HTML: one row
    per endpoint or resource, its background coloured by verdict. All text escaped."""
    e = html.escape
    cap = f"<p><b>{e(caption)}</b></p>" if caption else ""
    if table is None or table.empty:
        return cap + "<p><i>Nothing could be checked.</i></p>"
    head = ("<tr>" + "".join(f"<th style='text-align:left;padding:3px 8px;border-bottom:2px solid #455a64'>{e(h)}</th>"
                             for h in ("verdict", "area", "subject", "observed", "normal", "warning", "critical",
                                       "how judged")) + "</tr>")
    body = []
    for rec in table.to_dict("records"):
        bg = _VERDICT_STYLE.get(rec["verdict"], ("#ffffff",))[0]
        cells = [_badge(str(rec["verdict"]))] + [e(str(rec[c])) for c in
                                                 ("area", "subject", "observed", "normal", "warning", "critical",
                                                  "statistic")]
        style = "padding:3px 8px;border-bottom:1px solid #e0e0e0;vertical-align:top;text-align:left"
        tds = "".join(f"<td style='{style}{';font-weight:bold' if i == 3 else ''}'>{c}</td>"
                      for i, c in enumerate(cells))
        body.append(f"<tr style='background:{bg}'>{tds}</tr>")
    return (f"<div class='{NO_MATH}'>" + cap + "<table class='perfbook-verdict' "
            "style='border-collapse:collapse;font-size:0.92em'>" + head + "".join(body) + "</table></div>")


def open_next_html(table: pd.DataFrame) -> str:
    """The "open next" list: section links-to-be with their reasons, most urgent first."""
    e = html.escape
    if table is None or table.empty:
        return (f"<div class='perfbook-open-next {NO_MATH}'><p><b>Open next:</b> nothing in the evidence points to another "
                "section. If users still report slowness, run the load-test section against a staging copy.</p></div>")
    items = "".join(f"<li>{_badge(r['severity']) if r['severity'] in _VERDICT_STYLE else ''} "
                    f"<b><a href='{e(r['section'])}.html'>{e(r['section'])}</a></b> — {e(r['why'])}</li>"
                    for r in table.to_dict("records"))
    return (f"<div class='perfbook-open-next {NO_MATH}' style='border-left:4px solid #1565c0;padding:4px 12px;"
            f"background:#eef4fb'><p style='margin:2px 0'><b>Open next</b> (what the evidence points to):</p>"
            f"<ol style='margin:2px 0'>{items}</ol></div>")
