"""Which metrics exist (part of :mod:`perfbook.checks.resources`): prom-client's default
metrics, whether the source has a metric, and the ``metrics.missing`` findings naming what
stands in for each configured metric it lacks (:func:`metric_coverage`), and the
``info`` finding of a check whose metric has no samples.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ...findings import Finding
from .levels import MB

# --------------------------------------------------------------------------- which metrics exist


def _no_data(code: str, what: str, metric: str, basis: str = "") -> list[Finding]:
    default = any(part.strip() in PROM_CLIENT_DEFAULT_METRICS for part in metric.split("/"))
    how = "prom-client's collectDefaultMetrics() does" if default else "the application's own metric"
    return [Finding(code, "info", f"{what}: no samples of {metric} in the window — not checked",
                    subject="metrics", evidence={"metric": metric, "basis": basis},
                    recommendation=f"Export {metric} ({how}) or set its name under `metrics:` in the params file.")]


#: prom-client 15's ``collectDefaultMetrics()`` families, name → type, as a real Node 20
#: process exports them (tests/fixtures/promclient/metrics.txt; a unit test keeps the two
#: equal). Neither the runbook's ``nodejs_process_cpu_percent`` nor
#: ``nodejs_heap_size_limit_bytes`` is among them.
PROM_CLIENT_DEFAULT_FAMILIES: dict[str, str] = {
    "process_cpu_user_seconds_total": "counter", "process_cpu_system_seconds_total": "counter",
    "process_cpu_seconds_total": "counter", "process_start_time_seconds": "gauge",
    "process_resident_memory_bytes": "gauge", "process_virtual_memory_bytes": "gauge",
    "process_heap_bytes": "gauge", "process_open_fds": "gauge", "process_max_fds": "gauge",
    "nodejs_eventloop_lag_seconds": "gauge", "nodejs_eventloop_lag_min_seconds": "gauge",
    "nodejs_eventloop_lag_max_seconds": "gauge", "nodejs_eventloop_lag_mean_seconds": "gauge",
    "nodejs_eventloop_lag_stddev_seconds": "gauge", "nodejs_eventloop_lag_p50_seconds": "gauge",
    "nodejs_eventloop_lag_p90_seconds": "gauge", "nodejs_eventloop_lag_p99_seconds": "gauge",
    "nodejs_active_resources": "gauge", "nodejs_active_resources_total": "gauge",
    "nodejs_active_handles": "gauge", "nodejs_active_handles_total": "gauge",
    "nodejs_active_requests": "gauge", "nodejs_active_requests_total": "gauge",
    "nodejs_heap_size_total_bytes": "gauge", "nodejs_heap_size_used_bytes": "gauge",
    "nodejs_external_memory_bytes": "gauge", "nodejs_heap_space_size_total_bytes": "gauge",
    "nodejs_heap_space_size_used_bytes": "gauge", "nodejs_heap_space_size_available_bytes": "gauge",
    "nodejs_version_info": "gauge", "nodejs_gc_duration_seconds": "histogram",
}
#: ... and their sample names, as PromQL sees them.
PROM_CLIENT_DEFAULT_METRICS = frozenset(
    [n for n, t in PROM_CLIENT_DEFAULT_FAMILIES.items() if t != "histogram"]
    + [n + s for n, t in PROM_CLIENT_DEFAULT_FAMILIES.items() if t == "histogram" for s in ("_bucket", "_sum", "_count")])


def is_runtime_metric(name: str) -> bool:
    """A name in prom-client's own namespaces (``nodejs_*``, ``process_*``)."""
    return name.startswith(("nodejs_", "process_"))


def metric_exists(metric: str, present: set[str] | None) -> bool:
    """``metric`` (a configured name; a histogram's base name) has samples: itself, or its
    ``_bucket``/``_count``. True when ``present`` is None (the source could not list its
    metrics: the queries will tell)."""
    if present is None:
        return True
    return any(metric + s in present for s in ("", "_bucket", "_count", "_total"))


#: Metrics fields without which a runbook check cannot run at all, when nothing stands in:
#: their absence is a warning (prom-client exports them all; a name or selector is wrong).
_CORE_FIELDS = ("cpu_seconds", "eventloop_lag", "resident_memory")

_USED_FOR = {
    "http_duration": "latency per route (p50/p95/p99) and where request time goes",
    "http_requests": "error rate (5xx share) and requests per instance",
    "cpu_seconds": "CPU % (rate × 100)",
    "resident_memory": "memory % against targets.memory_limit, RSS growth",
    "heap_used": "heap % of its limit, heap growth",
    "heap_total": "the committed heap, shown beside heap used",
    "heap_limit": "heap % of its limit (the runbook's heap used / heap limit)",
    "eventloop_lag": "event-loop lag at scrape time",
    "eventloop_lag_p99": "event-loop delay p99 between scrapes",
    "eventloop_lag_max": "event-loop stalls between scrapes (worst delay)",
    "db_pool_open": "DB pool size and connection count",
    "db_pool_busy": "DB pool connections in use",
    "db_pool_wait": "DB pool exhaustion (queries waiting for a connection)",
    "db_query_duration": "share of request time in DB queries",
    "external_duration": "share of request time in external calls",
    "external_requests": "external calls by outcome",
    "circuit_breaker_state": "circuit breakers that opened",
    "cache_hits": "cache hit rate",
    "cache_misses": "cache hit rate",
    "http_connections": "active connections",
}


def _fallback(field: str, params: Any, present: set[str] | None) -> tuple[str, str] | None:
    """What stands in for the missing metric ``metrics.<field>``: (the substitute, the phrase
    for the finding's title); None when nothing does."""
    m = params.metrics
    has = lambda name: metric_exists(name, present)  # noqa: E731
    limit = params.targets.memory_limit_bytes()
    lag_gauges = [(f, getattr(m, f)) for f in ("eventloop_lag_max", "eventloop_lag_p99", "eventloop_lag")]

    def instead(what: str, note: str = "") -> tuple[str, str]:
        return what, f"using {what} instead" + (f" ({note})" if note else "")
    if field == "http_duration":
        return ("the active probes", "latency from the active probes only (no per-route p50/p95/p99 over the "
                                     "window)")
    if field == "http_requests":
        return instead(f"{m.http_duration}_count", "the duration histogram's count, same labels") \
            if has(m.http_duration + "_count") else None
    if field == "resident_memory":
        return instead(m.heap_used, "memory % against targets.memory_limit is then a lower bound") \
            if has(m.heap_used) else None
    if field == "heap_used":
        return instead(m.resident_memory, "for memory % and growth") if has(m.resident_memory) else None
    if field == "heap_total":
        return "none", "the committed heap is not shown"
    if field == "heap_limit":
        if limit and has(m.resident_memory):
            return instead(f"{m.resident_memory} / targets.memory_limit ({limit / MB:.0f} MB)")
        if limit and has(m.heap_used):
            return instead(f"{m.heap_used} / targets.memory_limit ({limit / MB:.0f} MB)")
        return None
    if field in ("eventloop_lag_max", "eventloop_lag_p99", "eventloop_lag"):
        other = next((name for f, name in lag_gauges if f != field and has(name)), None)
        return instead(other) if other else None
    if field in ("db_pool_open", "db_pool_busy", "db_pool_wait"):
        return (("pg_stat_activity", "the server's connection count (pg_stat_activity) only; pool exhaustion not "
                                     "judged") if params.targets.database_env else None)
    if field in ("db_query_duration", "external_duration", "external_requests", "circuit_breaker_state",
                 "cache_hits", "cache_misses"):
        return "none", "left out of the open-next signals"
    return None


def metric_coverage(present: set[str] | None, params: Any, fields: Iterable[str],
                    source: str = "") -> tuple[pd.DataFrame, list[Finding]]:
    """``metrics.missing``: which of the metrics a section uses (``fields`` of the params'
    ``metrics:``) the source has (``present``: the names it lists, from
    :func:`perfbook.sources.resources.discover`), and for each missing one what stands in.

    One finding per missing metric, subject the metric's name: ``info`` naming the
    fallback (``nodejs_heap_size_limit_bytes`` missing → memory as RSS /
    targets.memory_limit; the max lag gauge missing → the p99 gauge...) or saying what is
    not judged; ``warning`` when a core runtime metric (CPU, event-loop lag, RSS) is
    missing with nothing in its place — every prom-client service has them, so a name or
    the selector is wrong. Nothing under the selector at all is one warning. ``present``
    None (the source could not list its metrics): no finding, an empty table.
    """
    cols = ["field", "metric", "present", "used_for", "fallback"]
    if present is None:
        return pd.DataFrame(columns=cols), []
    m = params.metrics
    fields = [f for f in dict.fromkeys(fields) if hasattr(m, f)]
    sel = params.targets.prometheus.selector if params.targets.prometheus is not None else ""
    if not present:
        return pd.DataFrame(columns=cols), [Finding(
            "metrics.missing", "warning",
            f"No metric at all under the selector {sel or '(none)'} in the window — nothing below could be judged "
            f"from metrics", subject="metrics",
            evidence={"selector": sel, "source": source, "missing": [getattr(m, f) for f in fields]},
            recommendation="Check targets.prometheus.selector against the labels Prometheus puts on the service's "
                           "series (job, app, instance), and that the service is scraped at all (`up`).")]
    rows, found = [], []
    for field in fields:
        metric = str(getattr(m, field))
        ok = metric_exists(metric, present)
        fb, phrase = (None, None) if ok else (_fallback(field, params, present) or (None, None))
        rows.append({"field": field, "metric": metric, "present": ok, "used_for": _USED_FOR.get(field, ""),
                     "fallback": "" if ok else (phrase or "none: not judged")})
        if ok:
            continue
        default = metric in PROM_CLIENT_DEFAULT_METRICS or metric + "_bucket" in PROM_CLIENT_DEFAULT_METRICS
        sev = "warning" if fb is None and field in _CORE_FIELDS else "info"
        what = _USED_FOR.get(field, field)
        title = f"{metric} is not exported under the selector — {what}: {phrase or 'not judged'}"
        hint = ("prom-client's collectDefaultMetrics() exports it: check the name under `metrics:` and the selector"
                if default else f"export it, or name the service's own metric under `metrics: {field}:`")
        found.append(Finding("metrics.missing", sev, title, subject=metric,
                             evidence={"metric": metric, "field": f"metrics.{field}", "used_for": what,
                                       "fallback": fb or "none", "prom_client_default": default, "source": source,
                                       "selector": sel},
                             recommendation=hint + "."))
    return pd.DataFrame(rows, columns=cols), found
