"""PostgreSQL, read through a session that cannot hurt production.

I/O only: every function runs one piece of SQL (written right above or inside it, once)
and returns plain data. The analysis lives in :mod:`perfbook.checks.database`.

Safety, in layers (the last one is the real guarantee):

1. :meth:`Session.query` refuses anything that is not a read: it parses each statement
   with pglast and accepts only SELECT / EXPLAIN / SHOW / PREPARE / EXECUTE / DEALLOCATE
   and a few harmless SETs; no INSERT/UPDATE/DELETE/MERGE anywhere (data-modifying CTEs
   included), no ``SELECT ... FOR UPDATE`` / ``INTO``, no functions that act on the server
   (``pg_terminate_backend``, ``set_config``, ``pg_stat_statements_reset`` ...).
2. The connection starts with ``-c default_transaction_read_only=on -c statement_timeout=5000
   -c lock_timeout=1000 -c application_name=perfbook`` (values from
   ``settings.database``), checked after connecting with ``SHOW`` and ``SET`` when missing
   (a pooler may drop startup options; a read-only role may have no timeouts): every
   transaction is read-only and bounded in time. Each statement carries a ``/*perfbook*/``
   tag, so the DBA sees whose it is in ``pg_stat_activity`` and in the logs, and perfbook leaves its own statements
   out of its analysis.
3. **Connect as a role that cannot write** (``CREATE ROLE perfbook LOGIN; GRANT pg_monitor
   TO perfbook;``): a read-only transaction can be switched off by anyone who can send
   SQL, a role's privileges cannot.

The DSN comes from the environment variable that ``targets.database_env`` names, read
inside the kernel; it is never printed. Errors name the server as
``postgresql://host:port/db`` (no user, no password).

This module is the source's face (import everything from here); the parts live beside it:
:mod:`.pg_readonly` (the read-only guard, layer 1), :mod:`.pg_session` (the session and its
guards, layer 2; timeouts; server, extensions, privileges) and :mod:`.pg_explain` (EXPLAIN,
EXPLAIN ANALYZE, hypopg). Here: pg_stat_statements, tables, indexes, activity, and the
app's own metrics about the database.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from .pg_explain import (
    analyzable,
    explain,
    explain_all,
    explain_analyze,
    explain_analyze_top,
    hypothetical_index_cost,
    is_single_select,
    verify_with_hypopg,
)
from .pg_readonly import (
    ANALYZE_SAFE_FUNCTIONS,
    ANALYZE_SAFE_OPERATORS,
    FORBIDDEN_FUNCTIONS,
    SETTABLE,
    ReadOnlyViolation,
    analyze_refusal,
    check_read_only,
    safe_dsn,
)
from .pg_session import (
    APPLICATION_NAME,
    SOURCE,
    TAG,
    Session,
    StatementTimeout,
    _bounded,
    _need,
    close,
    connect,
    extensions,
    privileges,
    require,
    server_info,
    timeout_problem,
)

__all__ = [
    "Session", "connect", "require", "ReadOnlyViolation", "server_info", "extensions", "statements",
    "statements_sql", "table_stats", "index_stats", "activity", "explain", "explain_analyze", "privileges",
    "analyzable", "ANALYZE_SAFE_FUNCTIONS",
    "hypothetical_index_cost", "explain_all", "verify_with_hypopg", "endpoint_requests", "pool_usage", "safe_dsn",
    "StatementTimeout", "timeout_problem",
    # re-exported from the split modules (pg_readonly, pg_session, pg_explain) for their users
    "SOURCE", "TAG", "APPLICATION_NAME", "check_read_only", "analyze_refusal", "is_single_select", "explain_analyze_top",
    "ANALYZE_SAFE_OPERATORS", "FORBIDDEN_FUNCTIONS", "SETTABLE", "close", "identity", "STATEMENTS_LIMIT",
]


# --------------------------------------------------------------------------- pg_stat_statements

#: Which column holds what, by pg_stat_statements' own column names. PostgreSQL 12
#: (extension 1.7): total_time/mean_time/max_time; 13 (1.8) renamed them *_exec_time and
#: added planning time; 14 (1.9) added ``toplevel``; 17 (1.11) renamed blk_read_time /
#: blk_write_time to shared_blk_read_time / shared_blk_write_time. The columns present
#: are read from the catalog, so an extension left at an older version after a server
#: upgrade is handled too.
_PGSS_VARIANTS = {
    "total_ms": ("total_exec_time", "total_time"),
    "mean_ms": ("mean_exec_time", "mean_time"),
    "max_ms": ("max_exec_time", "max_time"),
    "blk_read_ms": ("shared_blk_read_time", "blk_read_time"),
    "blk_write_ms": ("shared_blk_write_time", "blk_write_time"),
}


#: How many statements :func:`statements` reads at most (by total time).
STATEMENTS_LIMIT = 500


def statements_sql(columns: Iterable[str], schema: str = "public", limit: int = STATEMENTS_LIMIT) -> str:
    """The pg_stat_statements query for an extension with these ``columns``.

    Normalised output columns: queryid, username, query, calls, total_ms, mean_ms,
    max_ms, rows, rows_per_call, shared_blks_hit, shared_blks_read, hit_ratio,
    blk_read_ms, blk_write_ms, toplevel. Only the current database, only top-level
    statements (14+), never perfbook's own (tagged) statements; ordered by total time.
    """
    cols = set(columns)
    pick = {}
    for out, names in _PGSS_VARIANTS.items():
        pick[out] = next((f"s.{n}" for n in names if n in cols), "NULL::float8")
    toplevel = "s.toplevel" if "toplevel" in cols else "true"
    where_top = "AND s.toplevel" if "toplevel" in cols else ""
    ident = '"' + schema.replace('"', '""') + '"'
    return f"""
SELECT s.queryid, r.rolname AS username, s.query, s.calls,
       {pick['total_ms']} AS total_ms, {pick['mean_ms']} AS mean_ms, {pick['max_ms']} AS max_ms,
       s.rows, s.rows::float8 / NULLIF(s.calls, 0) AS rows_per_call,
       s.shared_blks_hit, s.shared_blks_read,
       s.shared_blks_hit::float8 / NULLIF(s.shared_blks_hit + s.shared_blks_read, 0) AS hit_ratio,
       {pick['blk_read_ms']} AS blk_read_ms, {pick['blk_write_ms']} AS blk_write_ms,
       {toplevel} AS toplevel
FROM {ident}.pg_stat_statements s
LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  {where_top}
  AND (s.query IS NULL OR s.query NOT LIKE '/*perfbook*/%')
ORDER BY {pick['total_ms']} DESC NULLS LAST
LIMIT {int(limit)}
""".strip()


PGSS_COLUMNS_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""

PGSS_INFO_SQL = "SELECT dealloc, stats_reset FROM {schema}.pg_stat_statements_info"

INSUFFICIENT = "<insufficient privilege>"


@_bounded
def statements(db: Session | None, limit: int = STATEMENTS_LIMIT) -> pd.DataFrame:
    """The top statements of the current database by total time (see :func:`statements_sql`).

    Never raises for a missing extension: the frame is empty and ``attrs`` say why:

    - ``attrs["unavailable"]``: ``"not_loaded"`` (not in shared_preload_libraries),
      ``"not_created"`` (loaded but no CREATE EXTENSION in this database) or ``None``;
    - ``attrs["hidden"]``: how many rows show ``<insufficient privilege>`` instead of
      their text (the role lacks pg_read_all_stats); those rows are kept, text and all;
    - ``attrs["sql"]``, ``attrs["stats_reset"]``, ``attrs["extension_version"]``.
    """
    import psycopg

    db = _need(db)
    exts = extensions(db)
    info = server_info(db)
    preload = [x.strip().strip('"') for x in (info.get("shared_preload_libraries") or "").split(",") if x.strip()]
    empty = pd.DataFrame(columns=["queryid", "username", "query", "calls", "total_ms", "mean_ms", "max_ms", "rows",
                                  "rows_per_call", "shared_blks_hit", "shared_blks_read", "hit_ratio",
                                  "blk_read_ms", "blk_write_ms", "toplevel"])
    base_attrs = {"unavailable": None, "hidden": 0, "hidden_total_ms": 0.0, "sql": "", "stats_reset": None,
                  "extension_version": None, "shared_preload_libraries": info.get("shared_preload_libraries"),
                  "server_version": info.get("version")}
    if "pg_stat_statements" not in exts:
        empty.attrs.update(base_attrs, unavailable="not_created" if "pg_stat_statements" in preload
                           or info.get("shared_preload_libraries") is None else "not_loaded")
        return empty
    schema = exts["pg_stat_statements"]["schema"]
    cols = [r["attname"] for r in db.rows(PGSS_COLUMNS_SQL, (f'"{schema}".pg_stat_statements',))]
    sql = statements_sql(cols, schema, limit)
    try:
        frame = db.query(sql)
    except psycopg.errors.ObjectNotInPrerequisiteState:
        # "pg_stat_statements must be loaded via shared_preload_libraries"
        empty.attrs.update(base_attrs, unavailable="not_loaded", extension_version=exts["pg_stat_statements"]["version"])
        return empty
    for c in ("calls", "rows", "shared_blks_hit", "shared_blks_read"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in ("total_ms", "mean_ms", "max_ms", "rows_per_call", "hit_ratio", "blk_read_ms", "blk_write_ms"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame["query"] = frame["query"].fillna(INSUFFICIENT).astype(str)
    hidden = frame["query"] == INSUFFICIENT
    stats_reset = None
    if db.major >= 14:  # pg_stat_statements_info came with 14
        try:
            r = db.rows(PGSS_INFO_SQL.format(schema='"' + schema.replace('"', '""') + '"'))
            stats_reset = r[0]["stats_reset"] if r else None
        except psycopg.Error:
            stats_reset = None
    frame.attrs.update(base_attrs, hidden=int(hidden.sum()), hidden_total_ms=float(frame.loc[hidden, "total_ms"].sum()),
                       sql=sql, stats_reset=stats_reset, extension_version=exts["pg_stat_statements"]["version"],
                       columns=sorted(cols))
    return frame


IDENTITY_SQL = """
SELECT current_database() AS database, pg_postmaster_start_time() AS postmaster_start, now() AS taken_at,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) AS database_reset
"""

#: Readable by PUBLIC on a stock server; a managed one may revoke it (then None).
SYSTEM_IDENTIFIER_SQL = "SELECT system_identifier::text AS system_identifier FROM pg_control_system()"


@_bounded
def identity(db: Session | None, statements_frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Which server and database this is, and when its statistics were reset, for the
    snapshot a later run computes its window from (:mod:`perfbook.checks.database.window`):
    ``system_identifier`` (None when not readable), ``database``, ``target`` (host:port/db,
    as perfbook connected: no secret), ``postmaster_start``, ``taken_at`` (the server's
    now()), ``database_reset`` (pg_stat_database) and ``statements_reset``
    (pg_stat_statements_info, from ``statements_frame``'s attrs: 14 and later)."""
    import psycopg

    db = _need(db)
    out = dict(db.rows(IDENTITY_SQL)[0])
    try:
        out["system_identifier"] = db.rows(SYSTEM_IDENTIFIER_SQL)[0]["system_identifier"]
    except psycopg.errors.InsufficientPrivilege:
        out["system_identifier"] = None
    out["target"] = db.target
    out["statements_reset"] = (statements_frame.attrs.get("stats_reset") if statements_frame is not None else None)
    return out


# --------------------------------------------------------------------------- tables and indexes

TABLE_STATS_SQL = """
SELECT s.schemaname AS schema, s.relname AS table,
       s.seq_scan, s.seq_tup_read, s.idx_scan, s.idx_tup_fetch,
       s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
       c.reltuples, c.reloptions,
       pg_table_size(s.relid) AS table_bytes, pg_total_relation_size(s.relid) AS total_bytes,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
ORDER BY s.seq_tup_read DESC
"""


@_bounded
def table_stats(db: Session | None) -> pd.DataFrame:
    """pg_stat_user_tables with reloptions (autovacuum_enabled=...), sizes and column names
    (pg_attribute: readable without SELECT on the table), one row per table."""
    frame = _need(db).query(TABLE_STATS_SQL)
    frame["reloptions"] = frame["reloptions"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame["columns"] = frame["columns"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame.attrs["sql"] = TABLE_STATS_SQL.strip()
    return frame


INDEX_STATS_SQL = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) AS backs_constraint,
       pg_relation_size(s.indexrelid) AS index_bytes,
       pg_get_indexdef(s.indexrelid) AS definition
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid
ORDER BY s.idx_scan ASC, pg_relation_size(s.indexrelid) DESC
"""


@_bounded
def index_stats(db: Session | None) -> pd.DataFrame:
    """pg_stat_user_indexes with uniqueness, constraint use, size and definition."""
    frame = _need(db).query(INDEX_STATS_SQL)
    frame.attrs["sql"] = INDEX_STATS_SQL.strip()
    return frame


# --------------------------------------------------------------------------- activity

ACTIVITY_SQL = """
SELECT a.pid, a.datname AS database, a.usename AS username, a.application_name,
       a.client_addr::text AS client_addr, a.backend_type, a.state,
       a.wait_event_type, a.wait_event,
       EXTRACT(EPOCH FROM now() - a.backend_start)::float8 AS backend_age_s,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_age_s,
       EXTRACT(EPOCH FROM now() - a.query_start)::float8 AS query_age_s,
       EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_age_s,
       pg_blocking_pids(a.pid) AS blocking_pids,
       left(a.query, 2000) AS query
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
ORDER BY a.query_start NULLS LAST
"""


@_bounded
def activity(db: Session | None) -> pd.DataFrame:
    """pg_stat_activity (every backend but perfbook's own), ages in seconds, blocking pids."""
    frame = _need(db).query(ACTIVITY_SQL)
    frame["blocking_pids"] = frame["blocking_pids"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame.attrs["sql"] = ACTIVITY_SQL.strip()
    return frame




def _range(seconds: float) -> str:
    return f"{max(60, int(round(seconds)))}s"


def endpoint_requests(prom: Any, params: Any, start: Any, end: Any) -> pd.DataFrame:
    """Requests per endpoint over the window, from Prometheus: ``sum by (method, route)
    (increase(http_requests_total[window]))``. Columns: endpoint, method, route, requests.

    ``prom`` is a :class:`perfbook.sources.prometheus.PromClient`.
    """
    m = params.metrics
    window = _range((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds())
    expr = prom.render(f"sum by ({m.method_label}, {m.route_label}) "
                       f"(increase({m.http_requests}{{__SEL__}}[{window}]))")
    frame = prom.query(expr, at=end)
    out = pd.DataFrame({
        "method": frame.get(m.method_label, pd.Series(dtype=str)).astype(str),
        "route": frame.get(m.route_label, pd.Series(dtype=str)).astype(str),
        "requests": frame.get("value", pd.Series(dtype=float)).astype(float)})
    out["endpoint"] = out["method"] + " " + out["route"]
    out = out[["endpoint", "method", "route", "requests"]].sort_values("requests", ascending=False)
    out.attrs["query"] = expr
    return out.reset_index(drop=True)


def pool_usage(prom: Any, params: Any, start: Any, end: Any) -> pd.DataFrame:
    """The application's DB connection pool over the window, per instance, from its
    metrics (prom-client / Prisma names by default): open and busy connections
    (``prisma_pool_connections_open/_busy``: max, average), the pool limit when exported
    (``settings.database.pool_max_metric``), queries waiting for a connection
    (``prisma_client_queries_wait``: average, max, share of the window with any) and the
    time they waited (``settings.database.pool_wait_histogram``, in ms: mean and p95).
    A metric the service does not export gives NaN.
    """
    m, d = params.metrics, params.settings.database
    w = _range((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds())
    inst = m.instance_label
    h = d.pool_wait_histogram
    exprs = {
        "pool_max": f"max by ({inst}) (max_over_time({d.pool_max_metric}{{__SEL__}}[{w}]))",
        "open_max": f"max by ({inst}) (max_over_time({m.db_pool_open}{{__SEL__}}[{w}]))",
        "busy_avg": f"max by ({inst}) (avg_over_time({m.db_pool_busy}{{__SEL__}}[{w}]))",
        "busy_max": f"max by ({inst}) (max_over_time({m.db_pool_busy}{{__SEL__}}[{w}]))",
        "waiting_avg": f"max by ({inst}) (avg_over_time({m.db_pool_wait}{{__SEL__}}[{w}]))",
        "waiting_max": f"max by ({inst}) (max_over_time({m.db_pool_wait}{{__SEL__}}[{w}]))",
        "waiting_share": f"max by ({inst}) (avg_over_time(({m.db_pool_wait}{{__SEL__}} > bool 0)[{w}:]))",
        "wait_mean_ms": f"sum by ({inst}) (increase({h}_sum{{__SEL__}}[{w}])) / "
                        f"sum by ({inst}) (increase({h}_count{{__SEL__}}[{w}]))",
        "wait_p95_ms": f"histogram_quantile(0.95, sum by ({inst}, le) (increase({h}_bucket{{__SEL__}}[{w}])))",
    }
    merged: pd.DataFrame | None = None
    queries = {}
    for col, template in exprs.items():
        expr = prom.render(template)
        queries[col] = expr
        frame = prom.query(expr, at=end)
        part = pd.DataFrame({"instance": frame.get(inst, pd.Series(dtype=str)).astype(str),
                             col: frame.get("value", pd.Series(dtype=float)).astype(float)})
        merged = part if merged is None else merged.merge(part, on="instance", how="outer")
    merged = merged if merged is not None else pd.DataFrame(columns=["instance", *exprs])
    merged = merged[merged["instance"] != "nan"].sort_values("instance").reset_index(drop=True)
    merged.attrs["queries"] = queries
    return merged
