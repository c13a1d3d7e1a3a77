"""Index candidates and the ``db.missing_index`` findings (runbook Issue 2 "Missing
Indexes"; part of :mod:`perfbook.checks.database`).

Candidates from the statement text (:func:`index_candidates`), which of them hypopg should
check, and :func:`missing_indexes`, which merges text, EXPLAIN and hypopg into one finding
per index to create.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Database
from .. import number
from .plans import IndexSuggestion, _plan_nodes, _schemas_by_table, index_columns, index_key, seq_scan_tables
from .predicates import _served_by, statement_predicates
from .shapes import _queries, display_table, short_query

_CONSIDERED_COLS = ["queryid", "query", "table", "share_pct", "calls", "conditions", "verdict"]


def seq_rows_share(st: dict) -> float | None:
    """Share of the rows read from a table that sequential scans read (``seq_tup_read``
    against ``idx_tup_fetch``); None when neither was counted."""
    seq, idx = number(st.get("seq_tup_read")), number(st.get("idx_tup_fetch"))
    if seq is None or idx is None or seq + idx <= 0:
        return None
    return seq / (seq + idx)


def index_candidates(stmts: pd.DataFrame, tables: pd.DataFrame | None, indexes: pd.DataFrame | None,
                     settings: Database) -> tuple[pd.DataFrame, list[IndexSuggestion]]:
    """Index candidates from the statement text: what the lowest privilege level (pg_monitor
    only, no EXPLAIN) can conclude, ranked by the statements' share of all statement time.

    A statement (share ≥ ``settings.index_candidate_min_share`` of the total time in
    pg_stat_statements) is a candidate's source for each relation it reads
    (:func:`statement_predicates`) that is

    - large and read mostly sequentially (pg_stat_user_tables: ≥ ``min_table_rows`` live
      rows, ≥ ``seq_scan_min_scans`` sequential scans, and either an index share of scans <
      ``seq_scan_index_share`` — :func:`seq_scan_tables` — or sequential scans reading ≥
      ``seq_rows_share`` of the rows read: 97 full scans of 100k rows are the table's real
      work even beside 3,000 by-id lookups, which make 97 % of its scans),
    - compared with a value in the WHERE, or ordered under a LIMIT,
    - not read whole: a statement reading that table alone, with no LIMIT and no
      aggregate, that returns ≥ ``index_max_selectivity`` of its rows per call is best
      served by the sequential scan it has,
    - not already indexed: no valid index leads with the candidate's columns, nor with
      exactly its equality columns (:func:`_served_by`).

    The columns follow :func:`index_key`. One candidate per table and column list (the
    statement with the largest share first; the others listed in ``also``); a candidate
    whose columns lead another's on the same table is folded into it.

    Returns (one row per statement and relation considered, with the verdict; the
    candidates, largest share first).
    """
    min_rows, min_scans = settings.min_table_rows, settings.seq_scan_min_scans
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
        if share < settings.index_candidate_min_share:
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
            seq_rows = seq_rows_share(st)
            if (ishare or 0) >= settings.seq_scan_index_share and (seq_rows or 0) < settings.seq_rows_share:
                row["verdict"] = (f"{name} is read mostly by index ({100 * (ishare or 0):.0f} % of scans"
                                  + (f", {100 * (1 - seq_rows):.0f} % of rows read)" if seq_rows is not None else ")"))
                continue
            order = use.order_by
            if not use.equality and not use.range and not (order and use.limited):
                row["verdict"] = "no condition an index could serve (ORDER BY without LIMIT only)"
                continue
            rpc = float(r.get("rows_per_call") or 0)
            if use.only_relation and not use.aggregate and not use.limited and rpc >= settings.index_max_selectivity * live:
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
                    stmts: pd.DataFrame | None = None, verified: dict | None = None, *, settings: Database,
                    candidates: Sequence[IndexSuggestion] = (), plans: pd.DataFrame | None = None,
                    considered: pd.DataFrame | None = None,
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
      only if the planner's cost falls to ``settings.hypopg_cost_ratio`` or less (half:
      dexter's rule); one that does not becomes ``info`` with both costs.

    Severity, the same at every level: ``critical`` when the statement takes ≥
    ``settings.missing_index_critical_share`` of all statement time or is slow by the
    pghero bar (mean ≥ ``slow_query_mean`` over ≥ ``slow_query_calls`` calls), else
    ``warning``. Seq-scan-heavy tables (:func:`seq_scan_tables`) no finding explains are
    ``info`` (their statements may be fine full scans).
    """
    min_rows, max_index_share = settings.min_table_rows, settings.seq_scan_index_share
    critical_share, slow_mean_ms = settings.missing_index_critical_share, 1000 * settings.slow_query_mean
    heavy = seq_scan_tables(tables, settings)
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
        ratio = settings.hypopg_cost_ratio
        if v and v.get("cost_after") is not None and v.get("cost_before") and v["cost_after"] > v["cost_before"] * ratio:
            rows.append({"table": display, "columns": s.columns_text, "create_index": s.create_index,
                         "verdict": f"dropped: hypopg cost {v['cost_before']:.0f} → {v['cost_after']:.0f}"})
            covered.add(display)
            found.append(Finding(
                "db.missing_index", "info",
                f"{display}: an index on ({s.columns_text}) was a candidate ({note}), but hypopg estimates "
                f"the statement's cost {v['cost_before']:.0f} → {v['cost_after']:.0f}, "
                + ("not halved" if ratio == 0.5 else f"not down to {ratio:.0%} of it") + ": not recommended",
                subject=display,
                evidence={"table": display, "schema": s.schema, "columns": list(s.columns), "query": s.query,
                          "queryid": s.queryid, "share_pct": share, "create_index": s.create_index,
                          "hypopg_cost_before": v.get("cost_before"), "hypopg_cost_after": v.get("cost_after"),
                          "verification": note, "privilege_level": level},
                recommendation=f"-- not recommended by the planner's estimate; to try it anyway:\n{s.create_index}"))
            continue
        covered.add(display)
        slow = bool(st) and st.get("mean_ms", 0) >= slow_mean_ms and st.get("calls", 0) >= settings.slow_query_calls
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
            f"No table of ≥ {min_rows:,} rows is read mostly by sequential scans (≥ {settings.seq_scan_min_scans} "
            f"scans, and < {100 * max_index_share:.0f} % of scans by index or ≥ "
            f"{100 * settings.seq_rows_share:.0f} % of rows read sequentially)"
            + (f" and no plan of the {n_plans} statements explained asks for an index" if n_plans else "")
            + f" ({len(tables)} tables checked{most})",
            subject="tables", evidence={"tables": len(tables), "min_rows": min_rows,
                                        "threshold_index_share": max_index_share,
                                        "statements_explained": n_plans,
                                        "suggestions": len(suggestions) + len(candidates), **near}))
    return pd.DataFrame(rows, columns=["table", "columns", "create_index", "verdict"]), found
