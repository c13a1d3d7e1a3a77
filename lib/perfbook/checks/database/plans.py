"""Missing indexes read from EXPLAIN plans (runbook Issue 2 "Missing Indexes"; part of
:mod:`perfbook.checks.database`).

Tables read mostly by sequential scans, the statements worth an EXPLAIN, the columns a
plan filters and sorts on, and the :class:`IndexSuggestion` each plan supports; also the
plans as text for the notebook.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...params import Database
from .shapes import (
    Shape,
    _and_terms,
    _colref,
    _qualified,
    _queries,
    display_table,
    query_shape,
    quote_ident,
    short_query,
)

# --------------------------------------------------------------------------- missing indexes


def seq_scan_tables(tables: pd.DataFrame, settings: Database) -> pd.DataFrame:
    """Tables read mostly by sequential scans: ≥ ``settings.min_table_rows`` live rows, ≥
    ``seq_scan_min_scans`` sequential scans, and an index share of scans under
    ``seq_scan_index_share`` (pghero's table stats; the 95 % is the usual bar, 10k rows is
    where a seq scan starts to cost; a handful of scans is maintenance, not a pattern)."""
    t = tables.copy()
    if t.empty:
        return t.assign(index_share=pd.Series(dtype=float))
    idx = t["idx_scan"].fillna(0).astype(float)
    seq = t["seq_scan"].fillna(0).astype(float)
    t["index_share"] = idx / (idx + seq).where((idx + seq) > 0)
    t["tuples_per_seq_scan"] = t["seq_tup_read"].astype(float) / seq.where(seq > 0)
    heavy = t[(t["n_live_tup"] >= settings.min_table_rows) & (seq >= settings.seq_scan_min_scans)
              & (t["index_share"].fillna(0) < settings.seq_scan_index_share)]
    heavy = heavy.assign(table=[display_table(s, n) for s, n in zip(heavy["schema"], heavy["table"])])
    return heavy[["table", "seq_scan", "seq_tup_read", "idx_scan", "index_share", "n_live_tup",
                  "tuples_per_seq_scan"]].sort_values("seq_tup_read", ascending=False).reset_index(drop=True)


_EXPLAIN_COLS = ["queryid", "query", "calls", "total_ms", "mean_ms", "skip"]


def explain_candidates(stmts: pd.DataFrame, tables: pd.DataFrame, settings: Database,
                       candidates: Sequence[IndexSuggestion] = (), privileges: dict | None = None) -> pd.DataFrame:
    """The statements worth an EXPLAIN: SELECTs among the top ``settings.top_n`` by total
    time that read a table of ≥ ``settings.min_table_rows`` rows, and the statements of the
    index ``candidates`` (:func:`index_candidates`). ``skip`` says why one is not sent:
    with ``privileges`` (:func:`perfbook.sources.postgres.privileges`) a statement reading
    a table the role cannot SELECT would fail with InsufficientPrivilege, so it is not sent
    at all."""
    q = _queries(stmts)
    if q.empty or tables is None or tables.empty:
        return pd.DataFrame(columns=_EXPLAIN_COLS)
    top_n = settings.top_n
    big = set(tables.loc[tables["n_live_tup"] >= settings.min_table_rows, "table"])
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


def index_suggestions(plans: pd.DataFrame, tables: pd.DataFrame, indexes: pd.DataFrame | None,
                      settings: Database) -> list[IndexSuggestion]:
    """Indexes the plans ask for (dexter's idea, from plain EXPLAIN).

    For each plan (rows of ``queryid, query, plan``): a scan (Seq Scan, or an Index Scan
    whose index does not lead with the filtered columns) of a table with ≥
    ``settings.min_table_rows`` live rows, with a ``Filter`` an ordinary B-tree can serve,
    that keeps ≤ ``index_max_selectivity`` of the table (or feeds a Sort/LIMIT). The index
    columns follow :func:`index_key` (equality, then range, then sort columns with their
    direction — the sort columns before the range ones under a LIMIT): the runbook's
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
            if table_rows < settings.min_table_rows:
                continue
            eq, rng = filter_columns(filt)
            if not eq and not rng:
                continue
            alias = node.get("Alias") or table
            sort = _sort_columns(ancestors, alias, table, shape)
            limited = any(a.get("Node Type") == "Limit" for a in ancestors)
            selective = float(node.get("Plan Rows") or 0) <= settings.index_max_selectivity * table_rows
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
