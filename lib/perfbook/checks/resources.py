"""Resources against the runbook's Resource Utilization Targets, and where time goes.

Pure functions; inputs are tidy frames from :mod:`perfbook.sources.resources`:
``timestamp``, ``instance``, ``value`` per scrape (or per range-query step), one series
per instance. The runbook's table (``params.thresholds``)::

    | Metric               | Normal  | Warning | Critical |
    | CPU                  | 30-50%  | 70%     | 85%      |
    | Memory               | 40-60%  | 80%     | 90%      |
    | Event Loop Lag       | < 10ms  | 50ms    | 100ms    |
    | Database Connections | 10-20   | 50      | 80       |

plus the 5xx share of requests (1 % warning, 5 % critical: the usual SLO bars; the
runbook's table has no row for it). A value at or above Critical is ``critical``, at or
above Warning ``warning``, else ``ok``.

**Which number of the window is judged** (one spike is not a level; a level held for a
while is):

- CPU %: a *sustained level* per instance (:func:`sustained_level`): the level reached
  or exceeded during at least 10 % of the window (``sustained_quantile`` 0.9: its 90th
  percentile) and during at least 20 s (``sustained_for``), so one spike never makes a
  verdict on a short window. CPU % is ``rate(process_cpu_seconds_total) * 100`` of the
  process (stock prom-client; the runbook's ``nodejs_process_cpu_percent`` is not a
  prom-client metric): 100 % is one core, which is all a Node.js event loop can use.
- Event-loop lag: levels reached *again and again* (:func:`recurring_level`: in at least
  10 % of the scrapes, recurring over at least 20 s) of two of prom-client's gauges: the
  typical delay (the p99 gauge, else the lag gauge) against Warning and Critical, and the
  stalls (the max gauge, ``nodejs_eventloop_lag_max_seconds``) against Critical — the
  finding names the gauge that decided. prom-client resets its delay histogram at every
  scrape, so p99 and max describe the time since the previous scrape: at a 15 s scrape
  interval a loop blocked 300 ms every couple of seconds reads p99 10-14 ms and max 300 ms.
- Memory %: the maximum over the window — memory is a level that only a restart or a GC
  lowers, and the highest point is what hits the limit. RSS over ``targets.memory_limit``
  (what the OOM killer compares) and V8 heap used over the heap-limit gauge
  (``--max-old-space-size``) where a service exports one, the higher share; stock
  prom-client has no heap-limit gauge, and its committed heap is not a limit.
- Instances up: an outage is consecutive failed scrapes spanning ``down_for`` (15 s);
  scrapes every instance missed at once are a monitoring gap, not an instance down
  (:func:`instances_down`).
- Which metrics exist: asked of the source first; each configured metric it lacks is a
  ``metrics.missing`` finding naming what stands in for it (:func:`metric_coverage`).
- DB connections: the sum over instances of each instance's peak of open pool
  connections (an upper bound of the total), or the server's count from
  ``pg_stat_activity`` when given, whichever is higher. Pool exhaustion (queries waiting
  for a connection) is judged separately: waiting in at least 20 % of scrapes is a
  warning, 50 % critical.
- Error rate: 5xx responses over all responses in the window, per route (routes with
  at least ``min_requests``) and overall.

Every finding's evidence carries ``observed``, ``unit``, ``statistic``, ``normal``,
``warning`` and ``critical``, so :func:`verdict_table` can put all of them in one table.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..findings import Finding, severity_rank

#: Default quantile for "sustained" levels (CPU, event-loop lag): see the module docstring.
SUSTAINED_QUANTILE = 0.9
#: ... and the least time a level must be held to count (one spike is not a level).
MIN_HOLD_S = 20.0

#: Five 5xx answers on a route are judged even when it had fewer than ``min_requests``.
MIN_ERRORS = 5

#: Pool exhaustion: share of scrapes with at least one query waiting for a connection.
POOL_WAIT_WARNING, POOL_WAIT_CRITICAL = 0.20, 0.50

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


def sustained_level(values: pd.Series, timestamps: pd.Series | None = None, q: float = SUSTAINED_QUANTILE,
                    min_hold_s: float = MIN_HOLD_S) -> float:
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


def recurring_level(values: pd.Series, timestamps: pd.Series | None = None, q: float = SUSTAINED_QUANTILE,
                    min_hold_s: float = MIN_HOLD_S) -> float:
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


def window_stats(series: pd.DataFrame | None, q: float = SUSTAINED_QUANTILE,
                 min_hold_s: float = MIN_HOLD_S, level_fn: Any = None) -> pd.DataFrame:
    """Per instance: ``samples``, ``sustained`` (``level_fn``, default
    :func:`sustained_level`), ``max``, ``mean``, ``last`` of a series over the window."""
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
                     "sustained": level_fn(g["value"], g["timestamp"] if has_t else None, q, min_hold_s),
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


def _no_data(code: str, what: str, metric: str, basis: str = "") -> list[Finding]:
    default = any(part.strip() in PROM_CLIENT_DEFAULT_METRICS for part in metric.split("/"))
    how = "prom-client's collectDefaultMetrics() does" if default else "the application's own metric"
    return [Finding(code, "info", f"{what}: no samples of {metric} in the window — not checked",
                    subject="metrics", evidence={"metric": metric, "basis": basis},
                    recommendation=f"Export {metric} ({how}) or set its name under `metrics:` in the params file.")]


# --------------------------------------------------------------------------- which metrics exist

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


# --------------------------------------------------------------------------- CPU

CPU_ADVICE = ("Immediate (runbook Issue 1 §2): scale up CPU (`flyctl scale vm dedicated-cpu-1x`) or add "
              "instances (`flyctl scale count 3`). Then find the hot path: the bottlenecks section shows which "
              "routes move with CPU; profile with `node --cpu-prof` (or `clinic doctor`) and look for synchronous "
              "work on the event loop, large JSON parsing, regexes on big strings; move CPU-heavy work to worker "
              "threads or background jobs.")


def cpu_saturation(cpu: pd.DataFrame | None, level: Any, q: float = SUSTAINED_QUANTILE,
                   metric: str = "process_cpu_seconds_total", correlated: pd.DataFrame | None = None,
                   min_hold_s: float = MIN_HOLD_S) -> tuple[pd.DataFrame, list[Finding]]:
    """``cpu.saturation``: each instance's CPU % (``rate(process_cpu_seconds_total) * 100``)
    at its sustained level over the window (:func:`sustained_level` with ``q`` and
    ``min_hold_s``), against ``thresholds.cpu_percent``.

    ``correlated`` (:func:`cpu_route_correlation`): the routes whose busy time moves with
    CPU (r ≥ 0.5, at most three) go into each warning/critical finding as ``moves_with``.
    """
    stats = window_stats(cpu, q, min_hold_s)
    if stats.empty:
        return stats, _no_data("cpu.saturation", "CPU", metric)
    stats["verdict"] = [level_verdict(v, level) for v in stats["sustained"]]
    statistic = _sustained_text(q, min_hold_s) if stats["samples"].max() > 1 else "rate between two scrapes"
    table = stats.rename(columns={"sustained": "cpu_sustained_pct", "max": "cpu_max_pct",
                                  "mean": "cpu_mean_pct", "last": "cpu_last_pct"})
    found = _per_instance_findings("cpu.saturation", "CPU", stats.rename(columns={"sustained": "v"}).assign(
        cpu_max_pct=stats["max"]), "v", "%", statistic, level, CPU_ADVICE, ["cpu_max_pct", "samples"])
    movers = moving_with_cpu(correlated)
    for f in found:
        if f.severity in ("warning", "critical") and movers:
            f.evidence["moves_with"] = movers
            f.title += f"; moves with {movers[0].split(' (')[0]}"
    return table, found


def moving_with_cpu(correlated: pd.DataFrame | None, min_r: float = 0.5, top: int = 3) -> list[str]:
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


# --------------------------------------------------------------------------- instances up

DOWN_ADVICE = ("`flyctl status` and `flyctl logs -i <machine>`: did it crash (OOM: memory section), fail its health "
               "check, or get stopped? While it is down the others carry its traffic: check their CPU and latency "
               "here, and `flyctl machine restart <id>` if it does not come back.")


def _down_runs(t: np.ndarray, failed: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) positions of each run of consecutive failed scrapes."""
    runs, start = [], None
    for i, f in enumerate(failed):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(failed) - 1))
    return runs


def _dur(seconds: float) -> str:
    """``800 ms``, ``5 s``, ``2.5 min``."""
    if seconds is None or seconds != seconds:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt_span(first: pd.Timestamp, last: pd.Timestamp) -> str:
    return f"{first:%H:%M:%S}–{last:%H:%M:%S} UTC" if first != last else f"{first:%H:%M:%S} UTC"


def instances_down(up: pd.DataFrame | None, down_for: float = 15.0) -> tuple[pd.DataFrame, list[Finding]]:
    """``instance.down`` and ``monitoring.gap`` from Prometheus's ``up`` series over the window.

    An instance is *down* only after an outage: at least two consecutive failed scrapes
    (``up == 0``) spanning at least ``down_for`` seconds (``settings.diagnostics.down_for``;
    each scrape stands for one scrape interval, so 15 failed one-second scrapes are 15 s) —
    critical when the outage lasts to the end of the window, warning when it came back.
    Shorter runs of failed scrapes are flaps: named in the ``ok`` finding, no alarm (an
    info finding when the instance has not answered its last scrapes yet).

    A failed scrape that *every* instance missed at the same time (each within one of its
    scrape intervals), when there are two instances or more, is not an instance's outage:
    the scraper or the machine it runs on stalled (a busy machine times out every scrape
    at once). A run of failed scrapes made only of such shared misses is a
    ``monitoring.gap`` (info; a warning when it lasts ``down_for`` or more: a blind spot
    that long — or the whole service down at once — needs a look), never
    ``instance.down``; an instance's own outage that overlaps a shared miss is still
    judged on its whole run.

    Nothing in snapshot mode (no ``up`` series there; a metrics URL that does not answer is
    ``source.unreachable``). Table: per instance the scrapes, failed and shared failed
    scrapes, its longest own run of failures (s) and the verdict.
    """
    df = _clean_series(up)
    cols = ["instance", "scrapes", "failed", "shared_failed", "longest_outage_s", "down_s", "first_down",
            "last_down", "up_at_end", "verdict"]
    if df.empty or "timestamp" not in df.columns:
        return pd.DataFrame(columns=cols), []
    df = df.assign(timestamp=pd.to_datetime(df["timestamp"], utc=True)).sort_values("timestamp")
    per: dict[str, dict[str, Any]] = {}
    for inst, g in df.groupby("instance"):
        t = g["timestamp"].to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
        interval = float(np.median(np.diff(t))) if len(t) > 1 else float("nan")
        per[str(inst)] = {"t": t, "failed": (g["value"] < 0.5).to_numpy(), "interval": interval}
    names = sorted(per)

    def step_of(inst: str) -> float:
        i = per[inst]["interval"]
        return i if i == i else 0.0

    def shared(inst: str, ts: float) -> bool:
        """Every other instance scraped around ``ts`` failed then too (two instances at least)."""
        others = 0
        for o in names:
            if o == inst:
                continue
            d = per[o]
            # one and a half scrape intervals: the targets' scrapes are out of phase, and a
            # failed scrape stands for the time until its timeout
            tol = 1.5 * max(d["interval"] if d["interval"] == d["interval"] else 0.0, step_of(inst))
            near = (d["t"] >= ts - tol - 1e-6) & (d["t"] <= ts + tol + 1e-6)
            if not near.any():
                if d["t"][0] <= ts <= d["t"][-1]:   # scraped before and after, not around: no evidence
                    return False
                continue                            # not scraped yet / any more: not part of the comparison
            if not d["failed"][near].any():
                return False
            others += 1
        return others >= 1

    rows, found, flaps, gaps = [], [], [], []
    for inst in names:
        d = per[inst]
        t, failed, interval = d["t"], d["failed"], d["interval"]
        step = interval if interval == interval else 0.0
        is_shared = np.array([bool(f) and shared(inst, ts) for ts, f in zip(t, failed)])
        longest, verdict, worst_run = 0.0, "ok", None
        for a, b in _down_runs(t, failed):
            span = float(t[b] - t[a] + step)
            first, last = (pd.Timestamp(t[a], unit="s", tz="UTC"), pd.Timestamp(t[b], unit="s", tz="UTC"))
            run = {"instance": inst, "scrapes": b - a + 1, "span_s": span, "first": first, "last": last,
                   "at_end": b == len(t) - 1, "step": step}
            if is_shared[a:b + 1].all():
                gaps.append(run)
                continue
            longest = max(longest, span)
            if b > a and span >= down_for - 1e-9:
                sev = "critical" if run["at_end"] else "warning"
                if worst_run is None or severity_rank(sev) > severity_rank(verdict) or span > worst_run["span_s"]:
                    worst_run = run
                verdict = sev if severity_rank(sev) > severity_rank(verdict) else verdict
            else:
                flaps.append(run)
        rows.append({"instance": inst, "scrapes": len(t), "failed": int(failed.sum()),
                     "shared_failed": int(is_shared.sum()), "longest_outage_s": longest,
                     "down_s": float(failed.sum() * step) if step else float("nan"),
                     "first_down": pd.Timestamp(t[failed][0], unit="s", tz="UTC") if failed.any() else None,
                     "last_down": pd.Timestamp(t[failed][-1], unit="s", tz="UTC") if failed.any() else None,
                     "up_at_end": bool(not failed[-1]), "verdict": verdict})
        if worst_run is not None:
            r = worst_run
            still = r["at_end"]
            found.append(Finding(
                "instance.down", "critical" if still else "warning",
                f"{inst} did not answer {r['scrapes']} consecutive scrapes (~{_dur(r['span_s'])} down, "
                f"{_fmt_span(r['first'], r['last'])})" + ("; still down at the end of the window" if still
                                                         else "; back up since"),
                subject=inst,
                evidence={"instance": inst, "failed_scrapes": r["scrapes"], "scrapes": len(t),
                          "failed_in_window": int(failed.sum()), "down_s": r["span_s"],
                          "first_down": r["first"].isoformat(), "last_down": r["last"].isoformat(),
                          "down_at_end": still, "down_for": down_for, "scrape_interval_s": interval,
                          "statistic": f"consecutive failed scrapes (up == 0) spanning ≥ {down_for:g} s, "
                                       f"not missed by every instance at once"},
                recommendation=DOWN_ADVICE))
    table = pd.DataFrame(rows, columns=cols)
    gap_findings = _gap_findings(gaps, len(names), down_for)
    ongoing = [f for f in flaps if f["at_end"]]
    for r in ongoing:
        found.append(Finding(
            "instance.down", "info",
            f"{r['instance']} did not answer its last {r['scrapes']} scrape(s) (~{_dur(r['span_s'])}, "
            f"{_fmt_span(r['first'], r['last'])}): shorter than settings.diagnostics.down_for "
            f"({down_for:g} s) — not called down yet; re-run to see whether it comes back",
            subject=r["instance"],
            evidence={"instance": r["instance"], "failed_scrapes": r["scrapes"], "down_s": r["span_s"],
                      "first_down": r["first"].isoformat(), "down_for": down_for, "down_at_end": True}))
    if not any(f.severity in ("warning", "critical") for f in found):
        short = [f for f in flaps if not f["at_end"]]
        if short:
            worst = max(short, key=lambda r: r["span_s"])
            flap = (f"; {len(short)} shorter run(s) of failed scrapes, the longest ~{_dur(worst['span_s'])} on "
                    f"{worst['instance']} (under down_for {down_for:g} s)")
        else:
            flap = ""
        gap = f"; {sum(g['scrapes'] for g in gaps)} scrape(s) every instance missed at once (monitoring gap)" \
            if gaps else ""
        clean = not short and not gaps and not ongoing
        title = (f"All {len(table)} instance(s) answered every scrape in the window (up == 1)" if clean else
                 f"No instance down for {down_for:g} s or more among {len(table)} instance(s){flap}{gap}")
        found.append(Finding("instance.down", "ok", title, subject="all instances",
                             evidence={"instances": len(table), "scrapes": int(table["scrapes"].sum()),
                                       "failed_scrapes": int(table["failed"].sum()), "down_for": down_for,
                                       "flaps": [{"instance": r["instance"], "scrapes": r["scrapes"],
                                                  "span_s": r["span_s"], "first": r["first"].isoformat()}
                                                 for r in short]}))
    return table, found + gap_findings


GAP_ADVICE = ("Every instance missed the same scrapes, so the cause is on the scraping side: Prometheus itself "
              "(its own CPU, a long GC or compaction, `prometheus_target_scrapes_exceeded_sample_limit_total`, "
              "`scrape_duration_seconds` near the scrape timeout) or the machine both run on (load, CPU steal). "
              "Numbers of the window have a hole there; the instances were not necessarily down. A gap as long "
              "as a real outage can also be the whole service down at once: compare process_start_time_seconds "
              "before and after.")


def _gap_findings(gaps: list[dict[str, Any]], instances: int, down_for: float) -> list[Finding]:
    """``monitoring.gap``: the runs of failed scrapes every instance shared, as episodes."""
    if not gaps:
        return []
    gaps = sorted(gaps, key=lambda r: r["first"])
    episodes: list[dict[str, Any]] = []
    for r in gaps:
        cur = episodes[-1] if episodes else None
        if cur is not None and r["first"] <= cur["last"] + pd.Timedelta(seconds=r["step"] + 1e-3):
            cur["last"] = max(cur["last"], r["last"])
            cur["step"] = max(cur["step"], r["step"])
            cur["missed"][r["instance"]] = cur["missed"].get(r["instance"], 0) + r["scrapes"]
        else:
            episodes.append({"first": r["first"], "last": r["last"], "step": r["step"],
                             "missed": {r["instance"]: r["scrapes"]}})
    missed: dict[str, int] = {}
    for e in episodes:
        e["span_s"] = (e["last"] - e["first"]).total_seconds() + e["step"]
        for k, v in e["missed"].items():
            missed[k] = missed.get(k, 0) + int(v)
    longest = max(e["span_s"] for e in episodes)
    sev = "warning" if longest >= down_for - 1e-9 else "info"
    first = episodes[0]
    when = ", ".join(_fmt_span(e["first"], e["last"]) for e in episodes[:3]) + (" …" if len(episodes) > 3 else "")
    title = (f"Monitoring gap: all {instances} instances missed the same scrapes {len(episodes)} time(s) "
             f"(longest ~{_dur(longest)}; {when}) — the scraper or the machine, not one instance")
    if sev == "warning":
        title += f"; {_dur(longest)} blind (or the whole service down at once)"
    return [Finding("monitoring.gap", sev, title, subject="prometheus",
                    evidence={"episodes": len(episodes), "longest_s": longest, "instances": instances,
                              "down_for": down_for, "first_gap": first["first"].isoformat(),
                              "missed_scrapes": missed,
                              "spans": [{"first": e["first"].isoformat(), "last": e["last"].isoformat(),
                                         "span_s": e["span_s"]} for e in episodes[:20]]},
                    recommendation=GAP_ADVICE)]


# --------------------------------------------------------------------------- memory

MEMORY_ADVICE = ("Immediate (runbook Issue 1 §3): restart to clear memory (`flyctl apps restart`) or give it more "
                 "(`flyctl scale vm shared-cpu-2x`). Then check whether memory grows steadily (bottlenecks section, "
                 "memory.growth) and compare two heap snapshots (`node --heapsnapshot-signal=SIGUSR2`, "
                 "`kill -USR2 <pid>`) to find the leaking objects.")


def _max_by_instance(series: pd.DataFrame | None) -> pd.Series:
    df = _clean_series(series)
    return df.groupby("instance")["value"].max() if not df.empty else pd.Series(dtype=float)


def _last_by_instance(series: pd.DataFrame | None) -> pd.Series:
    df = _clean_series(series)
    if df.empty:
        return pd.Series(dtype=float)
    if "timestamp" in df.columns:
        df = df.sort_values("timestamp")
    return df.groupby("instance")["value"].last()


def memory_pressure(rss: pd.DataFrame | None, heap_used: pd.DataFrame | None, heap_limit: pd.DataFrame | None,
                    level: Any, memory_limit_bytes: int | None = None, heap_total: pd.DataFrame | None = None,
                    names: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``memory.pressure``: each instance's peak memory use over the window as a share of
    its limit, against ``thresholds.memory_percent``.

    Limits, each used where it exists, the higher share judged (either one running out
    ends the process):

    - RSS / ``memory_limit_bytes`` (``targets.memory_limit``: the instance's memory, what
      the OOM killer compares) — heap used / it when RSS is not exported;
    - heap used / the heap-limit gauge (``nodejs_heap_size_limit_bytes``:
      ``--max-old-space-size``; not a prom-client metric, a service may export it from
      ``v8.getHeapStatistics()``).

    Stock prom-client 15 has no heap limit, so without ``targets.memory_limit`` memory is
    not judged (info). The committed heap (``heap_total``: ``nodejs_heap_size_total_bytes``,
    the V8 heap spaces summed) is shown but never used as a limit: V8 grows it on demand,
    and heap used / committed is ~80 % on an idle process. ``names``: the metric names,
    for the evidence (``resident_memory``, ``heap_used``, ``heap_limit``).
    """
    names = {"resident_memory": "process_resident_memory_bytes", "heap_used": "nodejs_heap_size_used_bytes",
             "heap_limit": "nodejs_heap_size_limit_bytes", **(names or {})}
    rss_max, used_max, limit = _max_by_instance(rss), _max_by_instance(heap_used), _max_by_instance(heap_limit)
    committed = _max_by_instance(heap_total)
    rss_last, used_last = _last_by_instance(rss), _last_by_instance(heap_used)
    instances = sorted(set(rss_max.index) | set(used_max.index))
    rows = []
    for inst in instances:
        row = {"instance": inst, "rss_mb": rss_max.get(inst, np.nan) / MB,
               "heap_used_mb": used_max.get(inst, np.nan) / MB, "heap_committed_mb": committed.get(inst, np.nan) / MB,
               "heap_limit_mb": limit.get(inst, np.nan) / MB}
        bases = []   # (pct, last_pct, basis, limit bytes, limit source)
        if memory_limit_bytes and inst in rss_max.index:
            bases.append((100 * rss_max[inst] / memory_limit_bytes,
                          100 * rss_last.get(inst, np.nan) / memory_limit_bytes, "RSS / memory_limit",
                          memory_limit_bytes, f"{names['resident_memory']} / targets.memory_limit"))
        elif memory_limit_bytes and inst in used_max.index:
            bases.append((100 * used_max[inst] / memory_limit_bytes,
                          100 * used_last.get(inst, np.nan) / memory_limit_bytes, "heap used / memory_limit",
                          memory_limit_bytes, f"{names['heap_used']} / targets.memory_limit (no RSS exported)"))
        if inst in used_max.index and limit.get(inst, 0) > 0:
            bases.append((100 * used_max[inst] / limit[inst], 100 * used_last.get(inst, np.nan) / limit[inst],
                          "heap used / heap limit", limit[inst], f"{names['heap_used']} / {names['heap_limit']}"))
        if bases:
            pct, last_pct, basis, lim, source = max(bases, key=lambda b: b[0])
            row.update(basis=basis, limit_mb=lim / MB, pct=pct, last_pct=last_pct, source=source)
        else:
            row.update(basis="no limit known", limit_mb=np.nan, pct=np.nan, last_pct=np.nan, source="")
        row["verdict"] = level_verdict(row["pct"], level)
        rows.append(row)
    cols = ["instance", "basis", "pct", "last_pct", "rss_mb", "heap_used_mb", "heap_committed_mb", "heap_limit_mb",
            "limit_mb", "source", "verdict"]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table, _no_data("memory.pressure", "Memory", f"{names['resident_memory']} / {names['heap_used']}")
    if table["pct"].isna().all():
        def top(col: str) -> float | None:
            return round(float(np.nanmax(table[col])), 1) if table[col].notna().any() else None
        committed_txt = (f", heap used up to {top('heap_used_mb'):.0f} MB of {top('heap_committed_mb'):.0f} MB "
                         f"committed (not a limit: V8 grows the heap on demand)"
                         if top("heap_used_mb") is not None and top("heap_committed_mb") is not None else "")
        return table, [Finding("memory.pressure", "info",
                               f"Memory: no limit to compare with — not judged: set targets.memory_limit (the "
                               f"instance's memory) or export {names['heap_limit']} (stock prom-client has no "
                               f"heap-limit gauge){committed_txt}", subject="metrics",
                               evidence={"rss_mb_max": top("rss_mb"), "heap_used_mb_max": top("heap_used_mb"),
                                         "heap_committed_mb_max": top("heap_committed_mb"),
                                         "missing": names["heap_limit"], "fallback": "none (no targets.memory_limit)"})]
    sources = sorted(set(table.loc[table["pct"].notna(), "source"]))
    bases = sorted(set(table.loc[table["pct"].notna(), "basis"]))
    what = f"Memory ({bases[0]})" if len(bases) == 1 else "Memory"
    found = _per_instance_findings("memory.pressure", what, table, "pct", "%", "max over the window", level,
                                   MEMORY_ADVICE, ["rss_mb", "heap_used_mb", "heap_committed_mb", "limit_mb",
                                                   "last_pct", "basis", "source"])
    for f in found:
        if f.severity == "ok":
            f.evidence["sources"] = sources
        # the verdict table's "statistic": which numbers were divided (a fallback is named)
        f.evidence["statistic"] = "max over the window, " + (f.evidence.get("source") or " or ".join(sources))
    return table, found


# --------------------------------------------------------------------------- event loop

LAG_ADVICE = ("Something synchronous blocks the event loop (runbook Issue 1 §2, Synchronous Operations): CPU-heavy "
              "code, JSON.parse/stringify of large objects, regexes on big strings, sync fs/crypto/zlib calls. Find "
              "it with a CPU profile (`node --cpu-prof`; the bottlenecks section reads .cpuprofile files) and make it "
              "asynchronous or move it to a worker thread; every request on the instance waits while it runs.")


def eventloop_lag(lag: pd.DataFrame | None, lag_p99: pd.DataFrame | None, level: Any,
                  q: float = SUSTAINED_QUANTILE, min_hold_s: float = MIN_HOLD_S, lag_max: pd.DataFrame | None = None,
                  names: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``eventloop.lag``: per instance, against ``thresholds.eventloop_lag_seconds``, two
    readings of prom-client's gauges, each at the level it reached again and again over the
    window (:func:`recurring_level`: in at least 10 % of the scrapes, over at least 20 s):

    - the *typical* delay: the p99 gauge (``nodejs_eventloop_lag_p99_seconds``; else the
      lag gauge) against the Warning and Critical levels;
    - the *stalls*: the max gauge (``nodejs_eventloop_lag_max_seconds``: the worst delay
      since the previous scrape) against the Critical level — a loop that stalls 100 ms or
      more again and again is blocked, whatever its p99 says.

    The worse verdict wins and the finding names the gauge it comes from. Why both:
    prom-client resets its delay histogram at every scrape and samples every 10 ms, so at a
    15 s scrape interval a loop blocked 300 ms every couple of seconds has ~1500 samples per
    scrape of which a handful are long — p99 reads 10-14 ms while max reads 300 ms. And why
    max only against Critical: the worst delay of a whole scrape interval is far above the
    typical one on any busy machine (a healthy stock Node service on a busy 2-core machine
    reads 56-66 ms, recurring), which the Warning level (50 ms) is not about. Without a p99
    or lag gauge, max is judged against both levels. The lag gauge alone (one measurement at
    scrape time) misses blocking between scrapes.
    """
    names = {"eventloop_lag": "nodejs_eventloop_lag_seconds", "eventloop_lag_p99": "nodejs_eventloop_lag_p99_seconds",
             "eventloop_lag_max": "nodejs_eventloop_lag_max_seconds", **(names or {})}
    stats = {key: window_stats(frame, q, min_hold_s, level_fn=recurring_level)
             for key, frame in (("lag", lag), ("p99", lag_p99), ("max", lag_max))}
    fields = {"lag": "eventloop_lag", "p99": "eventloop_lag_p99", "max": "eventloop_lag_max"}
    missing = [names[fields[k]] for k in ("max", "p99", "lag") if stats[k].empty]
    typical = next((k for k in ("p99", "lag") if not stats[k].empty), None)
    if typical is None and stats["max"].empty:
        return stats["lag"], _no_data("eventloop.lag", "Event-loop lag", " / ".join(names[fields[k]]
                                                                                   for k in ("max", "p99", "lag")))
    instances = sorted(set().union(*(set(s["instance"]) for s in stats.values() if not s.empty)))
    rows = []
    for inst in instances:
        row: dict[str, Any] = {"instance": inst}
        for k in ("lag", "p99", "max"):
            s = stats[k].set_index("instance") if not stats[k].empty else None
            has = s is not None and inst in s.index
            row[f"{k}_recurring_ms"] = float(s.loc[inst, "sustained"]) * 1000 if has else np.nan
            row[f"{k}_peak_ms"] = float(s.loc[inst, "max"]) * 1000 if has else np.nan
            row[f"{k}_samples"] = int(s.loc[inst, "samples"]) if has else 0
        t_val = row[f"{typical}_recurring_ms"] / 1000 if typical else np.nan
        s_val = row["max_recurring_ms"] / 1000
        v_t = level_verdict(t_val, level) if typical else "no data"
        if typical is None:   # the max gauge is all there is: judged against both levels
            v_s = level_verdict(s_val, level)
        else:
            v_s = "no data" if pd.isna(s_val) else ("critical" if s_val >= level.critical else "ok")
        stall = v_s != "no data" and (v_t == "no data" or severity_rank(v_s if v_s != "no data" else "ok")
                                     > severity_rank(v_t if v_t != "no data" else "ok"))
        key = "max" if stall else typical
        row.update(judged_s=s_val if stall else t_val, verdict=v_s if stall else v_t, gauge=names[fields[key]],
                   reading="stalls (max gauge)" if key == "max" else f"typical delay ({key} gauge)",
                   samples=row[f"{key}_samples"], peak_s=row[f"{key}_peak_ms"] / 1000,
                   p99_recurring_s=row["p99_recurring_ms"] / 1000, max_recurring_s=s_val)
        rows.append(row)
    table = pd.DataFrame(rows)
    recurring = _recurring_text(q, min_hold_s)

    def statistic(rec: dict) -> str:
        if rec["samples"] <= 1:
            return f"{rec['gauge']} now"
        if rec["gauge"] == names["eventloop_lag_max"]:
            against = "" if typical is None else ", judged against the critical level only"
            return f"max lag gauge (worst delay since the previous scrape), {recurring}{against}"
        return f"{'p99' if typical == 'p99' else 'lag'} lag gauge, {recurring}"

    found = []
    over = table[table["verdict"].isin(["warning", "critical"])]
    for rec in over.to_dict("records"):
        limit = level.critical if rec["verdict"] == "critical" else level.warning
        what = "Event-loop stalls of" if rec["gauge"] == names["eventloop_lag_max"] else "Event-loop lag"
        extra = (f"; the p99 gauge reads {_fmt(rec['p99_recurring_s'], 's')} (reset at every scrape)"
                 if rec["gauge"] == names["eventloop_lag_max"] and not pd.isna(rec["p99_recurring_s"]) else "")
        found.append(Finding(
            "eventloop.lag", rec["verdict"],
            f"{what} {_fmt(rec['judged_s'], 's')} on {rec['instance']} ({statistic(rec)}; {rec['verdict']} at "
            f"{_fmt(limit, 's')}){extra}", subject=str(rec["instance"]),
            evidence=_evidence(rec["judged_s"], "s", statistic(rec), level, instance=rec["instance"],
                               instances=len(table), instances_over=len(over), gauge=rec["gauge"],
                               reading=rec["reading"], max_s=rec["peak_s"], samples=rec["samples"],
                               p99_recurring_s=rec["p99_recurring_s"], max_recurring_s=rec["max_recurring_s"],
                               gauges_missing=missing),
            recommendation=LAG_ADVICE))
    judged = table[table["verdict"] != "no data"]
    if not found and not judged.empty:
        worst_t = judged.sort_values("judged_s", ascending=False).iloc[0]
        stalls = table["max_recurring_s"].dropna()
        stall_txt = (f"; stalls (max gauge) up to {_fmt(float(stalls.max()), 's')}, under the critical level "
                     f"{_fmt(level.critical, 's')}" if typical is not None and len(stalls) else "")
        found.append(Finding(
            "eventloop.lag", "ok",
            f"Event-loop lag {_fmt(worst_t['judged_s'], 's')} at most ({statistic(worst_t.to_dict())}), under the "
            f"warning level {_fmt(level.warning, 's')} on all {len(judged)} instance(s){stall_txt}",
            subject="all instances",
            evidence=_evidence(worst_t["judged_s"], "s", statistic(worst_t.to_dict()), level,
                               instance=worst_t["instance"], instances=len(judged), gauge=worst_t["gauge"],
                               max_recurring_s=float(stalls.max()) if len(stalls) else None,
                               gauges_missing=missing)))
    cols = ["instance", "reading", "gauge", "judged_s", "verdict", "p99_recurring_ms", "p99_peak_ms",
            "max_recurring_ms", "max_peak_ms", "lag_recurring_ms", "lag_peak_ms", "samples"]
    return table[cols], found


# --------------------------------------------------------------------------- database connections

DB_ADVICE = ("Runbook Performance Baselines (Database Connections 10-20 normal): find what holds connections — "
             "long transactions, slow queries, connections held across awaits (open the database section: "
             "pg_stat_activity, slow queries). Prisma: size `connection_limit` in DATABASE_URL so instances x "
             "limit stays under the server's max_connections; put PgBouncer in front when instances are many.")


def db_connections(pool_open: pd.DataFrame | None, pool_busy: pd.DataFrame | None, pool_wait: pd.DataFrame | None,
                   level: Any, server_connections: int | None = None,
                   wait_warning: float = POOL_WAIT_WARNING,
                   wait_critical: float = POOL_WAIT_CRITICAL) -> tuple[pd.DataFrame, list[Finding]]:
    """``db.connections``: total connections against ``thresholds.db_connections``, and
    pool exhaustion per instance.

    Total: the sum of each instance's peak ``prisma_pool_connections_open`` over the
    window, or ``server_connections`` (client backends in ``pg_stat_activity``) when
    higher. Exhaustion: the share of scrapes in which ``prisma_client_queries_wait`` > 0;
    ``wait_warning`` (20 %) → warning, ``wait_critical`` (50 %) → critical — requests then
    queue for a connection whatever the database's own speed.
    """
    o, b, w = _clean_series(pool_open), _clean_series(pool_busy), _clean_series(pool_wait)
    instances = sorted(set(o["instance"]) | set(b["instance"]) | set(w["instance"]))
    rows = []
    for inst in instances:
        oi, bi, wi = (d[d["instance"] == inst]["value"] for d in (o, b, w))
        rows.append({"instance": inst, "open_max": oi.max() if len(oi) else np.nan,
                     "busy_mean": bi.mean() if len(bi) else np.nan, "busy_max": bi.max() if len(bi) else np.nan,
                     "waiting_max": wi.max() if len(wi) else np.nan,
                     "waiting_share": (wi > 0).mean() if len(wi) else np.nan, "samples": int(max(len(oi), len(wi)))})
    table = pd.DataFrame(rows, columns=["instance", "open_max", "busy_mean", "busy_max", "waiting_max",
                                        "waiting_share", "samples"])
    found: list[Finding] = []
    if table.empty and server_connections is None:
        return table, _no_data("db.connections", "DB connections", "prisma_pool_connections_open")
    pool_total = float(table["open_max"].sum()) if table["open_max"].notna().any() else None
    candidates = [v for v in (pool_total, server_connections) if v is not None]
    # No open-connection gauge and no server count (pool gauges other than Prisma's, the
    # database unreachable): the total is unknown; pool waits are still judged below.
    total = max(candidates) if candidates else None
    basis = ("pg_stat_activity client backends" if server_connections is not None and total == server_connections
             else "sum of each instance's peak open pool connections" if total is not None else "no data")
    verdict = level_verdict(total, level)
    ev = _evidence(total, "count", basis, level, pool_total=pool_total, server_connections=server_connections,
                   instances=len(table))
    if verdict in ("warning", "critical"):
        found.append(Finding("db.connections", verdict,
                             f"{total:.0f} database connections ({basis}); {verdict} at "
                             f"{level.critical if verdict == 'critical' else level.warning:.0f}",
                             subject="all instances", evidence=ev, recommendation=DB_ADVICE))
    exhausted = []
    for rec in table.to_dict("records"):
        share = rec["waiting_share"]
        if share is None or pd.isna(share):
            continue
        sev = "critical" if share >= wait_critical else "warning" if share >= wait_warning else None
        if sev:
            exhausted.append(rec["instance"])
            found.append(Finding(
                "db.connections", sev,
                f"DB pool exhausted on {rec['instance']}: queries waited for a connection in {share:.0%} of "
                f"scrapes (up to {rec['waiting_max']:.0f} waiting; {rec['busy_max']:.0f} of {rec['open_max']:.0f} "
                f"connections busy)",
                subject=str(rec["instance"]),
                evidence={"observed": share, "unit": "ratio", "statistic": "share of scrapes with queries waiting",
                          "normal": None, "warning": wait_warning, "critical": wait_critical,
                          "instance": rec["instance"], "waiting_max": rec["waiting_max"], "busy_max": rec["busy_max"],
                          "open_max": rec["open_max"], "samples": rec["samples"]},
                recommendation="Every connection of the pool is in use and queries queue for one. "
                               "Look for connections held across slow awaits or long transactions (database "
                               "section: pg_stat_activity 'idle in transaction'); raise Prisma's "
                               "`connection_limit` only within the server's max_connections. " + DB_ADVICE))
    if total is None:
        found.extend(_no_data("db.connections", "DB connections (total)", "prisma_pool_connections_open"))
    if verdict == "ok" and not exhausted:
        found.append(Finding("db.connections", "ok",
                             f"{total:.0f} database connections ({basis}), under the warning level "
                             f"{level.warning:.0f}; no query waited for a pool connection in "
                             f"{wait_warning:.0%} or more of scrapes", subject="all instances", evidence=ev))
    return table, found


# --------------------------------------------------------------------------- errors

ERROR_ADVICE = ("Read the 5xx responses' causes in the application log for this route (`flyctl logs | grep "
                "' 50'`); 502/503/504 usually come from a dependency or a breaker (external-apis section), 500 from "
                "the code. The runbook's Quick Diagnostics step 5: http_request_errors_total.")


def error_rates(requests: pd.DataFrame | None, level: Any, min_requests: int = 20, method_label: str = "method",
                route_label: str = "route", status_label: str = "status_code",
                basis: str = "") -> tuple[pd.DataFrame, list[Finding]]:
    """``errors.high_rate``: share of 5xx responses per route and overall, against
    ``thresholds.error_rate``. A route is judged when it had at least ``min_requests``
    requests or at least :data:`MIN_ERRORS` 5xx answers (17 failures out of 17 calls are
    not an anecdote); else it is listed as ``too few requests``.

    ``requests``: increases of ``http_requests_total`` by method, route and status code.
    Subjects: ``GET /api/products/{id}`` (as the metrics spell the route) or ``overall``.
    """
    cols = ["endpoint", "requests", "errors_5xx", "error_rate", "top_status", "verdict"]
    if requests is None or requests.empty or status_label not in requests.columns:
        return pd.DataFrame(columns=cols), _no_data("errors.high_rate", "Error rate", "http_requests_total", basis)
    df = requests.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce").fillna(0)
    df["is5xx"] = df[status_label].astype(str).str.startswith("5")
    df["endpoint"] = df.get(method_label, pd.Series("", index=df.index)).astype(str) + " " + \
        df.get(route_label, pd.Series("", index=df.index)).astype(str)
    totals = df.groupby("endpoint")["value"].sum()
    errs = df[df["is5xx"]]
    bad_by = errs.groupby("endpoint")["value"].sum().reindex(totals.index, fill_value=0.0)
    by_status = errs.groupby(["endpoint", errs[status_label].astype(str)])["value"].sum()
    by_status = by_status[by_status > 0]
    top = by_status.groupby(level=0).idxmax().map(lambda k: k[1]) if len(by_status) else pd.Series(dtype=object)
    table = pd.DataFrame({"endpoint": totals.index, "requests": totals.to_numpy(), "errors_5xx": bad_by.to_numpy()})
    table["error_rate"] = np.where(table["requests"] > 0, table["errors_5xx"] / table["requests"].where(
        table["requests"] > 0, 1), np.nan)
    table["top_status"] = [str(top[e]) if e in top.index else "" for e in table["endpoint"]]
    table = table[cols[:-1]]
    total, bad = table["requests"].sum(), table["errors_5xx"].sum()
    table["verdict"] = [level_verdict(r, level) if n >= min_requests or e >= MIN_ERRORS else "too few requests"
                        for r, n, e in zip(table["error_rate"], table["requests"], table["errors_5xx"])]
    table = table.sort_values(["errors_5xx", "requests"], ascending=False)
    overall = {"endpoint": "overall", "requests": total, "errors_5xx": bad,
               "error_rate": bad / total if total > 0 else np.nan, "top_status": "",
               "verdict": level_verdict(bad / total, level) if total >= min_requests or bad >= MIN_ERRORS
               else "too few requests"}
    table = pd.concat([pd.DataFrame([overall]), table], ignore_index=True)
    table["requests"] = table["requests"].round(0)
    table["errors_5xx"] = table["errors_5xx"].round(0)
    found = []
    statistic = "5xx share of the window's requests" if not basis.startswith("/metrics") else \
        "5xx share of requests since each process started"
    for rec in table.to_dict("records"):
        if rec["verdict"] not in ("warning", "critical"):
            continue
        found.append(Finding(
            "errors.high_rate", rec["verdict"],
            f"{rec['endpoint']}: {_fmt(rec['error_rate'], 'ratio')} of {rec['requests']:.0f} requests answered 5xx"
            + (f" (mostly {rec['top_status']})" if rec["top_status"] else ""),
            subject=rec["endpoint"],
            evidence=_evidence(rec["error_rate"], "ratio", statistic, level, requests=rec["requests"],
                               errors_5xx=rec["errors_5xx"], top_status=rec["top_status"]),
            recommendation=ERROR_ADVICE))
    if not found and total > 0:
        found.append(Finding("errors.high_rate", "ok",
                             f"5xx share {_fmt(overall['error_rate'], 'ratio')} of {total:.0f} requests; no route "
                             f"at the warning level {_fmt(level.warning, 'ratio')}", subject="overall",
                             evidence=_evidence(overall["error_rate"], "ratio", statistic, level, requests=total,
                                                errors_5xx=bad)))
    return table, found


# --------------------------------------------------------------------------- memory growth (leak suspicion)


def linear_fit(series: pd.DataFrame) -> dict[str, float]:
    """Least-squares line through ``value`` over time (minutes): ``slope`` (per minute),
    ``r2``, ``start``/``end`` (fitted values at the first/last sample), ``minutes``,
    ``late_slope`` (slope over the second half alone), ``samples``."""
    df = series.sort_values("timestamp")
    t = (df["timestamp"] - df["timestamp"].iloc[0]).dt.total_seconds().to_numpy() / 60.0
    y = df["value"].to_numpy(dtype=float)
    out = {"samples": len(y), "minutes": float(t[-1]) if len(t) else 0.0, "slope": np.nan, "r2": np.nan,
           "start": np.nan, "end": np.nan, "late_slope": np.nan, "last": float(y[-1]) if len(y) else np.nan}
    if len(y) < 5 or t[-1] <= 0:
        return out
    slope, intercept = np.polyfit(t, y, 1)
    fitted = intercept + slope * t
    ss_res = float(((y - fitted) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    half = t >= t[-1] / 2
    late = np.polyfit(t[half], y[half], 1)[0] if half.sum() >= 3 and np.ptp(t[half]) > 0 else np.nan
    out.update(slope=float(slope), r2=1 - ss_res / ss_tot if ss_tot > 0 else 0.0, start=float(fitted[0]),
               end=float(fitted[-1]), late_slope=float(late))
    return out


def memory_growth(heap_used: pd.DataFrame | None, rss: pd.DataFrame | None,
                  heap_limits: dict[str, float] | float | None = None, rss_limit: float | None = None,
                  min_mb_per_min: float = 0.5,
                  min_r2: float = 0.8, min_share: float = 0.10,
                  critical_horizon_s: float = 3600.0) -> tuple[pd.DataFrame, list[Finding]]:
    """``memory.growth``: memory that grows steadily across the window — leak suspected.

    For each instance and each of heap used and RSS, a straight line is fitted over the
    window (:func:`linear_fit`). It is growth when all three hold: slope at least
    ``min_mb_per_min`` MB/min, R² at least ``min_r2`` (the rise is steady, not one step or
    GC noise), and the fitted rise at least ``min_share`` of the starting level (10 %:
    more than warm-up jitter). Warning; critical when, at that slope, the memory reaches
    its limit within ``critical_horizon_s`` (heap used: ``heap_limits``, bytes per instance
    or one for all; RSS: ``rss_limit``, the instance's memory limit). One finding per
    instance; ``ok`` if none grows; ``info`` when there is no series to fit (snapshot mode).
    """
    rows = []
    for metric, series, limits in (("heap used", heap_used, heap_limits), ("RSS", rss, rss_limit)):
        df = _clean_series(series)
        for inst, g in df.groupby("instance"):
            fit = linear_fit(g)
            limit = limits.get(inst) if isinstance(limits, dict) else limits
            slope_mb = fit["slope"] / MB
            share = (fit["end"] - fit["start"]) / fit["start"] if fit["start"] and fit["start"] > 0 else np.nan
            to_limit = ((limit - fit["last"]) / fit["slope"] * 60.0
                        if limit and fit["slope"] and fit["slope"] > 0 and limit > fit["last"] else
                        (0.0 if limit and fit["last"] >= limit else np.nan))
            grows = bool(slope_mb >= min_mb_per_min and fit["r2"] >= min_r2 and share >= min_share)
            rows.append({"instance": inst, "metric": metric, "start_mb": fit["start"] / MB, "end_mb": fit["end"] / MB,
                         "slope_mb_per_min": slope_mb, "late_slope_mb_per_min": fit["late_slope"] / MB,
                         "r2": fit["r2"], "growth_share": share, "minutes": fit["minutes"],
                         "limit_mb": (limit / MB) if limit else np.nan, "minutes_to_limit": to_limit / 60.0
                         if not pd.isna(to_limit) else np.nan, "samples": fit["samples"], "grows": grows})
    cols = ["instance", "metric", "start_mb", "end_mb", "slope_mb_per_min", "late_slope_mb_per_min", "r2",
            "growth_share", "minutes", "limit_mb", "minutes_to_limit", "samples", "grows"]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table, _no_data("memory.growth", "Memory growth", "nodejs_heap_size_used_bytes")
    if table["samples"].max() < 5:
        return table, [Finding("memory.growth", "info",
                               "Memory growth not judged: it needs the window's series (a Prometheus server); "
                               f"only {int(table['samples'].max())} sample(s) per instance", subject="metrics",
                               evidence={"samples": int(table["samples"].max())})]
    found = []
    for inst, g in table.groupby("instance"):
        growing = g[g["grows"]]
        if growing.empty:
            continue
        top = growing.sort_values("slope_mb_per_min", ascending=False).iloc[0]
        soon = not pd.isna(top["minutes_to_limit"]) and top["minutes_to_limit"] * 60 <= critical_horizon_s
        sev = "critical" if soon else "warning"
        when = (f"; at this rate it reaches its {top['limit_mb']:.0f} MB limit in {top['minutes_to_limit']:.0f} min"
                if not pd.isna(top["minutes_to_limit"]) else "")
        found.append(Finding(
            "memory.growth", sev,
            f"{top['metric'][0].upper() + top['metric'][1:]} on {inst} grows steadily: {top['start_mb']:.0f} → {top['end_mb']:.0f} MB "
            f"in {top['minutes']:.1f} min ({top['slope_mb_per_min']:.1f} MB/min, R² {top['r2']:.2f}){when}",
            subject=str(inst),
            evidence={"observed": top["slope_mb_per_min"], "unit": "MB/min",
                      "statistic": "slope of a straight-line fit over the window", "metric": top["metric"],
                      "start_mb": top["start_mb"], "end_mb": top["end_mb"], "r2": top["r2"],
                      "growth_share": top["growth_share"], "late_slope_mb_per_min": top["late_slope_mb_per_min"],
                      "minutes": top["minutes"], "minutes_to_limit": top["minutes_to_limit"],
                      "limit_mb": top["limit_mb"], "also_growing": [m for m in growing["metric"] if m != top["metric"]],
                      "min_mb_per_min": min_mb_per_min, "min_r2": min_r2, "min_share": min_share},
            recommendation="Leak suspected (runbook Issue 1 §3, Memory Leaks). Take two heap snapshots a few minutes "
                           "apart (`node --heapsnapshot-signal=SIGUSR2`, `kill -USR2 <pid>`), name them in "
                           "targets.heap_snapshots and re-run this section: it lists the constructors that grew. "
                           "Usual causes: listeners never removed, module-level arrays or maps that only grow, "
                           "caches without TTL/size limit. Immediate relief: `flyctl apps restart`."))
    if not found:
        worst = table.sort_values("slope_mb_per_min", ascending=False).iloc[0]
        # say which of the three conditions the steepest line misses, so the title never reads
        # as "flat" beside a large slope that is only unsteady (a sawtooth of big requests)
        missed = [c for c, ok in ((f"slope under {min_mb_per_min:g} MB/min", worst["slope_mb_per_min"] >= min_mb_per_min),
                                  (f"not steady: R² under {min_r2:g}", worst["r2"] >= min_r2),
                                  (f"rise under {min_share:.0%} of the start", worst["growth_share"] >= min_share))
                  if not ok]
        found.append(Finding(
            "memory.growth", "ok",
            f"No steady memory growth: steepest is {worst['metric']} on {worst['instance']} at "
            f"{worst['slope_mb_per_min']:.2f} MB/min (R² {worst['r2']:.2f}, {worst['growth_share']:+.0%}) — "
            + ", ".join(missed),
            subject="all instances",
            evidence={"observed": worst["slope_mb_per_min"], "unit": "MB/min", "r2": worst["r2"],
                      "growth_share": worst["growth_share"], "instance": worst["instance"], "metric": worst["metric"],
                      "min_mb_per_min": min_mb_per_min, "min_r2": min_r2, "min_share": min_share,
                      "not_met": missed}))
    return table, found


# --------------------------------------------------------------------------- where the time goes


def time_shares(http_seconds: float | None, db_seconds: float | None = None, external_seconds: float | None = None,
                requests: float | None = None) -> pd.DataFrame:
    """Request-handling time split: in database queries (``pg_query_duration_seconds_sum``),
    in external calls (``external_api_duration_seconds_sum``), and the rest (application
    code, event-loop waits, waiting for a pool connection...), each as seconds, share of
    the HTTP time (``http_request_duration_seconds_sum``) and ms per request.

    Shares are of *summed* request time: concurrent requests each count their own time,
    queries and calls each count theirs. A component can exceed 100 % when its work is not
    inside a request (background jobs) — shown as is, it is a finding in itself.
    """
    cols = ["component", "seconds", "share_of_request_time", "ms_per_request"]
    if http_seconds is None or not http_seconds or http_seconds <= 0:
        return pd.DataFrame(columns=cols)
    rows = []
    known = 0.0
    for name, val in (("database queries", db_seconds), ("external API calls", external_seconds)):
        if val is None or pd.isna(val):
            continue
        known += val
        rows.append({"component": name, "seconds": val})
    rows.append({"component": "application and waits (the rest)", "seconds": max(0.0, http_seconds - known)})
    rows.append({"component": "all request handling", "seconds": http_seconds})
    df = pd.DataFrame(rows)
    df["share_of_request_time"] = df["seconds"] / http_seconds
    df["ms_per_request"] = df["seconds"] / requests * 1000 if requests else np.nan
    return df[cols]


def time_share_summary(shares: pd.DataFrame) -> str:
    """One sentence: where most request time goes, with the numbers."""
    if shares is None or shares.empty:
        return "No request time to split (no HTTP duration histogram in the window)."
    parts = shares[shares["component"] != "all request handling"].sort_values("seconds", ascending=False)
    top = parts.iloc[0]
    rest = ", ".join(f"{r['component']} {r['share_of_request_time']:.0%}" for r in parts.iloc[1:].to_dict("records"))
    return (f"Most request time goes to {top['component']}: {top['share_of_request_time']:.0%} of "
            f"{shares['seconds'].iloc[-1]:.0f} s summed request time" + (f" ({rest})." if rest else "."))


def cpu_route_correlation(cpu: pd.DataFrame | None, busy: pd.DataFrame | None, rate: pd.DataFrame | None,
                          method_label: str = "method", route_label: str = "route",
                          min_points: int = 6) -> pd.DataFrame:
    """Which routes move with CPU: Pearson correlation over time between total CPU %
    (summed over instances) and each route's busy time (``rate`` of the duration
    histogram's ``_sum``: seconds of handling per second) and request rate.

    Inputs are range-query series on one step grid (``timestamp`` aligned). Columns:
    ``endpoint``, ``r_busy``, ``r_rate``, ``busy_share`` (the route's share of all busy
    time), ``points``. A correlation needs ``min_points`` common timestamps and some
    variation in both series; else NaN. Correlation is a pointer, not proof: a route
    that is busy *because* CPU is saturated (queued behind the blocker) moves with it too;
    read it with the mean durations and a CPU profile.
    """
    cols = ["endpoint", "r_busy", "r_rate", "busy_share", "points"]
    c = _clean_series(cpu)
    if c.empty or busy is None or busy.empty:
        return pd.DataFrame(columns=cols)
    total_cpu = c.groupby("timestamp")["value"].sum()

    def keyed(df: pd.DataFrame | None) -> pd.DataFrame:
        if df is None or df.empty:
            return pd.DataFrame(columns=["timestamp", "endpoint", "value"])
        d = df.copy()
        d["endpoint"] = d[method_label].astype(str) + " " + d[route_label].astype(str)
        return d.pivot_table(index="timestamp", columns="endpoint", values="value", aggfunc="sum")

    b, r = keyed(busy), keyed(rate)
    total_busy = b.sum().sum() if not b.empty else 0.0
    rows = []
    for ep in b.columns:
        row = {"endpoint": ep, "busy_share": b[ep].sum() / total_busy if total_busy else np.nan}
        for name, frame in (("r_busy", b), ("r_rate", r)):
            if ep not in getattr(frame, "columns", []):
                row[name] = np.nan
                continue
            j = pd.concat([total_cpu.rename("cpu"), frame[ep].rename("x")], axis=1, join="inner").dropna()
            row["points"] = len(j)
            ok = len(j) >= min_points and j["cpu"].std() > 0 and j["x"].std() > 0
            row[name] = float(np.corrcoef(j["cpu"], j["x"])[0, 1]) if ok else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["r_busy", "busy_share"], ascending=False, na_position="last").reset_index(drop=True)


# --------------------------------------------------------------------------- the one-page verdict


def _threshold_text(ev: dict[str, Any], unit: str) -> tuple[str, str, str]:
    def f(x):
        return _fmt(x, unit) if x is not None else "—"
    if unit == "MB/min":
        return "flat", f"≥ {ev.get('min_mb_per_min', 0.5):g} MB/min, steady", "reaches limit < 1 h"
    normal = ev.get("normal")
    return (f"< {f(normal)}" if normal is not None else "—", f"≥ {f(ev.get('warning'))}", f"≥ {f(ev.get('critical'))}")


def verdict_table(findings: Iterable[Finding], endpoints: pd.DataFrame | None = None) -> pd.DataFrame:
    """One table for the whole page: every endpoint against its response-time targets
    (from :func:`perfbook.checks.latency.endpoint_verdicts`) and every resource finding
    against the Normal/Warning/Critical levels, worst first within each area; checks
    that could not run appear as ``not checked``.

    Columns: ``area``, ``subject``, ``observed``, ``normal``, ``warning``, ``critical``,
    ``statistic``, ``verdict`` (ok / warning / critical / not checked / no data...).
    """
    rows = []
    if endpoints is not None and not endpoints.empty:
        for rec in endpoints.to_dict("records"):
            def s(x):
                return _fmt(x, "s") if x is not None and not pd.isna(x) else "—"
            if rec["verdict"] in ("no target",):
                continue
            observed = " · ".join(f"{p} {s(rec[p])}" for p in ("p50", "p95", "p99")) \
                if rec["verdict"] not in ("no requests",) else "no requests"
            targets = " / ".join(s(rec[f"{p}_target"]) for p in ("p50", "p95", "p99"))
            rows.append({"area": AREAS["latency.slo_breach"], "subject": rec["endpoint"], "observed": observed,
                         "normal": f"≤ {targets}", "warning": "> target", "critical": "> 2× target",
                         "statistic": (f"{rec['requests']:.0f} request" + ("" if round(rec["requests"]) == 1 else "s"))
                         if rec.get("requests") else "",
                         "verdict": rec["verdict"]})
    for f in findings:
        if f.code in ("source.unreachable", "check.failed"):
            rows.append({"area": f.check or f.code, "subject": f.subject or "", "observed": "—", "normal": "",
                         "warning": "", "critical": "", "statistic": f.evidence.get("reason") or
                         f.evidence.get("message", ""), "verdict": "not checked"})
            continue
        if f.code not in AREAS or f.code == "latency.slo_breach":
            continue
        if f.code == "instance.down":
            ev = f.evidence
            down_for = ev.get("down_for")
            rows.append({"area": AREAS[f.code], "subject": f.subject or "",
                         "observed": (f"{ev.get('failed_scrapes')} scrapes in a row failed (~{_dur(ev.get('down_s'))})"
                                      if f.severity != "ok" else f"{ev.get('instances')} up"),
                         "normal": "every scrape answered",
                         "warning": f"down ≥ {down_for:g} s, back up" if down_for else "down, back up",
                         "critical": "still down",
                         "statistic": "Prometheus up == 0, consecutive", "verdict": f.severity})
            continue
        if f.code == "monitoring.gap":
            ev = f.evidence
            rows.append({"area": AREAS[f.code], "subject": f.subject or "",
                         "observed": f"{ev.get('episodes')} gap(s) on every instance at once, longest "
                                     f"~{_dur(ev.get('longest_s'))}",
                         "normal": "every scrape answered", "warning": "", "critical": "",
                         "statistic": "the scraper, not an instance", "verdict": f.severity})
            continue
        ev = f.evidence
        unit = ev.get("unit")
        if unit is None:  # info: metric absent, limit unknown, profile findings...
            if f.severity == "info" and f.subject == "metrics":
                rows.append({"area": AREAS[f.code], "subject": "", "observed": "—", "normal": "", "warning": "",
                             "critical": "", "statistic": f.title, "verdict": "no data"})
            continue
        normal, warning, critical = _threshold_text(ev, unit)
        rows.append({"area": AREAS[f.code], "subject": f.subject or "", "observed": _fmt(ev.get("observed"), unit),
                     "normal": normal, "warning": warning, "critical": critical,
                     "statistic": ev.get("statistic", ""), "verdict": f.severity})
    cols = ["area", "subject", "observed", "normal", "warning", "critical", "statistic", "verdict"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    rank = {"critical": 0, "warning": 1, "not checked": 2, "ok": 3, "info": 4}
    area_order = {a: i for i, a in enumerate(AREAS.values())}
    df["_a"] = df["area"].map(lambda a: area_order.get(a, len(area_order)))  # checks that did not run: last
    df["_v"] = df["verdict"].map(lambda v: rank.get(v, 4))
    return df.sort_values(["_a", "_v", "subject"]).drop(columns=["_a", "_v"]).reset_index(drop=True)


# --------------------------------------------------------------------------- where to look next


def triage_signals(requests_by_instance: pd.DataFrame | None = None, status_totals: pd.DataFrame | None = None,
                   http_seconds: float | None = None, db_seconds: float | None = None,
                   external_seconds: float | None = None, breaker_max: pd.DataFrame | None = None,
                   external_outcomes: pd.DataFrame | None = None, cache_hits: float | None = None,
                   cache_misses: float | None = None, instance_label: str = "instance",
                   status_label: str = "status_code", outcome_label: str = "outcome",
                   breaker_label: str = "name") -> dict[str, Any]:
    """The few numbers :func:`open_next` reasons on, from the window's increases.

    ``requests_by_instance``: requests per instance; ``status_totals``: requests per
    status code; ``*_seconds``: increases of the duration histograms' ``_sum``;
    ``breaker_max``: circuit-breaker state samples (any value 1 = open);
    ``external_outcomes``: external calls per outcome; cache hits/misses totals.
    """
    sig: dict[str, Any] = {}
    if requests_by_instance is not None and not requests_by_instance.empty:
        per = requests_by_instance.groupby(instance_label)["value"].sum()
        per = per[per.notna()]
        if len(per) >= 2 and per.sum() > 0:
            sig["instance_shares"] = {str(k): float(v / per.sum()) for k, v in per.items()}
            sig["imbalance"] = float(per.max() / per.min()) if per.min() > 0 else math.inf
    if status_totals is not None and not status_totals.empty:
        st = status_totals.groupby(status_totals[status_label].astype(str))["value"].sum()
        total = float(st.sum())
        if total > 0:
            sig["requests"] = total
            sig["share_429"] = float(st.get("429", 0.0) / total)
            sig["share_5xx"] = float(st[[s.startswith("5") for s in st.index]].sum() / total)
    if http_seconds:
        sig["http_seconds"] = http_seconds
        if db_seconds is not None and not pd.isna(db_seconds):
            sig["db_share"] = db_seconds / http_seconds
        if external_seconds is not None and not pd.isna(external_seconds):
            sig["external_share"] = external_seconds / http_seconds
    if breaker_max is not None and not breaker_max.empty:
        opened = breaker_max[pd.to_numeric(breaker_max["value"], errors="coerce") == 1]
        col = breaker_label if breaker_label in breaker_max.columns else None
        sig["breakers_opened"] = sorted({str(x) for x in opened[col]}) if col else (["(unnamed)"] if len(opened) else [])
    if external_outcomes is not None and not external_outcomes.empty and outcome_label in external_outcomes.columns:
        out = external_outcomes.groupby(outcome_label)["value"].sum()
        total = float(out.sum())
        if total > 0:
            sig["external_calls"] = total
            sig["external_failure_share"] = float(out[[o != "success" for o in out.index]].sum() / total)
    if cache_hits is not None and cache_misses is not None and (cache_hits + cache_misses) > 0:
        sig["cache_lookups"] = cache_hits + cache_misses
        sig["cache_hit_rate"] = cache_hits / (cache_hits + cache_misses)
    return sig


def open_next(findings: Iterable[Finding], signals: dict[str, Any] | None = None,
              cache_target: float = 0.60) -> pd.DataFrame:
    """Which section notebooks the evidence points to, each with the reason, most urgent
    first: ``section``, ``why``, ``severity`` (the worst finding behind it; ``info`` for
    a signal that is not itself a finding here).

    Rules (the runbook's issues, in its words):
    latency breaches + much request time in DB queries, DB connection pressure → *database*;
    a breaker that opened, failing or slow external calls → *external-apis*;
    CPU, event-loop lag, memory, or a latency breach not explained by DB/external time → *bottlenecks*;
    429s → *rate-limiting*; one instance with ≥ 1.5x the requests of another, or an instance
    down in the window → *load-balancing*;
    cache hit rate under target → *caching*; CPU high on every instance → *scaling*.
    """
    sig = signals or {}
    found = [f for f in findings]
    bad = [f for f in found if f.severity in ("warning", "critical")]
    out: dict[str, dict[str, Any]] = {}

    def point(section: str, why: str, severity: str = "info") -> None:
        cur = out.setdefault(section, {"section": section, "why": [], "severity": "info"})
        if why not in cur["why"]:
            cur["why"].append(why)
        if severity_rank(severity) > severity_rank(cur["severity"]):
            cur["severity"] = severity

    def worst(code: str) -> str | None:
        sev = [f.severity for f in bad if f.code == code]
        return max(sev, key=severity_rank) if sev else None

    if (s := worst("instance.down")):
        down = sorted({f.subject for f in bad if f.code == "instance.down"})
        point("load-balancing", f"instance down in the window ({', '.join(down)}): the others carried its traffic", s)
    lat = [f for f in bad if f.code == "latency.slo_breach"]
    db_share, ext_share = sig.get("db_share"), sig.get("external_share")
    lat_sev = worst("latency.slo_breach")
    slow = sorted({f.subject for f in lat if f.subject})
    slow_txt = ", ".join(slow[:3]) + (" …" if len(slow) > 3 else "")
    if lat and db_share is not None and db_share >= 0.3:
        point("database", f"{slow_txt} over target and {db_share:.0%} of request time is in DB queries", lat_sev)
    elif db_share is not None and db_share >= 0.5:
        point("database", f"{db_share:.0%} of request time is in DB queries")
    if (s := worst("db.connections")):
        subjects = sorted({f.subject for f in bad if f.code == "db.connections"})
        point("database", "DB connection pressure / queries waiting for a pool connection ("
              + ", ".join(subjects) + ")", s)
    if sig.get("breakers_opened"):
        point("external-apis", "circuit breaker opened in the window: " + ", ".join(sig["breakers_opened"]), "warning")
    if sig.get("external_failure_share", 0) >= 0.05 and sig.get("external_calls", 0) >= 10:
        point("external-apis", f"{sig['external_failure_share']:.0%} of {sig['external_calls']:.0f} external calls "
                               f"failed, timed out or were rejected", "warning")
    if lat and ext_share is not None and ext_share >= 0.3:
        point("external-apis", f"{ext_share:.0%} of request time is spent waiting on external APIs", lat_sev)
    errs = [f for f in bad if f.code == "errors.high_rate"]
    if errs and any(str(f.evidence.get("top_status", "")) in ("502", "503", "504") for f in errs):
        point("external-apis", "5xx answers are mostly 502/503/504 (a dependency or breaker)", worst("errors.high_rate"))
    for code, what in (("cpu.saturation", "CPU at Warning/Critical"), ("eventloop.lag", "event-loop lag at Warning/Critical"),
                       ("memory.pressure", "memory at Warning/Critical"), ("memory.growth", "memory grows steadily")):
        if (s := worst(code)):
            subjects = sorted({f.subject for f in bad if f.code == code})
            point("bottlenecks", f"{what} ({', '.join(subjects)})", s)
    if lat and not ((db_share or 0) >= 0.3 or (ext_share or 0) >= 0.3):
        point("bottlenecks", f"{slow_txt} over target; the time is not in DB queries or external calls "
                             f"— find where it goes", lat_sev)
    if errs and "bottlenecks" not in out and not any(str(f.evidence.get("top_status", "")) in ("502", "503", "504")
                                                     for f in errs):
        point("bottlenecks", "5xx answers from the application itself (500): read the logs of "
              + ", ".join(sorted({f.subject for f in errs})), worst("errors.high_rate"))
    if sig.get("share_429", 0) >= 0.01:
        point("rate-limiting", f"{sig['share_429']:.1%} of {sig.get('requests', 0):.0f} requests answered 429", "warning")
    if sig.get("imbalance", 1) >= 1.5:
        shares = sig.get("instance_shares", {})
        top = max(shares, key=shares.get) if shares else "?"
        point("load-balancing", f"requests unevenly spread: {top} gets {shares.get(top, 0):.0%} "
                                f"({sig['imbalance']:.1f}x the least loaded instance)", "warning")
    if sig.get("cache_hit_rate") is not None and sig.get("cache_lookups", 0) >= 20 and sig["cache_hit_rate"] < cache_target:
        point("caching", f"cache hit rate {sig['cache_hit_rate']:.0%} (target > {cache_target:.0%})", "warning")
    cpu = [f for f in bad if f.code == "cpu.saturation"]
    if cpu and cpu[0].evidence.get("instances_over") == cpu[0].evidence.get("instances") and len(cpu) >= 1:
        point("scaling", "CPU at Warning/Critical on every instance: consider scaling out", worst("cpu.saturation"))
    rows = [{"section": v["section"], "why": "; ".join(v["why"]), "severity": v["severity"]} for v in out.values()]
    df = pd.DataFrame(rows, columns=["section", "why", "severity"])
    if df.empty:
        return df
    df["_r"] = df["severity"].map(severity_rank)
    return df.sort_values("_r", ascending=False, kind="stable").drop(columns="_r").reset_index(drop=True)


def server_connections(activity: pd.DataFrame | None) -> tuple[int | None, pd.DataFrame]:
    """Client connections in ``pg_stat_activity`` (the runbook's Quick Diagnostics step 3),
    and their count by state / application. Background workers are not counted."""
    cols = ["application_name", "state", "connections"]
    if activity is None or activity.empty:
        return (0 if activity is not None else None), pd.DataFrame(columns=cols)
    a = activity
    if "backend_type" in a.columns:
        a = a[a["backend_type"].fillna("client backend") == "client backend"]
    table = (a.assign(application_name=a.get("application_name", "").fillna("").replace("", "(none)"),
                      state=a.get("state", "").fillna("(none)"))
             .groupby(["application_name", "state"]).size().rename("connections").reset_index()
             .sort_values("connections", ascending=False, ignore_index=True))
    return int(len(a)), table[cols]


def where_time_goes(shares: pd.DataFrame | None, routes: pd.DataFrame | None,
                    findings: Iterable[Finding]) -> list[str]:
    """The bottlenecks page's conclusion, as short sentences with their numbers: which
    routes take the request time, how it splits between DB, external calls and the
    application, and which resource checks point at the application (CPU, event loop,
    memory)."""
    out = []
    if routes is not None and not routes.empty and routes["time_share"].notna().any():
        top = routes.head(3)
        out.append("Request time by route: " + ", ".join(
            f"{r['endpoint']} {r['time_share']:.0%} (mean {_fmt(r['mean_s'], 's')})" for r in top.to_dict("records")) + ".")
    if shares is not None and not shares.empty:
        out.append(time_share_summary(shares))
    bad = [f for f in findings if f.severity in ("warning", "critical")]
    for code, what in (("eventloop.lag", "the event loop is blocked"), ("cpu.saturation", "CPU is saturated"),
                       ("memory.growth", "memory grows steadily (leak suspected)"),
                       ("memory.pressure", "memory is near its limit")):
        hits = [f for f in bad if f.code == code]
        if hits:
            worst = max(hits, key=lambda f: severity_rank(f.severity))
            out.append(f"In the application, {what}: {worst.title}.")
    if not bad:
        out.append("No resource is at its Warning level: if latency is over target, the time is in the database, "
                   "external calls or waiting — see the shares above.")
    return out
