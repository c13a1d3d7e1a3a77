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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..findings import Finding
from ..sql import walk

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


# --------------------------------------------------------------------------- N+1 (pg_stat_statements)


#: Infrastructure routes — health checks, readiness and liveness probes, metrics scrapes.
#: They are requested often and never the "parent" of an N+1 without direct evidence.
INFRA_ROUTE = re.compile(r"^(?:[A-Za-z]+\s+)?/*(?:_?health\w*|ready\w*|live|livez|liveness|metrics|ping)(?:[/?#.]|$)",
                         re.I)


def is_infra_route(endpoint: str) -> bool:
    """``GET /health``, ``/health/services``, ``/healthz``, ``/ready``, ``/readyz``,
    ``/livez``, ``/metrics``, ``/ping``: not application endpoints."""
    return bool(INFRA_ROUTE.match(str(endpoint or "").strip()))


def _segments(route: str) -> list[str]:
    return [s.lower() for s in str(route).split("?", 1)[0].strip("/").split("/") if s]


def _is_param(seg: str) -> bool:
    return seg.startswith((":", "{", "<", "[")) or seg == "*"


def _names_table(route: str, table: str | None) -> bool:
    """The route's resource — its last segment that is not a parameter — names ``table``
    (``/api/products`` and ``/api/products/:id`` name products; ``/api/products/:id/clicks``
    names clicks)."""
    if not table:
        return False
    static = [s for s in _segments(route) if not _is_param(s)]
    return bool(static) and static[-1] in {table.lower(), singular(table)}


def _is_item_route(route: str) -> bool:
    segs = _segments(route)
    return bool(segs) and _is_param(segs[-1])


def endpoint_for_table(table: str | None, endpoints: Sequence[Any], many_rows: bool = True) -> str | None:
    """The params' endpoint whose route names ``table`` (``products`` → ``GET
    /api/products``); list routes (no trailing parameter) first when ``many_rows``.
    Health and metrics routes (:func:`is_infra_route`) are never named."""
    if not table:
        return None
    names = {table.lower(), singular(table)}
    hits = []
    for e in endpoints:
        if is_infra_route(e.name):
            continue
        segs = _segments(e.route)
        if any(s in names for s in segs):
            is_item = _is_item_route(e.route)
            hits.append((not _names_table(e.route, table), is_item if many_rows else not is_item,
                         e.method != "GET", len(segs), e.name))
    return sorted(hits)[0][-1] if hits else None


def attribute_endpoint(lookup_calls: float, lookup_table: str, parent: tuple[float, str | None, float] | None,
                       requests: dict[str, float] | None, endpoints: Sequence[Any] = (),
                       min_ratio: float = 5.0) -> dict[str, Any]:
    """Which endpoint issues an N+1, from evidence only.

    ``parent`` is the list query's (calls, table, rows per call), or None; ``requests`` the
    requests per endpoint over the window (Prometheus), or None.

    - With request counts and a parent: the candidates are the application endpoints
      (never a health or metrics route, :func:`is_infra_route`) with at least as many
      requests as the list query has calls (÷ 1.2: a list query runs at most about once
      per request of its endpoint). Each candidate scores its evidence: the list query runs
      about once per request (0.5-1.2 calls per request), its route's resource names the
      list query's table, and it is a list route (not ``/x/:id``) for a list query. The
      best score wins only when no other candidate has it; otherwise the attribution is
      *ambiguous* and the candidates are listed, best first.
    - With request counts and no parent: an N+1 only when the lookups are ≥ ``min_ratio``
      per request of all application requests together (some endpoint then issues that
      many per request); the candidates are the endpoints with ≥ ``min_ratio`` lookups per
      request of their own; one is named only when it is the only one.
    - Without request counts: the endpoint whose route names the list query's table (else
      the lookup's), said to rest on route names only.

    Returns ``{"endpoint", "requests", "ambiguous", "basis", "candidates": [...]}``;
    ``endpoint`` is None when ambiguous or unknown; ``n_plus_one`` is False when the
    request counts do not show an N+1 at all (no parent, too few lookups per request).
    """
    out: dict[str, Any] = {"endpoint": None, "requests": None, "ambiguous": False, "basis": "",
                           "candidates": [], "n_plus_one": True}
    ptable = parent[1] if parent else None
    if not requests:
        name = endpoint_for_table(ptable, endpoints, many_rows=True) if ptable else None
        name = name or endpoint_for_table(lookup_table, endpoints)
        out.update(endpoint=name, candidates=[{"endpoint": name}] if name else [],
                   basis=(f"the route naming {ptable or lookup_table} (no request counts to confirm it)" if name
                          else "no request counts, and no route names the tables"))
        if not parent:
            out.update(n_plus_one=False, basis="no list query found, and no request counts")
        return out
    app = {e: n for e, n in requests.items() if n > 0 and not is_infra_route(e)}
    infra = sorted(e for e in requests if is_infra_route(e))
    if parent:
        pcalls = float(parent[0])
        fits = {e: n for e, n in app.items() if pcalls <= n * 1.2}
        scored = []
        for e, n in fits.items():
            route = e.split(" ", 1)[-1]
            once = 0.5 <= pcalls / n <= 1.2
            named = _names_table(route, ptable)
            listed = not _is_item_route(route) and (parent[2] or 0) > 1.5
            why = [w for ok, w in ((once, f"the list query runs {pcalls / n:.2f}× per request"),
                                   (named, f"the route names {ptable}"),
                                   (listed, "a list route for a list query")) if ok]
            scored.append((1.0 * once + 1.0 * named + 0.5 * listed, n, e, why))
        scored.sort(key=lambda x: (-x[0], -x[1]))
        out["candidates"] = [{"endpoint": e, "requests": n, "lookups_per_request": lookup_calls / n,
                              "evidence": why} for _, n, e, why in scored]
        if not scored:
            out.update(ambiguous=True, basis=f"no application endpoint had as many requests as the list query had "
                                             f"calls ({pcalls:,.0f})" + (f"; {', '.join(infra)} not counted "
                                                                         f"(health/metrics routes)" if infra else ""))
        elif len(scored) == 1 or scored[0][0] > scored[1][0]:
            best = scored[0]
            out.update(endpoint=best[2], requests=best[1],
                       basis="; ".join(best[3]) if best[3] else
                       "the only application endpoint with as many requests as the list query has calls")
        else:
            tied = [c for c in scored if c[0] == scored[0][0]]
            out.update(ambiguous=True, basis=f"{len(tied)} endpoints fit the request counts equally well")
        return out
    total = sum(app.values())
    out["overall_per_request"] = lookup_calls / total if total else None
    if not total or lookup_calls / total < min_ratio:
        out.update(n_plus_one=False, basis="no list query found, and fewer than "
                                            f"{min_ratio:g} lookups per application request overall")
        return out
    cands = sorted(((n, e) for e, n in app.items() if lookup_calls / n >= min_ratio), reverse=True)
    out["candidates"] = [{"endpoint": e, "requests": n, "lookups_per_request": lookup_calls / n,
                          "evidence": [f"{lookup_calls / n:.0f} lookups per request"]} for n, e in cands]
    if len(cands) == 1:
        out.update(endpoint=cands[0][1], requests=cands[0][0],
                   basis=f"the only application endpoint with ≥ {min_ratio:g} lookups per request")
    else:
        out.update(ambiguous=True, basis=f"{lookup_calls / total:.1f} lookups per application request overall, "
                                         f"but no list query ties them to one endpoint")
    return out


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
    rows per call; of several, the one called most (the first listed on a tie). A lookup
    called about once per request (0.5–2×) of some application endpoint is a detail page
    (``GET /api/products/{id}`` reading its product's category) and never counts. With
    ``requests`` and no parent, a lookup counts when it is called ≥ ``min_ratio`` times per
    application request overall. The endpoint comes from evidence (:func:`attribute_endpoint`):
    request counts per endpoint over the window (Prometheus), the route naming the list's
    table; never a health or metrics route; when several endpoints fit equally the finding
    says so and lists them.

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
    rows, found, near = [], [], []
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
        detail = [e for e, n in (reqs or {}).items() if 0.5 <= r["calls"] / n <= 2.0 and not is_infra_route(e)]
        if detail:
            # About one lookup per request of some endpoint: a detail page (GET /x/:id), not
            # N+1 — even when a list query on the same table could pass for its parent.
            near.append({"query": short_query(r["query"]), "calls": r["calls"],
                         "why_not": f"about one per request of {detail[0]} (a detail page)"})
            continue
        if parents is None:
            parents = _ParentIndex(records, shape, min_ratio)
        parent = parents.best(r, table, key, min_ratio)
        pinfo = None
        if parent is not None:
            p, ps, _k = parent
            ptable = ps.from_tables[0] if ps.from_tables else (ps.tables[0] if ps.tables else None)
            pinfo = (float(p["calls"]), ptable, float(p["rows_per_call"] or 0))
        attr = attribute_endpoint(float(r["calls"]), table, pinfo, reqs, endpoints, min_ratio)
        if parent is None and not attr["n_plus_one"]:
            near.append({"query": short_query(r["query"]), "calls": r["calls"], "why_not": attr["basis"]})
            continue
        endpoint, ep_requests = attr["endpoint"], attr["requests"]
        per_request = r["calls"] / ep_requests if ep_requests else None
        names = [c["endpoint"] for c in attr["candidates"]]
        row = {"query": short_query(r["query"]), "calls": r["calls"], "rows_per_call": r["rows_per_call"],
               "parent_query": short_query(parent[0]["query"]) if parent else None,
               "parent_calls": parent[0]["calls"] if parent else None,
               "lookups_per_parent_call": parent[2] if parent else None,
               "endpoint": endpoint if endpoint else ("ambiguous: " + ", ".join(names[:4]) if names else None),
               "endpoint_requests": ep_requests, "lookups_per_request": per_request}
        rows.append(row)
        per = parent[2] if parent else (per_request or attr.get("overall_per_request"))
        if endpoint:
            where = f" of {endpoint}"
        elif names:
            where = (f"; the endpoint is ambiguous ({attr['basis']}): "
                     + ", ".join(names[:4]) + (f" or {len(names) - 4} more" if len(names) > 4 else ""))
        else:
            where = f"; the endpoint is unknown ({attr['basis']})"
        found.append(Finding(
            "db.n_plus_one", "critical" if per and per >= 50 else "warning",
            f"N+1: {int(r['calls'])} single-row lookups on {table}, ~{per:.0f} per "
            + ("list query" if parent else "application request") + where,
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "key_column": key,
                      "calls": r["calls"], "rows_per_call": r["rows_per_call"], "total_ms": r["total_ms"],
                      "parent_query": parent[0]["query"] if parent else None,
                      "parent_calls": parent[0]["calls"] if parent else None,
                      "lookups_per_parent_call": parent[2] if parent else None,
                      "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request,
                      "endpoint_ambiguous": bool(attr["ambiguous"]), "endpoint_basis": attr["basis"],
                      "endpoint_candidates": attr["candidates"][:8],
                      "source": "pg_stat_statements"},
            recommendation=n_plus_one_fix(table, key, parent[1].from_tables[0] if parent and parent[1].from_tables
                                          else None)))
    if not found:
        near.sort(key=lambda x: -x["calls"])
        found.append(Finding("db.n_plus_one", "ok",
                             f"No single-row lookup called ≥ {min_calls} times is issued ≥ {min_ratio:g}× per call of "
                             f"a list query" + (" or per application request" if reqs else "")
                             + f" ({len(q)} statements checked"
                             + (f"; {len(near)} frequent lookup(s) looked at, none is" if near else "") + ")",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "min_ratio": min_ratio, "min_calls": min_calls,
                                       "requests_known": reqs is not None, "lookups_looked_at": near[:5]}))
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


# --------------------------------------------------------------------------- privilege levels

#: The three privilege levels (docs/database.md, "Privilege levels"): each is fully useful,
#: each higher one adds verification. ``none`` is below the first (no pg_read_all_stats).
LEVELS: dict[str, tuple[int, str, str]] = {
    "none": (0, "without pg_monitor",
             "other roles' statements show as <insufficient privilege> and cannot be analysed"),
    "monitor": (1, "pg_monitor only",
                "statistics and statement texts: slow queries, N+1, large results, bloat, connections; "
                "index candidates from the statement text (pglast), not verified by EXPLAIN"),
    "read_all": (2, "pg_monitor + pg_read_all_data",
                 "index candidates verified (or refuted, saying why) by the planner's own plan (EXPLAIN)"),
    "hypopg": (3, "pg_monitor + pg_read_all_data + hypopg",
               "index candidates verified by EXPLAIN and by the planner's cost with each index, created "
               "hypothetically in perfbook's session only (hypopg)"),
}

#: What the next level needs (the SQL) and what it adds.
NEXT_LEVEL: dict[str, tuple[str, str, str]] = {
    "none": ("monitor", "GRANT pg_monitor TO {role};",
             "every role's statement texts (pg_read_all_stats) and the statistics views"),
    "monitor": ("read_all",
                "GRANT pg_read_all_data TO {role};  -- PostgreSQL 14+; before 14:\n"
                "-- GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};",
                "EXPLAIN of each index candidate: the planner confirms the sequential scan or says why "
                "the index is not needed"),
    "read_all": ("hypopg",
                 "-- as a superuser, in this database (Debian: apt install postgresql-<major>-hypopg):\n"
                 "CREATE EXTENSION hypopg;",
                 "the planner's estimated cost with each suggested index, created hypothetically (hypopg): "
                 "kept only when the cost at least halves (dexter's rule)"),
}


def privilege_level(priv: dict | None) -> tuple[str, list[Finding]]:
    """The privilege level the session has (``none``, ``monitor``, ``read_all``,
    ``hypopg``) from :func:`perfbook.sources.postgres.privileges`, and one ``info``
    ``db.privileges`` finding saying which level ran and what the next one would add.

    ``read_all`` needs SELECT on every user table (``pg_read_all_data``, a superuser, or
    plain grants); with SELECT on only some of them EXPLAIN verifies the candidates on
    those, and the level stays ``monitor``. ``hypopg`` is ``read_all`` with the hypopg
    extension created in the database."""
    if not priv:
        return "unknown", []
    role = priv.get("user") or "perfbook"
    tables = int(priv.get("tables") or 0)
    unreadable = list(priv.get("unreadable") or [])
    stats = bool(priv.get("superuser") or priv.get("read_all_stats"))
    reads_all = bool(priv.get("superuser") or priv.get("read_all_data") or (tables > 0 and not unreadable))
    if not stats:
        level = "none"
    elif reads_all:
        level = "hypopg" if priv.get("hypopg") else "read_all"
    else:
        level = "monitor"
    number, label, gives = LEVELS[level]
    partial = ""
    if level == "monitor" and tables and len(unreadable) < tables:
        partial = (f" (SELECT on {tables - len(unreadable)} of {tables} tables: EXPLAIN verifies the "
                   f"candidates on those)")
    title = f"Privilege level {number} of 3 — {label} (role {role}){partial}: {gives}."
    rec = ""
    nxt = NEXT_LEVEL.get(level)
    if nxt:
        nlevel, sql, adds = nxt
        title += f" Next level, {LEVELS[nlevel][1]}, adds {adds}"
        if nlevel == "hypopg" and not priv.get("hypopg_available"):
            title += " (the hypopg extension is not installed on this server)"
        rec = sql.format(role=quote_ident(role))
    else:
        title += " Nothing more to grant."
    ev = {"level": level, "level_number": number, "role": role, "superuser": bool(priv.get("superuser")),
          "pg_monitor": bool(priv.get("pg_monitor")), "pg_read_all_stats": bool(priv.get("read_all_stats")),
          "pg_read_all_data": bool(priv.get("read_all_data")), "tables": tables,
          "tables_without_select": len(unreadable), "examples_without_select": unreadable[:10],
          "hypopg_installed": bool(priv.get("hypopg")), "hypopg_available": bool(priv.get("hypopg_available")),
          "next_level": nxt[0] if nxt else None, "next_level_adds": nxt[2] if nxt else None}
    return level, [Finding("db.privileges", "info", title, subject=f"role {role}", evidence=ev,
                           recommendation=rec)]


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


_EXPLAIN_COLS = ["queryid", "query", "calls", "total_ms", "mean_ms", "skip"]


def explain_candidates(stmts: pd.DataFrame, tables: pd.DataFrame, top_n: int = 10,
                       min_rows: int = 10_000, candidates: Sequence[IndexSuggestion] = (),
                       privileges: dict | None = None) -> pd.DataFrame:
    """The statements worth an EXPLAIN: SELECTs among the top ``top_n`` by total time that
    read a table of ≥ ``min_rows`` rows, and the statements of the index ``candidates``
    (:func:`index_candidates`). ``skip`` says why one is not sent: with ``privileges``
    (:func:`perfbook.sources.postgres.privileges`) a statement reading a table the role
    cannot SELECT would fail with InsufficientPrivilege, so it is not sent at all."""
    q = _queries(stmts)
    if q.empty or tables is None or tables.empty:
        return pd.DataFrame(columns=_EXPLAIN_COLS)
    big = set(tables.loc[tables["n_live_tup"] >= min_rows, "table"])
    keep, seen = [], set()
    for r in q.nlargest(top_n * 3, "total_ms").to_dict("records"):
        if len(keep) >= top_n:
            break
        sh = query_shape(r["query"])
        if sh.kind == "select" and big & set(sh.tables):
            keep.append(r)
            seen.add(r["queryid"])
    by_id = {r["queryid"]: r for r in q.to_dict("records")}
    for c in candidates:
        if c.queryid not in seen and c.queryid in by_id and query_shape(by_id[c.queryid]["query"]).kind == "select":
            keep.append(by_id[c.queryid])
            seen.add(c.queryid)
    unreadable: dict[str, str] = {}
    for full in (privileges or {}).get("unreadable") or []:
        _schema, _, name = str(full).rpartition(".")
        unreadable.setdefault(name, full)
    out = []
    for r in keep:
        skip = None
        if unreadable and not (privileges or {}).get("superuser"):
            denied = [unreadable[t] for t in query_shape(r["query"]).tables if t in unreadable]
            if denied:
                skip = (f"no SELECT privilege on {', '.join(denied[:3])} (EXPLAIN would fail with "
                        f"InsufficientPrivilege)")
        out.append({**{k: r.get(k) for k in _EXPLAIN_COLS[:-1]}, "skip": skip})
    return pd.DataFrame(out, columns=_EXPLAIN_COLS)


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


def index_key(equality: Sequence[str], ranges: Sequence[str], sort: Sequence[tuple[str, bool]],
              limited: bool) -> tuple[list[str], list[tuple[str, bool]]]:
    """The index's columns and their sort directions, one rule for every level: the
    equality columns first, then the range columns, then the ORDER BY columns with their
    direction. When the statement has a LIMIT, the ORDER BY columns come before the range
    columns instead: the index then returns the rows already in order and the scan stops
    after LIMIT rows (a range column first would need a sort of every row in the range)."""
    cols = list(dict.fromkeys(equality))
    rng = [c for c in dict.fromkeys(ranges) if c not in cols]
    srt = [c for c, _ in sort if c not in cols]
    tail = srt + [c for c in rng if c not in srt] if limited else rng + [c for c in srt if c not in rng]
    cols += list(dict.fromkeys(tail))
    direction = dict(sort)
    return cols, [(c, bool(direction[c])) for c in cols if c in direction]


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
    schema: str | None = None
    #: "EXPLAIN" (from a plan) or "statement text" (from the statement, pglast)
    source: str = "EXPLAIN"
    share_pct: float | None = None
    #: other statements the same index serves: [(queryid, short text, share %)]
    also: list = field(default_factory=list)
    #: the table's statistics and the statement's numbers, for the finding's evidence
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = "idx_" + self.table.split(".")[-1] + "_" + "_".join(self.columns)
        return base[:63]

    @property
    def qualified_table(self) -> str:
        """``schema.table``, quoted where needed (the schema of pg_stat_user_tables)."""
        if self.schema:
            return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        return _qualified(self.table)

    @property
    def columns_text(self) -> str:
        desc = {c for c, d in self.sort if d}
        return ", ".join(quote_ident(c) + (" DESC" if c in desc else "") for c in self.columns)

    @property
    def create_index(self) -> str:
        return f"CREATE INDEX CONCURRENTLY {quote_ident(self.name)} ON {self.qualified_table} ({self.columns_text});"


def _schemas_by_table(tables: pd.DataFrame | None) -> dict[str, str]:
    """relname → schema, for names that are in one schema only (else ``public`` when one of
    them is there)."""
    found: dict[str, list[str]] = {}
    if tables is not None and not tables.empty and "schema" in tables:
        for s, t in zip(tables["schema"], tables["table"]):
            found.setdefault(t, []).append(s)
    out = {}
    for t, ss in found.items():
        if len(set(ss)) == 1:
            out[t] = ss[0]
        elif "public" in ss:
            out[t] = "public"
    return out


def index_suggestions(plans: pd.DataFrame, tables: pd.DataFrame, indexes: pd.DataFrame | None = None,
                      min_rows: int = 10_000, max_selectivity: float = 0.10) -> list[IndexSuggestion]:
    """Indexes the plans ask for (dexter's idea, from plain EXPLAIN).

    For each plan (rows of ``queryid, query, plan``): a scan (Seq Scan, or an Index Scan
    whose index does not lead with the filtered columns) of a table with ≥ ``min_rows``
    live rows, with a ``Filter`` an ordinary B-tree can serve, that keeps ≤
    ``max_selectivity`` of the table (or feeds a Sort/LIMIT). The index columns follow
    :func:`index_key` (equality, then range, then sort columns with their direction — the
    sort columns before the range ones under a LIMIT): the runbook's
    ``products(category_id, created_at DESC)``. No suggestion when an index already
    leads with those columns.
    """
    rows_of = {}
    for r in tables.to_dict("records"):
        rows_of[r["table"]] = float(r["n_live_tup"] or r.get("reltuples") or 0)
        rows_of[display_table(r.get("schema"), r["table"])] = rows_of[r["table"]]
    schemas = _schemas_by_table(tables)
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
            cols, sort_dirs = index_key(eq, rng, sort, limited)
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
            out.append(IndexSuggestion(rec.get("queryid"), rec["query"], table, cols, sort_dirs, ntype, filt,
                                       float(node.get("Plan Rows") or 0), table_rows,
                                       float(plan.get("Total Cost") or 0), schema=schemas.get(table)))
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


# ------------------------------------------------ index candidates from the statement text


@dataclass
class RelationUse:
    """How one statement (one SELECT/UPDATE/DELETE level of it) reads one relation: the
    columns its WHERE (and JOIN ... ON) compare with a value, and its ORDER BY."""

    table: str
    schema: str | None
    alias: str
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    limited: bool = False
    aggregate: bool = False
    #: the whole statement reads this relation and no other (rows per call are its rows)
    only_relation: bool = False

    @property
    def conditions(self) -> str:
        parts = [f"{c} = …" for c in self.equality] + [f"{c} range" for c in self.range]
        if self.order_by:
            parts.append("ORDER BY " + ", ".join(c + (" DESC" if d else "") for c, d in self.order_by))
        if self.limited:
            parts.append("LIMIT")
        return "; ".join(parts)


def _fields(ref: Any) -> list[str] | None:
    parts = [getattr(f, "sval", None) for f in ref.fields]
    return parts if parts and all(parts) else None


def statement_predicates(text: str, columns: dict[str, set[str]] | None = None) -> list[RelationUse]:
    """What an index could serve in ``text``, per relation read (pglast; the statement
    text alone, no privilege on the tables needed).

    Every SELECT level (subqueries, CTEs, UNION arms), UPDATE and DELETE of the statement is
    read on its own, with its own FROM: a term ``col = value``, ``col IN (...)``,
    ``col = ANY($1)``, ``col IN (SELECT ...)`` or ``col IS NULL`` is an *equality*;
    ``<``, ``>``, ``<=``, ``>=`` and ``BETWEEN`` a *range*. The value side may hold
    parameters, constants, functions of them (``now() - $1``), scalar subqueries and
    columns of an enclosing query (a correlated subquery); a term comparing two columns of
    the same level (a join condition), a function of the column (``lower(email) = $1``),
    an OR, LIKE and the like are left out. A column is attributed by its qualifier (the
    alias), else to the level's only relation, else (``columns``: table → its column
    names) to the one relation that has it. ORDER BY keeps its leading plain columns of one
    relation (not output aliases, not after GROUP BY or aggregates), with DESC.
    Relations named like a CTE of the statement are not tables and are skipped."""
    from pglast import ast, parse_sql
    from pglast.enums import A_Expr_Kind, NullTestType, SetOperation, SortByDir, SubLinkType

    if not text or UTILITY.match(text):
        return []
    try:
        stmts = parse_sql(text)
    except Exception:  # noqa: BLE001 - truncated texts, other dialects
        return []
    if len(stmts) != 1:
        return []
    root = stmts[0].stmt
    ctes = {n.ctename for n in walk(root) if isinstance(n, ast.CommonTableExpr)}
    relations = [n for n in walk(root) if isinstance(n, ast.RangeVar)
                 and not (n.schemaname is None and n.relname in ctes)]
    only = len({(n.schemaname, n.relname) for n in relations}) == 1 and len(relations) == 1
    out: list[RelationUse] = []

    def aggregates(sel: Any) -> bool:
        if sel.groupClause or getattr(sel, "distinctClause", None):
            return True
        stack = list(sel.targetList or ())
        while stack:
            n = stack.pop()
            if isinstance(n, ast.SubLink):
                continue
            if isinstance(n, ast.FuncCall) and (n.funcname[-1].sval or "").lower() in _AGGREGATES and not n.over:
                return True
            if isinstance(n, (list, tuple)):
                stack.extend(n)
            elif isinstance(n, ast.Node):
                stack.extend(v for v in (getattr(n, s, None) for s in n.__slots__)
                             if isinstance(v, (ast.Node, list, tuple)))
        return False

    for node in walk(root):
        if isinstance(node, ast.SelectStmt):
            if node.op not in (None, SetOperation.SETOP_NONE) or node.valuesLists:
                continue  # the arms of a UNION are SelectStmts of their own
            items, where, sort = list(node.fromClause or ()), node.whereClause, node.sortClause
            limited, agg, targets = node.limitCount is not None, aggregates(node), node.targetList or ()
        elif isinstance(node, ast.UpdateStmt):
            items, where, sort = [node.relation, *(node.fromClause or ())], node.whereClause, None
            limited, agg, targets = False, False, ()
        elif isinstance(node, ast.DeleteStmt):
            items, where, sort = [node.relation, *(node.usingClause or ())], node.whereClause, None
            limited, agg, targets = False, False, ()
        else:
            continue
        scope: dict[str, RelationUse] = {}
        local: set[str] = set()   # aliases of subqueries, functions and CTEs read at this level
        quals: list[Any] = []

        def add(item: Any) -> None:
            if isinstance(item, ast.RangeVar):
                if item.schemaname is None and item.relname in ctes:
                    local.add(item.alias.aliasname if item.alias is not None else item.relname)
                    return
                alias = item.alias.aliasname if item.alias is not None else item.relname
                scope[alias] = RelationUse(item.relname, item.schemaname, alias, limited=limited,
                                           aggregate=agg, only_relation=only)
            elif isinstance(item, ast.JoinExpr):
                add(item.larg)
                add(item.rarg)
                if item.quals is not None:
                    quals.extend(_and_terms(item.quals))
            elif getattr(item, "alias", None) is not None:   # RangeSubselect, RangeFunction
                local.add(item.alias.aliasname)

        for item in items:
            add(item)
        if not scope:
            continue

        def resolve(ref: Any) -> Any:
            """(use, column), "outer" (a column of an enclosing query) or None."""
            parts = _fields(ref)
            if parts is None:
                return None
            if len(parts) >= 2:
                if parts[-2] in local:
                    return None
                return (scope[parts[-2]], parts[-1]) if parts[-2] in scope else "outer"
            col = parts[0]
            if len(scope) == 1:
                return next(iter(scope.values())), col
            owners = [u for u in scope.values() if col in (columns or {}).get(u.table, ())]
            return (owners[0], col) if len(owners) == 1 else None

        def is_value(expr: Any) -> bool:
            stack = [expr]
            while stack:
                n = stack.pop()
                if isinstance(n, ast.SubLink):
                    continue  # a scalar subquery: computed apart from this level's rows
                if isinstance(n, ast.ColumnRef) and resolve(n) != "outer":
                    return False
                if isinstance(n, (list, tuple)):
                    stack.extend(n)
                elif isinstance(n, ast.Node):
                    stack.extend(v for v in (getattr(n, s, None) for s in n.__slots__)
                                 if isinstance(v, (ast.Node, list, tuple)))
            return True

        def column(expr: Any) -> tuple[RelationUse, str] | None:
            if not isinstance(expr, ast.ColumnRef):
                return None
            r = resolve(expr)
            return r if isinstance(r, tuple) else None

        for term in (_and_terms(where) if where is not None else []) + quals:
            if isinstance(term, ast.A_Expr):
                op = term.name[-1].sval if term.name else ""
                for col_side, other, flipped in ((term.lexpr, term.rexpr, False), (term.rexpr, term.lexpr, True)):
                    c = column(col_side)
                    if c is None or other is None or not is_value(other):
                        continue
                    use, name = c
                    if op == "=" and (term.kind == A_Expr_Kind.AEXPR_OP
                                      or (term.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and not flipped)):
                        use.equality.append(name)
                    elif term.kind == A_Expr_Kind.AEXPR_OP and op in ("<", ">", "<=", ">="):
                        use.range.append(name)
                    elif term.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM) and not flipped:
                        use.range.append(name)
                    break
            elif isinstance(term, ast.NullTest) and term.nulltesttype == NullTestType.IS_NULL:
                c = column(term.arg)
                if c:
                    c[0].equality.append(c[1])
            elif isinstance(term, ast.SubLink) and term.subLinkType == SubLinkType.ANY_SUBLINK:
                op = term.operName[-1].sval if term.operName else "="
                c = column(term.testexpr)
                if c and op == "=":
                    c[0].equality.append(c[1])
        if sort and not agg:
            output_names = {t.name for t in targets if getattr(t, "name", None)}
            order: list[tuple[str, bool]] = []
            owner = None
            for sb in sort:
                if not isinstance(sb.node, ast.ColumnRef):
                    break
                parts = _fields(sb.node)
                if parts is None or (len(parts) == 1 and parts[0] in output_names):
                    break
                c = column(sb.node)
                if c is None or (owner is not None and c[0] is not owner):
                    break
                owner = c[0]
                order.append((c[1], sb.sortby_dir == SortByDir.SORTBY_DESC))
            if owner is not None:
                owner.order_by = order
        for use in scope.values():
            use.equality = list(dict.fromkeys(use.equality))
            use.range = [c for c in dict.fromkeys(use.range) if c not in use.equality]
            if use.equality or use.range or use.order_by:
                out.append(use)
    return out


def _served_by(existing: Sequence[tuple[str, list[str]]], equality: Sequence[str],
               columns: Sequence[str]) -> str | None:
    """The name of an existing index that already serves these columns: it leads with all of
    them, or (with equality columns) with exactly the equality columns, or (without) with
    the first column."""
    cols = list(columns)
    for name, ix in existing:
        if ix[: len(cols)] == cols:
            return name
        if equality and len(ix) >= len(equality) and set(ix[: len(equality)]) == set(equality):
            return name
        if not equality and ix and cols and ix[0] == cols[0]:
            return name
    return None


_CONSIDERED_COLS = ["queryid", "query", "table", "share_pct", "calls", "conditions", "verdict"]


def index_candidates(stmts: pd.DataFrame, tables: pd.DataFrame | None, indexes: pd.DataFrame | None = None,
                     min_rows: int = 10_000, max_index_share: float = 0.95, min_share: float = 0.05,
                     max_selectivity: float = 0.10, min_scans: int = 10
                     ) -> tuple[pd.DataFrame, list[IndexSuggestion]]:
    """Index candidates from the statement text: what the lowest privilege level (pg_monitor
    only, no EXPLAIN) can conclude, ranked by the statements' share of all statement time.

    A statement (share ≥ ``min_share`` of the total time in pg_stat_statements) is a
    candidate's source for each relation it reads (:func:`statement_predicates`) that is

    - large and read mostly sequentially (pg_stat_user_tables: ≥ ``min_rows`` live rows,
      ≥ ``min_scans`` sequential scans, index share of scans < ``max_index_share`` —
      :func:`seq_scan_tables`),
    - compared with a value in the WHERE, or ordered under a LIMIT,
    - not read whole: a statement reading that table alone, with no LIMIT and no
      aggregate, that returns ≥ ``max_selectivity`` of its rows per call is best served by
      the sequential scan it has,
    - not already indexed: no valid index leads with the candidate's columns, nor with
      exactly its equality columns (:func:`_served_by`).

    The columns follow :func:`index_key`. One candidate per table and column list (the
    statement with the largest share first; the others listed in ``also``); a candidate
    whose columns lead another's on the same table is folded into it.

    Returns (one row per statement and relation considered, with the verdict; the
    candidates, largest share first).
    """
    q = _queries(stmts)
    if q.empty or tables is None or tables.empty:
        return pd.DataFrame(columns=_CONSIDERED_COLS), []
    total = float(q["total_ms"].sum() or 0.0)
    if total <= 0:
        return pd.DataFrame(columns=_CONSIDERED_COLS), []
    t = tables.copy()
    idx = t["idx_scan"].fillna(0).astype(float)
    seq = t["seq_scan"].fillna(0).astype(float)
    t["index_share"] = idx / (idx + seq).where((idx + seq) > 0)
    stats: dict[tuple[str | None, str], dict] = {}
    by_name: dict[str, list[dict]] = {}
    for r in t.to_dict("records"):
        stats[(r.get("schema"), r["table"])] = r
        by_name.setdefault(r["table"], []).append(r)
    colmap = None
    if "columns" in t:
        colmap = {r["table"]: set(r["columns"] or ()) for r in t.to_dict("records")
                  if isinstance(r.get("columns"), (list, tuple))}
    existing: dict[Any, list[tuple[str, list[str]]]] = {}
    if indexes is not None and not indexes.empty:
        for r in indexes.to_dict("records"):
            if r.get("is_valid", True):
                entry = (r["index"], index_columns(r["definition"]))
                existing.setdefault((r.get("schema"), r["table"]), []).append(entry)
                existing.setdefault(r["table"], []).append(entry)
    considered, found = [], {}
    for r in q.sort_values("total_ms", ascending=False).to_dict("records"):
        share = r["total_ms"] / total
        if share < min_share:
            break
        for use in statement_predicates(r["query"], colmap):
            if use.schema is not None:
                st = stats.get((use.schema, use.table))
            else:
                rows = by_name.get(use.table, [])
                st = rows[0] if len(rows) == 1 else next((x for x in rows if x.get("schema") == "public"), None)
            row = {"queryid": r["queryid"], "query": short_query(r["query"]), "table": use.table,
                   "share_pct": 100 * share, "calls": r["calls"], "conditions": use.conditions, "verdict": None}
            considered.append(row)
            if st is None:
                row["verdict"] = "not a user table with statistics (pg_stat_user_tables)"
                continue
            name = display_table(st.get("schema"), st["table"])
            row["table"] = name
            live = float(st.get("n_live_tup") or 0)
            ishare = st.get("index_share")
            ishare = None if ishare is None or pd.isna(ishare) else float(ishare)
            if live < min_rows:
                row["verdict"] = f"{name} has {live:,.0f} rows (< {min_rows:,})"
                continue
            if float(st.get("seq_scan") or 0) < min_scans:
                row["verdict"] = f"{name}: only {float(st.get('seq_scan') or 0):,.0f} sequential scans (< {min_scans})"
                continue
            if (ishare or 0) >= max_index_share:
                row["verdict"] = f"{name} is read mostly by index ({100 * (ishare or 0):.0f} % of scans)"
                continue
            order = use.order_by
            if not use.equality and not use.range and not (order and use.limited):
                row["verdict"] = "no condition an index could serve (ORDER BY without LIMIT only)"
                continue
            rpc = float(r.get("rows_per_call") or 0)
            if use.only_relation and not use.aggregate and not use.limited and rpc >= max_selectivity * live:
                row["verdict"] = (f"returns {rpc:,.0f} rows per call, {100 * rpc / live:.0f} % of {name}: a "
                                  f"sequential scan is the right plan")
                continue
            cols, sort_dirs = index_key(use.equality, use.range, order, use.limited)
            served = _served_by(existing.get((st.get("schema"), st["table"])) or existing.get(st["table"], []),
                                use.equality, cols)
            if served:
                row["verdict"] = f"already indexed: {served}"
                continue
            cand = IndexSuggestion(
                r["queryid"], r["query"], st["table"], cols, sort_dirs, "statement text", use.conditions,
                float("nan"), live, 0.0, schema=st.get("schema"), source="statement text", share_pct=100 * share,
                stats={"seq_scan": st.get("seq_scan"), "seq_tup_read": st.get("seq_tup_read"),
                       "idx_scan": st.get("idx_scan"), "index_share": ishare, "n_live_tup": live,
                       "equality": list(use.equality), "range": list(use.range),
                       "order_by": [c + (" DESC" if d else "") for c, d in order], "limit": use.limited})
            key = (st.get("schema"), st["table"], tuple(cols), tuple(sort_dirs))
            if key in found:
                found[key].also.append((r["queryid"], short_query(r["query"]), 100 * share))
                row["verdict"] = f"same index as a larger statement: ({cand.columns_text})"
                continue
            found[key] = cand
            row["verdict"] = f"candidate: {cand.qualified_table} ({cand.columns_text})"
    # a candidate whose columns lead another's on the same table (same directions) is folded into it
    cands = sorted(found.values(), key=lambda c: -(c.share_pct or 0))
    kept: list[IndexSuggestion] = []
    for c in sorted(cands, key=lambda c: -len(c.columns)):
        host = next((k for k in kept if k.table == c.table and k.schema == c.schema
                     and k.columns[: len(c.columns)] == c.columns
                     and [d for d in k.sort if d[0] in c.columns] == c.sort), None)
        if host is not None:
            host.also.append((c.queryid, short_query(c.query), c.share_pct))
            host.also.extend(c.also)
        else:
            kept.append(c)
    kept.sort(key=lambda c: -(c.share_pct or 0))
    return pd.DataFrame(considered, columns=_CONSIDERED_COLS), kept


def hypopg_targets(candidates: Sequence[IndexSuggestion], suggestions: Sequence[IndexSuggestion],
                   plans: pd.DataFrame | None) -> list[IndexSuggestion]:
    """The suggestions worth a hypopg check: those whose statement EXPLAIN could plan (the
    others would fail the same way again), one per (queryid, table)."""
    ok = set()
    if plans is not None and not plans.empty:
        ok = {r["queryid"] for r in plans.to_dict("records") if isinstance(r.get("plan"), dict)}
    out, seen = [], set()
    for s in [*suggestions, *candidates]:
        if s.queryid in ok and (s.queryid, s.table) not in seen:
            seen.add((s.queryid, s.table))
            out.append(s)
    return out


def _plan_reading(plan: dict, table: str, table_rows: float) -> str:
    """How a plan reads ``table``, in words (for a candidate EXPLAIN does not confirm)."""
    parts = []
    for node, _ in _plan_nodes(plan):
        if node.get("Relation Name") != table:
            continue
        desc = node.get("Node Type", "scan")
        if node.get("Index Name"):
            desc += f" using {node['Index Name']}"
        if node.get("Index Cond"):
            desc += f" (Index Cond: {node['Index Cond']})"
        if node.get("Recheck Cond"):
            desc += f" (Recheck Cond: {node['Recheck Cond']})"
        if node.get("Filter"):
            rows = float(node.get("Plan Rows") or 0)
            pct = f", {100 * rows / table_rows:.0f} % of its rows" if table_rows else ""
            desc += f" with Filter {node['Filter']} keeping an estimated {rows:,.0f} rows{pct}"
        parts.append(desc)
    if not parts:
        return f"the plan does not read {table} at all"
    return "; ".join(parts)


def missing_indexes(tables: pd.DataFrame, suggestions: Sequence[IndexSuggestion],
                    stmts: pd.DataFrame | None = None, verified: dict | None = None,
                    min_rows: int = 10_000, max_index_share: float = 0.95,
                    slow_mean_ms: float = 20.0, slow_calls: int = 100,
                    candidates: Sequence[IndexSuggestion] = (), plans: pd.DataFrame | None = None,
                    considered: pd.DataFrame | None = None, critical_share: float = 0.50,
                    level: str | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``db.missing_index``: one finding per index to create, with the exact
    ``CREATE INDEX CONCURRENTLY`` (schema-qualified), whatever the privilege level.

    - ``candidates`` (:func:`index_candidates`, from the statement text) that EXPLAIN
      could not check (``plans`` has no plan for them: no SELECT privilege, a type the
      planner cannot infer, ...) are findings marked "not verified by EXPLAIN: <reason>,
      grant pg_read_all_data to verify".
    - A candidate whose plan scans the table with a filter an index would serve (the
      same test as :func:`index_suggestions`) is *verified by EXPLAIN*; the plan's columns
      are used, and where they differ from the text's the evidence says so.
    - A candidate whose plan reads the table otherwise (an index scan already, or a filter
      keeping most of the table) becomes ``info``: EXPLAIN does not confirm it, and the
      finding says what the plan does instead.
    - ``suggestions`` from plans with no candidate of their own are findings too (EXPLAIN
      found what the text could not: the reason is in the evidence).
    - ``verified`` (queryid/table → {cost_before, cost_after} from hypopg) keeps an index
      only if the planner's cost at least halves (dexter's rule); one that does not becomes
      ``info`` with both costs.

    Severity, the same at every level: ``critical`` when the statement takes ≥
    ``critical_share`` of all statement time or is slow by the pghero bar (mean ≥
    ``slow_mean_ms`` over ≥ ``slow_calls`` calls), else ``warning``. Seq-scan-heavy tables
    no finding explains are ``info`` (their statements may be fine full scans).
    """
    heavy = seq_scan_tables(tables, min_rows, max_index_share)
    stats = {r["table"]: r for r in heavy.to_dict("records")}
    q = _queries(stmts) if stmts is not None else pd.DataFrame()
    by_id = {r["queryid"]: r for r in q.to_dict("records")} if not q.empty else {}
    total_ms = float(q["total_ms"].sum()) if not q.empty else 0.0
    plan_of = {}
    if plans is not None and not plans.empty:
        plan_of = {r["queryid"]: r for r in plans.to_dict("records")}
    why_not_text: dict[tuple[Any, str], str] = {}
    if considered is not None and not considered.empty:
        for r in considered.to_dict("records"):
            why_not_text.setdefault((r["queryid"], str(r["table"]).split(".")[-1]), r["verdict"])
    schemas = _schemas_by_table(tables)
    from_plan = {(s.queryid, s.table): s for s in suggestions}
    # (suggestion, how it was verified, the marking, the candidate from text if any)
    items: list[tuple[IndexSuggestion, str, str]] = []
    refuted: list[tuple[IndexSuggestion, str]] = []
    for c in candidates:
        p = plan_of.get(c.queryid)
        plan = p.get("plan") if p else None
        if isinstance(plan, dict):
            s = from_plan.pop((c.queryid, c.table), None)
            if s is None:
                refuted.append((c, _plan_reading(plan, c.table, c.table_rows)))
                continue
            note = f"verified by EXPLAIN: {s.node_type} on {c.table} with Filter {s.filter}"
            if s.columns != c.columns or s.sort != c.sort:
                note += f" (the statement text alone suggested ({c.columns_text}); the plan's filter and sort decide)"
            merged = IndexSuggestion(s.queryid, s.query, s.table, s.columns, s.sort, s.node_type, s.filter,
                                     s.plan_rows, s.table_rows, s.total_cost, schema=s.schema or c.schema,
                                     source="EXPLAIN", share_pct=c.share_pct, also=list(c.also), stats=dict(c.stats))
            items.append((merged, "EXPLAIN", note))
        else:
            reason = (p.get("error") if p else None) or "the statement was not explained"
            items.append((c, "", f"not verified by EXPLAIN: {reason}, grant pg_read_all_data to verify"))
    for s in from_plan.values():
        if s.schema is None:
            s.schema = schemas.get(s.table)
        why = why_not_text.get((s.queryid, s.table))
        note = "found by EXPLAIN" + (f" (the statement text alone did not suggest it: {why})" if why else "")
        items.append((s, "EXPLAIN", note))

    rows, found = [], []
    covered = set()
    for s, how, note in items:
        st = by_id.get(s.queryid, {})
        share = s.share_pct if s.share_pct is not None else (
            100.0 * st["total_ms"] / total_ms if st and total_ms else None)
        display = display_table(s.schema, s.table)
        v = (verified or {}).get((s.queryid, s.table))
        if v and v.get("cost_after") is not None and v.get("cost_before") and v["cost_after"] > v["cost_before"] / 2:
            rows.append({"table": display, "columns": s.columns_text, "create_index": s.create_index,
                         "verdict": f"dropped: hypopg cost {v['cost_before']:.0f} → {v['cost_after']:.0f}"})
            covered.add(display)
            found.append(Finding(
                "db.missing_index", "info",
                f"{display}: an index on ({s.columns_text}) was a candidate ({note}), but hypopg estimates "
                f"the statement's cost {v['cost_before']:.0f} → {v['cost_after']:.0f}, not halved: not recommended",
                subject=display,
                evidence={"table": display, "schema": s.schema, "columns": list(s.columns), "query": s.query,
                          "queryid": s.queryid, "share_pct": share, "create_index": s.create_index,
                          "hypopg_cost_before": v.get("cost_before"), "hypopg_cost_after": v.get("cost_after"),
                          "verification": note, "privilege_level": level},
                recommendation=f"-- not recommended by the planner's estimate; to try it anyway:\n{s.create_index}"))
            continue
        covered.add(display)
        slow = bool(st) and st.get("mean_ms", 0) >= slow_mean_ms and st.get("calls", 0) >= slow_calls
        big_share = share is not None and share >= 100 * critical_share
        t = stats.get(display, {})
        tstats = {**{k: t.get(k) for k in ("seq_scan", "seq_tup_read", "idx_scan", "index_share")}, **s.stats}
        verification = note
        if v and v.get("cost_after") is not None:
            verification += f"; hypopg: est. cost {v['cost_before']:.0f} → {v['cost_after']:.0f}"
            how = "EXPLAIN + hypopg"
        elif v and v.get("error"):
            verification += f"; hypopg could not check it: {v['error']}"
        ev = {"table": display, "schema": s.schema, "columns": list(s.columns),
              "sort": [f"{c} DESC" if d else c for c, d in s.sort], "create_index": s.create_index,
              "query": s.query, "queryid": s.queryid, "share_pct": share,
              "plan_node": s.node_type if s.source == "EXPLAIN" else None,
              "filter": s.filter if s.source == "EXPLAIN" else None,
              "conditions": s.filter if s.source == "statement text" else None,
              "estimated_rows": s.plan_rows if s.source == "EXPLAIN" else None, "table_rows": s.table_rows,
              "plan_total_cost": s.total_cost if s.source == "EXPLAIN" else None,
              "calls": st.get("calls"), "mean_ms": st.get("mean_ms"), "total_ms": st.get("total_ms"),
              "rows_per_call": st.get("rows_per_call"),
              "seq_scan": tstats.get("seq_scan"), "seq_tup_read": tstats.get("seq_tup_read"),
              "idx_scan": tstats.get("idx_scan"), "index_share": tstats.get("index_share"),
              "verified_by": how or None, "verification": verification, "privilege_level": level,
              "also_serves": [{"queryid": a[0], "query": a[1], "share_pct": a[2]} for a in s.also][:5],
              "threshold_critical_share_pct": 100 * critical_share}
        if v:
            ev.update(hypopg_cost_before=v.get("cost_before"), hypopg_cost_after=v.get("cost_after"))
        rows.append({"table": display, "columns": s.columns_text, "create_index": s.create_index,
                     "verdict": verification})
        share_txt = f" ({share:.0f} % of all statement time)" if share is not None else ""
        if how:
            title = (f"{s.node_type} on {display} ({s.table_rows:,.0f} rows) for a top statement{share_txt}: "
                     f"index on ({s.columns_text}) missing — {verification}")
        else:
            seqs = tstats.get("seq_scan")
            ish = tstats.get("index_share")
            scans = (f"{float(seqs):,.0f} sequential scans, {100 * float(ish or 0):.0f} % index use, "
                     if seqs is not None else "")
            title = (f"{display} ({s.table_rows:,.0f} rows; {scans}read by a top statement{share_txt}): "
                     f"index on ({s.columns_text}) missing — {verification}")
        check = (f"EXPLAIN {s.query.strip().rstrip(';')};" if "$" not in s.query else
                 f"-- (replace $1, $2 ... with real values)\nEXPLAIN {s.query.strip().rstrip(';')};")
        found.append(Finding(
            "db.missing_index", "critical" if (slow or big_share) else "warning", title,
            subject=display, evidence=ev,
            recommendation=f"{s.create_index}\n\n-- then check the plan uses it (Index Scan, no Sort):\n{check}"))
    for c, reading in refuted:
        display = display_table(c.schema, c.table)
        if display in covered:
            continue
        covered.add(display)
        rows.append({"table": display, "columns": c.columns_text, "create_index": c.create_index,
                     "verdict": f"not confirmed by EXPLAIN: {reading}"})
        found.append(Finding(
            "db.missing_index", "info",
            f"{display}: the statement text suggested an index on ({c.columns_text}), but EXPLAIN does not "
            f"confirm it: {reading}",
            subject=display,
            evidence={"table": display, "schema": c.schema, "columns": list(c.columns), "query": c.query,
                      "queryid": c.queryid, "share_pct": c.share_pct, "create_index": c.create_index,
                      "plan": reading, "verification": "refuted by EXPLAIN", "privilege_level": level,
                      **{k: c.stats.get(k) for k in ("seq_scan", "seq_tup_read", "idx_scan", "index_share")}},
            recommendation=f"-- which statements read {display} sequentially? (pg_stat_statements)\n"
                           f"SELECT query, calls, mean_exec_time FROM pg_stat_statements\n"
                           f"WHERE query ILIKE '%{c.table}%' ORDER BY total_exec_time DESC LIMIT 10;"))
    for name, t in stats.items():
        if name in covered:
            continue
        found.append(Finding(
            "db.missing_index", "info",
            f"{name}: {t['seq_scan']:.0f} sequential scans read {t['seq_tup_read']:,.0f} rows; only "
            f"{100 * (t['index_share'] or 0):.0f} % of scans use an index — no top statement's conditions "
            f"point at a missing index",
            subject=name, evidence={"table": name, "columns": [], **{k: t[k] for k in (
                "seq_scan", "seq_tup_read", "idx_scan", "index_share", "n_live_tup")}},
            recommendation=f"-- which statements read {name}? (pg_stat_statements)\n"
                           f"SELECT query, calls, mean_exec_time FROM pg_stat_statements\n"
                           f"WHERE query ILIKE '%{name.split('.')[-1]}%' ORDER BY total_exec_time DESC LIMIT 10;"))
    if not found:
        t = tables.copy() if tables is not None else pd.DataFrame()
        worst = None
        if not t.empty:
            big = t[t["n_live_tup"].fillna(0) >= min_rows]
            if not big.empty:
                worst = big.sort_values("seq_tup_read", ascending=False).iloc[0].to_dict()
        near = {}
        if worst is not None:
            idx = float(worst.get("idx_scan") or 0)
            seq = float(worst.get("seq_scan") or 0)
            near = {"most_seq_read_table": display_table(worst.get("schema"), worst["table"]),
                    "its_seq_scan": seq, "its_seq_tup_read": worst.get("seq_tup_read"),
                    "its_index_share": idx / (idx + seq) if idx + seq else None}
        n_plans = sum(1 for r in plan_of.values() if isinstance(r.get("plan"), dict))
        most = ""
        if near:
            most = (f"; the most sequentially read, {near['most_seq_read_table']}: {near['its_seq_scan']:,.0f} "
                    f"sequential scans" + (f", {100 * near['its_index_share']:.0f} % of scans by index"
                                           if near["its_index_share"] is not None else ""))
        found.append(Finding(
            "db.missing_index", "ok",
            f"No table of ≥ {min_rows:,} rows is read mostly by sequential scans (≥ 10 scans and < "
            f"{100 * max_index_share:.0f} % of scans by index)"
            + (f" and no plan of the {n_plans} statements explained asks for an index" if n_plans else "")
            + f" ({len(tables)} tables checked{most})",
            subject="tables", evidence={"tables": len(tables), "min_rows": min_rows,
                                        "threshold_index_share": max_index_share,
                                        "statements_explained": n_plans,
                                        "suggestions": len(suggestions) + len(candidates), **near}))
    return pd.DataFrame(rows, columns=["table", "columns", "create_index", "verdict"]), found


# --------------------------------------------------------------------------- large results


def large_results(stmts: pd.DataFrame, tables: pd.DataFrame | None = None, max_rows: int = 1000,
                  min_rows_table: int = 10_000, min_calls: int = 10, min_total_rows: int = 100_000,
                  min_share: float = 0.05, critical_share: float = 0.25) -> tuple[pd.DataFrame, list[Finding]]:
    """Large result sets, judged by what they cost (``settings.database``).

    A SELECT is *large* when it returns more than ``max_rows`` rows per call
    (``large_result_rows``, 1000), or reads a table of ≥ ``min_rows_table`` rows with no
    LIMIT, no WHERE and no aggregate and returns ≥ 100 rows per call. It is a finding when
    it also *costs*, by any of:

    - it is frequent: ≥ ``min_calls`` calls (``large_result_calls``, 10);
    - its volume: ≥ ``min_total_rows`` rows returned in all (``large_result_total_rows``,
      100,000) — one export of 200k rows is a finding after a single call;
    - its time: ≥ ``min_share`` of all statement time (``large_result_time_share``, 5 %).

    pg_stat_statements counts since its last reset (``stmts.attrs["stats_reset"]``), so
    "in all" means since then. ``critical`` when the rows per call exceed 10 ×
    ``max_rows`` and the statement is frequent or takes ≥ ``critical_share`` of the time
    (``large_result_critical_share``, 25 %); else ``warning``. Without ``tables``
    (pg_stat_user_tables unreadable) the no-LIMIT part cannot be judged, and the ``ok``
    finding says so. The ``ok`` finding names the largest result it saw, and why it was
    not a finding."""
    q = _queries(stmts)
    cols = ["query", "calls", "rows_per_call", "rows", "share_pct", "mean_ms", "has_limit", "tables"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    big = set()
    if tables is not None and not tables.empty:
        big = set(tables.loc[tables["n_live_tup"] >= min_rows_table, "table"])
    total_ms = float(q["total_ms"].sum() or 0.0)
    stats_reset = stmts.attrs.get("stats_reset")
    since = " since pg_stat_statements' reset" if stats_reset else ""
    rows, found, checked = [], [], []
    for r in q.sort_values("rows_per_call", ascending=False).to_dict("records"):
        sh = query_shape(r["query"])
        if sh.kind != "select":
            continue
        rpc = float(r["rows_per_call"] or 0)
        calls = float(r["calls"] or 0)
        total_rows = float(r["rows"]) if r.get("rows") is not None and not pd.isna(r["rows"]) else rpc * calls
        share = float(r["total_ms"] or 0) / total_ms if total_ms else 0.0
        checked.append((r, rpc, calls, total_rows, share))
        unbounded = bool(not sh.has_limit and not sh.has_where and not sh.aggregate and big & set(sh.from_tables)
                         and rpc >= 100)
        if rpc <= max_rows and not unbounded:
            continue
        costs = [why for ok, why in (
            (calls >= min_calls, f"{calls:,.0f} calls (≥ {min_calls})"),
            (total_rows >= min_total_rows, f"{total_rows:,.0f} rows returned{since} (≥ {min_total_rows:,})"),
            (share >= min_share, f"{100 * share:.1f} % of all statement time (≥ {100 * min_share:.0f} %)")) if ok]
        if not costs:
            continue
        table = next((t for t in sh.from_tables if t in big), sh.from_tables[0] if sh.from_tables else None)
        sev = "critical" if rpc > 10 * max_rows and (calls >= min_calls or share >= critical_share) else "warning"
        rows.append({"query": short_query(r["query"]), "calls": calls, "rows_per_call": rpc, "rows": total_rows,
                     "share_pct": 100 * share, "mean_ms": r["mean_ms"], "has_limit": sh.has_limit,
                     "tables": ", ".join(sh.tables)})
        found.append(Finding(
            "db.large_result", sev,
            f"{rpc:,.0f} rows per call over {calls:,.0f} call(s) ({total_rows:,.0f} rows, {100 * share:.1f} % of "
            f"statement time, {float(r['mean_ms'] or 0):,.0f} ms per call)"
            + ("" if sh.has_limit else ", no LIMIT") + (f" on {table}" if table else "")
            + f": costly by {'; '.join(costs)}",
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "calls": calls,
                      "rows_per_call": rpc, "rows": total_rows, "share_pct": 100 * share, "mean_ms": r["mean_ms"],
                      "total_ms": r["total_ms"], "has_limit": sh.has_limit, "no_limit_on_large_table": unbounded,
                      "costly_by": costs, "stats_reset": stats_reset, "threshold_rows": max_rows,
                      "threshold_calls": min_calls, "threshold_total_rows": min_total_rows,
                      "threshold_share_pct": 100 * min_share},
            recommendation=pagination_fix(table or "items", sh)))
    if not found:
        sizes_known = tables is not None and not tables.empty
        ev = {"statements": len(checked), "threshold_rows": max_rows, "threshold_calls": min_calls,
              "threshold_total_rows": min_total_rows, "threshold_share_pct": 100 * min_share,
              "table_sizes_known": sizes_known, "max_rows_per_call": None}
        if not checked:
            title = "No SELECT in pg_stat_statements to check for large results"
        else:
            r, rpc, calls, total_rows, share = checked[0]
            ev.update(max_rows_per_call=rpc, largest_query=short_query(r["query"]), largest_calls=calls,
                      largest_rows=total_rows, largest_share_pct=100 * share)
            if rpc <= max_rows:
                title = (f"No SELECT returns more than {max_rows:,} rows per call (largest: {rpc:,.0f}; "
                         f"{len(checked)} checked)")
            else:
                over = sum(1 for x in checked if x[1] > max_rows)
                title = (f"{over} SELECT(s) return more than {max_rows:,} rows per call but cost little: the largest, "
                         f"{rpc:,.0f} rows per call, ran {calls:,.0f} time(s) ({total_rows:,.0f} rows, "
                         f"{100 * share:.1f} % of statement time) — under every cost bar (≥ {min_calls} calls, "
                         f"≥ {min_total_rows:,} rows, ≥ {100 * min_share:.0f} % of the time)")
        if not sizes_known and checked:
            title += " (table sizes unknown: SELECTs without LIMIT on large tables not checked)"
        found.append(Finding("db.large_result", "ok", title, subject="pg_stat_statements", evidence=ev))
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
        judged = t[(t["n_live_tup"].fillna(0) + t["n_dead_tup"].fillna(0)) >= min_rows]
        small = t.drop(judged.index)
        worst = judged.sort_values("dead_pct", ascending=False).iloc[0] if judged["dead_pct"].notna().any() else None
        small_worst = small.sort_values("dead_pct", ascending=False).iloc[0] \
            if not small.empty and small["dead_pct"].notna().any() else None
        title = (f"No table of ≥ {min_rows:,} rows has ≥ {100 * dead_share:.0f} % dead tuples "
                 f"({len(judged)} of the {len(t)} tables are that large"
                 + (f"; the most dead: {worst['table']}, {worst['dead_pct']:.0f} %" if worst is not None else "") + ")")
        if small_worst is not None and small_worst["dead_pct"] >= 100 * dead_share:
            title += (f"; smaller tables not judged (e.g. {small_worst['table']}: {small_worst['dead_pct']:.0f} % of "
                      f"{int(small_worst['n_live_tup'] + small_worst['n_dead_tup']):,} rows)")
        found.append(Finding("db.bloat", "ok", title,
                             subject="tables",
                             evidence={"tables": len(t), "tables_judged": len(judged), "min_rows": min_rows,
                                       "threshold_pct": 100 * dead_share,
                                       "max_dead_pct": float(worst["dead_pct"]) if worst is not None else 0.0,
                                       "worst_table": worst["table"] if worst is not None else None,
                                       "max_dead_pct_smaller_tables": float(small_worst["dead_pct"])
                                       if small_worst is not None else None,
                                       "worst_smaller_table": small_worst["table"] if small_worst is not None else None}))
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
                           f"DROP INDEX CONCURRENTLY {_qualified_index(r.get('schema'), r['index'])};\n"
                           f"-- to undo: {r['definition']};"))
    if not found:
        judged = indexes[~indexes["is_unique"] & ~indexes["is_primary"] & ~indexes["backs_constraint"]
                         & (indexes["index_bytes"] >= min_bytes)]
        small_unused = int(((indexes["idx_scan"] == 0) & (indexes["index_bytes"] < min_bytes)
                            & ~indexes["is_unique"] & ~indexes["is_primary"] & ~indexes["backs_constraint"]).sum())
        small = f"{small_unused} smaller one(s) never scanned, not judged" if small_unused else ""
        if len(judged):
            title = (f"Every non-unique index of ≥ {min_bytes / 2**20:g} MiB has been scanned"
                     + (f" in {age_days:.1f} days of statistics" if age_days is not None else
                        " since the statistics reset")
                     + f" ({len(judged)} such of {len(indexes)} indexes" + (f"; {small}" if small else "") + ")"
                     + (" — statistics too young to be sure" if young else ""))
        else:
            title = (f"No index to judge: none of the {len(indexes)} indexes is both non-unique and ≥ "
                     f"{min_bytes / 2**20:g} MiB" + (f" ({small})" if small else ""))
        found.append(Finding(
            "db.unused_index", "ok", title,
            subject="indexes", evidence={"indexes": len(indexes), "indexes_judged": len(judged),
                                         "min_bytes": min_bytes, "smaller_never_scanned": small_unused,
                                         "least_scanned_judged": int(judged["idx_scan"].min()) if len(judged) else None,
                                         "stats_age_days": age_days}))
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
        crit = (sat["wait_p95_ms"].fillna(0) >= critical_p95_ms) | (sat["waiting_share"].fillna(0) >= critical_share)
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
