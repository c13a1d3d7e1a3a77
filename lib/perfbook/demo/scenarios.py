"""The demo's faults, its scenarios, and their ground truth.

Each fault is switchable on its own; a scenario is a set of faults. ``incident`` has
them all, ``healthy`` none, and every fault is also a scenario of its own name.

The ground truth of a scenario is the findings it must produce (:class:`Expect`, each
naming the section, the code, the subject and the details that matter, and the raw
evidence the fault leaves) plus the findings it may produce as a consequence
(:class:`Allow`: slower responses when the event loop blocks, an alert firing, a
checklist item unmet...). ``tests/groundtruth.py`` compares a run's findings.json with
it: a required finding missing is a *miss*; a warning or critical finding that is
neither expected nor allowed is a *false alarm*.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

#: Report sections (one notebook each), in runbook order.
SECTIONS = ("quick-diagnostics", "bottlenecks", "database", "load-balancing", "scaling", "caching",
            "rate-limiting", "external-apis", "load-test", "monitoring")


@dataclass(frozen=True)
class Expect:
    """A finding a scenario must produce.

    Matches a finding when its severity is one of ``severities`` (warning or critical:
    an ``ok`` finding of the same code says the opposite), ``code`` and ``section`` are
    equal, ``subject`` is None or contained (case-insensitively) in the finding's
    subject, and every ``details`` key is in the finding's evidence with an equal value.
    ``evidence`` says, for people, where the fault's raw evidence lies.
    """

    code: str
    section: str
    subject: str | None = None
    details: dict = field(default_factory=dict, hash=False, compare=False)
    evidence: str = ""
    severities: tuple[str, ...] = ("warning", "critical")

    def matches(self, finding: dict) -> bool:
        if finding.get("severity") not in self.severities:
            return False
        if finding.get("code") != self.code or finding.get("section") != self.section:
            return False
        if self.subject is not None and self.subject.lower() not in str(finding.get("subject") or "").lower():
            return False
        ev = finding.get("evidence") or {}
        return all(k in ev and ev[k] == v for k, v in self.details.items())

    def __str__(self) -> str:
        s = f"{self.section}: {self.code}"
        if self.subject:
            s += f" [{self.subject}]"
        if self.details:
            s += f" {self.details}"
        return s


@dataclass(frozen=True)
class Allow:
    """A finding a scenario may produce as a consequence of its faults (never a false
    alarm). ``code`` may be a glob (``external.*``); ``section`` None means any."""

    code: str
    section: str | None = None
    subject: str | None = None

    def matches(self, finding: dict) -> bool:
        if not fnmatch.fnmatchcase(str(finding.get("code")), self.code):
            return False
        if self.section is not None and finding.get("section") != self.section:
            return False
        return self.subject is None or self.subject.lower() in str(finding.get("subject") or "").lower()


@dataclass(frozen=True)
class Fault:
    name: str
    layer: str            # where it is injected: database, service, external, traffic
    description: str
    expects: tuple[Expect, ...]
    allows: tuple[Allow, ...] = ()
    #: The instance it is injected into (1-based; the last one if the stack has fewer);
    #: None: every instance.
    instance: int | None = None


# Consequences any degraded scenario may show in the summary sections.
_MONITORING = (Allow("alert.firing", "monitoring"), Allow("checklist.unmet", "monitoring"))
_SLOWER = (Allow("latency.slo_breach"), Allow("scaling.scale_out"), Allow("loadtest.*", "load-test"))

FAULTS: dict[str, Fault] = {f.name: f for f in [
    Fault("n_plus_one", "service",
          "GET /api/products loads the page of products, then each product's category with its own "
          "query (SELECT id, name, slug FROM categories WHERE id = $1) instead of a JOIN.",
          (Expect("db.n_plus_one", "database", subject="categories",
                  evidence="pg_stat_statements: 'SELECT id, name, slug FROM categories WHERE id = $1' with "
                           "calls ~20x the listing query's calls and ~1 row per call; postgresql.log: runs of "
                           "that statement within one session, one per product of a page"),),
          _MONITORING),
    Fault("missing_index", "database",
          "The index products(category_id, created_at DESC) is dropped at stack start, so the hot "
          "listing query (WHERE category_id = $1 ORDER BY created_at DESC LIMIT 20) seq-scans "
          "100k products.",
          (Expect("db.missing_index", "database", subject="products",
                  details={"columns": ["category_id", "created_at"]},
                  evidence="pg_stat_user_tables.products: seq_scan and seq_tup_read grow (~100k tuples per "
                           "scan); pg_stat_statements: the listing query's mean time is tens of ms; EXPLAIN "
                           "shows Seq Scan on products + Sort"),),
          (Allow("db.slow_query"), *_MONITORING)),
    Fault("bloat", "database",
          "Autovacuum is turned off for table sessions, then half its rows are updated and a tenth "
          "deleted: ~40 % dead tuples.",
          (Expect("db.bloat", "database", subject="sessions",
                  evidence="pg_stat_user_tables.sessions: n_dead_tup ~30k vs n_live_tup ~45k (~40 %); "
                           "pg_class.reloptions has autovacuum_enabled=false"),),
          _MONITORING),
    Fault("low_cache_hit", "service",
          "The in-process cache keeps entries 0.5 s in at most 8 slots and is not pre-warmed: "
          "hit rate far under the 60 % target.",
          (Expect("cache.low_hit_rate", "caching",
                  evidence="/metrics and Prometheus: cache_hits_total / (cache_hits_total + cache_misses_total) "
                           "per cache label well under 0.6"),),
          (Allow("cache.low_hit_rate"), *_MONITORING)),
    Fault("external_failing", "external",
          "The AI-API stand-in answers in 1.5-4.5 s (the service's timeout is 3 s) and fails 60 % of "
          "calls: the circuit breaker opens, calls are rejected, POST /api/content/generate returns 503.",
          (Expect("external.errors", "external-apis", subject="ai-api",
                  evidence="external_api_requests_total{service=\"ai-api\",outcome=~\"error|timeout|rejected\"}"),
           Expect("external.slow", "external-apis", subject="ai-api",
                  evidence="external_api_duration_seconds{service=\"ai-api\"} p95 at the 3 s timeout"),
           Expect("external.circuit_open", "external-apis", subject="ai-api",
                  evidence="circuit_breaker_state{name=\"ai-api\"} = 1 (open) for stretches, 2 (half-open) "
                           "between; "
                           "GET /health/services reports ai-api down and the stand-in's /health answers 503"),),
          (Allow("external.*"), Allow("errors.high_rate"), *_MONITORING)),
    Fault("cpu_blocking", "service",
          "GET /api/analytics/summary computes trend scores synchronously on the event loop "
          "(~300 ms of CPU per request).",
          (Expect("eventloop.lag", "bottlenecks",
                  evidence="nodejs_eventloop_lag_max_seconds >= 0.1 in the scrapes after each summary "
                           "request (prom-client's max and p99 gauges reset at every scrape); "
                           "process_cpu_seconds_total rate up; http_request_duration_seconds of "
                           "/api/analytics/summary >= 0.3 s"),
           Expect("eventloop.lag", "quick-diagnostics",
                  evidence="as above: event-loop lag at the runbook's Critical level (100 ms)"),),
          (Allow("eventloop.lag"), Allow("cpu.saturation"), Allow("db.connections"), *_SLOWER, *_MONITORING)),
    Fault("memory_growth", "service",
          "Every request appends 256 KiB to a module-level list that is never trimmed (capped at "
          "384 MiB for safety): heap grows steadily with traffic.",
          (Expect("memory.growth", "bottlenecks",
                  evidence="nodejs_heap_size_used_bytes and process_resident_memory_bytes rise steadily "
                           "(deriv > 0 across the window)"),),
          (Allow("memory.growth"), Allow("memory.pressure"), *_MONITORING)),
    Fault("cpu_saturation", "service",
          "Instance api-1 runs a background export job on two worker threads that compress data in a loop "
          "while the instance serves traffic: its process CPU stays around a full core (up to ~120 %), above "
          "the runbook's Critical 85 %, while the event loop stays responsive (the work is off the loop).",
          (Expect("cpu.saturation", "quick-diagnostics",
                  evidence="rate(process_cpu_seconds_total{instance_name=\"api-1\"}[1m]) ~0.9-1.2 while "
                           "traffic flows (CPU ~90-120 %); api-2 stays low"),
           Expect("cpu.saturation", "bottlenecks", evidence="as above (the finding's subject is api-1's "
                                                                 "instance, host:port)"),),
          (Allow("cpu.saturation"), Allow("balance.uneven"), Allow("eventloop.lag"), *_SLOWER, *_MONITORING),
          instance=1),
    Fault("memory_pressure", "service",
          "Instance api-2 fills an unbounded in-process page cache at start until it uses ~90 % of its "
          "512 MB heap limit (--max-old-space-size): memory above the runbook's Warning 80 %.",
          (Expect("memory.pressure", "quick-diagnostics",
                  evidence="process_resident_memory_bytes ~470 MB on api-2 against the params' "
                           "targets.memory_limit of 512 MB (stock prom-client has no heap-limit gauge); "
                           "api-1 well under"),
           Expect("memory.pressure", "bottlenecks", evidence="as above (subject: api-2's host:port)"),),
          (Allow("memory.pressure"), *_MONITORING),
          instance=2),
    Fault("rate_limit", "service",
          "The public API limiter on /api/products is far too tight (40 requests per 10 s window per "
          "client instead of 6000 per minute): about a third of the listing and detail traffic gets 429, "
          "most of it on the busy instance.",
          (Expect("ratelimit.rejections", "rate-limiting", subject="/api/products",
                  evidence="rate_limit_hits_total{route=~\"/api/products.*\",limiter=\"api\"}; "
                           "http_requests_total{status_code=\"429\"}; 429 responses carry RateLimit-* and "
                           "Retry-After headers"),),
          (Allow("ratelimit.rejections"), Allow("loadtest.*", "load-test"), *_MONITORING)),
    Fault("no_rate_limit_on_generate", "service",
          "POST /api/content/generate (expensive: calls the AI API) has no rate limiter; healthy, "
          "it has its own (60 per minute per client).",
          (Expect("ratelimit.missing", "rate-limiting", subject="/api/content/generate",
                  evidence="responses of /api/content/generate (any method; GET answers 405 cheaply) carry "
                           "no RateLimit-* headers, while /api/products does; no rate_limit_hits_total series "
                           "for that route"),),
          _MONITORING),
    Fault("pool_saturation", "service",
          "The DB pool has 2 connections and GET /api/products/{id} holds one inside a transaction "
          "while it awaits a 300 ms pricing call: requests queue for connections.",
          (Expect("db.connections", "database",
                  evidence="prisma_pool_connections_busy = prisma_pool_connections_open = 2; "
                           "prisma_client_queries_wait > 0; pg_stat_activity shows 'idle in transaction' "
                           "sessions of demo_app"),),
          (Allow("db.connections"), Allow("db.long_running"), *_SLOWER, *_MONITORING)),
    Fault("large_result", "service",
          "GET /api/products?category=C fetches every product of the category (no LIMIT; ~2000 rows) "
          "and pages in memory.",
          (Expect("db.large_result", "database", subject="products",
                  evidence="pg_stat_statements: the listing query returns ~2000 rows per call "
                           "(rows / calls); app log lines 'rows returned: N'"),),
          (Allow("db.slow_query"), *_MONITORING)),
    Fault("uneven_load", "traffic",
          "The traffic driver sends ~80 % of requests to instance 1 (a sticky or misconfigured "
          "balancer).",
          (Expect("balance.uneven", "load-balancing",
                  evidence="sum by (instance) (rate(http_requests_total[1m])) ~4:1; CPU per instance too"),),
          (Allow("balance.uneven"), Allow("scaling.*"), Allow("cpu.saturation"), *_MONITORING)),
    Fault("slow_endpoint", "service",
          "GET /api/products/{id} awaits a slow enrichment step (~1.2 s median) after its queries: "
          "p95 over its 1 s target.",
          (Expect("latency.slo_breach", "quick-diagnostics", subject="/api/products/{id}",
                  evidence="http_request_duration_seconds_bucket{route=\"/api/products/{id}\"}: "
                           "p95 > 1 s, p50 > 0.5 s"),),
          (*_SLOWER, *_MONITORING)),
    Fault("errors", "service",
          "GET /api/products/{id} fails with HTTP 500 for every 10th request it handles (10 %).",
          (Expect("errors.high_rate", "quick-diagnostics",
                  evidence="http_requests_total{status_code=\"500\",route=\"/api/products/{id}\"} ~10 % of "
                           "that route; http_request_errors_total"),),
          (Allow("errors.high_rate"), Allow("loadtest.*", "load-test"), *_MONITORING)),
]}


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: frozenset[str]
    description: str = ""

    @property
    def expects(self) -> list[Expect]:
        return [e for f in sorted(self.faults) for e in FAULTS[f].expects]

    @property
    def allows(self) -> list[Allow]:
        return [a for f in sorted(self.faults) for a in FAULTS[f].allows]

    def has(self, fault: str) -> bool:
        return fault in self.faults

    def faults_of(self, instance: int, instances: int, everywhere: frozenset[str] = frozenset()) -> frozenset[str]:
        """The faults injected into instance ``instance`` (1-based) of a stack of
        ``instances``: the ones on every instance, the ones placed on it (or on the last
        instance when the stack has fewer), and those in ``everywhere``."""
        def on(name: str) -> bool:
            where = FAULTS[name].instance
            return where is None or name in everywhere or min(where, instances) == instance
        return frozenset(f for f in self.faults if on(f))


SCENARIOS: dict[str, Scenario] = {
    "incident": Scenario("incident", frozenset(FAULTS), "every fault at once (the default demo)"),
    "healthy": Scenario("healthy", frozenset(), "no fault: no warning or critical finding expected"),
    **{name: Scenario(name, frozenset([name]), f.description) for name, f in FAULTS.items()},
}


def get(name: str) -> Scenario:
    """The scenario called ``name`` (ValueError listing the names otherwise)."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}") from None
