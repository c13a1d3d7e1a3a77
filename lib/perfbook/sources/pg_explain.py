"""EXPLAIN through the PostgreSQL session (:mod:`perfbook.sources.postgres`): plain plans
(generic plans for ``$n`` texts), EXPLAIN ANALYZE of the statements the guard deems safe to
run, and hypothetical indexes with hypopg.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..sql import walk
from .pg_readonly import ReadOnlyViolation, analyze_refusal, check_read_only
from .pg_session import TAG, Session, StatementTimeout, _bounded, _need, extensions


def _param_count(query: str) -> int:
    """Highest ``$n`` in a statement (pglast when it parses; a regex otherwise)."""
    try:
        from pglast import ast, parse_sql
        nums = [n.number for n in walk(parse_sql(query)) if isinstance(n, ast.ParamRef)]
        return max(nums, default=0)
    except Exception:  # noqa: BLE001
        return max((int(m) for m in re.findall(r"\$(\d+)", query)), default=0)


@_bounded
def explain(db: Session | None, query: str) -> dict[str, Any]:
    """Plain ``EXPLAIN (FORMAT JSON)`` of one SELECT; never runs it.

    Texts with ``$n`` placeholders (pg_stat_statements' normalised form) get a generic
    plan: ``EXPLAIN (GENERIC_PLAN)`` on PostgreSQL 16+, before that ``PREPARE`` and
    ``EXECUTE`` with NULLs under ``plan_cache_mode = force_generic_plan`` (the planner
    ignores the values of a generic plan). Returns the top plan node (``{"Node Type":
    ..., "Plans": [...]}``) with ``"Total Cost"``.
    """
    db = _need(db)
    n = _param_count(query)
    body = query.strip().rstrip(";")
    if n == 0:
        return db.value(f"EXPLAIN (FORMAT JSON) {body}")[0]["Plan"]
    if db.major >= 16:
        return db.value(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {body}")[0]["Plan"]
    name = f"perfbook_explain_{db._prepared}"
    db._prepared += 1
    db.query(f"PREPARE {name} AS {body}")
    try:
        db.query("SET plan_cache_mode = force_generic_plan")
        nulls = ", ".join(["NULL"] * n)
        return db.value(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")[0]["Plan"]
    finally:
        try:
            db.query(f"DEALLOCATE {name}")
            db.query("SET plan_cache_mode = auto")
        except Exception:  # noqa: BLE001 - the session may be gone; nothing to clean then
            pass


def is_single_select(query: str) -> bool:
    """One statement, a plain SELECT (no INTO / FOR UPDATE, no data-modifying CTE)."""
    from pglast import ast, parse_sql

    try:
        stmts = parse_sql(query)
    except Exception:  # noqa: BLE001
        return False
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return False
    try:
        check_read_only(query)
    except ReadOnlyViolation:
        return False
    return True


def analyzable(query: str) -> str | None:
    """Why ``query`` may not be EXPLAIN ANALYZEd (None when it may): it must be a single
    plain SELECT (:func:`is_single_select`) calling only allow-listed functions and
    operators (:func:`analyze_refusal`)."""
    from pglast import parse_sql

    if not is_single_select(query):
        return "not a single plain SELECT"
    return analyze_refusal(parse_sql(query)[0].stmt)


@_bounded
def explain_analyze(db: Session | None, query: str, params: Any = None) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of a single SELECT: it *runs* the query.

    Refused (ValueError) unless ``query`` is a single plain SELECT calling only functions
    and operators of an allow-list (:func:`analyzable`, checked with pglast);
    runs inside a read-only transaction that is rolled back, under ``statement_timeout``.
    Queries with ``$n`` need ``params``. Call it only when ``settings.database.explain_analyze``
    says so.
    """
    db = _need(db)
    why = analyzable(query)
    if why:
        raise ReadOnlyViolation(f"EXPLAIN ANALYZE runs the statement, so perfbook refuses it: {why}")
    if _param_count(query) and not params:
        raise ValueError("this statement has $n placeholders: give their values to EXPLAIN ANALYZE it")
    db.conn.execute(f"{TAG} BEGIN READ ONLY")
    try:
        db.conn.execute(f"{TAG} SET LOCAL statement_timeout = {int(db.statement_timeout * 1000)}")
        plan = db.value(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query.strip().rstrip(';')}", params)
    finally:
        if not db.conn.closed:
            db.conn.execute(f"{TAG} ROLLBACK")
    return plan[0]["Plan"] | {"Execution Time": plan[0].get("Execution Time")}


@_bounded
def explain_analyze_top(db: Session | None, candidates: pd.DataFrame, enabled: bool = False,
                        limit: int = 5) -> pd.DataFrame:
    """:func:`explain_analyze` of up to ``limit`` candidate statements, only when
    ``enabled`` (``settings.database.explain_analyze``). Statements with ``$n`` placeholders
    or that are not a single SELECT are listed as skipped, with the reason."""
    import psycopg

    cols = ["query", "execution_ms", "node", "actual_rows", "shared_hit", "shared_read", "skipped"]
    if not enabled:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = "EXPLAIN ANALYZE is off (settings.database.explain_analyze: false): plain EXPLAIN only."
        return out
    db = _need(db)
    rows = []
    for r in candidates.head(limit).to_dict("records"):
        q = r["query"]
        row = {"query": q, "execution_ms": None, "node": None, "actual_rows": None, "shared_hit": None,
               "shared_read": None, "skipped": None}
        why = analyzable(q)
        if isinstance(r.get("skip"), str) and r["skip"]:
            row["skipped"] = r["skip"]
        elif why:
            row["skipped"] = why
        elif _param_count(q):
            row["skipped"] = "has $n placeholders (values unknown)"
        else:
            try:
                plan = explain_analyze(db, q)
                row.update(execution_ms=plan.get("Execution Time"), node=plan.get("Node Type"),
                           actual_rows=plan.get("Actual Rows"), shared_hit=plan.get("Shared Hit Blocks"),
                           shared_read=plan.get("Shared Read Blocks"))
            except StatementTimeout as exc:
                row["skipped"] = f"timed out: {exc.reason[:160]}"
            except psycopg.Error as exc:
                row["skipped"] = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


@_bounded
def hypothetical_index_cost(db: Session | None, query: str, create_index: str) -> dict[str, float]:
    """The planner's estimated total cost of ``query`` without and with a hypothetical
    index (hypopg; dexter's check). ``create_index`` is a ``CREATE INDEX ... ON t (...)``
    statement (CONCURRENTLY and a name are dropped). hypopg keeps hypothetical indexes in
    this backend's memory only; nothing is written. Needs ``CREATE EXTENSION hypopg`` in
    the database.
    """
    db = _need(db)
    ddl = re.sub(r"\bCONCURRENTLY\s+", "", create_index, flags=re.I)
    ddl = re.sub(r"(?i)^\s*CREATE\s+INDEX\s+(IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|\w+)?\s*ON\b", "CREATE INDEX ON", ddl)
    before = float(explain(db, query)["Total Cost"])
    db.query("SELECT indexrelid FROM hypopg_create_index(%s)", (ddl,))
    try:
        after = float(explain(db, query)["Total Cost"])
    finally:
        db.query("SELECT hypopg_reset()")
    return {"cost_before": before, "cost_after": after}


@_bounded
def explain_all(db: Session | None, candidates: pd.DataFrame) -> pd.DataFrame:
    """:func:`explain` for each row (``queryid``, ``query``) of ``candidates``.

    Columns: queryid, query, plan (dict or None), error (why a statement could not be
    explained: no SELECT privilege on a table it reads (InsufficientPrivilege), types the
    planner cannot infer from ``$n``, a dropped table...). A row whose ``skip`` column
    holds a reason (:func:`perfbook.checks.database.explain_candidates`: a table the role
    cannot read) is not sent; the reason becomes its error.
    """
    import psycopg

    db = _need(db)
    out = []
    for r in candidates.to_dict("records"):
        skip = r.get("skip")
        if isinstance(skip, str) and skip:
            out.append({"queryid": r["queryid"], "query": r["query"], "plan": None, "error": skip})
            continue
        try:
            plan, err = explain(db, r["query"]), None
        except StatementTimeout as exc:
            plan, err = None, f"timed out: {exc.reason[:200]}"
        except (psycopg.Error, ReadOnlyViolation) as exc:
            plan, err = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        out.append({"queryid": r["queryid"], "query": r["query"], "plan": plan, "error": err})
    return pd.DataFrame(out, columns=["queryid", "query", "plan", "error"])


@_bounded
def verify_with_hypopg(db: Session | None, suggestions: Iterable[Any]) -> dict | None:
    """Planner cost without/with each suggested index, as hypothetical indexes (hypopg):
    ``{(queryid, table): {"cost_before", "cost_after"}}``; ``None`` when the hypopg
    extension is not installed in this database (``CREATE EXTENSION hypopg``)."""
    import psycopg

    db = _need(db)
    if "hypopg" not in extensions(db):
        return None
    out = {}
    for s in suggestions:
        try:
            out[(s.queryid, s.table)] = hypothetical_index_cost(db, s.query, s.create_index)
        except StatementTimeout as exc:
            out[(s.queryid, s.table)] = {"cost_before": None, "cost_after": None, "error": f"timed out: {exc.reason[:200]}"}
        except psycopg.Error as exc:
            out[(s.queryid, s.table)] = {"cost_before": None, "cost_after": None, "error": str(exc)[:200]}
    return out


# --------------------------------------------------------------------------- from the app's metrics
