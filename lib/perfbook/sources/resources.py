"""The runtime metrics of the quick-diagnostics and bottlenecks sections, as tidy series.

I/O only, through :class:`perfbook.sources.window_metrics.WindowMetrics` (so the PromQL
lives there once and its text shows up in ``wm.promql_text()``). Every function returns
a frame with ``timestamp``, ``instance`` and ``value`` (one row per scrape — or per
range-query step for rates — per instance), or the frame WindowMetrics gives for
labelled counters. With a Prometheus server the series cover the report's window; in
snapshot mode (only ``targets.metrics_urls``) they hold the current value (one row per
instance) and rates come from two scrapes ``settings.diagnostics.snapshot_interval``
seconds apart.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from perfbook.promql import SELECTOR_PLACEHOLDER
from perfbook.sources.window_metrics import WindowMetrics

__all__ = ["open_window", "snapshot_fallback", "discover", "series", "cpu_percent", "gauge", "latency_buckets",
           "latency_bucket_rates", "requests_by_status", "total", "route_series", "triage_inputs", "QUICK_FIELDS",
           "BOTTLENECK_FIELDS"]

#: The ``metrics:`` fields the quick-diagnostics and bottlenecks sections read.
QUICK_FIELDS = ("http_duration", "http_requests", "cpu_seconds", "resident_memory", "heap_used", "heap_total",
                "heap_limit", "eventloop_lag", "eventloop_lag_p99", "eventloop_lag_max", "db_pool_open",
                "db_pool_busy", "db_pool_wait", "db_query_duration", "external_duration", "external_requests",
                "circuit_breaker_state", "cache_hits", "cache_misses")
BOTTLENECK_FIELDS = ("http_duration", "cpu_seconds", "resident_memory", "heap_used", "heap_total", "heap_limit",
                     "eventloop_lag", "eventloop_lag_p99", "eventloop_lag_max", "db_query_duration",
                     "external_duration")


def discover(wm: WindowMetrics, params: Any, fields: Any = QUICK_FIELDS) -> set[str] | None:
    """The metric names the source has, asked before judging: in Prometheus mode the
    names with series under the selector in the window
    (:func:`perfbook.sources.prometheus.metric_names`: the label-values API); in snapshot
    mode the sample names of the scrape (prom-client declares some families without
    samples: those count as absent). None when the source cannot list them (every way
    refused): the checks then ask for each metric and say "no data" as before."""
    from perfbook.sources import SourceError, prometheus as prom

    if wm.mode == "snapshot":
        return set(wm.scrape()["metric"].dropna().astype(str))
    if wm.mode != "prometheus":
        return None
    m = params.metrics
    candidates = {getattr(m, f) + suffix for f in fields if hasattr(m, f) for suffix in ("", "_bucket", "_count")}
    sel = wm.client.selector
    wm.queries.append(("which metrics exist (label values API)",
                       "GET /api/v1/label/__name__/values" + (f"?match[]={{{sel}}}" if sel else "")))
    try:
        return prom.metric_names(wm.client, wm.start, wm.end, candidates)
    except SourceError:
        return None


def series(frame: pd.DataFrame | None, instance_label: str = "instance") -> pd.DataFrame:
    """``timestamp``, ``instance``, ``value`` from a WindowMetrics frame (labels dropped)."""
    if frame is None or frame.empty:
        return pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                             "instance": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    inst = frame[instance_label] if instance_label in frame.columns else \
        frame.get("instance", pd.Series("(all)", index=frame.index))
    ts = frame["timestamp"] if "timestamp" in frame.columns else pd.Timestamp.now(tz="UTC")
    return pd.DataFrame({"timestamp": ts, "instance": inst.astype(object), "value": frame["value"].astype(float)})


def scrape_interval(wm: WindowMetrics) -> float | None:
    """Seconds between two scrapes of the targets under the selector, from how many ``up``
    samples the window holds (``count_over_time(up[W])``; the median over targets). None
    in snapshot mode, or when there is no ``up`` series."""
    if wm.mode != "prometheus":
        return None
    if not hasattr(wm, "_scrape_interval"):
        expr = wm.client.render(f"count_over_time(up{{{SELECTOR_PLACEHOLDER}}}[{wm.window_s}s])")
        wm.queries.append(("scrapes per target in the window (the scrape interval)", expr))
        frame = wm.client.query(expr, at=wm.end)
        counts = frame["value"][frame["value"] > 1] if not frame.empty else frame.get("value", pd.Series(dtype=float))
        wm._scrape_interval = float(wm.window_s / counts.median()) if len(counts) else None
    return wm._scrape_interval


def cpu_percent(wm: WindowMetrics, params: Any) -> pd.DataFrame:
    """Process CPU % per instance: ``rate(process_cpu_seconds_total[R]) * 100`` over time
    (Prometheus), or between two scrapes (snapshot mode).

    ``R`` is four range-query steps and at least four scrape intervals (the interval from
    :func:`scrape_interval`; without it, the usual floor of 30 s, two scrapes at 15 s): a
    range much longer than the scrapes smears a level over the window — at the demo's 1 s
    scrapes a 30 s rate reaches a core's plateau only 30 s after the load starts, and a
    minute's window never holds it for the 20 s a sustained level needs."""
    m = params.metrics
    if wm.mode == "snapshot":
        frame = wm.snapshot_rates(m.cpu_seconds, [m.instance_label], interval_s=params.settings.diagnostics.snapshot_interval)
    else:
        frame = _rates(wm, m.cpu_seconds, [m.instance_label], "CPU seconds per second, per instance")
    out = series(frame, m.instance_label)
    out["value"] = out["value"] * 100.0
    return out


def _rates(wm: WindowMetrics, metric: str, by: list[str], title: str) -> pd.DataFrame | None:
    """``sum by (by) (rate(metric[R]))`` over the window at the range step, ``R`` as in
    :func:`cpu_percent` (so CPU and the routes' busy time, correlated with it, have the
    same smoothing). None in snapshot mode; raises when no source is configured."""
    from perfbook.sources.window_metrics import RATE, rate_window

    if wm.mode != "prometheus":
        return wm.rate_series(metric, by, title=title)
    interval = scrape_interval(wm)
    r = rate_window(wm.step) if not interval else int(max(4 * wm.step, math.ceil(4 * interval), 2))
    expr = wm.client.render(RATE.format(by=", ".join(by), m=metric, sel=SELECTOR_PLACEHOLDER, r=r))
    wm.queries.append((f"{title} (rate over {r} s, step {wm.step} s)", expr))
    frame = wm.client.query_range(expr, wm.start, wm.end, wm.step)
    for col in by:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    return frame[["timestamp", *by, "value"]]


def gauge(wm: WindowMetrics, params: Any, metric: str) -> pd.DataFrame:
    """A gauge's samples over the window per instance (summed over any other labels at the
    same instant, e.g. prom-client's per-space heap gauges)."""
    m = params.metrics
    frame = wm.samples(metric, title=f"samples of {metric}")
    out = series(frame, m.instance_label)
    if out.empty:
        return out
    return out.groupby(["timestamp", "instance"], as_index=False)["value"].sum()


def latency_buckets(wm: WindowMetrics, params: Any) -> pd.DataFrame:
    """Increase of the HTTP duration histogram's buckets over the window, by le, method,
    route and status code (so checks can leave rejected and failed requests out)."""
    m = params.metrics
    return wm.increase(m.http_duration + "_bucket", ["le", m.method_label, m.route_label, m.status_label],
                       title="HTTP duration buckets, increase over the window")


def latency_bucket_rates(wm: WindowMetrics, params: Any) -> pd.DataFrame | None:
    """The same buckets' rates over time, by le, method, route, status code (None in snapshot mode)."""
    m = params.metrics
    return wm.rate_series(m.http_duration + "_bucket", ["le", m.method_label, m.route_label, m.status_label],
                          title="HTTP duration buckets, rate over time")


def requests_by_status(wm: WindowMetrics, params: Any, metric: str | None = None) -> pd.DataFrame:
    """Requests over the window by method, route and status code, from
    ``metrics.http_requests`` or ``metric`` (e.g. the duration histogram's ``_count``,
    which has the same labels, when the service has no request counter)."""
    m = params.metrics
    return wm.increase(metric or m.http_requests, [m.method_label, m.route_label, m.status_label],
                       title="requests by route and status")


def total(wm: WindowMetrics, metric: str, by: list[str] | None = None) -> float | None:
    """A counter's increase over the window, summed (None when the metric is absent)."""
    frame = wm.increase(metric, by or [], title=f"increase of {metric}")
    if frame is None or frame.empty or frame["value"].isna().all():
        return None
    return float(frame["value"].sum())


def route_series(wm: WindowMetrics, params: Any) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Per route over time: busy seconds per second (rate of the duration ``_sum``) and
    requests per second (rate of the ``_count``); (None, None) in snapshot mode."""
    m = params.metrics
    by = [m.method_label, m.route_label]
    busy = _rates(wm, m.http_duration + "_sum", by, "busy seconds per second, per route")
    rate = _rates(wm, m.http_duration + "_count", by, "requests per second, per route")
    return busy, rate


def triage_inputs(wm: WindowMetrics, params: Any) -> dict[str, Any]:
    """What :func:`perfbook.checks.resources.triage_signals` needs, keyword by keyword."""
    m, ext = params.metrics, params.settings.external
    return {
        "requests_by_instance": wm.increase(m.http_requests, [m.instance_label], title="requests per instance"),
        "status_totals": wm.increase(m.http_requests, [m.status_label], title="requests per status code"),
        "http_seconds": total(wm, m.http_duration + "_sum"),
        "db_seconds": total(wm, m.db_query_duration + "_sum"),
        "external_seconds": total(wm, m.external_duration + "_sum"),
        "breaker_max": wm.samples(m.circuit_breaker_state, title="circuit breaker state"),
        "external_outcomes": wm.increase(m.external_requests, [ext.outcome_label], title="external calls by outcome"),
        "cache_hits": total(wm, m.cache_hits),
        "cache_misses": total(wm, m.cache_misses),
        "instance_label": m.instance_label, "status_label": m.status_label,
        "outcome_label": ext.outcome_label, "breaker_label": ext.breaker_label,
    }


def open_window(ctx: Any) -> WindowMetrics | None:
    """The section's :class:`WindowMetrics`, checked to answer; None when the params name
    no metrics source at all (then only the probes run).

    Prometheus mode sends one trivial query (``1``) so that a dead server is one
    ``source.unreachable`` finding here rather than one per check; snapshot mode scrapes
    every metrics URL once (the snapshot the checks then read).
    """
    t = ctx.params.targets
    if t.prometheus is None and not t.metrics_urls:
        return None
    wm = WindowMetrics.from_context(ctx)
    if wm.mode == "prometheus":
        wm.client.query("1")
    else:
        wm.scrape()
    return wm


def snapshot_fallback(ctx: Any) -> WindowMetrics | None:
    """When the Prometheus server did not answer: the same checks from the service's own
    ``/metrics`` (snapshot mode: totals since each process started), if the params list
    ``targets.metrics_urls``; else None. Scrapes once, so a dead endpoint raises here."""
    t = ctx.params.targets
    if t.prometheus is None or not t.metrics_urls:  # nothing to fall back from, or to
        return None
    params = ctx.params.model_copy(deep=True)
    params.targets.prometheus = None
    wm = WindowMetrics(params, ctx.start, ctx.end)
    wm.scrape()
    return wm
