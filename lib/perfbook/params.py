"""The params file: where to look, the window, the targets, the thresholds.

A params file is YAML validated by :class:`Params` *before any kernel starts*. An error is
one line, ``FILE: field.path: what is wrong`` (:class:`ParamsError`), and nothing runs.

Secrets never live in a params file: the database, Redis and bearer token are given by the
*name of the environment variable* that holds them (``database_env: DATABASE_URL``). A value
that looks like a secret written inline (a DSN, a URL with a password, a token) is refused.

Defaults come from the runbook's "Performance Baselines" tables, so a params file only
says what differs for a service.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# --------------------------------------------------------------------------- errors


class ParamsError(Exception):
    """A params file that cannot be used. ``str()`` is the one-line message."""

    def __init__(self, file: str | Path, field: str, problem: str):
        # One line, whatever the input: control characters, line separators and lone
        # surrogates (in a file name, a key, a value) are shown escaped.
        self.file, self.field, self.problem = _one_line(str(file)), _one_line(field), _one_line(problem)
        super().__init__(f"{self.file}: {self.field}: {self.problem}")


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


# --------------------------------------------------------------------------- small types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"200ms"``, ``"1s"``, ``"5m"``, ``2`` (seconds) → seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 200ms, 1s, 5m or a number of seconds")
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
        else:
            raise ValueError(f"expected a duration like 200ms, 1s, 5m or a number of seconds, got {_short(value)}")
    except OverflowError:
        raise ValueError(f"a duration out of range: {_short(value)}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, got {_short(value)}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from the file, cut for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


Duration = Annotated[float, BeforeValidator(parse_duration)]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: str) -> str:
    if "://" in value or "@" in value or "=" in value:
        raise ValueError(
            "looks like a secret value written inline; put it in an environment variable "
            "and write the variable's name here (e.g. DATABASE_URL)"
        )
    if not _ENV_NAME.match(value):
        raise ValueError(f"must be the name of an environment variable (letters, digits, _), got {value!r}")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


#: Query parameters that carry credentials (``?api_key=``, ``&token=``, ``&X-Amz-Signature=``...).
_QUERY_SECRET = re.compile(r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|apikey|^key$|access[_-]?key|"
                           r"signature|^sig$|auth|credential|session)", re.I)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
    if parts.password:
        raise ValueError("contains a password; secrets are named by environment variable, never written inline")
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _QUERY_SECRET.search(key):
            raise ValueError(f"carries a secret in its query string ({key}=…); secrets are named by "
                             "environment variable, never written inline (use a header, e.g. bearer_token_env)")
    try:
        parts.port  # noqa: B018  (raises ValueError on an invalid port)
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


def resolve_time(value: str | datetime, now: datetime | None = None) -> datetime:
    """``now``, ``-30m`` (relative to now) or ISO-8601 → aware UTC datetime."""
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if text == "now":
            return now
        try:
            if m := _RELATIVE.match(text):
                return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected 'now', a relative time like -30m, or ISO-8601, got {_short(text)}") from None
        except OverflowError:
            raise ValueError(f"a time out of range: {_short(text)}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"a time out of range: {_short(value)}") from None


def _time_spec(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected 'now', a relative time like -30m, or ISO-8601, got {value!r}")
    resolve_time(value)  # validates
    return value


TimeSpec = Annotated[str, BeforeValidator(_time_spec)]


class Strict(BaseModel):
    # NaN or infinity is never a meaningful threshold, target or setting.
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True, allow_inf_nan=False)


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
    # Runbook "Resource Utilization Targets": CPU 30-50 % normal, 70 warning, 85 critical.
    cpu_percent: Level = Level(normal=50, warning=70, critical=85)
    # Memory 40-60 % normal, 80 warning, 90 critical.
    memory_percent: Level = Level(normal=60, warning=80, critical=90)
    # Event loop lag < 10 ms normal, 50 ms warning, 100 ms critical (seconds here).
    eventloop_lag_seconds: Level = Level(normal=0.010, warning=0.050, critical=0.100)
    # Database connections 10-20 normal, 50 warning, 80 critical.
    db_connections: Level = Level(normal=20, warning=50, critical=80)
    # 5xx share of requests. Not in the runbook's table; 1 % / 5 % are the usual SLO bars.
    error_rate: Level = Level(normal=0.001, warning=0.01, critical=0.05)
    # Issue 5: "Target: > 60% hit rate".
    cache_hit_rate: float = Field(0.60, ge=0, le=1)


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


class Probes(Strict):
    count: int = Field(20, ge=1, le=1000, description="requests per probed endpoint")
    timeout: Duration = 10.0
    retries: int = Field(2, ge=0, le=5)
    concurrency: int = Field(1, ge=1, le=16)


class Database(Strict):
    statement_timeout: Duration = 5.0
    lock_timeout: Duration = 1.0
    explain_analyze: bool = False
    # pghero: slow = mean >= 20 ms and calls >= 100.
    slow_query_mean: Duration = 0.020
    slow_query_calls: int = Field(100, ge=1)
    # Large results, judged by what they cost: more than large_result_rows rows per call AND any of
    # >= large_result_calls calls, >= large_result_total_rows rows returned in all (since
    # pg_stat_statements' reset), >= large_result_time_share of all statement time. Critical when
    # over 10x the rows per call and frequent or >= large_result_critical_share of the time.
    large_result_rows: int = Field(1000, ge=1, description="rows per call above which a result is large")
    large_result_calls: int = Field(10, ge=1, description="a large result called this often costs")
    large_result_total_rows: int = Field(
        100_000, ge=1, description="a large result that returned this many rows in all costs (one 200k-row export)")
    large_result_time_share: float = Field(
        0.05, gt=0, le=1, description="a large result taking this share of all statement time costs")
    large_result_critical_share: float = Field(0.25, gt=0, le=1)
    bloat_dead_share: float = Field(0.20, gt=0, lt=1)
    long_running: Duration = 60.0
    top_n: int = Field(10, ge=1, le=100)
    # Missing indexes: tables from 10k rows (pghero), seq-scanned with < 95 % of scans by index.
    min_table_rows: int = Field(10_000, ge=1)
    seq_scan_index_share: float = Field(0.95, gt=0, le=1)
    index_candidate_min_share: float = Field(
        0.05, gt=0, le=1, description="statements with at least this share of all statement time are read "
                                      "for index candidates (statement text, no privilege on the tables needed)")
    missing_index_critical_share: float = Field(
        0.50, gt=0, le=1, description="a missing index is critical when its statement takes this share of "
                                      "all statement time (or is slow by the slow-query bar)")
    # N+1: Sentry's detector: >= 5 repeats of one statement whose total time is >= 50 ms.
    n_plus_one_min_repeats: int = Field(5, ge=2)
    n_plus_one_min_total: Duration = 0.050
    # The app's pool (Prisma's metrics; not in prom-client's defaults): wait-time histogram (ms) and limit.
    pool_wait_histogram: str = "prisma_client_queries_wait_histogram_ms"
    pool_max_metric: str = "prisma_pool_connections_max"
    # The server's log_line_prefix, to read targets.postgres_logs (the demo's; %c or %p is needed).
    log_line_prefix: str = "%m [%p] %c %q%u@%d "


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
    min_lookups: int = Field(20, ge=1, description="fewer lookups in the window than this: hit rate not judged")
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
    rejection_share: Level = Level(warning=0.01, critical=0.10)
    # The runbook's strict limiter is 5 per minute; a limit looser than this on an
    # expensive route protects nothing (a global /api/ limit of thousands, say).
    expensive_max_per_minute: float = Field(120.0, gt=0)
    client_labels: list[str] = Field(default_factory=lambda: ["client", "ip", "client_ip", "key", "user"])


class External(Strict):
    """Issue 7: external dependencies."""
    service_label: str = "service"
    outcome_label: str = "outcome"
    breaker_label: str = "name"
    # The runbook's axios / opossum timeout: 10 s; per dependency where it differs.
    default_timeout: Duration = 10.0
    timeouts: dict[str, Duration] = Field(default_factory=dict)
    slow_fraction: float = Field(0.5, gt=0, le=1, description="p95 at this share of the timeout is slow")
    error_rate: Level = Level(warning=0.05, critical=0.20)
    min_calls: int = Field(3, ge=1, description="fewer calls than this: latency and error rate not judged")
    probe_timeout: Duration = Field(5.0, gt=0, le=60)
    probe_retries: int = Field(3, ge=0, le=5, description="retries after 1 s, 2 s, 4 s (runbook)")
    probe_budget: Duration = Field(30.0, gt=0, le=300, description="all probes of one dependency")

    def timeout_for(self, service: str) -> float:
        return self.timeouts.get(service, self.default_timeout)


class Scaling(Strict):
    """Issue 4 Horizontal Scaling: the numbers behind scale-out / scale-in."""
    # Runbook: "Scale out when CPU > 70% on all instances"; its [[metrics]] cpu target is 70.
    target_cpu_percent: float = Field(70.0, gt=0, le=100)
    # Clearly over-provisioned: every instance under this CPU and latency under half its target.
    scale_in_cpu_percent: float = Field(20.0, ge=0, le=100)
    # Runbook [scaling] min_machines = 2: never fewer, for availability.
    min_instances: int = Field(2, ge=1, le=1000)
    # "Traffic increasing steadily": total req/s trend significant at this level (Mann-Kendall).
    trend_p_value: float = Field(0.05, gt=0, lt=1)
    trend_min_growth: float = Field(0.10, ge=0, description="and grown by at least this share over the window")


class Diagnostics(Strict):
    """Quick diagnostics and Issue 1 (bottlenecks): how the window's levels are judged."""
    # CPU % and event-loop lag are judged at this quantile of the window's scrapes: a level
    # held 10 % of the time, not one spike (memory and connections are judged at their max).
    sustained_quantile: float = Field(0.9, gt=0, le=1)
    # ... and a level must be held at least this long to count (one spike is not a level).
    sustained_for: Duration = 20.0
    # Error rate and latency are not judged on fewer requests than this per route.
    min_requests: int = Field(20, ge=1)
    # Memory growth (leak suspicion): slope of a straight-line fit over the window at least
    # this many MB per minute, fit R^2 at least this, and total growth at least this share.
    growth_min_mb_per_min: float = Field(0.5, ge=0)
    growth_min_r2: float = Field(0.8, ge=0, le=1)
    growth_min_share: float = Field(0.10, ge=0)
    # Growth that reaches the memory limit within this time at the fitted slope is critical.
    growth_critical_horizon: Duration = 3600.0
    # Snapshot mode (no Prometheus): seconds between the two /metrics scrapes that give rates.
    snapshot_interval: Duration = Field(5.0, gt=0, le=60)
    # instance.down: an instance is down only after consecutive failed scrapes (up == 0)
    # spanning at least this long; scrapes every instance missed at once are a monitoring gap.
    down_for: Duration = Field(15.0, gt=0, description="least outage (consecutive failed scrapes) that is "
                                                       "an instance down, not a flap")


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


class Sections(Strict):
    probes: Probes = Probes()
    diagnostics: Diagnostics = Diagnostics()
    database: Database = Database()
    load_test: LoadTest = LoadTest()
    scaling: Scaling = Scaling()
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


# --------------------------------------------------------------------------- loading

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|api_key|apikey|dsn)$", re.I)


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
    kind, msg = err.get("type", ""), err.get("msg", "")
    if kind == "extra_forbidden":
        return "unknown key (check spelling; see params/production.example.yaml)"
    if kind == "missing":
        return "required field is missing"
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {type(got).__name__}: {str(got)[:60]!r})"
    return msg


def _inline_secret(data: Any, path: str = "") -> tuple[str, str] | None:
    """Find a key that holds a secret value inline (password:, token:, dsn:, ...)."""
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and _SECRET_KEYS.search(k) and isinstance(v, str) and v:
                return p, "a secret value written inline; name the environment variable that holds it instead (e.g. bearer_token_env: FLY_API_TOKEN)"
            if (hit := _inline_secret(v, p)):
                return hit
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if (hit := _inline_secret(v, f"{path}[{i}]")):
                return hit
    return None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file. Raises :class:`ParamsError` (one line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(path, "(file)", "no such file") from None
    except IsADirectoryError:
        raise ParamsError(path, "(file)", "is a directory, not a params file") from None
    except UnicodeDecodeError as e:
        raise ParamsError(path, "(file)", f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ParamsError(path, "(file)", e.strerror or str(e)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except RecursionError:
        raise ParamsError(path, "(top level)", "YAML nested too deeply") from None
    except _DuplicateKey as e:
        mark = e.problem_mark
        raise ParamsError(path, f"line {mark.line + 1}, column {mark.column + 1}", e.problem) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable"])[0]
        context = getattr(e, "context", None)
        if context and problem.startswith("but "):  # "expected a single document..., but found another"
            problem = f"{context}, {problem}"
        raise ParamsError(path, where, f"YAML syntax error: {problem}") from None
    if data is None:
        raise ParamsError(path, "(top level)", "the file is empty")
    if not isinstance(data, dict):
        raise ParamsError(path, "(top level)", f"expected a mapping of keys, got {type(data).__name__}")
    for key in overrides or {}:
        _set_dotted(data, key, overrides[key])
    if (hit := _bad_structure(data)):
        raise ParamsError(path, *hit)
    if (hit := _inline_secret(data)):
        raise ParamsError(path, *hit)
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(path, _field_path(err["loc"]), _message(err)) from None
    except RecursionError:  # pragma: no cover - _bad_structure bounds the depth first
        raise ParamsError(path, "(top level)", "nested too deeply") from None
    _resolve_paths(params, path.resolve().parent)
    return params


def _resolve_paths(params: Params, base: Path) -> None:
    """File paths in a params file are relative to the file, wherever perfbook runs from."""
    t = params.targets

    def absolute(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for name in ("fly_toml", "cpu_profile"):
        if getattr(t, name, None):
            setattr(t, name, absolute(getattr(t, name)))
    for name in ("postgres_logs", "app_logs", "heap_snapshots"):
        if getattr(t, name, None):
            setattr(t, name, [absolute(p) for p in getattr(t, name)])


_MAX_DEPTH = 40
_MAX_VALUES = 200_000
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Bad(Exception):
    pass


def _bad_structure(data: Any) -> tuple[str, str] | None:
    """What YAML can build but no params file means: a cycle (an alias inside itself), nesting
    deeper than any field, a document that explodes through aliases ("billion laughs"), text
    with a lone surrogate (``"\\ud800"``, which no file or page can hold). Checked before
    validation so that none of them turns into a traceback or a hang."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def walk(node: Any, where: str, depth: int) -> int:
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise _Bad(where or "(top level)", "contains a lone surrogate (an invalid character, e.g. \\ud800)")
            return 1
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in on_path:
            raise _Bad(where or "(top level)", "a YAML alias refers to a node that contains it (a cycle)")
        if key in sizes:
            return sizes[key]
        if depth > _MAX_DEPTH:
            raise _Bad(where or "(top level)", f"nested too deeply (more than {_MAX_DEPTH} levels)")
        on_path.add(key)
        total = 1
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if isinstance(k, str) and _SURROGATE.search(k):
                raise _Bad(where or "(top level)", "a key contains a lone surrogate (an invalid character)")
            child = (f"{where}[{k}]" if isinstance(node, list) else (f"{where}.{k}" if where else str(k)))
            total += walk(v, child, depth + 1)
            if total > _MAX_VALUES:
                raise _Bad(where or "(top level)", f"too large: more than {_MAX_VALUES:,} values "
                                                   f"(after expanding YAML aliases)")
        on_path.discard(key)
        sizes[key] = total
        return total

    try:
        walk(data, "", 0)
    except _Bad as bad:
        return bad.args[0], bad.args[1]
    return None


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: YAML
    keeps the last silently, so a second ``targets:`` block would drop the first unnoticed."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first is not None:
                    raise _DuplicateKey(None, None, f"duplicate key {_short(key)} (first on line {first + 1}); "
                                        f"YAML would keep only the last", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ParamsError("-P", dotted, f"{p} is not a mapping")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``-P key.path=value`` with the value parsed as YAML (numbers, lists, ...)."""
    if "=" not in text:
        raise ParamsError("-P", text, "expected key.path=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def env_value(name: str | None) -> str | None:
    """The value of an environment variable the params name (None if unset/empty)."""
    if not name:
        return None
    return os.environ.get(name) or None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
