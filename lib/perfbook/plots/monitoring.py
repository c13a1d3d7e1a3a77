"""Figures of the monitoring section: the runbook's ten key metrics as one dashboard, and
the alert rules' states over the window.

The dashboard is described by :func:`key_metric_panels` (what to query, in which unit,
with which threshold lines — all from the params), fetched by :func:`fetch_panels`
through the caller's ``PromClient.query_range`` and drawn by :func:`key_metrics_figure`
as small multiples. :func:`alert_values_figure` and :func:`alert_timeline_figure` draw
:class:`perfbook.checks.alerts.RuleEvaluation` results.

matplotlib; each function returns the Figure (the notebook displays it) or None when
there is nothing to draw. Titled, units on the axes, times in UTC.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from perfbook.plots import finish, plain_text
from perfbook.promql import memory_ratio_basis, render_expr

__all__ = ["Line", "Threshold", "Panel", "key_metric_panels", "panel_queries", "promql_text",
           "key_metrics_figure", "alert_values_figure", "alert_timeline_figure", "RANGE"]

#: Placeholder for the rate() range in the panels' PromQL (set from the plot step).
RANGE = "__RANGE__"

_WARN, _CRIT, _ALERT, _REF = "#e08a00", "#c62828", "#6a1b9a", "#546e7a"
_PENDING, _FIRING = "#f5b942", "#d32f2f"


@dataclass(frozen=True)
class Line:
    """One query of a panel. ``template``: PromQL with ``${metric}``, ``__SEL__`` and
    ``__RANGE__``; ``scale`` converts its value to the panel's unit."""
    label: str
    template: str
    scale: float = 1.0
    style: str = "-"


@dataclass(frozen=True)
class Threshold:
    value: float          # in the panel's unit
    label: str
    colour: str = _WARN
    style: str = "--"


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]
    thresholds: tuple[Threshold, ...] = ()
    note: str = ""
    floor_zero: bool = True


def _rule(params: Any, name: str):
    return next((r for r in params.settings.monitoring.alerts if r.name == name), None)


def _alert_line(params: Any, name: str, scale: float, unit: str) -> tuple[Threshold, ...]:
    r = _rule(params, name)
    if r is None:
        return ()
    v = r.threshold * scale
    return (Threshold(v, f"alert {name} ({r.op} {v:g} {unit}, for {r.for_:g} s)", _ALERT, ":"),)


def _levels(level: Any, scale: float, unit: str, what: str = "") -> tuple[Threshold, ...]:
    return (Threshold(level.warning * scale, f"{what}warning {level.warning * scale:g} {unit}", _WARN),
            Threshold(level.critical * scale, f"{what}critical {level.critical * scale:g} {unit}", _CRIT))


def key_metric_panels(params: Any) -> list[Panel]:
    """The runbook's "Key Metrics to Monitor", in its order, for these params.

    Metric names come from ``params.metrics``, threshold lines from ``params.thresholds``,
    the alert rules and the section settings. Rates are over :data:`RANGE`, filled by
    :func:`panel_queries`.
    """
    th, s = params.thresholds, params.settings
    inst = "${instance_label}"
    r = RANGE
    hist = "histogram_quantile({q}, sum by (le) (rate(${{http_duration}}_bucket{{__SEL__}}[{r}])))"
    p95_targets: dict[float, list[str]] = {}
    for e in params.endpoints:
        p95_targets.setdefault(e.targets.p95, []).append(e.name)
    target_lines = tuple(Threshold(v, f"p95 target {v:g} s ({', '.join(n)})", _REF, (0, (1, 3)))
                         for v, n in sorted(p95_targets.items()))
    ext = s.external
    return [
        Panel("latency", "1. Response time (all routes)", "s",
              tuple(Line(f"p{int(q * 100)}", hist.format(q=q, r=r), style=st)
                    for q, st in ((0.5, ":"), (0.95, "-"), (0.99, "--"))),
              _alert_line(params, "HighResponseTime", 1, "s") + target_lines),
        Panel("throughput", "2. Throughput", "requests/s",
              (Line("", f"sum by ({inst}) (rate(${{http_requests}}{{__SEL__}}[{r}]))"),
               Line("total", f"sum(rate(${{http_requests}}{{__SEL__}}[{r}]))", style="--"))),
        Panel("errors", "3. Error rate (5xx share)", "%",
              (Line("5xx", f'(sum(rate(${{http_requests}}{{${{status_label}}=~"5..",__SEL__}}[{r}])) or vector(0))'
                           f" / sum(rate(${{http_requests}}{{__SEL__}}[{r}]))", scale=100),),
              _levels(th.error_rate, 100, "%")),
        Panel("cpu", "4. CPU usage per instance", "%",
              (Line("", f"100 * sum by ({inst}) (rate(${{cpu_seconds}}{{__SEL__}}[{r}]))"),),
              _levels(th.cpu_percent, 1, "%") + _alert_line(params, "HighCPU", 1, "%")),
        # Stock prom-client has no heap-limit gauge: memory is RSS over targets.memory_limit,
        # or heap used over the gauge where a service exports one (the higher): ${memory_ratio}.
        Panel("memory", "5. Memory used / limit per instance", "%",
              (Line("", f"100 * max by ({inst}) (${{memory_ratio}})"),),
              _levels(th.memory_percent, 1, "%") + _alert_line(params, "HighMemory", 100, "%"),
              note=memory_ratio_basis(params)),
        # prom-client's max and p99 gauges describe the time since the previous scrape.
        Panel("eventloop", "6. Event-loop lag per instance", "ms",
              (Line("max", f"max by ({inst}) (${{eventloop_lag_max}}{{__SEL__}})", scale=1000, style="--"),
               Line("p99", f"max by ({inst}) (${{eventloop_lag_p99}}{{__SEL__}})", scale=1000),
               Line("now", f"max by ({inst}) (${{eventloop_lag}}{{__SEL__}})", scale=1000, style=":")),
              _levels(th.eventloop_lag_seconds, 1000, "ms") + _alert_line(params, "EventLoopLag", 1000, "ms")),
        Panel("db", "7. Database query time (p95)", "ms",
              (Line("p95", f"histogram_quantile(0.95, sum by (le) (rate(${{db_query_duration}}_bucket{{__SEL__}}[{r}])))",
                    scale=1000),),
              (Threshold(s.database.slow_query_mean * 1000,
                         f"slow-query bar {s.database.slow_query_mean * 1000:g} ms (mean, pghero)", _REF),)),
        Panel("external", "8. External API response time (p95)", "s",
              (Line("", f"histogram_quantile(0.95, sum by (le, {ext.service_label}) "
                        f"(rate(${{external_duration}}_bucket{{__SEL__}}[{r}])))"),),
              (Threshold(ext.default_timeout * ext.slow_fraction,
                         f"slow ({ext.slow_fraction:.0%} of timeout)", _WARN),
               Threshold(ext.default_timeout, f"timeout {ext.default_timeout:g} s", _CRIT))),
        Panel("cache", "9. Cache hit rate", "%",
              (Line("all caches", f"100 * sum(rate(${{cache_hits}}{{__SEL__}}[{r}])) / (sum(rate(${{cache_hits}}"
                                  f"{{__SEL__}}[{r}])) + sum(rate(${{cache_misses}}{{__SEL__}}[{r}])))"),),
              (Threshold(th.cache_hit_rate * 100, f"target {th.cache_hit_rate:.0%}", _CRIT),),
              floor_zero=True),
        Panel("connections", "10. Active connections per instance", "connections",
              (Line("", f"sum by ({inst}) (${{http_connections}}{{__SEL__}})"),),
              note="no threshold in the runbook"),
    ]


def panel_queries(panels: Sequence[Panel], params: Any, rate_window_s: int) -> dict[tuple[str, str], str]:
    """The PromQL of every line, rendered for these params: ``{(panel key, line label): query}``."""
    out = {}
    for p in panels:
        for line in p.lines:
            out[(p.key, line.label)] = render_expr(line.template.replace(RANGE, f"{int(rate_window_s)}s"), params)
    return out


def promql_text(queries: dict[tuple[str, str], str]) -> str:
    """The panels' PromQL, for a collapsed block under the figure."""
    return "\n\n".join(f"# {key} {label}".rstrip() + f"\n{q}" for (key, label), q in queries.items())


def _time_axis(ax, start=None, end=None) -> None:
    locator = mdates.AutoDateLocator(tz="UTC", maxticks=5)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    if start is not None and end is not None:
        ax.set_xlim(pd.Timestamp(start), pd.Timestamp(end))


def _series_label(line_label: str, frame: pd.DataFrame, keys: tuple) -> str:
    parts = [str(k) for k in keys if k is not None and str(k) not in ("", "nan")]
    text = " ".join([line_label, *parts]).strip()
    return text or "value"


def _groups(frame: pd.DataFrame):
    cols = [c for c in frame.columns if c not in ("timestamp", "value", "metric")]
    if not cols:
        yield (), frame
        return
    for keys, g in frame.groupby(cols, dropna=False, sort=True):
        yield (keys if isinstance(keys, tuple) else (keys,)), g


def key_metrics_figure(panels: Sequence[Panel], data: dict[tuple[str, str], pd.DataFrame],
                       start: Any = None, end: Any = None, errors: dict[tuple[str, str], str] | None = None,
                       title: str = "Key metrics over the window"):
    """The ten panels as small multiples (2 columns), each with its threshold lines.

    A threshold far above the data (over three times its peak) is left off the axis so
    the data stays readable, and named in the panel's corner instead.
    """
    errors = errors or {}
    n = len(panels)
    cols = 2
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        peak, drawn = 0.0, 0
        for line in panel.lines:
            frame = data.get((panel.key, line.label))
            if frame is None or frame.empty:
                continue
            for keys, g in _groups(frame):
                g = g.sort_values("timestamp")
                vals = g["value"].astype(float) * line.scale
                if vals.notna().any():
                    peak = max(peak, float(vals.max()))
                ax.plot(g["timestamp"], vals, line.style, linewidth=1.3, label=_series_label(line.label, g, keys))
                drawn += 1
        off = []
        top = max(peak, 1e-9)
        shown = [t for t in panel.thresholds if t.value <= max(3 * peak, min((x.value for x in panel.thresholds),
                                                                              default=0))]
        for t in panel.thresholds:
            if t in shown:
                ax.axhline(t.value, color=t.colour, linestyle=t.style, linewidth=1.1, label=t.label)
                top = max(top, t.value)
            else:
                off.append(t.label)
        if drawn == 0:
            why = "; ".join(errors[(panel.key, ln.label)] for ln in panel.lines if (panel.key, ln.label) in errors)
            ax.text(0.5, 0.5, "no data in the window" + (f"\n{why[:120]}" if why else "\n(metric not exported?)"),
                    ha="center", va="center", transform=ax.transAxes, fontsize="small", color="#555")
        if panel.floor_zero:
            ax.set_ylim(bottom=0, top=top * 1.15 if top > 0 else 1)
        if off or panel.note:
            ax.text(0.99, 0.02, "\n".join(([panel.note] if panel.note else []) + [f"off scale: {o}" for o in off]),
                    ha="right", va="bottom", transform=ax.transAxes, fontsize="x-small", color="#555")
        ax.set_title(panel.title, fontsize="medium")
        ax.set_ylabel(panel.unit)
        _time_axis(ax, start, end)
        if drawn or any(t in shown for t in panel.thresholds):
            ax.legend(loc="upper left", fontsize="x-small", ncol=2 if drawn > 3 else 1, framealpha=0.6)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title + " (UTC)")
    plain_text(fig)  # before layout draws any text
    fig.tight_layout()
    return finish(fig, tight=False)


def _spans_of(ev_spans: pd.DataFrame, series: str):
    s = ev_spans[ev_spans["series"] == series]
    return [(row["start"], row["end"], row["state"]) for _, row in s.iterrows()]


def alert_values_figure(evaluations: Sequence[Any], title: str = "Alert rules: expression value against threshold"):
    """One panel per rule: the expression's value per series at each evaluation, the
    threshold, and the pending (amber) and firing (red) spans shaded."""
    if not evaluations:
        return None
    n = len(evaluations)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12 if cols == 2 else 9, 2.6 * rows), squeeze=False)
    for ax, ev in zip(axes.flat, evaluations):
        rule = ev.rule
        st = ev.states
        if st.empty or st["value"].dropna().empty:
            ax.text(0.5, 0.5, "no data: the expression returned nothing", ha="center", va="center",
                    transform=ax.transAxes, fontsize="small", color="#555")
        else:
            for name, g in st.groupby("series", sort=True):
                ax.plot(g["timestamp"], g["value"], linewidth=1.2, label=name if name != "{}" else "value")
        for _, sp in ev.spans.iterrows():
            colour = _FIRING if sp["state"] == "firing" else _PENDING
            ax.axvspan(sp["start"], sp["end"], color=colour, alpha=0.18 if sp["state"] == "pending" else 0.25, lw=0)
        ax.axhline(rule.threshold, color=_CRIT, linestyle="--", linewidth=1.1,
                   label=f"threshold {rule.op} {rule.threshold:g}")
        ax.set_title(f"{rule.name} (for {rule.for_:g} s, every {ev.interval_s:g} s)", fontsize="medium")
        ax.set_ylabel(rule.unit or "value")
        _time_axis(ax, ev.start, ev.end)
        ax.legend(loc="upper left", fontsize="x-small", framealpha=0.6)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title + " — amber: pending, red: firing (UTC)")
    plain_text(fig)  # before layout draws any text
    fig.tight_layout()
    return finish(fig, tight=False)


def alert_timeline_figure(evaluations: Sequence[Any], server: pd.DataFrame | None = None,
                          title: str = "Alert timeline"):
    """A row per rule and series: perfbook's pending/firing spans, and under it the
    server's (from its ALERTS series) when ``server`` is given."""
    if not evaluations:
        return None
    rows: list[tuple[str, list]] = []
    for ev in evaluations:
        series = sorted(set(ev.spans["series"])) if not ev.spans.empty else []
        if not series:
            rows.append((f"perfbook · {ev.name}", []))
        for s in series:
            rows.append((f"perfbook · {ev.name} {s if s != '{}' else ''}".rstrip(), _spans_of(ev.spans, s)))
        if server is not None:
            srv = server[server["alertname"] == ev.name] if not server.empty else server
            srv_series = sorted(set(srv["series"])) if not srv.empty else []
            if not srv_series:
                rows.append((f"Prometheus · {ev.name}", []))
            for s in srv_series:
                rows.append((f"Prometheus · {ev.name} {s if s != '{}' else ''}".rstrip(), _spans_of(srv, s)))
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.4))
    for i, (label, spans) in enumerate(rows):
        y = len(rows) - 1 - i
        for s, e, state in spans:
            width = max((e - s).total_seconds(), 0.5)
            ax.barh(y, pd.Timedelta(seconds=width), left=s, height=0.6,
                    color=_FIRING if state == "firing" else _PENDING,
                    hatch="//" if label.startswith("Prometheus") else None, edgecolor="white", linewidth=0.3)
        if not spans:
            ax.text(pd.Timestamp(evaluations[0].start), y, "  inactive all window", va="center",
                    fontsize="x-small", color="#777")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize="small")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    _time_axis(ax, evaluations[0].start, evaluations[0].end)
    ax.set_xlabel("time (UTC)")
    from matplotlib.patches import Patch
    handles = [Patch(color=_PENDING, label="pending"), Patch(color=_FIRING, label="firing")]
    if server is not None:
        handles.append(Patch(facecolor="white", edgecolor="#333", hatch="//", label="Prometheus's own evaluation"))
    ax.legend(handles=handles, loc="upper right", fontsize="x-small", framealpha=0.8)
    ax.set_title(title + (": perfbook's evaluation and Prometheus's" if server is not None else ""))
    ax.grid(axis="y", visible=False)
    plain_text(fig)  # before layout draws any text
    fig.tight_layout()
    return finish(fig, tight=False)
