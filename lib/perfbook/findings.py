"""The Finding record: the contract between notebooks, reports and postmortems.

A check's conclusion is a :class:`Finding`. Notebooks show each one as it is made
(:func:`perfbook.notebook.emit`), and record it machine-readably in the executed
notebook under the MIME type :data:`MIME_TYPE`, so the runner collects the findings of
a run from the ``.ipynb`` files without re-running anything (:func:`collect`).

Codes are stable and dotted; postmortem tooling counts them across incidents. Every code
lives in :data:`CODES` with its meaning and the runbook section it comes from. Add a code
here, never inline in a notebook.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIME_TYPE = "application/vnd.perfbook.finding+json"
#: A section's machine-readable record for later runs (``{"name": ..., "data": ...}``), e.g. the
#: database snapshot: the runner writes each as ``snapshots/<name>.json`` in the run folder.
RECORD_MIME_TYPE = "application/vnd.perfbook.record+json"

#: Severities from best to worst. ``error`` means a check could not run; it sorts first
#: in reports because it is never to be mistaken for "healthy".
SEVERITIES = ("ok", "info", "warning", "critical", "error")
_RANK = {"ok": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}


def severity_rank(severity: str) -> int:
    """Rank for sorting: critical > error > warning > info > ok."""
    return _RANK[severity]


def worst(severities: Iterable[str]) -> str:
    """The worst severity of several (``ok`` for none)."""
    return max(severities, key=severity_rank, default="ok")


@dataclass(frozen=True)
class Code:
    meaning: str
    runbook_ref: str


RUNBOOK = "runbook/performance-degradation.md"

#: The vocabulary. Meaning and runbook section per code.
CODES: dict[str, Code] = {
    "latency.slo_breach": Code("An endpoint's p50/p95/p99 latency is above its target.",
                               "Performance Baselines / Response Time Targets"),
    "errors.high_rate": Code("The share of 5xx responses is above the warning threshold.",
                             "Quick Diagnostics (5. Error rate)"),
    "cpu.saturation": Code("CPU use is at or above the Warning/Critical level.",
                           "Issue 1 §2 CPU Bottleneck"),
    "memory.pressure": Code("Memory use is at or above the Warning/Critical level.",
                            "Issue 1 §3 Memory Bottleneck"),
    "memory.growth": Code("Memory grows steadily across the window: leak suspected.",
                          "Issue 1 §3 Memory Bottleneck (Memory Leaks)"),
    "instance.down": Code("An instance stopped answering its scrapes (Prometheus up == 0) in the window.",
                          "Quick Diagnostics (flyctl status)"),
    "monitoring.gap": Code("Every instance missed the same scrapes: the scraper (Prometheus) or the machine it "
                           "runs on, not one instance, is the likely cause.",
                           "Performance Monitoring (Key Metrics to Monitor)"),
    "metrics.missing": Code("A metric the params name is not exported under the selector; the finding names "
                            "the fallback used instead, or what could not be judged.",
                            "Performance Monitoring (Key Metrics to Monitor)"),
    "eventloop.lag": Code("Event-loop lag is at or above the Warning/Critical level.",
                          "Performance Baselines / Issue 1 §2 (Synchronous Operations)"),
    "db.connections": Code("Database connections (pool or server) are near their limit.",
                           "Performance Baselines (Database Connections) / Issue 1 §4"),
    "db.slow_query": Code("A statement is slow on average and called often.",
                          "Issue 1 §4 Database Bottleneck (Top 10 slow queries)"),
    "db.n_plus_one": Code("The same single-row lookup is issued once per item of a list.",
                          "Issue 2 N+1 Query Problem"),
    "db.missing_index": Code("A frequent query scans a large table sequentially for want of an index.",
                             "Issue 2 Missing Indexes"),
    "db.large_result": Code("A statement returns very many rows per call (no pagination).",
                            "Issue 2 Large Result Sets"),
    "db.bloat": Code("A table carries a large share of dead tuples; (auto)vacuum is behind.",
                     "Issue 1 §4 (Check table bloat)"),
    "db.long_running": Code("Statements have been running longer than the limit.",
                            "Issue 1 §4 Database Bottleneck"),
    "db.lock_waits": Code("Sessions are waiting on locks held by others.",
                          "Issue 1 §4 Database Bottleneck"),
    "db.unused_index": Code("An index is never scanned but costs writes and space.",
                            "Issue 2 Missing Indexes"),
    "db.privileges": Code("The database role's privilege level (pg_monitor, + pg_read_all_data, + hypopg): "
                          "what the checks could verify, and what the next level adds.",
                          "Issue 1 §4 Database Bottleneck"),
    "db.stats_window": Code("Which interval the statement and table statistics cover: since an earlier run's "
                            "snapshot (--since-run), or cumulative when that cannot be (another server, a reset).",
                            "Issue 2: Database Query Optimization (pg_stat_statements)"),
    "cache.low_hit_rate": Code("Cache hit rate is under the 60 % target.",
                               "Issue 5 Caching Optimization (Cache Monitoring)"),
    "ratelimit.rejections": Code("Requests are being rejected by rate limits (HTTP 429).",
                                 "Issue 6 API Rate Limiting (Monitoring Rate Limits)"),
    "ratelimit.missing": Code("An expensive route has no rate limit.",
                              "Issue 6 API Rate Limiting (Implementing Rate Limits)"),
    "external.slow": Code("An external dependency is slow against its timeout.",
                          "Issue 7 External API Performance"),
    "external.errors": Code("An external dependency fails often.",
                            "Issue 7 External API Performance"),
    "external.circuit_open": Code("A circuit breaker around a dependency opened.",
                                  "Issue 7 §1 Implement Circuit Breaker"),
    "balance.uneven": Code("Load is unevenly spread across instances.",
                           "Issue 3 Load Balancing Adjustments"),
    "scaling.scale_out": Code("The runbook's scale-out rules hold: add instances.",
                              "Issue 4 Horizontal Scaling"),
    "scaling.scale_in": Code("Clearly over-provisioned: instances can be removed.",
                             "Issue 4 Horizontal Scaling"),
    "loadtest.breaking_point": Code("The stress test found the load at which the service breaks.",
                                    "Performance Testing (Stress Testing)"),
    "loadtest.threshold": Code("A load-test threshold (k6-style) was not met.",
                               "Performance Testing (Load Testing)"),
    "loadtest.refused": Code("The load test was refused before any request (host not allowed, over a cap).",
                             "Performance Testing (safety: loopback by default)"),
    "loadtest.no_requests": Code("The load generator sent no request in a stage: nothing measured, no verdict.",
                                 "Performance Testing (Stress Testing)"),
    "alert.firing": Code("A runbook alert rule fired during the window.",
                         "Performance Monitoring (Performance Alerts)"),
    "checklist.unmet": Code("An item of the optimization checklist is not met.",
                            "Performance Optimization Checklist"),
    "source.present_only": Code("A check that reads the present (live probe, pg_stat_statements, Redis, load "
                                "test) did not run: this run looks back in time (batch --baseline -7d).",
                                "Performance Baselines"),
    "source.unreachable": Code("A data source could not be reached; the checks that need it did not run.",
                               "Quick Diagnostics"),
    "check.failed": Code("A check raised an unexpected error; its conclusion is unknown.",
                         "—"),
}


class UnknownCode(ValueError):
    pass


def _clean(value: Any) -> Any:
    """Make evidence JSON-safe: numpy scalars to Python, NaN/inf to None, round floats."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


@dataclass
class Finding:
    """One conclusion of one check.

    ``subject`` names what the finding is about (a route, a table, a dependency, an
    instance) so that postmortems and the demo's ground truth can match on it.
    ``evidence`` holds the numbers that justify the conclusion; every number a
    finding's title states must be in it.
    """

    code: str
    severity: str
    title: str
    section: str = ""
    subject: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    recommendation: str = ""
    runbook_ref: str = ""
    check: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise UnknownCode(f"unknown finding code {self.code!r}; add it to perfbook.findings.CODES")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        if not self.runbook_ref:
            self.runbook_ref = CODES[self.code].runbook_ref
        self.evidence = _clean(dict(self.evidence))

    @property
    def meaning(self) -> str:
        return CODES[self.code].meaning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def sort_key(f: Finding) -> tuple:
    return (-severity_rank(f.severity), f.section, f.code, f.subject or "")


def collect(notebook: str | Path | dict) -> list[Finding]:
    """Read the findings a notebook (a path, or the notebook object) recorded in its outputs
    (no re-execution)."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text(encoding="utf-8"))
    found: list[Finding] = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            payload = data.get(MIME_TYPE)
            if payload is None:
                continue
            if isinstance(payload, str):
                payload = json.loads(payload)
            found.append(Finding.from_dict(payload))
    return found


def collect_records(notebook: dict) -> dict[str, Any]:
    """The records (:data:`RECORD_MIME_TYPE`) a notebook object holds in its outputs: name → data
    (the last one of a name wins)."""
    out: dict[str, Any] = {}
    for cell in notebook.get("cells", []):
        for o in cell.get("outputs", []) or []:
            payload = (o.get("data") or {}).get(RECORD_MIME_TYPE)
            if isinstance(payload, str):
                payload = json.loads(payload)
            if isinstance(payload, dict) and isinstance(payload.get("name"), str):
                out[payload["name"]] = payload.get("data")
    return out
