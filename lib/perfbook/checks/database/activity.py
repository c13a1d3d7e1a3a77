"""Connections and what they are doing (runbook Issue 1 §4 "Database Bottleneck"; part of
:mod:`perfbook.checks.database`): connection states and limits, long-running statements,
lock waits, connection-pool saturation.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Database
from .shapes import quote_ident, short_query

# --------------------------------------------------------------------------- connections


def connection_states(act: pd.DataFrame) -> pd.DataFrame:
    """Client connections by database, user and state (the runbook's ``SELECT * FROM
    pg_stat_activity``, counted)."""
    c = act[act["backend_type"] == "client backend"] if "backend_type" in act else act
    if c.empty:
        return pd.DataFrame(columns=["database", "username", "state", "connections", "oldest_state_s"])
    g = c.fillna({"state": "(hidden)", "database": "", "username": ""}).groupby(
        ["database", "username", "state"], dropna=False)
    out = g.agg(connections=("pid", "count"), oldest_state_s=("state_age_s", "max")).reset_index()
    return out.sort_values("connections", ascending=False).reset_index(drop=True)


def connections(act: pd.DataFrame, info: dict, levels: Any,
                settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """Client connections vs the runbook's levels (``thresholds.db_connections``: warning
    50, critical 80) and vs max_connections less the superuser reserve
    (``settings.max_connections_share``, 75 %; ``max_connections_share_critical``, 90 %).
    Idle-in-transaction sessions are counted in the evidence."""
    table = connection_states(act)
    c = act[act["backend_type"] == "client backend"] if "backend_type" in act else act
    n = int(len(c))
    usable = int(info.get("max_connections") or 0) - int(info.get("superuser_reserved") or 0)
    share = n / usable if usable > 0 else 0.0
    states = c["state"].fillna("(hidden)").value_counts().to_dict()
    sev = "ok"
    if n >= levels.critical or share >= settings.max_connections_share_critical:
        sev = "critical"
    elif n >= levels.warning or share >= settings.max_connections_share:
        sev = "warning"
    iit = int(states.get("idle in transaction", 0) + states.get("idle in transaction (aborted)", 0))
    ev = {"connections": n, "max_connections": info.get("max_connections"), "usable": usable,
          "used_pct": 100 * share, "by_state": states, "idle_in_transaction": iit,
          "warning_level": levels.warning, "critical_level": levels.critical}
    title = (f"{n} client connections ({100 * share:.0f} % of {usable} usable); "
             f"{states.get('active', 0)} active, {states.get('idle', 0)} idle, {iit} idle in transaction")
    rec = ("-- Who holds them?\nSELECT usename, application_name, state, count(*) FROM pg_stat_activity\n"
           "GROUP BY 1, 2, 3 ORDER BY 4 DESC;\n"
           "-- Put a pooler in front (PgBouncer, transaction mode) or lower the app's pool size\n"
           "-- (Prisma: ?connection_limit=N in DATABASE_URL, per instance).\n"
           "-- Sessions left idle in a transaction:\n"
           "ALTER DATABASE current_db SET idle_in_transaction_session_timeout = '60s';") if sev != "ok" else ""
    return table, [Finding("db.connections", sev, title, subject=info.get("database") or "postgres",
                           evidence=ev, recommendation=rec.replace("current_db", quote_ident(info.get("database") or "postgres")))]


def long_running(act: pd.DataFrame, settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """Statements running longer than ``settings.long_running`` (60 s — pghero's
    long-running queries) and transactions idle for as long; critical from
    ``long_running_critical_factor`` (5) times as long."""
    limit_s = settings.long_running
    cols = ["pid", "username", "application_name", "state", "query_age_s", "xact_age_s", "wait_event", "query"]
    c = act[act["backend_type"] == "client backend"] if "backend_type" in act else act
    active = c[(c["state"] == "active") & (c["query_age_s"].fillna(0) > limit_s)]
    idle_tx = c[c["state"].fillna("").str.startswith("idle in transaction") & (c["state_age_s"].fillna(0) > limit_s)]
    hits = pd.concat([active, idle_tx]).drop_duplicates("pid")
    found = []
    for r in hits.to_dict("records"):
        age = r["query_age_s"] if r["state"] == "active" else r["state_age_s"]
        what = "running" if r["state"] == "active" else "idle in transaction"
        found.append(Finding(
            "db.long_running", "critical" if age >= settings.long_running_critical_factor * limit_s else "warning",
            f"pid {r['pid']} ({r['username']}) {what} for {age:.0f} s",
            subject=short_query(r["query"] or f"pid {r['pid']}"),
            evidence={"pid": r["pid"], "username": r["username"], "application_name": r["application_name"],
                      "state": r["state"], "seconds": age, "xact_age_s": r["xact_age_s"],
                      "wait_event": r["wait_event"], "query": r["query"], "threshold_s": limit_s},
            recommendation=(f"SELECT pg_cancel_backend({r['pid']});     -- cancel the statement\n"
                            f"SELECT pg_terminate_backend({r['pid']});  -- or end the session\n"
                            f"-- and bound it: ALTER ROLE {quote_ident(r['username'] or 'app')} SET statement_timeout = '30s';")))
    if not found:
        found.append(Finding("db.long_running", "ok",
                             f"No statement running, nor transaction idle, longer than {limit_s:.0f} s",
                             subject="pg_stat_activity",
                             evidence={"sessions": int(len(c)), "threshold_s": limit_s,
                                       "longest_active_s": float(c.loc[c["state"] == "active", "query_age_s"].max())
                                       if (c["state"] == "active").any() else 0.0}))
    return hits[cols].reset_index(drop=True), found


def lock_waits(act: pd.DataFrame, settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """Sessions waiting on a lock, grouped by the pid that blocks them
    (pg_blocking_pids); critical when a blocker holds up ≥ ``settings.lock_wait_critical_sessions``
    (5) sessions or for ≥ ``lock_wait_critical`` (60 s)."""
    cols = ["pid", "blocking_pids", "wait_event", "query_age_s", "query", "blocker_state", "blocker_query"]
    waiting = act[act["blocking_pids"].map(len) > 0].copy()
    if waiting.empty:
        return pd.DataFrame(columns=cols), [Finding("db.lock_waits", "ok", "No session is waiting on a lock",
                                                    subject="pg_locks", evidence={"waiting": 0})]
    by_pid = act.set_index("pid").to_dict("index")
    waiting["blocker_state"] = waiting["blocking_pids"].map(lambda b: (by_pid.get(b[0]) or {}).get("state"))
    waiting["blocker_query"] = waiting["blocking_pids"].map(lambda b: (by_pid.get(b[0]) or {}).get("query"))
    found = []
    for blocker, g in waiting.explode("blocking_pids").groupby("blocking_pids"):
        b = by_pid.get(blocker) or {}
        longest = float(g["query_age_s"].max() or 0)
        found.append(Finding(
            "db.lock_waits",
            "critical" if len(g) >= settings.lock_wait_critical_sessions or longest >= settings.lock_wait_critical
            else "warning",
            f"pid {blocker} ({b.get('state') or 'unknown state'}) blocks {len(g)} session(s), longest wait {longest:.0f} s",
            subject=f"pid {blocker}",
            evidence={"blocking_pid": blocker, "blocker_state": b.get("state"), "blocker_query": b.get("query"),
                      "blocker_xact_age_s": b.get("xact_age_s"), "waiting_pids": g["pid"].tolist(),
                      "longest_wait_s": longest, "waiting_queries": g["query"].map(short_query).tolist()[:5]},
            recommendation=(f"-- what does pid {blocker} hold?\n"
                            f"SELECT locktype, relation::regclass, mode, granted FROM pg_locks WHERE pid = {blocker};\n"
                            f"SELECT pg_terminate_backend({blocker});  -- only if it is stuck (idle in transaction)")))
    return waiting[cols].reset_index(drop=True), found


def pool_saturation(pool: pd.DataFrame, settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """The application's connection pool (Prisma's pool metrics, from Prometheus).

    Saturated on an instance when the pool was *full* (busy connections reached its limit —
    ``pool_max`` when exported, else the most connections it had open) *and* queries
    *waited* for a connection: p95 wait ≥ ``settings.pool_wait_p95`` (20 ms) or mean wait ≥
    ``pool_wait_mean`` (5 ms) (from the wait-time histogram), or some query waiting during
    ≥ ``pool_waiting_share`` (10 %) of the window. Critical from a p95 wait of
    ``pool_wait_p95_critical`` (500 ms) or waiting ``pool_waiting_share_critical`` (half)
    of the time. A healthy pool hands out a connection in well under a millisecond. One
    finding for all instances (subject ``connection pool``), the worst instance's numbers
    in the evidence.
    """
    wait_p95_ms, wait_mean_ms = 1000 * settings.pool_wait_p95, 1000 * settings.pool_wait_mean
    critical_p95_ms, waiting_share = 1000 * settings.pool_wait_p95_critical, settings.pool_waiting_share
    cols = ["instance", "pool_max", "open_max", "busy_avg", "busy_max", "waiting_avg", "waiting_max",
            "waiting_share", "wait_mean_ms", "wait_p95_ms"]
    if pool is None or pool.empty or pool.drop(columns=["instance"]).isna().all().all():
        return pd.DataFrame(columns=cols), [Finding(
            "db.connections", "info", "No connection-pool metrics in the window "
            "(prisma_pool_connections_* / prisma_client_queries_wait)",
            subject="connection pool", evidence={"instances": 0})]
    p = pool.reindex(columns=cols).copy()
    limit = p["pool_max"].where(p["pool_max"].notna(), p["open_max"])
    full = p["busy_max"].fillna(0) >= limit.fillna(float("inf"))
    waited = ((p["wait_p95_ms"].fillna(0) >= wait_p95_ms) | (p["wait_mean_ms"].fillna(0) >= wait_mean_ms)
              | (p["waiting_share"].fillna(0) >= waiting_share))
    p["saturated"] = full & waited
    p = p.sort_values(["saturated", "wait_p95_ms", "waiting_share"], ascending=False, na_position="last")
    worst = p.iloc[0].to_dict()
    sat = p[p["saturated"]]
    f = lambda v, fmt: "n/a" if v is None or pd.isna(v) else format(v, fmt)  # noqa: E731
    if sat.empty:
        sev = "ok"
        bars = (f"bars: p95 ≥ {wait_p95_ms:g} ms, mean ≥ {wait_mean_ms:g} ms, or waiting ≥ "
                f"{100 * waiting_share:.0f} % of the window")
        if full.any():
            title = (f"Connection pool full at times on {int(full.sum())} of {len(p)} instance(s), but queries "
                     f"did not wait long for a connection (worst: p95 {f(worst['wait_p95_ms'], '.1f')} ms, mean "
                     f"{f(worst['wait_mean_ms'], '.1f')} ms, waiting {f(100 * worst['waiting_share'], '.0f')} % of "
                     f"the window; {bars}): not saturated")
        else:
            title = (f"Connection pool not saturated: busy at most {f(p['busy_max'].max(), '.0f')} of "
                     f"{f(limit.max(), '.0f')}, p95 wait for a connection {f(worst['wait_p95_ms'], '.1f')} ms")
    else:
        crit = ((sat["wait_p95_ms"].fillna(0) >= critical_p95_ms)
                | (sat["waiting_share"].fillna(0) >= settings.pool_waiting_share_critical))
        sev = "critical" if crit.any() else "warning"
        known = [txt for v, txt in (
            (worst["wait_p95_ms"], f"p95 {f(worst['wait_p95_ms'], '.0f')} ms"),
            (worst["wait_mean_ms"], f"mean {f(worst['wait_mean_ms'], '.1f')} ms"),
            (worst["waiting_share"], f"waiting {f(100 * worst['waiting_share'], '.0f')} % of the window"),
            (worst["waiting_max"], f"up to {f(worst['waiting_max'], '.0f')} at once")) if not pd.isna(v)]
        title = (f"Connection pool saturated on {len(sat)} of {len(p)} instance(s): all "
                 f"{f(worst['pool_max'] if not pd.isna(worst['pool_max']) else worst['open_max'], '.0f')} connections "
                 f"busy and queries waiting for one" + (f" ({', '.join(known)})" if known else ""))
    ev = {"instances": len(p), "saturated_instances": sat["instance"].tolist(), "worst_instance": worst["instance"],
          **{k: worst[k] for k in cols if k != "instance"},
          "threshold_wait_p95_ms": wait_p95_ms, "threshold_wait_mean_ms": wait_mean_ms}
    rec = ("// Find what holds connections: a transaction kept open across a slow call, slow queries\n"
           "// (see idle-in-transaction sessions and slow queries above); fix that first. Then size the\n"
           "// pool per instance, keeping instances x connection_limit under max_connections (or PgBouncer):\n"
           "// DATABASE_URL=postgresql://...?connection_limit=10&pool_timeout=10") if sev != "ok" else ""
    return p.reset_index(drop=True), [Finding("db.connections", sev, title, subject="connection pool",
                                              evidence=ev, recommendation=rec)]


def promql_text(queries: dict) -> str:
    """PromQL expressions, one per line, under their column names."""
    return "\n".join(f"# {k}\n{v}" for k, v in (queries or {}).items()) or "(none)"
