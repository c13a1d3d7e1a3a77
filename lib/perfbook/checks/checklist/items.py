"""The runbook's "Performance Optimization Checklist" items (part of
:mod:`perfbook.checks.checklist`): the 25 items by level, the :class:`Answer` each gets,
and why an item the monitoring notebook cannot measure stays unknown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RUNBOOK_REF = "Performance Optimization Checklist"


@dataclass(frozen=True)
class Item:
    key: str
    level: str
    text: str      # the runbook's wording, used as the findings' subject


#: The runbook's checklist, in its order.
ITEMS: tuple[Item, ...] = (
    Item("async", "Application", "Async operations (no blocking calls)"),
    Item("app_pooling", "Application", "Connection pooling configured"),
    Item("caching", "Application", "Caching implemented (60%+ hit rate)"),
    Item("rate_limiting", "Application", "Rate limiting enabled"),
    Item("compression", "Application", "Compression enabled (gzip/brotli)"),
    Item("static_cdn", "Application", "Static asset CDN"),
    Item("lazy_loading", "Application", "Lazy loading where possible"),
    Item("pagination", "Application", "Pagination on large datasets"),
    Item("indexes", "Database", "Indexes on filtered/sorted columns"),
    Item("no_n_plus_one", "Database", "Query optimization (no N+1)"),
    Item("db_pooling", "Database", "Connection pooling"),
    Item("vacuum", "Database", "Regular VACUUM/ANALYZE"),
    Item("prepared", "Database", "Prepared statements"),
    Item("row_locking", "Database", "Row-level locking (not table)"),
    Item("instance_size", "Infrastructure", "Adequate instance size"),
    Item("horizontal", "Infrastructure", "Horizontal scaling configured"),
    Item("autoscaling", "Infrastructure", "Auto-scaling enabled"),
    Item("load_balancing", "Infrastructure", "Load balancing working"),
    Item("cdn", "Infrastructure", "CDN for static assets"),
    Item("regions", "Infrastructure", "Regional distribution (if global)"),
    Item("dashboard", "Monitoring", "Performance dashboard configured"),
    Item("alerts", "Monitoring", "Alerts for key metrics"),
    Item("reviews", "Monitoring", "Regular performance reviews"),
    Item("load_testing", "Monitoring", "Load testing scheduled"),
    Item("baselines", "Monitoring", "Baseline metrics documented"),
)
_BY_KEY = {i.key: i for i in ITEMS}
_BY_TEXT = {i.text: i for i in ITEMS}
LEVELS = ("Application", "Database", "Infrastructure", "Monitoring")
STATUSES = ("met", "unmet", "unknown")


@dataclass
class Answer:
    key: str
    status: str                   # met / unmet / unknown
    why: str                      # one sentence: the evidence, or why it cannot be known
    evidence: dict[str, Any] = field(default_factory=dict)
    source: str = "monitoring"    # the section (or "params") the answer comes from
    recommendation: str = ""

    def __post_init__(self) -> None:
        if self.key not in _BY_KEY:
            raise ValueError(f"unknown checklist item {self.key!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")

    @property
    def item(self) -> Item:
        return _BY_KEY[self.key]


#: Items nothing outside the code or the team's calendar can answer, and why.
UNKNOWN_REASONS: dict[str, str] = {
    "static_cdn": "An API's responses do not show how static assets are served; check the frontend's asset "
                  "URLs (a CDN host) or fly.toml [[statics]].",
    "lazy_loading": "A property of the code (what is loaded on demand); no metric or response shows it.",
    "prepared": "pg_stat_statements normalises prepared and simple-protocol statements alike, and "
                "pg_prepared_statements is per session; whether the driver prepares them (Prisma does by "
                "default) is not visible from outside.",
    "row_locking": "Table locks show only while held (pg_locks); without lock waits in the window there is no "
                   "evidence either way.",
    "cdn": "Whether a CDN fronts the service is not visible from its metrics; check DNS / the edge in front of "
           "the app.",
    "regions": "Regional distribution depends on where the users are; fly.toml names only the primary region "
               "(`fly regions list` shows the rest).",
    "reviews": "A team practice, not a property of the service: record it in the postmortem.",
    "load_testing": "A schedule lives in CI or a cron job, not in the service; the load-test section runs one "
                    "on demand.",
    "load_balancing": "Answered by the load-balancing section (per-instance load); not measured here.",
    "indexes": "Answered by the database section (sequential scans, EXPLAIN); not measured here.",
    "no_n_plus_one": "Answered by the database section (repeated single-row lookups); not measured here.",
    "vacuum": "Answered by the database section (dead tuples, last (auto)vacuum); not measured here.",
}


def _scaled(v: Any, factor: float) -> Any:
    if v is None:
        return None
    if isinstance(v, dict):
        return {k: x * factor for k, x in v.items()}
    return float(v) * factor


def _num(v: Any) -> float | None:
    """A float from a query value (a dict of per-instance values → their max)."""
    if v is None:
        return None
    if isinstance(v, dict):
        vals = [x for x in v.values() if x is not None and not math.isnan(x)]
        return max(vals) if vals else None
    return None if math.isnan(float(v)) else float(v)
