"""Database checks (runbook Issue 1 §4 and Issue 2), one small function per check.

Pure: each takes the frames :mod:`perfbook.sources.postgres` returns (the SQL that made
them lives there, beside the function that runs it) plus thresholds, and returns
``(table, findings)``. Every check that ran emits at least one finding: the problems
it found, or one ``ok`` saying what was checked. Thresholds come from
``params.settings.database`` and ``params.thresholds``; where a number is a convention
(pghero, dexter, Sentry, the PostgreSQL docs) the docstring says so.

Subjects: the table (``"products"``) for missing indexes and bloat; the statement's
short text (``"SELECT … FROM categories WHERE id = $1"``) for query findings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from ..findings import Finding

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

    from ..sources.postgres import _walk

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
    for node in _walk(stmt):
        if isinstance(node, ast.RangeVar):
            shape.tables.append(node.relname)
            if node.alias is not None:
                shape.aliases[node.alias.aliasname] = node.relname
            shape.aliases.setdefault(node.relname, node.relname)
        elif isinstance(node, ast.FuncCall):
            if (node.funcname[-1].sval or "").lower() in _AGGREGATES and not node.over:
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


def slow_queries(stmts: pd.DataFrame, mean_ms: float = 20.0, min_calls: int = 100,
                 top_n: int = 10) -> tuple[pd.DataFrame, list[Finding]]:
    """Statements slow on average *and* frequent (pghero: mean ≥ 20 ms and calls ≥ 100;
    ``settings.database.slow_query_mean`` / ``slow_query_calls``). Critical from ten
    times the bar. The table is the top ``top_n`` by total time."""
    table = top_statements(stmts, "total_ms", top_n)
    q = _queries(stmts)
    if stmts.attrs.get("unavailable"):
        return table, []
    total = float(q["total_ms"].sum()) if not q.empty else 0.0
    slow = q[(q["mean_ms"] >= mean_ms) & (q["calls"] >= min_calls)] if not q.empty else q
    found = []
    for r in slow.sort_values("total_ms", ascending=False).to_dict("records"):
        sev = "critical" if r["mean_ms"] >= 10 * mean_ms else "warning"
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
        found.append(Finding("db.slow_query", "ok",
                             f"No statement averages ≥ {mean_ms:.0f} ms over ≥ {min_calls} calls "
                             f"({len(q)} statements checked)",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "threshold_mean_ms": mean_ms,
                                       "threshold_calls": min_calls,
                                       "slowest_mean_ms": float(q["mean_ms"].max())}))
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


# --------------------------------------------------------------------------- N+1 (pg_stat_statements)


def endpoint_for_table(table: str | None, endpoints: Sequence[Any], many_rows: bool = True) -> str | None:
    """The params' endpoint whose route names ``table`` (``products`` → ``GET
    /api/products``); list routes (no trailing parameter) first when ``many_rows``."""
    if not table:
        return None
    names = {table.lower(), singular(table)}
    hits = []
    for e in endpoints:
        segs = [s.lower() for s in e.route.strip("/").split("/")]
        if any(s in names for s in segs):
            is_item = segs[-1].startswith((":", "{")) if segs else False
            hits.append((is_item if many_rows else not is_item, e.method != "GET", len(segs), e.name))
    return sorted(hits)[0][3] if hits else None


def request_count_query(params: Any, window_seconds: float) -> str:
    """The PromQL for requests per endpoint over the window (for reading, not running)."""
    m = params.metrics
    return (f"sum by ({m.method_label}, {m.route_label}) "
            f"(increase({m.http_requests}{{__SEL__}}[{max(60, int(window_seconds))}s]))")


def n_plus_one_from_statements(stmts: pd.DataFrame, endpoints: Sequence[Any] = (),
                               requests: pd.DataFrame | None = None, min_ratio: float = 5.0,
                               min_calls: int = 100) -> tuple[pd.DataFrame, list[Finding]]:
    """Key lookups issued once per row of a list: the N+1 pattern, from pg_stat_statements.

    A *lookup* is a single-table SELECT whose WHERE is only ``col = $n`` (Prisma's
    ``findUnique``), about one row per call, called ≥ ``min_calls`` times. Its *parent* is
    a statement returning several rows per call that carries the lookup's key (selects
    ``category_id`` when the lookup is ``categories WHERE id = $1``), with lookups per
    parent call between ``min_ratio`` (Sentry's N+1 detector: 5 repeats) and the parent's
    rows per call; of several, the one called most (the first listed on a tie). The
    endpoint is the one whose route names the parent's table (or the lookup's), confirmed
    by ``requests`` (requests per endpoint over the window, from Prometheus) when given; a
    lookup called about once per request (0.5–2×) of some endpoint is a detail page and
    never counts. With ``requests`` and no parent, a lookup called ≥ ``min_ratio`` times
    per request of an endpoint counts too.

    Near-linear in the number of statements: only statements that can be a lookup or a
    parent are parsed (parsing is most of the time), and parents are indexed once by the
    key they carry, so a lookup looks only at the list queries that carry its key,
    most-called first (10,000 statements: 1.2 s, was 6.4 s; benchmarks/large_inputs.py).
    """
    q = _queries(stmts)
    cols = ["query", "calls", "rows_per_call", "parent_query", "parent_calls", "lookups_per_parent_call",
            "endpoint", "endpoint_requests", "lookups_per_request"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    reqs = None
    if requests is not None and not requests.empty:
        reqs = requests[requests["requests"] > 0].set_index("endpoint")["requests"].to_dict()
    rows, found = [], []
    records = q.to_dict("records")
    shape = _shapes_by_queryid(records)
    parents = None  # indexed on the first lookup: with none, list queries need no parsing
    for r in records:
        if r["calls"] < min_calls or (r["rows_per_call"] or 0) > 1.5:
            continue
        sh = shape(r["queryid"])
        if sh.kind != "select" or not sh.key_columns or len(sh.from_tables) != 1:
            continue
        table, key = sh.from_tables[0], sh.key_columns[0]
        if reqs and any(0.5 <= r["calls"] / n <= 2.0 for n in reqs.values()):
            # About one lookup per request of some endpoint: a detail page (GET /x/:id), not
            # N+1 — even when a list query on the same table could pass for its parent.
            continue
        if parents is None:
            parents = _ParentIndex(records, shape, min_ratio)
        parent = parents.best(r, table, key, min_ratio)
        endpoint, ep_requests = None, None
        if parent is not None:
            p, ps, k = parent
            ptable = ps.from_tables[0] if ps.from_tables else (ps.tables[0] if ps.tables else None)
            endpoint = endpoint_for_table(ptable, endpoints, many_rows=True) or endpoint_for_table(table, endpoints)
            if reqs:
                # Confirm with traffic: the list query runs at most ~once per request of its endpoint.
                fits = {e: n for e, n in reqs.items() if p["calls"] <= n * 1.2}
                if endpoint not in fits and fits:
                    named = [e for e in fits if ptable and (ptable in e or singular(ptable) in e)]
                    pool = named or list(fits)
                    endpoint = min(pool, key=lambda e: fits[e])
                ep_requests = reqs.get(endpoint)
        elif reqs:
            ratios = {e: r["calls"] / n for e, n in reqs.items()}
            cands = {e: x for e, x in ratios.items() if x >= min_ratio}
            if not cands:
                continue
            endpoint = min(cands, key=lambda e: (abs(cands[e] - round(cands[e])) / cands[e], -reqs[e]))
            ep_requests = reqs[endpoint]
        else:
            continue
        per_request = r["calls"] / ep_requests if ep_requests else None
        row = {"query": short_query(r["query"]), "calls": r["calls"], "rows_per_call": r["rows_per_call"],
               "parent_query": short_query(parent[0]["query"]) if parent else None,
               "parent_calls": parent[0]["calls"] if parent else None,
               "lookups_per_parent_call": parent[2] if parent else None,
               "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request}
        rows.append(row)
        per = parent[2] if parent else per_request
        found.append(Finding(
            "db.n_plus_one", "critical" if per and per >= 50 else "warning",
            f"N+1: {int(r['calls'])} single-row lookups on {table}, ~{per:.0f} per "
            + ("list query" if parent else "request") + (f" of {endpoint}" if endpoint else ""),
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "key_column": key,
                      "calls": r["calls"], "rows_per_call": r["rows_per_call"], "total_ms": r["total_ms"],
                      "parent_query": parent[0]["query"] if parent else None,
                      "parent_calls": parent[0]["calls"] if parent else None,
                      "lookups_per_parent_call": parent[2] if parent else None,
                      "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request,
                      "source": "pg_stat_statements"},
            recommendation=n_plus_one_fix(table, key, parent[1].from_tables[0] if parent and parent[1].from_tables
                                          else None)))
    if not found:
        found.append(Finding("db.n_plus_one", "ok",
                             "No key lookup is issued once per row of a list query (pg_stat_statements)",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "min_ratio": min_ratio, "min_calls": min_calls,
                                       "requests_known": reqs is not None}))
    return pd.DataFrame(rows, columns=cols), found


def _shapes_by_queryid(records: list[dict]) -> Any:
    """``shape(queryid)``: the :func:`query_shape` of that queryid's statement, parsed on
    first use. Where pg_stat_statements lists one queryid more than once (one row per
    user and database), the last row's text is the one that counts."""
    last = {r["queryid"]: r["query"] for r in records}
    cache: dict[Any, Shape] = {}

    def shape(queryid: Any) -> Shape:
        sh = cache.get(queryid)
        if sh is None:
            sh = cache[queryid] = query_shape(last[queryid])
        return sh
    return shape


class _ParentIndex:
    """The statements that could be a lookup's parent (SELECTs returning ≥ ``min_ratio``
    rows per call), indexed once by the key they carry. A parent of lookups on
    ``table.id`` returns the foreign key (selects ``category_id`` / ``categoryId`` for
    ``categories.id``); a parent of lookups on ``table.key`` for another key reads the
    table that key points to (``products`` for ``clicks.product_id``). Column names
    compare through :func:`_norm_col` (quotes, underscores and case ignored)."""

    def __init__(self, records: list[dict], shape: Any, min_ratio: float) -> None:
        self.parents: list[tuple[dict, Shape]] = []
        self.by_target: dict[str, list[int]] = {}
        self.by_from: dict[str, list[int]] = {}
        self._cands: dict[tuple[str, str], tuple[list[tuple[dict, Shape]], list[float]]] = {}
        for p in records:
            if (p["rows_per_call"] or 0) < min_ratio:
                continue
            ps = shape(p["queryid"])
            if ps.kind != "select":
                continue
            i = len(self.parents)
            self.parents.append((p, ps))
            for c in {_norm_col(c) for c in ps.target_columns}:
                self.by_target.setdefault(c, []).append(i)
            for c in {_norm_col(singular(t) + "_id") for t in ps.from_tables}:
                self.by_from.setdefault(c, []).append(i)

    def candidates(self, table: str, key: str) -> tuple[list[tuple[dict, Shape]], list[float]]:
        """The parents that carry ``table.key``, most calls first, in statement order on a
        tie; and their calls."""
        got = self._cands.get((table, key))  # many lookups share a table and key: sort once
        if got is None:
            if key.lower() == "id":
                fks = {_norm_col(singular(table) + "_id"), _norm_col(table + "_id")}
                idx = set().union(*(self.by_target.get(fk, ()) for fk in fks))
            else:
                idx = set(self.by_from.get(_norm_col(key), ()))
            order = sorted(idx, key=lambda i: (-self.parents[i][0]["calls"], i))
            got = self._cands[(table, key)] = ([self.parents[i] for i in order],
                                                [self.parents[i][0]["calls"] for i in order])
        return got

    def best(self, r: dict, table: str, key: str, min_ratio: float) -> tuple[dict, Shape, float] | None:
        """``(parent, its shape, lookups per parent call)`` for the lookup ``r``: the parent
        with the most calls such that ``min_ratio ≤ r.calls / parent.calls ≤ parent's rows
        per call × 1.2``, the first in statement order on a tie; ``None`` when none fits."""
        cands, calls = self.candidates(table, key)
        n = r["calls"]
        # calls descend, so n / calls ascends: skip (binary search) the parents called too
        # often for min_ratio lookups per call, then take the first whose rows per call fit.
        lo, hi = 0, len(calls)
        while lo < hi:
            mid = (lo + hi) // 2
            if n / calls[mid] >= min_ratio:
                hi = mid
            else:
                lo = mid + 1
        for i in range(lo, len(cands)):
            p, ps = cands[i]
            if p["queryid"] == r["queryid"]:
                continue
            k = n / p["calls"]
            if min_ratio <= k <= (p["rows_per_call"] or 0) * 1.2:
                return p, ps, k
        return None


def _model(table: str) -> str:
    s = singular(table)
    parts = s.split("_")
    return parts[0] + "".join(p.title() for p in parts[1:])


def n_plus_one_fix(table: str, key: str, parent_table: str | None) -> str:
    """The runbook's fix, with the tables' names: Prisma ``include``, or one batched query."""
    child = _model(table)
    parent = _model(parent_table) if parent_table else "item"
    fk = f"{child}Id" if key.lower() == "id" else key
    return (f"// Bad: one {table} query per {parent} row (N+1)\n"
            f"for (const {parent} of {parent}s) {{\n"
            f"  const {child} = await prisma.{child}.findUnique({{ where: {{ {key}: {parent}.{fk} }} }});\n"
            f"}}\n\n"
            f"// Good: one query with a join\n"
            f"const {parent}s = await prisma.{parent}.findMany({{\n"
            f"  include: {{ {child}: true }},\n"
            f"}});\n\n"
            f"-- or in SQL: fetch all of a page's {table} in one statement\n"
            f"SELECT * FROM {_qualified(table)} WHERE {quote_ident(key)} = ANY($1);  -- $1 = array of keys")


# --------------------------------------------------------------------------- missing indexes


def seq_scan_tables(tables: pd.DataFrame, min_rows: int = 10_000, max_index_share: float = 0.95,
                    min_scans: int = 10) -> pd.DataFrame:
    """Tables read mostly by sequential scans: ≥ ``min_rows`` live rows, ≥ ``min_scans``
    sequential scans, and an index share of scans under ``max_index_share`` (pghero's
    table stats; the 95 % is the usual bar, 10k rows is where a seq scan starts to cost;
    a handful of scans is maintenance, not a pattern)."""
    t = tables.copy()
    if t.empty:
        return t.assign(index_share=pd.Series(dtype=float))
    idx = t["idx_scan"].fillna(0).astype(float)
    seq = t["seq_scan"].fillna(0).astype(float)
    t["index_share"] = idx / (idx + seq).where((idx + seq) > 0)
    t["tuples_per_seq_scan"] = t["seq_tup_read"].astype(float) / seq.where(seq > 0)
    heavy = t[(t["n_live_tup"] >= min_rows) & (seq >= min_scans) & (t["index_share"].fillna(0) < max_index_share)]
    heavy = heavy.assign(table=[display_table(s, n) for s, n in zip(heavy["schema"], heavy["table"])])
    return heavy[["table", "seq_scan", "seq_tup_read", "idx_scan", "index_share", "n_live_tup",
                  "tuples_per_seq_scan"]].sort_values("seq_tup_read", ascending=False).reset_index(drop=True)


def explain_candidates(stmts: pd.DataFrame, tables: pd.DataFrame, top_n: int = 10,
                       min_rows: int = 10_000) -> pd.DataFrame:
    """The statements worth an EXPLAIN: SELECTs among the top ``top_n`` by total time that
    read a table of ≥ ``min_rows`` rows."""
    q = _queries(stmts)
    if q.empty or tables.empty:
        return pd.DataFrame(columns=["queryid", "query", "calls", "total_ms", "mean_ms"])
    big = set(tables.loc[tables["n_live_tup"] >= min_rows, "table"])
    keep = []
    for r in q.nlargest(top_n * 3, "total_ms").to_dict("records"):
        sh = query_shape(r["query"])
        if sh.kind == "select" and big & set(sh.tables):
            keep.append(r)
        if len(keep) >= top_n:
            break
    return pd.DataFrame(keep, columns=list(q.columns))[["queryid", "query", "calls", "total_ms", "mean_ms"]] \
        if keep else pd.DataFrame(columns=["queryid", "query", "calls", "total_ms", "mean_ms"])


def _plan_nodes(plan: dict, ancestors: tuple = ()) -> Iterable[tuple[dict, tuple]]:
    yield plan, ancestors
    for child in plan.get("Plans", ()) or ():
        yield from _plan_nodes(child, ancestors + (plan,))


def filter_columns(expr: str) -> tuple[list[str], list[str]]:
    """Columns an index could serve in a plan's ``Filter``: (equality, range), in order.

    ``((category_id = $1) AND (price > '10'::numeric))`` → (["category_id"], ["price"]).
    Terms an ordinary B-tree cannot use (``~~*``, functions of the column, OR) are left out.
    """
    from pglast import ast, parse_sql
    from pglast.enums import A_Expr_Kind, NullTestType

    try:
        where = parse_sql(f"SELECT 1 WHERE {expr}")[0].stmt.whereClause
    except Exception:  # noqa: BLE001
        return [], []
    eq, rng = [], []
    for term in _and_terms(where):
        if isinstance(term, ast.A_Expr):
            op = term.name[-1].sval if term.name else ""
            col, other = _colref(term.lexpr), term.rexpr
            if col is None:
                col, other = _colref(term.rexpr), term.lexpr
                op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
            if col is None or _colref(other) is not None:
                continue
            if term.kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and op == "=":
                eq.append(col[1])
            elif term.kind == A_Expr_Kind.AEXPR_OP and op in ("<", ">", "<=", ">="):
                rng.append(col[1])
            elif term.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN):
                rng.append(col[1])
        elif isinstance(term, ast.NullTest) and term.nulltesttype == NullTestType.IS_NULL:
            col = _colref(term.arg)
            if col:
                eq.append(col[1])
    return list(dict.fromkeys(eq)), [c for c in dict.fromkeys(rng) if c not in eq]


_SORT_KEY = re.compile(r'^\s*(?:"?(?P<alias>[A-Za-z_][\w$]*)"?\.)?"?(?P<col>[A-Za-z_][\w$]*)"?(?P<desc>\s+DESC)?'
                       r'(?:\s+NULLS\s+(?:FIRST|LAST))?\s*$', re.I)


def index_columns(definition: str) -> list[str]:
    """Column list of ``pg_get_indexdef`` text: ``... USING btree (category_id, created_at DESC)``
    → ``["category_id", "created_at"]`` (expressions kept as text)."""
    m = re.search(r"USING \w+ \(", definition)
    if not m:
        return []
    out, depth, cur = [], 0, ""
    for ch in definition[m.end():]:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    cols = []
    for c in out:
        c = re.sub(r"\s+(ASC|DESC|NULLS\s+\w+|COLLATE\s+\S+|\w+_ops)\b", "", c.strip(), flags=re.I).strip()
        cols.append(c.strip('"'))
    return cols


@dataclass
class IndexSuggestion:
    queryid: Any
    query: str
    table: str
    columns: list[str]
    sort: list[tuple[str, bool]]
    node_type: str
    filter: str
    plan_rows: float
    table_rows: float
    total_cost: float

    @property
    def name(self) -> str:
        base = "idx_" + self.table.split(".")[-1] + "_" + "_".join(self.columns)
        return base[:63]

    @property
    def create_index(self) -> str:
        desc = {c for c, d in self.sort if d}
        cols = ", ".join(quote_ident(c) + (" DESC" if c in desc else "") for c in self.columns)
        return f"CREATE INDEX CONCURRENTLY {quote_ident(self.name)} ON {_qualified(self.table)} ({cols});"


def index_suggestions(plans: pd.DataFrame, tables: pd.DataFrame, indexes: pd.DataFrame | None = None,
                      min_rows: int = 10_000, max_selectivity: float = 0.10) -> list[IndexSuggestion]:
    """Indexes the plans ask for (dexter's idea, from plain EXPLAIN).

    For each plan (rows of ``queryid, query, plan``): a scan (Seq Scan, or an Index Scan
    whose index does not lead with the filtered columns) of a table with ≥ ``min_rows``
    live rows, with a ``Filter`` an ordinary B-tree can serve, that keeps ≤
    ``max_selectivity`` of the table (or feeds a Sort/LIMIT). The index columns are the
    equality-filtered columns, then the sort columns (with their direction: from the
    plan's Sort Key, else the query's ORDER BY), then range-filtered ones — the runbook's
    ``products(category_id, created_at DESC)``. No suggestion when an index already
    leads with those columns.
    """
    rows_of = {}
    for r in tables.to_dict("records"):
        rows_of[r["table"]] = float(r["n_live_tup"] or r.get("reltuples") or 0)
        rows_of[display_table(r.get("schema"), r["table"])] = rows_of[r["table"]]
    existing: dict[str, list[list[str]]] = {}
    if indexes is not None and not indexes.empty:
        for r in indexes.to_dict("records"):
            if r.get("is_valid", True):
                existing.setdefault(r["table"], []).append(index_columns(r["definition"]))
    out: list[IndexSuggestion] = []
    seen = set()
    for rec in plans.to_dict("records"):
        plan = rec.get("plan")
        if not isinstance(plan, dict):
            continue
        shape = query_shape(rec["query"])
        for node, ancestors in _plan_nodes(plan):
            ntype = node.get("Node Type", "")
            table = node.get("Relation Name")
            if ntype not in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan") or not table:
                continue
            filt = node.get("Filter") or ""
            if not filt:
                continue
            table_rows = rows_of.get(table, 0.0)
            if table_rows < min_rows:
                continue
            eq, rng = filter_columns(filt)
            if not eq and not rng:
                continue
            alias = node.get("Alias") or table
            sort = _sort_columns(ancestors, alias, table, shape)
            limited = any(a.get("Node Type") == "Limit" for a in ancestors)
            selective = float(node.get("Plan Rows") or 0) <= max_selectivity * table_rows
            if not (selective or (sort and limited)):
                continue
            cols = list(eq)
            for c, _ in sort:
                if c not in cols:
                    cols.append(c)
            for c in rng:
                if c not in cols:
                    cols.append(c)
            if ntype != "Seq Scan":
                used = node.get("Index Name")
                used_cols = next((index_columns(r["definition"]) for r in (indexes.to_dict("records")
                                  if indexes is not None else []) if r["index"] == used), [])
                if used_cols[: len(eq)] == eq and eq:
                    continue
            if any(ix[: len(cols)] == cols for ix in existing.get(table, [])):
                continue
            key = (table, tuple(cols))
            if key in seen:
                continue
            seen.add(key)
            out.append(IndexSuggestion(rec.get("queryid"), rec["query"], table, cols,
                                       [(c, d) for c, d in sort], ntype, filt, float(node.get("Plan Rows") or 0),
                                       table_rows, float(plan.get("Total Cost") or 0)))
    return out


def _sort_columns(ancestors: tuple, alias: str, table: str, shape: Shape) -> list[tuple[str, bool]]:
    """Sort columns of ``table`` feeding this scan: the nearest Sort node's keys, else the
    query's ORDER BY (when an index scan provides the order itself)."""
    for a in reversed(ancestors):
        if a.get("Node Type") in ("Sort", "Incremental Sort"):
            cols = []
            for k in a.get("Sort Key", []) or []:
                m = _SORT_KEY.match(k)
                if not m:
                    break
                if m.group("alias") and m.group("alias") not in (alias, table):
                    break
                cols.append((m.group("col"), bool(m.group("desc"))))
            return cols
    cols = []
    for a, c, desc in shape.order_by:
        if a is None or shape.aliases.get(a) == table or a == alias:
            cols.append((c, desc))
        else:
            break
    return cols


def missing_indexes(tables: pd.DataFrame, suggestions: Sequence[IndexSuggestion],
                    stmts: pd.DataFrame | None = None, verified: dict | None = None,
                    min_rows: int = 10_000, max_index_share: float = 0.95,
                    slow_mean_ms: float = 20.0, slow_calls: int = 100) -> tuple[pd.DataFrame, list[Finding]]:
    """``db.missing_index``: one finding per suggested index (warning; critical when the
    query it serves is slow by the pghero bar), each with the exact ``CREATE INDEX
    CONCURRENTLY``. ``verified`` (queryid/table → {cost_before, cost_after} from hypopg)
    keeps a suggestion only if the planner's cost at least halves (dexter's rule).
    Seq-scan-heavy tables with no suggestion are ``info`` (their queries may be fine
    full scans)."""
    heavy = seq_scan_tables(tables, min_rows, max_index_share)
    stats = {r["table"]: r for r in heavy.to_dict("records")}
    q = _queries(stmts) if stmts is not None else pd.DataFrame()
    by_id = {r["queryid"]: r for r in q.to_dict("records")} if not q.empty else {}
    rows, found = [], []
    covered = set()
    for s in suggestions:
        v = (verified or {}).get((s.queryid, s.table))
        if v and v.get("cost_after") is not None and v["cost_after"] > v["cost_before"] / 2:
            rows.append({"table": s.table, "columns": ", ".join(s.columns), "create_index": s.create_index,
                         "verdict": f"dropped: hypopg cost {v['cost_before']:.0f} → {v['cost_after']:.0f}"})
            continue
        covered.add(s.table)
        st = by_id.get(s.queryid, {})
        slow = st and st.get("mean_ms", 0) >= slow_mean_ms and st.get("calls", 0) >= slow_calls
        t = stats.get(s.table, {})
        ev = {"table": s.table, "columns": list(s.columns),
              "sort": [f"{c} DESC" if d else c for c, d in s.sort], "create_index": s.create_index,
              "query": s.query, "queryid": s.queryid, "plan_node": s.node_type, "filter": s.filter,
              "estimated_rows": s.plan_rows, "table_rows": s.table_rows, "plan_total_cost": s.total_cost,
              "calls": st.get("calls"), "mean_ms": st.get("mean_ms"), "total_ms": st.get("total_ms"),
              "seq_scan": t.get("seq_scan"), "seq_tup_read": t.get("seq_tup_read"),
              "index_share": t.get("index_share")}
        if v:
            ev.update(hypopg_cost_before=v.get("cost_before"), hypopg_cost_after=v.get("cost_after"))
        rows.append({"table": s.table, "columns": ", ".join(s.columns), "create_index": s.create_index,
                     "verdict": "verified with hypopg" if v else "from EXPLAIN"})
        how = f" (hypopg: est. cost {v['cost_before']:.0f} → {v['cost_after']:.0f})" if v else ""
        desc = dict(s.sort)
        cols_txt = ", ".join(c + (" DESC" if desc.get(c) else "") for c in s.columns)
        check = (f"EXPLAIN {s.query.strip().rstrip(';')};" if "$" not in s.query else
                 f"-- (replace $1, $2 ... with real values)\nEXPLAIN {s.query.strip().rstrip(';')};")
        found.append(Finding(
            "db.missing_index", "critical" if slow else "warning",
            f"{s.node_type} on {s.table} ({s.table_rows:,.0f} rows) for a top query: index on "
            f"({cols_txt}) missing{how}",
            subject=s.table, evidence=ev,
            recommendation=f"{s.create_index}\n\n-- then check the plan uses it (Index Scan, no Sort):\n{check}"))
    for name, t in stats.items():
        if name in covered:
            continue
        found.append(Finding(
            "db.missing_index", "info",
            f"{name}: {t['seq_scan']:.0f} sequential scans read {t['seq_tup_read']:,.0f} rows; only "
            f"{100 * (t['index_share'] or 0):.0f} % of scans use an index — no EXPLAIN of a top query "
            f"pointed at a missing index",
            subject=name, evidence={"table": name, "columns": [], **{k: t[k] for k in (
                "seq_scan", "seq_tup_read", "idx_scan", "index_share", "n_live_tup")}},
            recommendation=f"-- which statements read {name}? (pg_stat_statements)\n"
                           f"SELECT query, calls, mean_exec_time FROM pg_stat_statements\n"
                           f"WHERE query ILIKE '%{name}%' ORDER BY total_exec_time DESC LIMIT 10;"))
    if not found:
        found.append(Finding("db.missing_index", "ok",
                             f"No large table is scanned sequentially by a top query "
                             f"({len(tables)} tables checked)",
                             subject="tables", evidence={"tables": len(tables), "min_rows": min_rows}))
    return pd.DataFrame(rows, columns=["table", "columns", "create_index", "verdict"]), found


# --------------------------------------------------------------------------- large results


def large_results(stmts: pd.DataFrame, tables: pd.DataFrame | None = None, max_rows: int = 1000,
                  min_rows_table: int = 10_000, min_calls: int = 10) -> tuple[pd.DataFrame, list[Finding]]:
    """Statements returning many rows per call (``settings.database.large_result_rows``,
    1000 by default; critical from 10×), or SELECTs with no LIMIT and no WHERE on a
    table of ≥ ``min_rows_table`` rows returning ≥ 100 rows per call. Called at least
    ``min_calls`` times (one-off exports and warm-ups are not the runbook's concern).
    Without ``tables`` (pg_stat_user_tables unreadable) the second part cannot be judged,
    and an ``ok`` finding says so."""
    q = _queries(stmts)
    cols = ["query", "calls", "rows_per_call", "mean_ms", "has_limit", "tables"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    big = set()
    if tables is not None and not tables.empty:
        big = set(tables.loc[tables["n_live_tup"] >= min_rows_table, "table"])
    rows, found = [], []
    for r in q[q["calls"] >= min_calls].sort_values("rows_per_call", ascending=False).to_dict("records"):
        sh = query_shape(r["query"])
        if sh.kind != "select":
            continue
        rpc = r["rows_per_call"] or 0
        unbounded = (not sh.has_limit and not sh.has_where and not sh.aggregate and big & set(sh.from_tables)
                     and rpc >= 100)
        if rpc <= max_rows and not unbounded:
            continue
        table = next((t for t in sh.from_tables if t in big), sh.from_tables[0] if sh.from_tables else None)
        rows.append({"query": short_query(r["query"]), "calls": r["calls"], "rows_per_call": rpc,
                     "mean_ms": r["mean_ms"], "has_limit": sh.has_limit, "tables": ", ".join(sh.tables)})
        found.append(Finding(
            "db.large_result", "critical" if rpc > 10 * max_rows else "warning",
            f"{rpc:,.0f} rows per call over {int(r['calls'])} calls"
            + ("" if sh.has_limit else ", no LIMIT") + (f" on {table}" if table else ""),
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "calls": r["calls"],
                      "rows_per_call": rpc, "rows": r["rows"], "mean_ms": r["mean_ms"], "has_limit": sh.has_limit,
                      "threshold_rows": max_rows},
            recommendation=pagination_fix(table or "items", sh)))
    if not found:
        sizes_known = tables is not None and not tables.empty
        found.append(Finding("db.large_result", "ok",
                             f"No statement returns more than {max_rows} rows per call"
                             + ("" if sizes_known else " (table sizes unknown: SELECTs without LIMIT on large "
                                                       "tables not checked)"),
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "threshold_rows": max_rows,
                                       "max_rows_per_call": float(q["rows_per_call"].max()),
                                       "table_sizes_known": sizes_known}))
    return pd.DataFrame(rows, columns=cols), found


def pagination_fix(table: str, shape: Shape | None = None) -> str:
    """The runbook's pagination advice for ``table`` (Prisma, then SQL keyset)."""
    model = _model(table)
    order = shape.order_by[0] if shape and shape.order_by else (None, "id", False)
    col, desc = order[1], order[2]
    return (f"// Bad: loading every row\nconst rows = await prisma.{model}.findMany({{ where }});\n\n"
            f"// Good: pagination\nconst rows = await prisma.{model}.findMany({{\n  where,\n  take: 100,\n"
            f"  skip: (page - 1) * 100,\n}});\n\n"
            f"// Better: cursor-based pagination\nconst rows = await prisma.{model}.findMany({{\n  where,\n  take: 100,\n"
            f"  cursor: lastId ? {{ id: lastId }} : undefined,\n  skip: lastId ? 1 : 0,\n  orderBy: {{ id: 'asc' }},\n}});\n\n"
            f"-- SQL: keyset pagination\nSELECT ... FROM {_qualified(table)} WHERE ... AND {quote_ident(col)} "
            f"{'<' if desc else '>'} $last ORDER BY {quote_ident(col)}{' DESC' if desc else ''} LIMIT 100;")


# --------------------------------------------------------------------------- bloat and unused indexes


def _autovacuum_disabled(reloptions: Any) -> bool:
    return any(str(o).lower() in ("autovacuum_enabled=false", "autovacuum_enabled=off", "autovacuum_enabled=0")
               for o in (reloptions or []))


def bloat(tables: pd.DataFrame, dead_share: float = 0.20, min_rows: int = 1000,
          autovacuum: str | None = "on") -> tuple[pd.DataFrame, list[Finding]]:
    """Dead tuples (the runbook's "Check table bloat"): a table of ≥ ``min_rows`` rows whose
    dead share n_dead_tup / (n_live_tup + n_dead_tup) is ≥ ``dead_share``
    (``settings.database.bloat_dead_share``, 20 % — autovacuum's own default
    scale factor); critical from 50 %. Says when autovacuum is off for the table
    (pg_class.reloptions) or the server, and the last (auto)vacuum/analyze."""
    t = tables.copy()
    cols = ["table", "n_live_tup", "n_dead_tup", "dead_pct", "last_vacuum", "last_autovacuum",
            "last_analyze", "last_autoanalyze", "autovacuum", "total_bytes"]
    if t.empty:
        return pd.DataFrame(columns=cols), []
    t["table"] = [display_table(s, n) for s, n in zip(t["schema"], t["table"])]
    total = (t["n_live_tup"] + t["n_dead_tup"]).astype(float)
    t["dead_pct"] = 100.0 * t["n_dead_tup"] / total.where(total > 0)
    t["autovacuum"] = ["off (table)" if _autovacuum_disabled(o) else ("off (server)" if autovacuum == "off" else "on")
                       for o in t["reloptions"]]
    table = t.sort_values("n_dead_tup", ascending=False)[cols].reset_index(drop=True)
    found = []
    for r in t.to_dict("records"):
        rows = (r["n_live_tup"] or 0) + (r["n_dead_tup"] or 0)
        share = (r["n_dead_tup"] or 0) / rows if rows else 0.0
        if rows < min_rows or share < dead_share:
            continue
        off_table = _autovacuum_disabled(r["reloptions"])
        last_vac = max([x for x in (r["last_vacuum"], r["last_autovacuum"]) if x is not None and not pd.isna(x)],
                       default=None)
        name = _qualified(r["table"])
        rec = f"VACUUM (ANALYZE) {name};"
        if off_table:
            rec += f"\n-- autovacuum is disabled for this table; turn it back on:\nALTER TABLE {name} RESET (autovacuum_enabled, toast.autovacuum_enabled);"
        elif autovacuum == "off":
            rec += "\n-- autovacuum is off for the whole server; turn it on:\nALTER SYSTEM SET autovacuum = on;\nSELECT pg_reload_conf();"
        else:
            rec += (f"\n-- autovacuum is not keeping up; vacuum this table sooner:\n"
                    f"ALTER TABLE {name} SET (autovacuum_vacuum_scale_factor = 0.05);")
        found.append(Finding(
            "db.bloat", "critical" if share >= 0.5 else "warning",
            f"{r['table']}: {100 * share:.0f} % dead tuples ({int(r['n_dead_tup']):,} dead, {int(r['n_live_tup']):,} live)"
            + ("; autovacuum disabled for the table" if off_table else "")
            + ("; never vacuumed since stats reset" if last_vac is None else ""),
            subject=r["table"],
            evidence={"table": r["table"], "n_dead_tup": r["n_dead_tup"], "n_live_tup": r["n_live_tup"],
                      "dead_pct": 100 * share, "autovacuum_enabled": not off_table and autovacuum != "off",
                      "reloptions": list(r["reloptions"] or []), "last_vacuum": r["last_vacuum"],
                      "last_autovacuum": r["last_autovacuum"], "last_analyze": r["last_analyze"],
                      "last_autoanalyze": r["last_autoanalyze"], "total_bytes": r["total_bytes"],
                      "threshold_pct": 100 * dead_share},
            recommendation=rec))
    if not found:
        worst = table.iloc[0] if len(table) else None
        found.append(Finding("db.bloat", "ok",
                             f"No table has ≥ {100 * dead_share:.0f} % dead tuples ({len(t)} tables checked)",
                             subject="tables",
                             evidence={"tables": len(t), "threshold_pct": 100 * dead_share,
                                       "max_dead_pct": float(t["dead_pct"].max()) if t["dead_pct"].notna().any() else 0.0,
                                       "worst_table": worst["table"] if worst is not None else None}))
    return table, found


def unused_indexes(indexes: pd.DataFrame, stats_reset: Any = None, now: Any = None,
                   min_bytes: int = 1 << 20, min_stats_days: float = 7.0) -> tuple[pd.DataFrame, list[Finding]]:
    """Indexes never scanned since statistics were reset (pghero's unused indexes):
    idx_scan = 0, not unique / primary / backing a constraint, at least ``min_bytes``.
    ``info`` always — dropping is a decision, and young statistics (< ``min_stats_days``,
    or unknown) prove little; replicas keep their own counters."""
    cols = ["table", "index", "index_bytes", "idx_scan", "definition"]
    if indexes.empty:
        return pd.DataFrame(columns=cols), []
    u = indexes[(indexes["idx_scan"] == 0) & ~indexes["is_unique"] & ~indexes["is_primary"]
                & ~indexes["backs_constraint"] & (indexes["index_bytes"] >= min_bytes)].copy()
    u["table"] = [display_table(s, n) for s, n in zip(u["schema"], u["table"])]
    age_days = None
    if stats_reset is not None and now is not None and not pd.isna(stats_reset):
        age_days = (pd.Timestamp(now) - pd.Timestamp(stats_reset)).total_seconds() / 86400
    young = age_days is None or age_days < min_stats_days
    found = []
    for r in u.to_dict("records"):
        found.append(Finding(
            "db.unused_index", "info",
            f"{r['index']} on {r['table']} ({r['index_bytes'] / 2**20:.1f} MiB) has not been scanned"
            + (f" in {age_days:.1f} days of statistics" if age_days is not None else "")
            + (" — statistics too young to be sure" if young else ""),
            subject=r["index"],
            evidence={"table": r["table"], "index": r["index"], "index_bytes": r["index_bytes"],
                      "idx_scan": r["idx_scan"], "definition": r["definition"], "stats_age_days": age_days},
            recommendation=f"-- check replicas too (their counters are separate), then:\n"
                           f"DROP INDEX CONCURRENTLY {quote_ident(r['index'])};\n-- to undo: {r['definition']};"))
    if not found:
        found.append(Finding("db.unused_index", "ok", f"Every index of ≥ {min_bytes >> 20} MiB is used "
                                                      f"({len(indexes)} indexes checked)",
                             subject="indexes", evidence={"indexes": len(indexes), "stats_age_days": age_days}))
    return u[cols].reset_index(drop=True), found


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


def connections(act: pd.DataFrame, info: dict, levels: Any, pct_warning: float = 0.75,
                pct_critical: float = 0.90) -> tuple[pd.DataFrame, list[Finding]]:
    """Client connections vs the runbook's levels (``thresholds.db_connections``: warning
    50, critical 80) and vs max_connections (less the superuser reserve; warning at 75 %,
    critical at 90 %). Idle-in-transaction sessions are counted in the evidence."""
    table = connection_states(act)
    c = act[act["backend_type"] == "client backend"] if "backend_type" in act else act
    n = int(len(c))
    usable = int(info.get("max_connections") or 0) - int(info.get("superuser_reserved") or 0)
    share = n / usable if usable > 0 else 0.0
    states = c["state"].fillna("(hidden)").value_counts().to_dict()
    sev = "ok"
    if n >= levels.critical or share >= pct_critical:
        sev = "critical"
    elif n >= levels.warning or share >= pct_warning:
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


def long_running(act: pd.DataFrame, limit_s: float = 60.0) -> tuple[pd.DataFrame, list[Finding]]:
    """Statements running longer than ``limit_s`` (``settings.database.long_running``, 60 s —
    pghero's long-running queries) and transactions idle for as long; critical from 5×."""
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
            "db.long_running", "critical" if age >= 5 * limit_s else "warning",
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


def lock_waits(act: pd.DataFrame) -> tuple[pd.DataFrame, list[Finding]]:
    """Sessions waiting on a lock, grouped by the pid that blocks them
    (pg_blocking_pids); critical when a blocker holds up ≥ 5 sessions or for ≥ 60 s."""
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
            "db.lock_waits", "critical" if len(g) >= 5 or longest >= 60 else "warning",
            f"pid {blocker} ({b.get('state') or 'unknown state'}) blocks {len(g)} session(s), longest wait {longest:.0f} s",
            subject=f"pid {blocker}",
            evidence={"blocking_pid": blocker, "blocker_state": b.get("state"), "blocker_query": b.get("query"),
                      "blocker_xact_age_s": b.get("xact_age_s"), "waiting_pids": g["pid"].tolist(),
                      "longest_wait_s": longest, "waiting_queries": g["query"].map(short_query).tolist()[:5]},
            recommendation=(f"-- what does pid {blocker} hold?\n"
                            f"SELECT locktype, relation::regclass, mode, granted FROM pg_locks WHERE pid = {blocker};\n"
                            f"SELECT pg_terminate_backend({blocker});  -- only if it is stuck (idle in transaction)")))
    return waiting[cols].reset_index(drop=True), found


def pool_saturation(pool: pd.DataFrame, wait_p95_ms: float = 20.0, wait_mean_ms: float = 5.0,
                    waiting_share: float = 0.10, critical_p95_ms: float = 500.0,
                    critical_share: float = 0.50) -> tuple[pd.DataFrame, list[Finding]]:
    """The application's connection pool (Prisma's pool metrics, from Prometheus).

    Saturated on an instance when the pool was *full* (busy connections reached its limit —
    ``pool_max`` when exported, else the most connections it had open) *and* queries
    *waited* for a connection: p95 wait ≥ ``wait_p95_ms`` or mean wait ≥ ``wait_mean_ms``
    (from the wait-time histogram), or some query waiting during ≥ ``waiting_share`` of
    the window. Critical from a p95 wait of ``critical_p95_ms`` or waiting half the
    time. A healthy pool hands out a connection in well under a millisecond. One finding
    for all instances (subject ``connection pool``), the worst instance's numbers in the
    evidence.
    """
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
        title = (f"Connection pool not saturated: busy at most {f(worst['busy_max'], '.0f')} of "
                 f"{f(limit.max(), '.0f')}, p95 wait for a connection {f(worst['wait_p95_ms'], '.1f')} ms")
    else:
        crit = (sat["wait_p95_ms"].fillna(0) >= critical_p95_ms) | (sat["waiting_share"].fillna(0) >= critical_share)
        sev = "critical" if crit.any() else "warning"
        title = (f"Connection pool saturated on {len(sat)} of {len(p)} instance(s): all "
                 f"{f(worst['pool_max'] if not pd.isna(worst['pool_max']) else worst['open_max'], '.0f')} connections "
                 f"busy and queries waiting for one (p95 {f(worst['wait_p95_ms'], '.0f')} ms, mean "
                 f"{f(worst['wait_mean_ms'], '.1f')} ms, up to {f(worst['waiting_max'], '.0f')} at once)")
    ev = {"instances": len(p), "saturated_instances": sat["instance"].tolist(), "worst_instance": worst["instance"],
          **{k: worst[k] for k in cols if k != "instance"},
          "threshold_wait_p95_ms": wait_p95_ms, "threshold_wait_mean_ms": wait_mean_ms}
    rec = ("// Find what holds connections: a transaction kept open across a slow call, slow queries\n"
           "// (see idle-in-transaction sessions and slow queries above); fix that first. Then size the\n"
           "// pool per instance, keeping instances x connection_limit under max_connections (or PgBouncer):\n"
           "// DATABASE_URL=postgresql://...?connection_limit=10&pool_timeout=10") if sev != "ok" else ""
    return p.reset_index(drop=True), [Finding("db.connections", sev, title, subject="connection pool",
                                              evidence=ev, recommendation=rec)]


# --------------------------------------------------------------------------- text shown under tables


def plans_text(plans: pd.DataFrame) -> str:
    """The EXPLAIN plans as readable JSON, each under its statement."""
    import json

    if plans is None or plans.empty:
        return "(no statement to explain)"
    parts = []
    for r in plans.to_dict("records"):
        body = json.dumps(r["plan"], indent=1) if r.get("plan") else f"not explained: {r.get('error')}"
        parts.append(f"-- {short_query(r['query'], 140)}\n{body}")
    return "\n\n".join(parts)


def promql_text(queries: dict) -> str:
    """PromQL expressions, one per line, under their column names."""
    return "\n".join(f"# {k}\n{v}" for k, v in (queries or {}).items()) or "(none)"
