"""The demo service's metrics, named and labelled as a prom-client Node service has them.

Besides the HTTP, cache, rate-limit, external-API, pool and query metrics, the Node.js
runtime metrics are emulated from Python:

* event-loop lag: an asyncio task sleeps 100 ms in a loop and records the overshoot.
  ``nodejs_eventloop_lag_seconds`` is the latest sample; ``_p50/_p90/_p99/_min/_max/_mean``
  summarise the samples of the last :data:`LAG_WINDOW_S` seconds (prom-client resets its
  ``monitorEventLoopDelay`` histogram at each scrape; a rolling window gives the same
  picture without two scrapers resetting each other).
* heap: ``nodejs_heap_size_total_bytes`` is the resident set, ``_used_bytes`` its
  private part (RSS minus shared pages), ``_limit_bytes`` the configured limit
  (``--heap-limit-mb``, default 512, like ``--max-old-space-size``).
* ``nodejs_process_cpu_percent``: CPU use of the process over the last second (the
  runbook's alert rules use it; prom-client has only ``process_cpu_seconds_total``).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

#: prom-client's default buckets, plus the runbook's targets (0.2, 2, 3 s) and long ones
#: for content generation (30/60/120 s).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 3, 5, 10, 30, 60, 120)
EXTERNAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

LAG_INTERVAL_S = 0.1
LAG_WINDOW_S = 10.0


class RuntimeMonitor:
    """Samples event-loop lag (every 100 ms) and CPU (every second) in the service's loop."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=2000)
        self.last_lag = 0.0
        self.cpu_percent = 0.0
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        last_cpu = time.monotonic()
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = max(0.0, time.perf_counter() - t0 - LAG_INTERVAL_S)
            now = time.monotonic()
            self.last_lag = lag
            self.samples.append((now, lag))
            if now - last_cpu >= 1.0:
                self.cpu_percent = self._proc.cpu_percent(None)
                last_cpu = now

    def window(self) -> list[float]:
        cut = time.monotonic() - LAG_WINDOW_S
        return sorted(lag for t, lag in list(self.samples) if t >= cut)


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


class NodeRuntimeCollector:
    """Exports nodejs_* metrics at scrape time from a :class:`RuntimeMonitor`."""

    def __init__(self, monitor: RuntimeMonitor, heap_limit_bytes: int):
        self.monitor = monitor
        self.heap_limit = heap_limit_bytes
        self._proc = psutil.Process()

    def collect(self):
        m = self.monitor
        win = m.window()

        def g(name, doc, value):
            fam = GaugeMetricFamily(name, doc)
            fam.add_metric([], value)
            return fam

        yield g("nodejs_eventloop_lag_seconds", "Lag of event loop in seconds.", m.last_lag)
        yield g("nodejs_eventloop_lag_min_seconds", "The minimum recorded event loop delay.", win[0] if win else 0.0)
        yield g("nodejs_eventloop_lag_max_seconds", "The maximum recorded event loop delay.", win[-1] if win else 0.0)
        yield g("nodejs_eventloop_lag_mean_seconds", "The mean of the recorded event loop delays.",
                sum(win) / len(win) if win else 0.0)
        for q in (50, 90, 99):
            yield g(f"nodejs_eventloop_lag_p{q}_seconds", f"The {q}th percentile of the recorded event loop delays.",
                    _pct(win, q / 100))
        mem = self._proc.memory_info()
        used = max(0, mem.rss - getattr(mem, "shared", 0))
        yield g("nodejs_heap_size_total_bytes", "Process heap size from Node.js in bytes.", mem.rss)
        yield g("nodejs_heap_size_used_bytes", "Process heap size used from Node.js in bytes.", used)
        yield g("nodejs_heap_size_limit_bytes", "Heap size limit (--max-old-space-size) in bytes.", self.heap_limit)
        yield g("nodejs_process_cpu_percent", "CPU use of the process over the last second, in percent.",
                m.cpu_percent)


class ServiceMetrics:
    """All metrics of one demo-service instance, in their own registry."""

    def __init__(self, heap_limit_bytes: int = 512 * 1024 * 1024) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.monitor = RuntimeMonitor()
        r.register(NodeRuntimeCollector(self.monitor, heap_limit_bytes))

        self.http_duration = Histogram("http_request_duration_seconds", "Duration of HTTP requests in seconds",
                                       ["method", "route", "status_code"], buckets=HTTP_BUCKETS, registry=r)
        self.http_requests = Counter("http_requests_total", "Total number of HTTP requests",
                                     ["method", "route", "status_code"], registry=r)
        self.http_errors = Counter("http_request_errors_total", "Total number of HTTP requests answered with 5xx",
                                   ["method", "route", "status_code"], registry=r)
        self.http_active = Gauge("http_connections_active", "HTTP requests in flight", registry=r)

        self.cache_hits = Counter("cache_hits_total", "Cache hits", ["cache"], registry=r)
        self.cache_misses = Counter("cache_misses_total", "Cache misses", ["cache"], registry=r)
        self.cache_entries = Gauge("cache_entries", "Entries held in the cache", ["cache"], registry=r)

        self.rate_limit_hits = Counter("rate_limit_hits_total", "Requests rejected by a rate limiter (HTTP 429)",
                                       ["route", "limiter"], registry=r)

        self.external_duration = Histogram("external_api_duration_seconds", "Duration of external API calls",
                                           ["service", "status"], buckets=EXTERNAL_BUCKETS, registry=r)
        self.external_requests = Counter("external_api_requests_total", "External API calls by outcome",
                                         ["service", "outcome"], registry=r)
        self.breaker_state = Gauge("circuit_breaker_state", "Circuit breaker state (0 closed, 1 open, 2 half-open)",
                                   ["name"], registry=r)

        self.pool_open = Gauge("prisma_pool_connections_open", "Open connections in the DB pool", registry=r)
        self.pool_busy = Gauge("prisma_pool_connections_busy", "Connections in use (peak since the last scrape)",
                               registry=r)
        self.pool_idle = Gauge("prisma_pool_connections_idle", "Connections idle in the pool", registry=r)
        self.pool_wait = Gauge("prisma_client_queries_wait",
                               "Queries waiting for a pool connection (peak since the last scrape)", registry=r)
        self.pool_wait_ms = Histogram("prisma_client_queries_wait_histogram_ms",
                                      "Time spent waiting for a pool connection (ms)", buckets=WAIT_BUCKETS_MS,
                                      registry=r)
        self.pool_max = Gauge("prisma_pool_connections_max", "Pool size limit (connection_limit)", registry=r)
        self.query_duration = Histogram("pg_query_duration_seconds", "Duration of database queries",
                                        ["operation"], buckets=DB_BUCKETS, registry=r)
