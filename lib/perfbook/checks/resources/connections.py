"""Database connections (runbook Performance Baselines; part of
:mod:`perfbook.checks.resources`): the pool's open connections and waiting queries, and the
server's client connections in ``pg_stat_activity`` (Quick Diagnostics step 3).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding
from .coverage import _no_data
from .levels import _clean_series, _evidence, level_verdict

# --------------------------------------------------------------------------- database connections

DB_ADVICE = ("Runbook Performance Baselines (Database Connections 10-20 normal): find what holds connections — "
             "long transactions, slow queries, connections held across awaits (open the database section: "
             "pg_stat_activity, slow queries). Prisma: size `connection_limit` in DATABASE_URL so instances x "
             "limit stays under the server's max_connections; put PgBouncer in front when instances are many.")


def db_connections(pool_open: pd.DataFrame | None, pool_busy: pd.DataFrame | None, pool_wait: pd.DataFrame | None,
                   level: Any, server_connections: int | None = None, *, wait_warning: float,
                   wait_critical: float) -> tuple[pd.DataFrame, list[Finding]]:
    """``db.connections``: total connections against ``thresholds.db_connections``, and
    pool exhaustion per instance.

    Total: the sum of each instance's peak ``prisma_pool_connections_open`` over the
    window, or ``server_connections`` (client backends in ``pg_stat_activity``) when
    higher. Exhaustion: the share of scrapes in which ``prisma_client_queries_wait`` > 0;
    ``wait_warning`` (``settings.database.pool_exhausted_share``, 20 %) → warning,
    ``wait_critical`` (``pool_exhausted_share_critical``, 50 %) → critical — requests then
    queue for a connection whatever the database's own speed.
    """
    o, b, w = _clean_series(pool_open), _clean_series(pool_busy), _clean_series(pool_wait)
    instances = sorted(set(o["instance"]) | set(b["instance"]) | set(w["instance"]))
    rows = []
    for inst in instances:
        oi, bi, wi = (d[d["instance"] == inst]["value"] for d in (o, b, w))
        rows.append({"instance": inst, "open_max": oi.max() if len(oi) else np.nan,
                     "busy_mean": bi.mean() if len(bi) else np.nan, "busy_max": bi.max() if len(bi) else np.nan,
                     "waiting_max": wi.max() if len(wi) else np.nan,
                     "waiting_share": (wi > 0).mean() if len(wi) else np.nan, "samples": int(max(len(oi), len(wi)))})
    table = pd.DataFrame(rows, columns=["instance", "open_max", "busy_mean", "busy_max", "waiting_max",
                                        "waiting_share", "samples"])
    found: list[Finding] = []
    if table.empty and server_connections is None:
        return table, _no_data("db.connections", "DB connections", "prisma_pool_connections_open")
    pool_total = float(table["open_max"].sum()) if table["open_max"].notna().any() else None
    candidates = [v for v in (pool_total, server_connections) if v is not None]
    # No open-connection gauge and no server count (pool gauges other than Prisma's, the
    # database unreachable): the total is unknown; pool waits are still judged below.
    total = max(candidates) if candidates else None
    basis = ("pg_stat_activity client backends" if server_connections is not None and total == server_connections
             else "sum of each instance's peak open pool connections" if total is not None else "no data")
    verdict = level_verdict(total, level)
    ev = _evidence(total, "count", basis, level, pool_total=pool_total, server_connections=server_connections,
                   instances=len(table))
    if verdict in ("warning", "critical"):
        found.append(Finding("db.connections", verdict,
                             f"{total:.0f} database connections ({basis}); {verdict} at "
                             f"{level.critical if verdict == 'critical' else level.warning:.0f}",
                             subject="all instances", evidence=ev, recommendation=DB_ADVICE))
    exhausted = []
    for rec in table.to_dict("records"):
        share = rec["waiting_share"]
        if share is None or pd.isna(share):
            continue
        sev = "critical" if share >= wait_critical else "warning" if share >= wait_warning else None
        if sev:
            exhausted.append(rec["instance"])
            found.append(Finding(
                "db.connections", sev,
                f"DB pool exhausted on {rec['instance']}: queries waited for a connection in {share:.0%} of "
                f"scrapes (up to {rec['waiting_max']:.0f} waiting; {rec['busy_max']:.0f} of {rec['open_max']:.0f} "
                f"connections busy)",
                subject=str(rec["instance"]),
                evidence={"observed": share, "unit": "ratio", "statistic": "share of scrapes with queries waiting",
                          "normal": None, "warning": wait_warning, "critical": wait_critical,
                          "instance": rec["instance"], "waiting_max": rec["waiting_max"], "busy_max": rec["busy_max"],
                          "open_max": rec["open_max"], "samples": rec["samples"]},
                recommendation="Every connection of the pool is in use and queries queue for one. "
                               "Look for connections held across slow awaits or long transactions (database "
                               "section: pg_stat_activity 'idle in transaction'); raise Prisma's "
                               "`connection_limit` only within the server's max_connections. " + DB_ADVICE))
    if total is None:
        found.extend(_no_data("db.connections", "DB connections (total)", "prisma_pool_connections_open"))
    if verdict == "ok" and not exhausted:
        found.append(Finding("db.connections", "ok",
                             f"{total:.0f} database connections ({basis}), under the warning level "
                             f"{level.warning:.0f}; no query waited for a pool connection in "
                             f"{wait_warning:.0%} or more of scrapes", subject="all instances", evidence=ev))
    return table, found


def server_connections(activity: pd.DataFrame | None) -> tuple[int | None, pd.DataFrame]:
    """Client connections in ``pg_stat_activity`` (the runbook's Quick Diagnostics step 3),
    and their count by state / application. Background workers are not counted."""
    cols = ["application_name", "state", "connections"]
    if activity is None or activity.empty:
        return (0 if activity is not None else None), pd.DataFrame(columns=cols)
    a = activity
    if "backend_type" in a.columns:
        a = a[a["backend_type"].fillna("client backend") == "client backend"]
    table = (a.assign(application_name=a.get("application_name", "").fillna("").replace("", "(none)"),
                      state=a.get("state", "").fillna("(none)"))
             .groupby(["application_name", "state"]).size().rename("connections").reset_index()
             .sort_values("connections", ascending=False, ignore_index=True))
    return int(len(a)), table[cols]
