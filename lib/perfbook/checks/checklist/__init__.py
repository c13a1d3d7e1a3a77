"""The runbook's "Performance Optimization Checklist", answered with evidence.

Each of the 25 items is answered **met**, **unmet** or **unknown**:

- the monitoring notebook measures what it can itself (:func:`measured_answers`): the
  cache hit rate against the 60 % target, rate limiting (RateLimit headers, 429s),
  compression (a GET with ``Accept-Encoding: gzip, br``), pagination (items a list
  endpoint returns without paging parameters), event-loop lag (blocking calls), pool
  gauges, instance size (CPU and heap against the Warning levels), instances running,
  fly.toml's scaling settings, the server's alerting rules, the key metrics exported,
  and whether the params carry the runbook's baselines;
- what it cannot know from outside (a CDN for static assets, lazy loading, prepared
  statements, review and load-test schedules...) is **unknown**, with the reason;
- the batch's index page (:func:`perfbook.report.checklist_index_html`, through :func:`combine`) combines those answers with the
  other sections' findings of the same run: ``db.missing_index`` makes "Indexes on
  filtered/sorted columns" unmet, ``db.n_plus_one`` "Query optimization (no N+1)",
  ``db.bloat`` "Regular VACUUM/ANALYZE", and so on (:data:`FROM_FINDINGS`).

Findings: ``checklist.unmet`` per item — ``warning`` when unmet, ``ok`` when met,
``info`` when unknown; ``subject`` is the item's text, ``evidence.status`` the answer.

Pure. The evidence is gathered by :func:`perfbook.sources.monitoring.gather` (the
monitoring notebook's few HTTP requests and PromQL queries, :func:`perfbook.promql.checklist_queries`)
into a :class:`perfbook.sources.monitoring.Evidence`; the index page's HTML is
:func:`perfbook.report.checklist_index_html`.

The code lives in submodules, every name re-exported here (``from perfbook.checks import
checklist; checklist.combine(...)`` works): :mod:`.items` (the 25 items, the answer type and
the reasons an item stays unknown), :mod:`.answers` (one answer per measurable item and
:func:`measured_answers`) and :mod:`.summary` (the table, the findings, and :func:`combine`
with the other sections' findings).
"""
from __future__ import annotations

from perfbook.promql import KEY_METRICS, checklist_queries

from .answers import (
    COMPRESSION_MIN_BYTES as COMPRESSION_MIN_BYTES,
    answer_alerts_configured,
    answer_async,
    answer_autoscaling,
    answer_baselines,
    answer_caching,
    answer_compression,
    answer_dashboard,
    answer_db_pooling,
    answer_horizontal_scaling,
    answer_instance_size,
    answer_pagination,
    answer_pool_configured,
    answer_rate_limiting,
    measured_answers,
    unknown_answers,
)
from .items import (
    _BY_KEY as _BY_KEY,
    ITEMS,
    LEVELS,
    RUNBOOK_REF as RUNBOOK_REF,
    STATUSES,
    UNKNOWN_REASONS,
    Answer,
    Item,
)
from .summary import FROM_FINDINGS, MARKS, checklist_findings, checklist_table, combine, on_checklist, source_findings

__all__ = ["Item", "ITEMS", "Answer", "UNKNOWN_REASONS", "FROM_FINDINGS", "checklist_queries", "KEY_METRICS",
           "answer_caching", "answer_rate_limiting", "answer_compression", "answer_pagination",
           "answer_async", "answer_pool_configured", "answer_db_pooling", "answer_instance_size",
           "answer_horizontal_scaling", "answer_autoscaling", "answer_dashboard", "answer_alerts_configured",
           "answer_baselines", "unknown_answers", "measured_answers", "checklist_table", "checklist_findings",
           "combine", "on_checklist", "MARKS", "LEVELS", "STATUSES", "source_findings"]
