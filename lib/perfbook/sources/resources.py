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

from typing import Any

import pandas as pd

from perfbook.sources.window_metrics import WindowMetrics

__all__ = ["open_window", "snapshot_fallback", "series", "cpu_percent", "gauge", "latency_buckets", "latency_bucket_rates", "requests_by_status",
           "total", "route_series", "triage_inputs"]


def series(frame: pd.DataFrame | None, instance_label: str = "instance") -> pd.DataFrame:
    """``timestamp``, ``instance``, ``value`` from a WindowMetrics frame (labels dropped)."""
    if frame is None or frame.empty:
        return pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                             "instance": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    inst = frame[instance_label] if instance_label in frame.columns else \
        frame.get("instance", pd.Series("(all)", index=frame.index))
    ts = frame["timestamp"] if "timestamp" in frame.columns else pd.Timestamp.now(tz="UTC")
    return pd.DataFrame({"timestamp": ts, "instance": inst.astype(object), "value": frame["value"].astype(float)})


def cpu_percent(wm: WindowMetrics, params: Any) -> pd.DataFrame:
    """Process CPU % per instance: ``rate(process_cpu_seconds_total) * 100`` over time
    (Prometheus), or between two scrapes (snapshot mode)."""
    m = params.metrics
    if wm.mode == "snapshot":
        frame = wm.snapshot_rates(m.cpu_seconds, [m.instance_label], interval_s=params.settings.diagnostics.snapshot_interval)
    else:
        frame = wm.rate_series(m.cpu_seconds, [m.instance_label], title="CPU seconds per second, per instance")
    out = series(frame, m.instance_label)
    out["value"] = out["value"] * 100.0
    return out


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


def requests_by_status(wm: WindowMetrics, params: Any) -> pd.DataFrame:
    """Requests over the window by method, route and status code."""
    m = params.metrics
    return wm.increase(m.http_requests, [m.method_label, m.route_label, m.status_label],
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
    busy = wm.rate_series(m.http_duration + "_sum", by, title="busy seconds per second, per route")
    rate = wm.rate_series(m.http_duration + "_count", by, title="requests per second, per route")
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
