"""The params file's sections about *what* to look at and what to expect: the window,
Prometheus, the targets, latency targets, the endpoints (defaults from the runbook's
baseline tables), the thresholds and the names of the metrics.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .values import Duration, EnvName, HttpUrl, Strict, TimeSpec, _short, resolve_time

# --------------------------------------------------------------------------- sections of the file


class Window(Strict):
    since: TimeSpec = "-30m"
    until: TimeSpec = "now"

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        now = datetime.now(timezone.utc)
        if resolve_time(self.since, now) >= resolve_time(self.until, now):
            raise ValueError(f"window is inverted or empty: since {self.since!r} is not before until {self.until!r}")
        return self

    def resolve(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        now = now or datetime.now(timezone.utc)
        return resolve_time(self.since, now), resolve_time(self.until, now)


class Prometheus(Strict):
    url: HttpUrl
    selector: str = ""
    bearer_token_env: EnvName | None = Field(
        None, description="name of the env var holding the bearer token (Fly.io: FLY_API_TOKEN)")
    flavor: Literal["prometheus", "victoriametrics"] = "prometheus"
    timeout: Duration = 10.0

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: str) -> str:
        v = v.strip()
        if v and not (v.startswith("{") and v.endswith("}")):
            raise ValueError("must be a PromQL label selector like '{app=\"my-api\"}'")
        return v


class Targets(Strict):
    base_url: HttpUrl | None = None
    metrics_urls: list[HttpUrl] = Field(default_factory=list)
    prometheus: Prometheus | None = None
    database_env: EnvName | None = None
    redis_env: EnvName | None = None
    postgres_logs: list[str] = Field(default_factory=list)
    app_logs: list[str] = Field(default_factory=list)
    external_health_urls: dict[str, HttpUrl] = Field(default_factory=dict)
    fly_toml: str | None = None
    memory_limit: str | int | None = Field(
        None, description="the instance's memory limit (e.g. 512MB), for memory % from RSS")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="hosts that load tests and bursts may target; loopback by default")
    # Optional V8 profiles for the bottlenecks section (paths relative to the params file;
    # plain, .gz or .xz): `node --cpu-prof` output, and heap snapshots in the order taken.
    cpu_profile: str | None = Field(None, description="a V8 .cpuprofile (node --cpu-prof) to find hot paths in")
    heap_snapshots: list[str] = Field(
        default_factory=list, description="two or more V8 .heapsnapshot files of one process, oldest first; "
                                          "the first and last are compared to find leaking objects")

    @model_validator(mode="before")
    @classmethod
    def _metrics_url_alias(cls, data: Any) -> Any:
        # `metrics_url: one` is accepted as shorthand for `metrics_urls: [one]`.
        if isinstance(data, dict) and "metrics_url" in data:
            data = dict(data)
            one = data.pop("metrics_url")
            if "metrics_urls" in data:
                raise ValueError("give metrics_url or metrics_urls, not both")
            data["metrics_urls"] = [one] if isinstance(one, str) else one
        return data

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if v is not None:
            parse_bytes(v)
        return v

    @field_validator("heap_snapshots")
    @classmethod
    def _snapshots(cls, v: list[str]) -> list[str]:
        if len(v) == 1:
            raise ValueError("give at least two heap snapshots (oldest first) to compare, or none")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or "/" in h or " " in h:
                raise ValueError(f"not a host name or address: {h!r}")
        return v

    def memory_limit_bytes(self) -> int | None:
        return None if self.memory_limit is None else parse_bytes(self.memory_limit)


_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.I)


def parse_bytes(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size like 512MB")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be a positive size like 512MB, got {value}")
        return value
    m = _BYTES.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 512MB or 1GiB, got {_short(value)}")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    size = float(m.group(1)) * 1024 ** power
    if not math.isfinite(size) or size > 2 ** 63:
        raise ValueError(f"a size out of range: {_short(value)}")
    if size < 1:
        raise ValueError(f"must be a positive size like 512MB, got {_short(value)}")
    return int(size)


class LatencyTargets(Strict):
    p50: Duration
    p95: Duration
    p99: Duration

    @model_validator(mode="after")
    def _ordered(self) -> LatencyTargets:
        if not (self.p50 <= self.p95 <= self.p99):
            raise ValueError("targets must satisfy p50 <= p95 <= p99")
        return self


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a plain path on ``targets.base_url``'s host (None when it is).

    A path must start with exactly one ``/``; it may not hold a backslash (browsers and
    some clients read it as ``/``), whitespace or control characters, nor ``://`` before
    its query string (an absolute URL written as a path: ``/https://other.example/x``).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return f"must be a path starting with '/', got {path!r}"
    if path.startswith("//"):
        return f"{path!r} starts with '//', which names another host; write one '/'"
    if "\\" in path:
        return f"{path!r} holds a backslash, which some clients read as '/'; percent-encode it (%5C)"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return f"{path!r} holds whitespace or a control character; percent-encode it"
    if "://" in path.split("?", 1)[0].split("#", 1)[0]:
        return f"{path!r} holds '://': an absolute URL written as a path; give a path on targets.base_url's host"
    return None


class Endpoint(Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    route: str = Field(description="the route as the metrics label it, e.g. /api/products/:id")
    probe_path: str | None = Field(None, description="concrete path to probe; None = not probed")
    targets: LatencyTargets
    expensive: bool = False
    cached: bool = False

    @field_validator("route", "probe_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must start with '/', got {v!r}")
        return v

    @field_validator("probe_path")
    @classmethod
    def _on_base_host(cls, v: str | None) -> str | None:
        # Probes, bursts and the checklist send requests to targets.base_url + this path
        # (perfbook.sources.http.build_url, which re-checks the host): it must stay a path.
        problem = path_problem(v) if v is not None else None
        if problem:
            raise ValueError(f"must be a path on targets.base_url's host: {problem}")
        return v

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"


def _ms(v: float) -> float:
    return v / 1000.0


# The runbook's "Response Time Targets" table.
DEFAULT_ENDPOINTS = [
    {"method": "GET", "route": "/health", "probe_path": "/health",
     "targets": {"p50": "100ms", "p95": "200ms", "p99": "500ms"}},
    {"method": "GET", "route": "/api/products", "probe_path": "/api/products?limit=20",
     "targets": {"p50": "500ms", "p95": "1s", "p99": "2s"}, "cached": True},
    {"method": "GET", "route": "/api/products/:id", "probe_path": "/api/products/1",
     "targets": {"p50": "500ms", "p95": "1s", "p99": "2s"}, "cached": True},
    {"method": "POST", "route": "/api/content/generate", "probe_path": None,
     "targets": {"p50": "30s", "p95": "60s", "p99": "120s"}, "expensive": True},
    {"method": "GET", "route": "/api/analytics/summary", "probe_path": "/api/analytics/summary",
     "targets": {"p50": "1s", "p95": "2s", "p99": "3s"}},
]


class Level(Strict):
    """A Warning/Critical pair from the runbook's Resource Utilization table."""
    normal: float | None = None
    warning: float
    critical: float

    @model_validator(mode="after")
    def _ordered(self) -> Level:
        if self.warning > self.critical:
            raise ValueError("warning must not be above critical")
        return self


class Thresholds(Strict):
    """The runbook's levels. A level given in part (``cpu_percent: {warning: 60}``, or
    ``-P thresholds.cpu_percent.warning=60``) keeps the default's other bounds."""

    @model_validator(mode="before")
    @classmethod
    def _partial_levels(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, given in data.items():
            field = cls.model_fields.get(name)
            if isinstance(given, dict) and field is not None and isinstance(field.default, Level):
                out[name] = {**field.default.model_dump(), **given}
        return out

    cpu_percent: Level = Field(
        Level(normal=50, warning=70, critical=85),
        description="runbook Resource Utilization Targets: CPU 30-50 % normal, 70 warning, 85 critical")
    memory_percent: Level = Field(
        Level(normal=60, warning=80, critical=90),
        description="runbook Resource Utilization Targets: memory 40-60 % normal, 80 warning, 90 critical")
    eventloop_lag_seconds: Level = Field(
        Level(normal=0.010, warning=0.050, critical=0.100),
        description="runbook Resource Utilization Targets: event loop lag < 10 ms normal, 50 ms warning, "
                    "100 ms critical (seconds here)")
    # Database connections 10-20 normal, 50 warning, 80 critical.
    db_connections: Level = Level(normal=20, warning=50, critical=80)
    error_rate: Level = Field(
        Level(normal=0.001, warning=0.01, critical=0.05),
        description="5xx share of requests; not in the runbook's table: 1 % / 5 % are the usual SLO bars (also "
                    "the bar a load-test stage breaks at)")
    cache_hit_rate: float = Field(0.60, ge=0, le=1, description="runbook Issue 5: \"Target: > 60% hit rate\"")


class Metrics(Strict):
    """Metric names. prom-client's defaults; override for other exporters."""
    http_duration: str = "http_request_duration_seconds"
    http_requests: str = "http_requests_total"
    cpu_seconds: str = "process_cpu_seconds_total"
    resident_memory: str = "process_resident_memory_bytes"
    eventloop_lag: str = "nodejs_eventloop_lag_seconds"
    eventloop_lag_p99: str = "nodejs_eventloop_lag_p99_seconds"
    # prom-client resets its event-loop delay histogram at every scrape: p99 and max describe
    # the time since the previous scrape, and a loop blocked 300 ms now and then shows in max.
    eventloop_lag_max: str = "nodejs_eventloop_lag_max_seconds"
    heap_used: str = "nodejs_heap_size_used_bytes"
    heap_total: str = "nodejs_heap_size_total_bytes"
    heap_limit: str = "nodejs_heap_size_limit_bytes"
    cache_hits: str = "cache_hits_total"
    cache_misses: str = "cache_misses_total"
    rate_limit_hits: str = "rate_limit_hits_total"
    external_duration: str = "external_api_duration_seconds"
    external_requests: str = "external_api_requests_total"
    circuit_breaker_state: str = "circuit_breaker_state"
    db_pool_open: str = "prisma_pool_connections_open"
    db_pool_busy: str = "prisma_pool_connections_busy"
    db_pool_idle: str = "prisma_pool_connections_idle"
    db_pool_wait: str = "prisma_client_queries_wait"
    db_query_duration: str = "pg_query_duration_seconds"
    http_connections: str = "http_connections_active"
    # label names
    route_label: str = "route"
    method_label: str = "method"
    status_label: str = "status_code"
    instance_label: str = "instance"

    @field_validator("*")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", v):
            raise ValueError(f"not a valid Prometheus metric or label name: {v!r}")
        return v
