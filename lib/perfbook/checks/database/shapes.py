"""Statement shapes and slow queries (runbook Issue 2 "Slow Queries"; part of
:mod:`perfbook.checks.database`).

Text helpers (quoting, short statement text, table names), the shape of a statement read
with pglast (:func:`query_shape`), whether pg_stat_statements can be read at all
(:func:`statements_available`), the top and slow statements and the EXPLAIN recipe.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Database
from ...sql import walk

# --------------------------------------------------------------------------- text helpers

_WS = re.compile(r"\s+")
_SIMPLE_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")
_RESERVED = {"user", "order", "group", "table", "select", "where", "from", "limit", "offset", "check",
             "column", "default", "index", "end", "primary", "references", "desc", "asc", "all", "and", "or"}

#: Statements that are never the point of a query check (transaction control, settings).
UTILITY = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START|END|SAVEPOINT|RELEASE|SET|RESET|SHOW|DEALLOCATE|"
                     r"DISCARD|LISTEN|UNLISTEN|NOTIFY|PREPARE TRANSACTION|COMMIT PREPARED)\b", re.I)


def quote_ident(name: str) -> str:
    """``name`` as a SQL identifier (quoted only when it must be)."""
    if _SIMPLE_IDENT.match(name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def short_query(text: str, width: int = 100) -> str:
    """One line: whitespace collapsed, a long SELECT list shown as ``…``, cut at ``width``.

    ``SELECT p.id, p.name, ... FROM products p WHERE p.category_id = $1`` becomes
    ``SELECT … FROM products p WHERE p.category_id = $1``, so the table stays visible.
    """
    one = _WS.sub(" ", str(text)).strip()
    m = re.match(r"(?is)^(SELECT\s+(?:DISTINCT\s+)?)(.+?)(\s+FROM\s+.*)$", one)
    if m and len(m.group(2)) > 24:
        one = m.group(1) + "…" + m.group(3)
    return one if len(one) <= width else one[: width - 1] + "…"


def singular(table: str) -> str:
    """``categories`` → ``category``, ``products`` → ``product`` (English plural rules only)."""
    t = table.lower()
    if t.endswith("ies") and len(t) > 4:
        return t[:-3] + "y"
    if t.endswith(("sses", "xes", "ches", "shes")):
        return t[:-2]
    if t.endswith("s") and not t.endswith("ss"):
        return t[:-1]
    return t


def _norm_col(name: str) -> str:
    return name.replace('"', "").replace("_", "").lower()


def display_table(schema: str | None, table: str) -> str:
    return table if schema in (None, "", "public") else f"{schema}.{table}"


def _qualified(table: str) -> str:
    return ".".join(quote_ident(p) for p in table.split(".", 1))


def _qualified_index(schema: str | None, index: str) -> str:
    """``schema.index`` for DDL (DROP INDEX), quoted where needed; the bare name when the
    schema is unknown."""
    if schema is None or (isinstance(schema, float) and pd.isna(schema)) or schema == "":
        return quote_ident(index)
    return f"{quote_ident(schema)}.{quote_ident(index)}"


# --------------------------------------------------------------------------- statement shape (pglast)


@dataclass
class Shape:
    """What a statement does, from its parse tree (pglast)."""

    parsed: bool = False
    kind: str = "other"                 # select, insert, update, delete, utility, other
    tables: list[str] = field(default_factory=list)      # relations in FROM (incl. joins, subqueries)
    from_tables: list[str] = field(default_factory=list)  # relations of the top-level FROM
    aliases: dict[str, str] = field(default_factory=dict)  # alias → relation
    has_limit: bool = False
    has_where: bool = False
    aggregate: bool = False
    key_columns: list[str] = field(default_factory=list)  # col = $n terms of a single-table lookup
    order_by: list[tuple[str | None, str, bool]] = field(default_factory=list)  # (alias, column, desc)
    target_columns: list[str] = field(default_factory=list)


_AGGREGATES = {"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
               "bool_and", "bool_or", "every", "stddev", "variance"}


def _colref(node: Any) -> tuple[str | None, str] | None:
    from pglast import ast
    if isinstance(node, ast.TypeCast):   # ($1)::int = col and col::text casts on the *value* side
        return None
    if isinstance(node, ast.ColumnRef):
        parts = [getattr(f, "sval", None) for f in node.fields]
        if parts and all(parts):
            return (parts[-2] if len(parts) >= 2 else None, parts[-1])
    return None


def _is_value(node: Any) -> bool:
    """A parameter, a constant, or a cast of one."""
    from pglast import ast
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, (ast.ParamRef, ast.A_Const))


def _and_terms(node: Any) -> list[Any]:
    from pglast import ast
    from pglast.enums import BoolExprType
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        out = []
        for a in node.args:
            out.extend(_and_terms(a))
        return out
    return [node] if node is not None else []


def query_shape(text: str) -> Shape:
    """Parse ``text`` with pglast; a statement pglast cannot parse gets ``parsed=False``."""
    from pglast import ast, parse_sql
    from pglast.enums import A_Expr_Kind, SortByDir

    shape = Shape()
    if UTILITY.match(text or ""):
        shape.kind = "utility"
        return shape
    try:
        stmts = parse_sql(text)
    except Exception:  # noqa: BLE001 - truncated texts, <insufficient privilege>, other dialects
        return shape
    if len(stmts) != 1:
        return shape
    stmt = stmts[0].stmt
    shape.parsed = True
    kinds = {"SelectStmt": "select", "InsertStmt": "insert", "UpdateStmt": "update", "DeleteStmt": "delete"}
    shape.kind = kinds.get(type(stmt).__name__, "utility" if not isinstance(stmt, ast.SelectStmt) else "select")
    for node in walk(stmt):
        if isinstance(node, ast.RangeVar):
            shape.tables.append(node.relname)
            if node.alias is not None:
                shape.aliases[node.alias.aliasname] = node.relname
            shape.aliases.setdefault(node.relname, node.relname)
        elif isinstance(node, ast.FuncCall) and (node.funcname[-1].sval or "").lower() in _AGGREGATES and not node.over:
            shape.aggregate = True
    shape.tables = list(dict.fromkeys(shape.tables))
    if not isinstance(stmt, ast.SelectStmt):
        return shape
    sel = stmt
    if sel.op and sel.larg is not None:  # UNION etc.: look at the left arm for FROM/WHERE
        sel = sel.larg
    shape.has_limit = stmt.limitCount is not None or sel.limitCount is not None
    shape.has_where = sel.whereClause is not None
    if sel.groupClause:
        shape.aggregate = True
    for item in sel.fromClause or ():
        if isinstance(item, ast.RangeVar):
            shape.from_tables.append(item.relname)
    for t in sel.targetList or ():
        ref = _colref(getattr(t, "val", None))
        if ref:
            shape.target_columns.append(ref[1])
        if getattr(t, "name", None):
            shape.target_columns.append(t.name)
    for sb in stmt.sortClause or ():
        ref = _colref(sb.node)
        if ref:
            shape.order_by.append((ref[0], ref[1], sb.sortby_dir == SortByDir.SORTBY_DESC))
    # A key lookup: one table, WHERE made only of `col = $n` (and constant/param noise like Prisma's 1=1).
    if len(sel.fromClause or ()) == 1 and isinstance(sel.fromClause[0], ast.RangeVar) and sel.whereClause is not None:
        keys: list[str] = []
        for term in _and_terms(sel.whereClause):
            if isinstance(term, ast.A_Expr) and term.kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_IN) \
                    and term.name[-1].sval == "=":
                left, right = _colref(term.lexpr), _colref(term.rexpr)
                value_l = _is_value(term.lexpr)
                value_r = _is_value(term.rexpr) or (isinstance(term.rexpr, (list, tuple)) and len(term.rexpr) == 1
                                                    and _is_value(term.rexpr[0]))
                if left and value_r:
                    keys.append(left[1])
                    continue
                if right and value_l:
                    keys.append(right[1])
                    continue
                if value_l and value_r:
                    continue
            keys = []
            break
        shape.key_columns = keys
    return shape


# --------------------------------------------------------------------------- pg_stat_statements health


def statements_available(stmts: pd.DataFrame) -> list[Finding]:
    """Can the query checks run? ``error`` when pg_stat_statements is missing (with the
    exact steps to enable it); ``info`` when rows are hidden for want of privilege."""
    a = stmts.attrs
    why = a.get("unavailable")
    if why:
        libs = a.get("shared_preload_libraries") or ""
        new = ", ".join([x for x in [libs.strip()] if x] + ["pg_stat_statements"])
        steps = ("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;  -- in this database, as a superuser"
                 if why == "not_created" else
                 f"ALTER SYSTEM SET shared_preload_libraries = '{new}';\n"
                 f"-- restart PostgreSQL (the library loads at start; on Fly.io: fly postgres restart), then:\n"
                 f"CREATE EXTENSION IF NOT EXISTS pg_stat_statements;")
        what = ("pg_stat_statements is loaded but not created in this database" if why == "not_created"
                else "pg_stat_statements is not in shared_preload_libraries")
        return [Finding("source.unreachable", "error",
                        f"{what}: slow queries, N+1 and large results cannot be checked",
                        subject="pg_stat_statements",
                        evidence={"reason": why, "shared_preload_libraries": libs,
                                  "server_version": a.get("server_version")},
                        recommendation=steps + "\n-- then grant the monitoring role: GRANT pg_read_all_stats TO perfbook;")]
    found = []
    hidden = int(a.get("hidden") or 0)
    if hidden:
        found.append(Finding(
            "source.unreachable", "info",
            f"{hidden} statement(s) show <insufficient privilege> instead of their text "
            f"({a.get('hidden_total_ms', 0) / 1000:.1f} s of total time): their shape cannot be analysed",
            subject="pg_stat_statements",
            evidence={"hidden_rows": hidden, "hidden_total_ms": a.get("hidden_total_ms")},
            recommendation="GRANT pg_read_all_stats TO perfbook;  -- or GRANT pg_monitor TO perfbook;"))
    return found


def _queries(stmts: pd.DataFrame) -> pd.DataFrame:
    """Statements worth a query check: real statements with text, no transaction control."""
    if stmts.empty:
        return stmts
    q = stmts[(stmts["query"] != "<insufficient privilege>") & (stmts["calls"] > 0)]
    return q[~q["query"].str.match(UTILITY)]


def top_statements(stmts: pd.DataFrame, by: str = "total_ms", n: int = 10) -> pd.DataFrame:
    """The runbook's "Top 10 slow queries" table, by total or by mean time."""
    q = _queries(stmts)
    if q.empty:
        return pd.DataFrame(columns=["query", "calls", "total_ms", "mean_ms", "max_ms", "rows_per_call",
                                     "hit_ratio", "share_pct"])
    total = q["total_ms"].sum() or 1.0
    out = q.nlargest(n, by).copy()
    out["share_pct"] = 100.0 * out["total_ms"] / total
    out["query"] = out["query"].map(short_query)
    return out[["queryid", "query", "calls", "total_ms", "mean_ms", "max_ms", "rows_per_call", "hit_ratio",
                "share_pct"]].reset_index(drop=True)


# --------------------------------------------------------------------------- slow queries


def slow_queries(stmts: pd.DataFrame, settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """Statements slow on average *and* frequent (pghero: mean ≥ 20 ms and calls ≥ 100;
    ``settings.slow_query_mean`` / ``slow_query_calls``). Critical from
    ``slow_query_critical_factor`` (ten) times the mean bar. The table is the top
    ``settings.top_n`` by total time."""
    mean_ms, min_calls = 1000 * settings.slow_query_mean, settings.slow_query_calls
    table = top_statements(stmts, "total_ms", settings.top_n)
    q = _queries(stmts)
    if stmts.attrs.get("unavailable"):
        return table, []
    total = float(q["total_ms"].sum()) if not q.empty else 0.0
    slow = q[(q["mean_ms"] >= mean_ms) & (q["calls"] >= min_calls)] if not q.empty else q
    found = []
    for r in slow.sort_values("total_ms", ascending=False).to_dict("records"):
        sev = "critical" if r["mean_ms"] >= settings.slow_query_critical_factor * mean_ms else "warning"
        share = 100.0 * r["total_ms"] / total if total else None
        found.append(Finding(
            "db.slow_query", sev,
            f"{r['mean_ms']:.0f} ms on average over {int(r['calls'])} calls"
            + (f" ({share:.0f} % of all statement time)" if share is not None else ""),
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "calls": r["calls"], "mean_ms": r["mean_ms"],
                      "max_ms": r["max_ms"], "total_ms": r["total_ms"], "share_pct": share,
                      "rows_per_call": r["rows_per_call"], "hit_ratio": r["hit_ratio"],
                      "threshold_mean_ms": mean_ms, "threshold_calls": min_calls},
            recommendation=explain_recipe(r["query"])))
    if not found and not q.empty:
        over = q[q["mean_ms"] >= mean_ms]
        # the near miss: of the statements over the mean bar, the one called most; else the slowest
        slowest = over.loc[over["calls"].idxmax()] if not over.empty else q.loc[q["mean_ms"].idxmax()]
        near = ""
        if slowest["mean_ms"] >= mean_ms:
            near = (f"; {len(over)} average ≥ {mean_ms:.0f} ms but are called less: the most called of them, "
                    f"{slowest['mean_ms']:.0f} ms on average, ran {int(slowest['calls'])} time(s)")
        found.append(Finding("db.slow_query", "ok",
                             f"No statement averages ≥ {mean_ms:.0f} ms over ≥ {min_calls} calls "
                             f"({len(q)} statements checked{near})",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "threshold_mean_ms": mean_ms,
                                       "threshold_calls": min_calls,
                                       "slowest_mean_ms": float(slowest["mean_ms"]),
                                       "slowest_calls": float(slowest["calls"]),
                                       "slowest_query": short_query(slowest["query"])}))
    return table, found


def explain_recipe(query: str) -> str:
    """Copy-pasteable EXPLAIN for a statement (``$n`` must be given values to ANALYZE it)."""
    body = query.strip().rstrip(";")
    if "$" in body:
        return ("-- Where does the time go? Replace $1, $2 ... with real values, then on a replica or in a\n"
                "-- transaction you roll back:\n"
                f"BEGIN READ ONLY;\nEXPLAIN (ANALYZE, BUFFERS)\n{body};\nROLLBACK;\n"
                "-- Look for Seq Scan on large tables (missing index), Rows Removed by Filter, Sort spilling to disk.")
    return f"BEGIN READ ONLY;\nEXPLAIN (ANALYZE, BUFFERS)\n{body};\nROLLBACK;"
