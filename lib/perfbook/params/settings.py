"""The params file's per-section settings (``settings:``: probes, diagnostics, database,
load test, scaling, monitoring and its alert rules, caching, rate limiting, external APIs,
limits) and :class:`Params`, the whole file.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .targets import DEFAULT_ENDPOINTS, Endpoint, Level, Metrics, Targets, Thresholds, Window
from .values import Duration, Strict


class Probes(Strict):
    count: int = Field(20, ge=1, le=1000, description="requests per probed endpoint")
    timeout: Duration = 10.0
    retries: int = Field(2, ge=0, le=5)
    concurrency: int = Field(1, ge=1, le=16)


class Database(Strict):
    """The database section (runbook Issue 1 §4 and Issue 2): how to read, and every bar a
    ``db.*`` finding is judged by. Durations in seconds (``20ms`` works); the checks convert."""
    statement_timeout: Duration = 5.0
    lock_timeout: Duration = 1.0
    explain_analyze: bool = False
    # --- slow queries (Issue 2 "Slow Queries")
    slow_query_mean: Duration = Field(
        0.020, gt=0, description="a statement is slow when it averages this or more (pghero's slow queries: 20 ms)")
    slow_query_calls: int = Field(
        100, ge=1, description="... over at least this many calls (pghero's slow queries: 100)")
    slow_query_critical_factor: float = Field(
        10.0, ge=1, description="a slow statement averaging this many times slow_query_mean is critical (200 ms "
                                "by default: a query users see)")
    # --- large results (Issue 2 "Large Result Sets"): more than large_result_rows rows per
    # call AND any of the cost bars; critical over 10x the rows per call and frequent or
    # >= large_result_critical_share of the time.
    large_result_rows: int = Field(
        1000, ge=1, description="rows per call above which a result is large (runbook Large Result Sets: "
                                "pages of 100; the checklist's pagination bar too)")
    large_result_calls: int = Field(10, ge=1, description="a large result called this often costs")
    large_result_total_rows: int = Field(
        100_000, ge=1, description="a large result that returned this many rows in all costs (one 200k-row export)")
    large_result_time_share: float = Field(
        0.05, gt=0, le=1, description="a large result taking this share of all statement time costs")
    large_result_critical_share: float = Field(
        0.25, gt=0, le=1, description="a large result of large_result_critical_factor x the rows bar taking this "
                                      "share of all statement time (or called large_result_calls times) is "
                                      "critical")
    large_result_critical_factor: float = Field(
        10.0, ge=1, description="a large result with this many times large_result_rows per call can be critical "
                                "(10,000 rows by default: 100 pages of the runbook's 100)")
    large_result_unbounded_rows: int = Field(
        100, ge=1, description="a SELECT without LIMIT, WHERE or aggregate on a table of min_table_rows returning "
                               "this many rows per call is a large result too (the runbook's page of 100)")
    # --- bloat and unused indexes (runbook "Check table bloat"; pghero)
    bloat_dead_share: float = Field(
        0.20, gt=0, lt=1, description="dead tuples / all tuples at which a table is bloated (autovacuum's default "
                                      "autovacuum_vacuum_scale_factor, 0.2, PostgreSQL docs)")
    bloat_critical_share: float = Field(
        0.50, gt=0, lt=1, description="dead share at which bloat is critical: half the table is dead rows")
    bloat_min_rows: int = Field(
        1000, ge=1, description="tables with fewer rows (live + dead) are not judged for bloat: a few dead rows "
                                "in a small table is a large share and no cost")
    unused_index_min_bytes: int = Field(
        1 << 20, ge=0, description="indexes smaller than this (bytes; 1 MiB) are not reported as unused: they "
                                   "cost next to nothing")
    unused_index_min_stats_age: Duration = Field(
        7 * 86400.0, ge=0, description="statistics younger than this (a week) prove little about an unused index: "
                                       "a weekly job may need it")
    # --- connections (Issue 1 §4; runbook Database Connections levels are thresholds.db_connections)
    long_running: Duration = Field(
        60.0, gt=0, description="a statement running, or a transaction idle, this long is reported (pghero's "
                                "long-running queries: 1 min)")
    long_running_critical_factor: float = Field(
        5.0, ge=1, description="... and critical from this many times long_running (5 min by default)")
    lock_wait_critical_sessions: int = Field(
        5, ge=1, description="a session blocking this many others is a critical lock wait")
    lock_wait_critical: Duration = Field(
        60.0, gt=0, description="a lock wait this long is critical (long_running's minute: the request behind it "
                                "has long timed out)")
    max_connections_share: float = Field(
        0.75, gt=0, le=1, description="share of max_connections in use (less superuser_reserved_connections: "
                                      "past it the server refuses new connections, PostgreSQL docs) that is a "
                                      "warning")
    max_connections_share_critical: float = Field(
        0.90, gt=0, le=1, description="... and a critical one: little headroom left for a burst")
    # The app's pool (Prisma's metrics; not in prom-client's defaults): wait-time histogram (ms) and limit.
    pool_wait_histogram: str = "prisma_client_queries_wait_histogram_ms"
    pool_max_metric: str = "prisma_pool_connections_max"
    # Pool saturation (database section): the pool was full AND queries waited, by any of:
    pool_wait_p95: Duration = Field(
        0.020, gt=0, description="p95 wait for a pool connection at which a full pool is saturated (a healthy "
                                 "pool hands one out in well under 1 ms; 20 ms is the slow-query bar)")
    pool_wait_mean: Duration = Field(
        0.005, gt=0, description="mean wait for a pool connection at which a full pool is saturated")
    pool_waiting_share: float = Field(
        0.10, gt=0, le=1, description="share of the window with queries waiting for a pool connection at which "
                                      "a full pool is saturated")
    pool_waiting_share_critical: float = Field(
        0.50, gt=0, le=1, description="... at which saturation is critical: queries queue half the time")
    pool_wait_p95_critical: Duration = Field(
        0.500, gt=0, description="p95 wait for a pool connection at which saturation is critical (half a second "
                                 "added to every query)")
    pool_exhausted_share: float = Field(
        0.20, gt=0, le=1, description="quick diagnostics' db.connections: share of scrapes with queries waiting "
                                      "for a pool connection (prisma_client_queries_wait > 0) at which the pool "
                                      "is exhausted")
    pool_exhausted_share_critical: float = Field(
        0.50, gt=0, le=1, description="... at which exhaustion is critical: queries queue half the time")
    top_n: int = Field(10, ge=1, le=100)
    # --- missing indexes (Issue 2 "Missing Indexes")
    min_table_rows: int = Field(
        10_000, ge=1, description="tables from this many live rows are judged for sequential scans (pghero: a "
                                  "seq scan starts to cost from 10k rows)")
    seq_scan_index_share: float = Field(
        0.95, gt=0, le=1, description="a table with less than this share of its scans by index is read mostly "
                                      "sequentially (pghero's table stats: 95 %)")
    seq_scan_min_scans: int = Field(
        10, ge=1, description="fewer sequential scans than this are maintenance (VACUUM, pg_dump), not a pattern")
    seq_rows_share: float = Field(
        0.5, gt=0, le=1, description="index candidates: a table whose sequential scans read at least this share of "
                                     "the rows read from it (seq_tup_read against idx_tup_fetch) is read "
                                     "sequentially, however many single-row index lookups it also serves "
                                     "(a product page's by-id reads outnumber a listing's full scans by count)")
    index_candidate_min_share: float = Field(
        0.05, gt=0, le=1, description="statements with at least this share of all statement time are read "
                                      "for index candidates (statement text, no privilege on the tables needed)")
    index_max_selectivity: float = Field(
        0.10, gt=0, le=1, description="an index is suggested only for a filter keeping at most this share of the "
                                      "table's rows (a rule of thumb of the PostgreSQL planner's cost model: "
                                      "past ~10 % of the rows a sequential scan is usually cheaper)")
    missing_index_critical_share: float = Field(
        0.50, gt=0, le=1, description="a missing index is critical when its statement takes this share of "
                                      "all statement time (or is slow by the slow-query bar)")
    hypopg_cost_ratio: float = Field(
        0.5, gt=0, lt=1, description="with hypopg, an index is recommended only when the planner's estimated cost "
                                     "with it is at most this share of the cost without (dexter's rule: halved)")
    # --- N+1 (Issue 2 "N+1 Query Problem"): Sentry's detector, >= 5 repeats costing >= 50 ms.
    n_plus_one_min_repeats: int = Field(
        5, ge=2, description="lookups per list query (pg_stat_statements) or back-to-back in one session (logs) "
                             "that make an N+1 (Sentry's N+1 detector: 5)")
    n_plus_one_min_total: Duration = Field(
        0.050, ge=0, description="a run of repeated lookups in the logs costs at least this (Sentry: 50 ms)")
    n_plus_one_min_calls: int = Field(
        100, ge=1, description="a lookup in pg_stat_statements is judged from this many calls (as pghero's "
                               "slow-query calls, 100: fewer is noise)")
    n_plus_one_critical_repeats: int = Field(
        50, ge=2, description="an N+1 issuing this many lookups per list query (or per request) is critical: "
                              "fifty round trips where one would do")
    n_plus_one_max_gap: Duration = Field(
        0.010, ge=0, description="in the logs, repeated lookups are one run only when each follows the previous "
                                 "within this (one request's loop, not successive requests on a pooled connection)")
    # The server's log_line_prefix, to read targets.postgres_logs (the demo's; %c or %p is needed).
    log_line_prefix: str = "%m [%p] %c %q%u@%d "

    @model_validator(mode="after")
    def _ordered(self) -> Database:
        """A warning bar above its critical one would make the critical unreachable."""
        for warning, critical in (("bloat_dead_share", "bloat_critical_share"),
                                  ("max_connections_share", "max_connections_share_critical"),
                                  ("pool_waiting_share", "pool_waiting_share_critical"),
                                  ("pool_wait_p95", "pool_wait_p95_critical"),
                                  ("pool_exhausted_share", "pool_exhausted_share_critical")):
            if getattr(self, warning) > getattr(self, critical):
                raise ValueError(f"{warning} ({getattr(self, warning):g}) must not be above {critical} "
                                 f"({getattr(self, critical):g})")
        return self


class LoadStage(Strict):
    users: int = Field(ge=1, le=2000)
    duration: Duration


class LoadTest(Strict):
    mode: Literal["load", "stress", "off"] = "stress"
    users: int = Field(10, ge=1, le=2000)
    duration: Duration = 30.0
    stages: list[LoadStage] = Field(default_factory=lambda: [
        LoadStage(users=u, duration=60) for u in (10, 50, 100, 200, 500)])
    spawn_rate: float = Field(50, gt=0)
    mix: dict[str, int] = Field(default_factory=lambda: {
        "GET /api/products?limit=20": 6, "GET /api/products/1": 3, "GET /health": 1})
    thresholds: list[str] = Field(default_factory=lambda: ["p(95)<1000", "failed<0.01"])
    max_users: int = Field(500, ge=1, le=5000)
    max_duration: Duration = 1800.0
    allow_hosts: list[str] = Field(
        default_factory=list, description="hosts outside targets.allowed_hosts this file opts in to")
    # --- capacity section (load-test notebook) ---
    think_time: Duration = Field(
        1.0, description="mean pause between a user's requests (uniform 0.5x-1.5x); 0 = none, as the "
                         "runbook's k6 script")
    recovery: Duration = Field(
        30.0, description="after a stress test, a stage this long at the first stage's users: does "
                          "latency come back within target? 0 = skip")
    stop_on_break: bool = Field(
        True, description="stress: stop climbing after the first stage whose p95 or error rate breaks "
                          "(the stages above would only hurt the service)")
    expected_users: int | None = Field(
        None, ge=1, description="the load the service must hold (default: the first stage, the "
                                "runbook's baseline); sets the severity of a breaking point")
    request_timeout: Duration = Field(10.0, gt=0, description="per request; a slower answer is a failure")
    workers: int = Field(0, ge=0, le=64, description="local locust worker processes (0 = one process)")
    # --- how a stage is judged (runbook "Stress Testing": breaking point, degradation points) ---
    min_requests: int = Field(
        5, ge=1, description="an endpoint's p95 in a stage is judged on this many requests or more")
    min_gain: float = Field(
        0.10, ge=0, le=10, description="more users must raise served req/s by at least this share, else the "
                                       "stage saturates (extra users only queue: Little's law)")
    headroom_warning: float = Field(
        2.0, ge=1, le=100, description="a break at or below this many times expected_users is a warning (2x: "
                                       "the usual capacity-planning margin), above it information")
    generator_cpu_limit: float = Field(
        90.0, gt=0, le=100, description="locust warns above 90 % CPU: the generator may be the bottleneck")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[str]) -> list[str]:
        for t in v:
            if not re.match(r"^\s*(p\((\d+(\.\d+)?)\)|avg|min|max|med|failed|rate)\s*(<=|<|>=|>)\s*\d+(\.\d+)?\s*$", t):
                raise ValueError(f"not a k6-style threshold like 'p(95)<1000' or 'failed<0.01': {t!r}")
        return v

    @model_validator(mode="after")
    def _caps(self) -> LoadTest:
        if self.users > self.max_users or any(s.users > self.max_users for s in self.stages):
            raise ValueError(f"users above max_users ({self.max_users})")
        total = self.duration if self.mode == "load" else sum(s.duration for s in self.stages) + self.recovery
        if total > self.max_duration:
            raise ValueError(f"total duration {total:.0f}s above max_duration ({self.max_duration:.0f}s)")
        return self


#: A ``${name}`` placeholder (a field of the metrics section) in alert and panel expressions.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Placeholders of alert expressions that stand for a derived expression, not a metric name
#: (expanded by :func:`perfbook.checks.alerts.render_expr`).
DERIVED_PLACEHOLDERS = {
    "memory_ratio": "memory used over its limit, per series: RSS / targets.memory_limit and heap used / the "
                    "heap-limit gauge (when the service exports one), the higher of the two",
}


class AlertRule(Strict):
    """One alert rule, as in the runbook's "Performance Alerts".

    ``expr`` is the PromQL whose value is compared with ``threshold`` by ``op`` (written
    without the comparison, so the value can be plotted). In ``expr``, ``${name}`` stands
    for ``metrics.<name>`` (a metric or label name from the ``metrics:`` section) and
    ``__SEL__`` for the matchers of ``targets.prometheus.selector``, exactly as in every
    other perfbook query (see :func:`perfbook.sources.prometheus.render`);
    ``${memory_ratio}`` for memory used over its limit (:data:`DERIVED_PLACEHOLDERS`). ``for`` is how
    long the comparison must hold, at every evaluation, before the alert fires.
    """
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str = Field(min_length=1)
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_: Duration = Field(alias="for")
    severity: Literal["warning", "critical"] = "warning"
    summary: str = ""
    unit: str = Field("", description="unit of the expression's value, for plots (s, %, ratio)")

    @field_validator("expr")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        for name in PLACEHOLDER.findall(v):
            if name not in Metrics.model_fields and name not in DERIVED_PLACEHOLDERS:
                raise ValueError(f"${{{name}}} is not a field of the metrics section "
                                 f"(one of: {', '.join([*Metrics.model_fields, *DERIVED_PLACEHOLDERS])})")
        return v


# The runbook's four "Performance Alerts". The runbook writes them against single series;
# here each is computed the way an alert over a fleet needs it: p95 from the histogram's
# bucket rates over all instances; CPU, heap and lag per instance (one alert per instance).
# Every rule evaluates on stock prom-client 15 (collectDefaultMetrics()), which has neither
# the runbook's nodejs_process_cpu_percent nor nodejs_heap_size_limit_bytes:
# CPU is rate(process_cpu_seconds_total) * 100; memory is ${memory_ratio}: RSS over
# targets.memory_limit, and heap used over the heap-limit gauge where a service exports one.
# Event-loop lag: nodejs_eventloop_lag_seconds is one sample taken at scrape time, and
# prom-client's p99 gauge describes the delays since the previous scrape (it resets the
# histogram at every scrape), so a loop blocked 300 ms every few seconds reads as a p99 of
# 10-14 ms at a 15 s scrape interval while the max gauge reads 300 ms. The rule takes the
# max gauge (the p99 gauge when there is no max) and its 90th percentile over the last
# minute: "stalled over 100 ms in at least a tenth of the scrapes", which one GC pause
# does not trip and a loop blocked again and again does.
DEFAULT_ALERTS = [
    {"name": "HighResponseTime", "for": "5m", "threshold": 3, "severity": "warning", "unit": "s",
     "expr": "histogram_quantile(0.95, sum by (le) (rate(${http_duration}_bucket{__SEL__}[1m])))",
     "summary": "p95 response time > 3s"},
    {"name": "HighCPU", "for": "10m", "threshold": 80, "severity": "warning", "unit": "%",
     "expr": "100 * max by (${instance_label}) (rate(${cpu_seconds}{__SEL__}[1m]))",
     "summary": "CPU > 80%"},
    {"name": "HighMemory", "for": "10m", "threshold": 0.90, "severity": "critical", "unit": "ratio",
     "expr": "max by (${instance_label}) (${memory_ratio})",
     "summary": "memory used / limit > 90%"},
    {"name": "EventLoopLag", "for": "5m", "threshold": 0.1, "severity": "warning", "unit": "s",
     "expr": "max by (${instance_label}) (quantile_over_time(0.9, ${eventloop_lag_max}{__SEL__}[1m]) "
             "or quantile_over_time(0.9, ${eventloop_lag_p99}{__SEL__}[1m]))",
     "summary": "event loop lag > 100ms"},
]


class Monitoring(Strict):
    """Performance Monitoring: how the alert rules are evaluated (as Prometheus would)."""
    evaluation_interval: Duration = Field(15.0, gt=0, description="Prometheus's global evaluation_interval")
    alerts: list[AlertRule] = Field(default_factory=lambda: [AlertRule(**a) for a in DEFAULT_ALERTS])

    @field_validator("alerts")
    @classmethod
    def _unique_alerts(cls, v: list[AlertRule]) -> list[AlertRule]:
        names = [a.name for a in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"alert {dup[0]!r} listed twice")
        return v


class Caching(Strict):
    """Issue 5: caching section."""
    cache_label: str = Field("cache", description="label of cache_hits_total/cache_misses_total naming the cache")
    min_lookups: int = Field(20, ge=1, description="fewer lookups in the window than this: the hit rate against "
                                                   "the runbook's 60 % target (Issue 5) is not judged")
    critical_share: float = Field(
        0.5, gt=0, le=1, description="a hit rate under this share of thresholds.cache_hit_rate is critical "
                                     "(under half the runbook's 60 % target most lookups go to the database)")
    warming_rise: float = Field(
        0.20, gt=0, le=1, description="the last quarter's hit rate this much above the first's is a cold "
                                      "cache filling up (runbook Issue 5: pre-warm on startup)")
    scan_sample: int = Field(1000, ge=0, le=100_000, description="Redis keys sampled with SCAN (0 = no sample)")
    key_separator: str = Field(":", min_length=1, max_length=3, description="a key's prefix ends at this")


class RateLimiting(Strict):
    """Issue 6: rate-limiting section, including the bounded burst against expensive routes."""
    burst_requests: int = Field(20, ge=0, le=200)
    burst_opt_in_hosts: list[str] = Field(default_factory=list)
    burst_timeout: Duration = Field(10.0, gt=0, le=120, description="per burst request")
    burst_budget: Duration = Field(30.0, gt=0, le=300, description="the whole burst, all routes")
    burst_concurrency: int = Field(4, ge=1, le=16)
    burst_body: dict[str, Any] = Field(default_factory=dict, description="JSON body of POST/PUT/PATCH bursts")
    headroom: float = Field(2.0, ge=1, le=100, description="recommended max = observed per-client peak x this")
    peak_quantile: float = Field(
        0.99, gt=0, le=1, description="the observed peak is this quantile over time of the requests per "
                                      "limiter window (p99: a limit the traffic seen stays under)")
    rejection_share: Level = Field(
        Level(warning=0.01, critical=0.10), description="share of a route's requests answered 429: a few are a "
                                                        "limiter doing its job (Issue 6), 1 % turns clients away, "
                                                        "10 % is abuse or a limit too tight")
    expensive_max_per_minute: float = Field(
        120.0, gt=0, description="an expensive route limited looser than this per minute is not limited (the "
                                 "runbook's strict limiter is 5 per minute; a global /api/ limit protects nothing)")
    client_labels: list[str] = Field(default_factory=lambda: ["client", "ip", "client_ip", "key", "user"])


class External(Strict):
    """Issue 7: external dependencies."""
    service_label: str = "service"
    outcome_label: str = "outcome"
    breaker_label: str = "name"
    status_label: str | None = Field(
        "status", description="label of the duration histogram holding the HTTP status (or 'timeout'): latency is "
                              "judged on calls that succeeded or timed out, never diluted by fast failures (the SRE "
                              "book's latency of successful requests); None, or a histogram without it: every call")
    default_timeout: Duration = Field(
        10.0, gt=0, description="the runbook's axios / opossum timeout (Issue 7 §1: timeout: 10000)")
    timeouts: dict[str, Duration] = Field(default_factory=dict, description="per dependency where it differs")
    slow_fraction: float = Field(
        0.5, gt=0, le=1, description="p95 at this share of the timeout is slow: half the budget gone in one call, "
                                     "the tail about to time out")
    error_rate: Level = Field(
        Level(warning=0.05, critical=0.20), description="failure rate of a dependency's calls; external APIs "
                                                        "fail more than a service's own routes, so above the 1 %/5 % "
                                                        "of thresholds.error_rate")
    min_calls: int = Field(3, ge=1, description="fewer calls than this: latency and error rate not judged")
    timeout_share: float = Field(
        0.05, gt=0, le=0.25, description="this share of calls timing out is slow (warning), 4x it critical: a "
                                         "client whose real timeout is shorter than the params know")
    probe_timeout: Duration = Field(5.0, gt=0, le=60)
    probe_retries: int = Field(3, ge=0, le=5, description="retries after 1 s, 2 s, 4 s (runbook)")
    probe_budget: Duration = Field(30.0, gt=0, le=300, description="all probes of one dependency")

    def timeout_for(self, service: str) -> float:
        return self.timeouts.get(service, self.default_timeout)


class Scaling(Strict):
    """Issue 4 Horizontal Scaling: the numbers behind scale-out / scale-in."""
    target_cpu_percent: float = Field(
        70.0, gt=0, le=100, description="runbook Issue 4: \"Scale out when CPU > 70% on all instances\"; its "
                                        "[[metrics]] cpu target is 70")
    scale_in_cpu_percent: float = Field(
        20.0, ge=0, le=100, description="clearly over-provisioned: every instance's CPU p95 under this (and "
                                        "latency under scale_in_latency_share of its target)")
    scale_in_latency_share: float = Field(
        0.5, gt=0, le=1, description="scale in only when every endpoint's p95 stays under this share of its "
                                     "target all window (clearly fast, not just within target)")
    min_instances: int = Field(
        2, ge=1, le=1000, description="runbook [scaling] min_machines = 2: never fewer, for availability")
    trend_p_value: float = Field(
        0.05, gt=0, lt=1, description="runbook Issue 4 \"Traffic increasing steadily\": total req/s trend "
                                      "significant at this level (Mann-Kendall)")
    trend_min_growth: float = Field(0.10, ge=0, description="and grown by at least this share over the window")


class Balance(Strict):
    """Issue 3, Load Balancing Adjustments: when the load is uneven across instances. A
    balancer doing its job keeps instances within some 10-20 % of the mean; the CPU levels
    are thresholds.cpu_percent (normal top, warning)."""
    max_over_mean: float = Field(
        1.3, gt=1, le=10, description="busiest instance at this multiple of the mean is uneven (a 65/35 "
                                      "split between two)")
    cv: float = Field(0.25, gt=0, le=10, description="coefficient of variation across instances that is uneven")
    min_rps: float = Field(0.5, ge=0, description="less traffic than this (req/s in all): balance not judged")
    min_cpu_mean: float = Field(
        10.0, ge=0, le=100, description="CPU imbalance is judged only when the fleet's mean CPU is at least "
                                        "this (% of a core): idle instances differ by noise")
    min_hot_share: float = Field(
        0.5, gt=0, le=1, description="imbalanced for at least this share of the window's points (a spike "
                                     "is not imbalance)")


class Diagnostics(Strict):
    """Quick diagnostics and Issue 1 (bottlenecks): how the window's levels are judged."""
    sustained_quantile: float = Field(
        0.9, gt=0, le=1, description="CPU % and event-loop lag are judged at this quantile of the window's "
                                     "scrapes against the runbook's Resource Utilization levels: a level held "
                                     "10 % of the time, not one spike (memory and connections at their max)")
    sustained_for: Duration = Field(
        20.0, ge=0, description="and a level must be held at least this long to count (one spike is not a level)")
    min_requests: int = Field(
        20, ge=1, description="error rate and latency are not judged on fewer requests than this per route "
                             "(three slow requests are an anecdote, not a p95)")
    latency_critical_factor: float = Field(
        2.0, gt=1, le=100, description="a percentile over its target is a warning, over this many times it "
                                       "critical (the runbook gives only the target; 2x is where users notice "
                                       "and where the 3 s p95 alert sits for /api/*)")
    # Memory growth (runbook Issue 1 §3, leak suspicion): a straight line fitted over the window.
    growth_min_mb_per_min: float = Field(0.5, ge=0, description="growth: a fitted slope of at least this many MB/min")
    growth_min_r2: float = Field(
        0.8, ge=0, le=1, description="and a fit R² of at least this (a steady rise, not one step or GC noise)")
    growth_min_share: float = Field(
        0.10, ge=0, description="and a rise of at least this share of the start (more than warm-up jitter); "
                                "also the heap-snapshot leak bar")
    growth_critical_horizon: Duration = Field(
        3600.0, ge=0, description="growth that reaches the memory limit within this time at the fitted slope "
                                  "is critical")
    # Snapshot mode (no Prometheus): seconds between the two /metrics scrapes that give rates.
    snapshot_interval: Duration = Field(5.0, gt=0, le=60)
    # instance.down: an instance is down only after consecutive failed scrapes (up == 0)
    # spanning at least this long; scrapes every instance missed at once are a monitoring gap.
    down_for: Duration = Field(15.0, gt=0, description="least outage (consecutive failed scrapes) that is "
                                                       "an instance down, not a flap")
    min_errors: int = Field(
        5, ge=1, description="a route with this many 5xx answers is judged even under min_requests")
    # Issue 1 (bottlenecks): which routes move with CPU (Pearson r of busy time against CPU %).
    correlation_min_r: float = Field(
        0.5, ge=0, le=1, description="a route whose busy time correlates with CPU at this r or more moves "
                                     "with it (0.5: a strong correlation by the usual reading)")
    correlation_min_points: int = Field(
        6, ge=3, description="fewer points of the window than this: no correlation computed")
    # CPU profiles (runbook Issue 1 §2, "identify hot paths").
    hot_path_share: float = Field(
        0.10, gt=0, le=1, description="a function with this share of the profile's busy time is a hot path "
                                      "(below it, optimising it cannot move CPU much)")
    gc_share: float = Field(
        0.10, gt=0, le=1, description="garbage collection above this share of busy time is allocation churn "
                                      "(V8 guidance: a healthy service spends a few percent in GC)")


class Limits(Strict):
    """Caps on what perfbook reads from the outside: past one, the read stops with a clear
    message (an error finding, or a note under the table), never a MemoryError."""
    # /metrics, Prometheus API answers and HTTP probe bodies, decompressed.
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest HTTP answer read")
    # The query-log analysis keeps this many distinct statement fingerprints (the costliest);
    # the rest are counted together as "other".
    max_fingerprints: int = Field(10_000, ge=10, description="distinct statements kept from query logs")
    # A longer log line (or a statement's continuation lines past it) is cut, and counted.
    max_line_length: int = Field(1_000_000, ge=1024, description="longest log line read, in characters")
    # The query-log analysis follows this many sessions at once (least recently seen closed first).
    max_log_sessions: int = Field(20_000, ge=10, description="sessions followed at once in query logs")
    # The database snapshot stored with each run keeps this many statements by total time (plus
    # every statement a finding names): later runs count from it (--since-run, perfbook compare).
    snapshot_statements: int = Field(200, ge=10, le=5000,
                                     description="statements kept in a run's database snapshot (top by total time)")


class Sections(Strict):
    probes: Probes = Probes()
    diagnostics: Diagnostics = Diagnostics()
    database: Database = Database()
    load_test: LoadTest = LoadTest()
    scaling: Scaling = Scaling()
    balance: Balance = Balance()
    monitoring: Monitoring = Monitoring()
    caching: Caching = Caching()
    rate_limiting: RateLimiting = RateLimiting()
    external: External = External()
    limits: Limits = Limits()


class Params(Strict):
    service: str = Field(min_length=1, max_length=200)
    environment: str = Field("production", min_length=1, max_length=100)
    window: Window = Window()
    targets: Targets = Targets()
    endpoints: list[Endpoint] = Field(default_factory=lambda: [Endpoint(**e) for e in DEFAULT_ENDPOINTS])
    thresholds: Thresholds = Thresholds()
    metrics: Metrics = Metrics()
    settings: Sections = Sections()
    baselines_documented: bool = Field(
        True, description="the runbook's baseline tables are this file's endpoints/thresholds")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _default_endpoints(cls, v: Any) -> Any:
        return DEFAULT_ENDPOINTS if v in ("default", None) else v

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, v: list[Endpoint]) -> list[Endpoint]:
        seen = set()
        for e in v:
            if e.name in seen:
                raise ValueError(f"endpoint {e.name!r} listed twice")
            seen.add(e.name)
        return v

    # ---- helpers used by notebooks and the runner

    def env_names(self) -> list[str]:
        """Every environment variable this file names (their values are secrets)."""
        t = self.targets
        names = [t.database_env, t.redis_env, t.prometheus.bearer_token_env if t.prometheus else None]
        return [n for n in names if n]

    def endpoint(self, method: str, route: str) -> Endpoint | None:
        for e in self.endpoints:
            if e.method == method and e.route == route:
                return e
        return None
