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

The checks live in submodules, every name re-exported here (``from perfbook.checks import
resources; resources.cpu_saturation(...)`` works): :mod:`.levels` (judging a window),
:mod:`.coverage` (which metrics exist), :mod:`.cpu`, :mod:`.instances`, :mod:`.memory`,
:mod:`.eventloop`, :mod:`.connections`, :mod:`.errors`, :mod:`.timeshare` (where the time
goes) and :mod:`.triage` (the verdict table and where to look next).
"""
from __future__ import annotations

from .connections import DB_ADVICE, db_connections, server_connections
from .coverage import (
    PROM_CLIENT_DEFAULT_FAMILIES,
    PROM_CLIENT_DEFAULT_METRICS,
    is_runtime_metric,
    metric_coverage,
    metric_exists,
)
from .cpu import CPU_ADVICE, cpu_saturation, limits_by_instance, moving_with_cpu
from .errors import ERROR_ADVICE, error_rates
from .eventloop import LAG_ADVICE, eventloop_lag
from .instances import DOWN_ADVICE, GAP_ADVICE, instances_down
from .levels import (
    AREAS,
    MB,
    level_verdict,
    recurring_level,
    sustained_level,
    window_stats,
)
from .memory import MEMORY_ADVICE, linear_fit, memory_growth, memory_pressure
from .timeshare import cpu_route_correlation, time_share_summary, time_shares, where_time_goes
from .triage import open_next, triage_signals, verdict_table

__all__ = [
    "AREAS",
    "MB",
    "level_verdict",
    "sustained_level",
    "recurring_level",
    "window_stats",
    "PROM_CLIENT_DEFAULT_FAMILIES",
    "PROM_CLIENT_DEFAULT_METRICS",
    "is_runtime_metric",
    "metric_exists",
    "metric_coverage",
    "CPU_ADVICE",
    "cpu_saturation",
    "moving_with_cpu",
    "limits_by_instance",
    "DOWN_ADVICE",
    "instances_down",
    "GAP_ADVICE",
    "MEMORY_ADVICE",
    "memory_pressure",
    "linear_fit",
    "memory_growth",
    "LAG_ADVICE",
    "eventloop_lag",
    "DB_ADVICE",
    "db_connections",
    "server_connections",
    "ERROR_ADVICE",
    "error_rates",
    "time_shares",
    "time_share_summary",
    "cpu_route_correlation",
    "where_time_goes",
    "verdict_table",
    "triage_signals",
    "open_next",
]
