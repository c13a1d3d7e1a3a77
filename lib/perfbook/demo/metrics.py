"""The demo service's metrics, named, typed and labelled as a Node service has them.

**Runtime metrics: exactly prom-client 15's ``collectDefaultMetrics()`` families**
(names, types, label names — tests/unit/test_demo_metrics.py compares them with the
recorded real prom-client output in tests/fixtures/promclient), emulated from Python:

* ``process_*``: the process's CPU time (user, system, total), start time, RSS, virtual
  memory, data segment (``process_heap_bytes``, VmData as prom-client reads it), open
  and max file descriptors — from psutil.
* event-loop delay, as prom-client measures it: ``monitorEventLoopDelay`` with a 10 ms
  resolution, its histogram **reset at every scrape**, so ``_min/_max/_mean/_stddev/
  _p50/_p90/_p99`` describe the delays since the previous scrape (an idle loop reads
  ~10 ms: the resolution); ``nodejs_eventloop_lag_seconds`` is the latest delay beyond
  the resolution. Here an asyncio task sleeps 10 ms in a loop and records how long each
  sleep really took. Two scrapers (Prometheus and a ``curl``) share the resets, as they
  do on a real service.
* heap: ``nodejs_heap_size_total_bytes`` is the resident set, ``_used_bytes`` its
  private part (RSS minus shared pages); the V8 heap spaces split them
  (``nodejs_heap_space_size_{total,used,available}_bytes{space}``, summing to them),
  ``nodejs_external_memory_bytes`` the shared pages.
* ``nodejs_active_{resources,handles,requests}[_total]{type}``: the listening socket
  and the requests in flight; ``nodejs_version_info``; ``nodejs_gc_duration_seconds{kind}``:
  Python's own garbage collections (generation 2 as ``major``, the others ``minor``).

Not exported, because prom-client has neither: the runbook's ``nodejs_process_cpu_percent``
(CPU % is ``rate(process_cpu_seconds_total) * 100``) and ``nodejs_heap_size_limit_bytes``
(the demo's params give the instance's memory as ``targets.memory_limit`` instead). No
``*_created`` series either (prometheus_client's, not a Node service's).

**Application metrics**: the ones the runbook names (HTTP duration histogram, request and
5xx counters, active connections, cache hits/misses, rate-limit rejections, external API
calls, circuit breakers, DB query durations) and Prisma's pool metrics
(``prisma_pool_connections_*``, ``prisma_client_queries_wait*``: what a Prisma service
exports with its metrics feature) — :data:`APPLICATION_FAMILIES`.
"""
from __future__ import annotations

import asyncio
import gc
import math
import resource
import time
from collections.abc import Callable

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# A Node service has no `<counter>_created` series; this process serves only the demo's metrics.
disable_created_metrics()

#: prom-client's default buckets, plus the runbook's targets (0.2, 2, 3 s) and long ones
#: for content generation (30/60/120 s).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 3, 5, 10, 30, 60, 120)
EXTERNAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: prom-client's GC duration buckets.
GC_BUCKETS = (0.001, 0.01, 0.1, 1, 2, 5)

#: prom-client's eventLoopMonitoringPrecision default (ms → s).
LAG_RESOLUTION_S = 0.010
#: The Node version the runtime metrics present (the recorded prom-client fixture's).
NODE_VERSION = "v20.20.2"
#: V8's heap spaces, as prom-client labels them.
HEAP_SPACES = ("read_only", "new", "old", "code", "shared", "new_large_object", "large_object",
               "code_large_object", "shared_large_object")

#: The application's families (beside prom-client's defaults): name → type.
APPLICATION_FAMILIES = {
    "http_request_duration_seconds": "histogram", "http_requests_total": "counter",
    "http_request_errors_total": "counter", "http_connections_active": "gauge",
    "cache_hits_total": "counter", "cache_misses_total": "counter", "cache_entries": "gauge",
    "rate_limit_hits_total": "counter", "external_api_duration_seconds": "histogram",
    "external_api_requests_total": "counter", "circuit_breaker_state": "gauge",
    "prisma_pool_connections_open": "gauge", "prisma_pool_connections_busy": "gauge",
    "prisma_pool_connections_idle": "gauge", "prisma_client_queries_wait": "gauge",
    "prisma_client_queries_wait_histogram_ms": "histogram", "prisma_pool_connections_max": "gauge",
    "pg_query_duration_seconds": "histogram",
}


class RuntimeMonitor:
    """Samples event-loop delay every :data:`LAG_RESOLUTION_S` in the service's loop, as
    Node's ``monitorEventLoopDelay`` does; :meth:`take` hands the samples since the
    previous call over and starts afresh (prom-client's reset at every scrape)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.last_lag = 0.0
        self._previous: list[float] = [LAG_RESOLUTION_S]
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_RESOLUTION_S)
            delay = time.perf_counter() - t0
            self.last_lag = max(0.0, delay - LAG_RESOLUTION_S)
            self.samples.append(delay)
            if len(self.samples) > 200_000:   # nobody scrapes: keep the newest half
                del self.samples[:100_000]

    def take(self) -> list[float]:
        """The delays since the previous call, sorted (the previous ones again if none)."""
        got, self.samples = self.samples, []
        if got:
            self._previous = sorted(got)
        return self._previous


def _pct(sorted_values: list[float], q: float) -> float:
    """HDR-histogram style percentile: the smallest value with at least q of the samples at or under it."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


class NodeRuntimeCollector:
    """prom-client 15's default metrics at scrape time (see the module docstring)."""

    def __init__(self, monitor: RuntimeMonitor, inflight: Callable[[], float] = lambda: 0.0):
        self.monitor = monitor
        self.inflight = inflight
        self._proc = psutil.Process()

    def collect(self):
        def g(name, doc, value, labels=None):
            fam = GaugeMetricFamily(name, doc, labels=list(labels or {}))
            if value is not None:
                fam.add_metric(list((labels or {}).values()), value)
            return fam

        proc = self._proc
        cpu = proc.cpu_times()
        for name, doc, value in (("process_cpu_user_seconds", "Total user CPU time spent in seconds.", cpu.user),
                                 ("process_cpu_system_seconds", "Total system CPU time spent in seconds.", cpu.system),
                                 ("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                                  cpu.user + cpu.system)):
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam
        mem = proc.memory_info()
        yield g("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                int(proc.create_time()))
        yield g("process_resident_memory_bytes", "Resident memory size in bytes.", mem.rss)
        yield g("process_virtual_memory_bytes", "Virtual memory size in bytes.", mem.vms)
        yield g("process_heap_bytes", "Process heap size in bytes.", getattr(mem, "data", mem.rss))
        yield g("process_open_fds", "Number of open file descriptors.", proc.num_fds())
        yield g("process_max_fds", "Maximum number of open file descriptors.",
                resource.getrlimit(resource.RLIMIT_NOFILE)[0])

        delays = self.monitor.take()
        n = len(delays)
        mean = sum(delays) / n
        std = math.sqrt(sum((d - mean) ** 2 for d in delays) / n)
        yield g("nodejs_eventloop_lag_seconds", "Lag of event loop in seconds.", self.monitor.last_lag)
        yield g("nodejs_eventloop_lag_min_seconds", "The minimum recorded event loop delay.", delays[0])
        yield g("nodejs_eventloop_lag_max_seconds", "The maximum recorded event loop delay.", delays[-1])
        yield g("nodejs_eventloop_lag_mean_seconds", "The mean of the recorded event loop delays.", mean)
        yield g("nodejs_eventloop_lag_stddev_seconds", "The standard deviation of the recorded event loop delays.",
                std)
        for q in (50, 90, 99):
            yield g(f"nodejs_eventloop_lag_p{q}_seconds", f"The {q}th percentile of the recorded event loop delays.",
                    _pct(delays, q / 100))

        inflight = max(0, int(self.inflight()))
        tasks = len(asyncio.all_tasks()) if _loop_running() else 0
        resources_ = {"TCPServerWrap": 1, "TCPSocketWrap": inflight, "Timeout": tasks}
        handles = {"Server": 1, "Socket": inflight}
        for name, doc, by_type in (
                ("nodejs_active_resources", "Number of active resources that are currently keeping the event loop "
                                            "alive, grouped by async resource type.", resources_),
                ("nodejs_active_handles", "Number of active libuv handles grouped by handle type. Every handle type "
                                          "is C++ class name.", handles),
                ("nodejs_active_requests", "Number of active libuv requests grouped by request type. Every request "
                                           "type is C++ class name.", {})):
            fam = GaugeMetricFamily(name, doc, labels=["type"])
            for kind, count in by_type.items():
                if count:
                    fam.add_metric([kind], count)
            yield fam
            what = name.split("_")[-1]
            yield g(f"{name}_total", f"Total number of active {what}.", sum(by_type.values()))

        total = mem.rss
        used = max(0, mem.rss - getattr(mem, "shared", 0))
        yield g("nodejs_heap_size_total_bytes", "Process heap size from Node.js in bytes.", total)
        yield g("nodejs_heap_size_used_bytes", "Process heap size used from Node.js in bytes.", used)
        yield g("nodejs_external_memory_bytes", "Node.js external memory size in bytes.", getattr(mem, "shared", 0))
        spaces = _heap_spaces(total, used)
        for what, doc in (("total", "Process heap space size total from Node.js in bytes."),
                          ("used", "Process heap space size used from Node.js in bytes."),
                          ("available", "Process heap space size available from Node.js in bytes.")):
            fam = GaugeMetricFamily(f"nodejs_heap_space_size_{what}_bytes", doc, labels=["space"])
            for space in HEAP_SPACES:
                fam.add_metric([space], spaces[space][what])
            yield fam
        major, minor, patch = NODE_VERSION.lstrip("v").split(".")
        yield g("nodejs_version_info", "Node.js version info.", 1,
                {"version": NODE_VERSION, "major": major, "minor": minor, "patch": patch})


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _heap_spaces(total: int, used: int) -> dict[str, dict[str, int]]:
    """The heap split over V8's spaces (young generation, code and large objects small and
    fixed, the rest old space), each space's total/used/available summing to the heap's."""
    fixed = {"new": (4 << 20, 0.25), "code": (256 << 10, 0.9), "large_object": (256 << 10, 0.95)}
    out = {s: {"total": 0, "used": 0, "available": 0} for s in HEAP_SPACES}
    rest_total, rest_used = total, used
    for space, (size, share) in fixed.items():
        size = min(size, rest_total)
        u = min(int(size * share), rest_used)
        out[space].update(total=size, used=u)
        rest_total, rest_used = rest_total - size, rest_used - u
    out["old"].update(total=rest_total, used=min(rest_used, rest_total))
    for s in out.values():
        s["available"] = max(0, s["total"] - s["used"])
    return out


class GcTimer:
    """``nodejs_gc_duration_seconds{kind}`` from Python's own collections (gc.callbacks)."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._t0: float | None = None
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            kind = "major" if info.get("generation") == 2 else "minor"
            self.histogram.labels(kind=kind).observe(time.perf_counter() - self._t0)
            self._t0 = None


class ServiceMetrics:
    """All metrics of one demo-service instance, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.monitor = RuntimeMonitor()
        r.register(NodeRuntimeCollector(self.monitor, inflight=self._inflight))
        self.gc_duration = Histogram("nodejs_gc_duration_seconds", "Garbage collection duration by kind, one of "
                                     "major, minor, incremental or weakcb.", ["kind"], buckets=GC_BUCKETS, registry=r)
        self.gc_timer = GcTimer(self.gc_duration)

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

    def _inflight(self) -> float:
        """HTTP requests in flight (the sockets a Node service would hold open)."""
        active = getattr(self, "http_active", None)
        return active._value.get() if active is not None else 0.0
