"""Large result sets, table bloat and unused indexes (runbook Issue 2 "Large Result Sets"
and Issue 1 §4; part of :mod:`perfbook.checks.database`), with the pagination fix.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Database
from .n_plus_one import _model
from .shapes import Shape, _qualified, _qualified_index, _queries, display_table, query_shape, quote_ident, short_query

# --------------------------------------------------------------------------- large results


def large_results(stmts: pd.DataFrame, tables: pd.DataFrame | None,
                  settings: Database) -> tuple[pd.DataFrame, list[Finding]]:
    """Large result sets, judged by what they cost (``settings``: the database section).

    A SELECT is *large* when it returns more than ``max_rows`` rows per call
    (``large_result_rows``, 1000), or reads a table of ≥ ``min_table_rows`` rows with no
    LIMIT, no WHERE and no aggregate and returns ≥ ``large_result_unbounded_rows`` (100)
    rows per call. It is a finding when
    it also *costs*, by any of:

    - it is frequent: ≥ ``min_calls`` calls (``large_result_calls``, 10);
    - its volume: ≥ ``min_total_rows`` rows returned in all (``large_result_total_rows``,
      100,000) — one export of 200k rows is a finding after a single call;
    - its time: ≥ ``min_share`` of all statement time (``large_result_time_share``, 5 %).

    pg_stat_statements counts since its last reset (``stmts.attrs["stats_reset"]``), so
    "in all" means since then. ``critical`` when the rows per call exceed
    ``large_result_critical_factor`` (10) × ``max_rows`` and the statement is frequent or
    takes ≥ ``large_result_critical_share`` of the time (25 %); else ``warning``. Without
    ``tables`` (pg_stat_user_tables unreadable) the no-LIMIT part cannot be judged, and the
    ``ok`` finding says so. The ``ok`` finding names the largest result it saw, and why it was
    not a finding."""
    max_rows, min_calls = settings.large_result_rows, settings.large_result_calls
    min_total_rows, min_share = settings.large_result_total_rows, settings.large_result_time_share
    q = _queries(stmts)
    cols = ["query", "calls", "rows_per_call", "rows", "share_pct", "mean_ms", "has_limit", "tables"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    big = set()
    if tables is not None and not tables.empty:
        big = set(tables.loc[tables["n_live_tup"] >= settings.min_table_rows, "table"])
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
                         and rpc >= settings.large_result_unbounded_rows)
        if rpc <= max_rows and not unbounded:
            continue
        costs = [why for ok, why in (
            (calls >= min_calls, f"{calls:,.0f} calls (≥ {min_calls})"),
            (total_rows >= min_total_rows, f"{total_rows:,.0f} rows returned{since} (≥ {min_total_rows:,})"),
            (share >= min_share, f"{100 * share:.1f} % of all statement time (≥ {100 * min_share:.0f} %)")) if ok]
        if not costs:
            continue
        table = next((t for t in sh.from_tables if t in big), sh.from_tables[0] if sh.from_tables else None)
        heavy = calls >= min_calls or share >= settings.large_result_critical_share
        sev = "critical" if rpc > settings.large_result_critical_factor * max_rows and heavy else "warning"
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


def bloat(tables: pd.DataFrame, settings: Database,
          autovacuum: str | None = "on") -> tuple[pd.DataFrame, list[Finding]]:
    """Dead tuples (the runbook's "Check table bloat"): a table of ≥ ``settings.bloat_min_rows``
    rows (1000) whose dead share n_dead_tup / (n_live_tup + n_dead_tup) is ≥
    ``bloat_dead_share`` (20 % — autovacuum's own default scale factor); critical from
    ``bloat_critical_share`` (50 %). Says when autovacuum is off for the table
    (pg_class.reloptions) or the server, and the last (auto)vacuum/analyze."""
    dead_share, min_rows = settings.bloat_dead_share, settings.bloat_min_rows
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
            "db.bloat", "critical" if share >= settings.bloat_critical_share else "warning",
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


def unused_indexes(indexes: pd.DataFrame, settings: Database, stats_reset: Any = None,
                   now: Any = None) -> tuple[pd.DataFrame, list[Finding]]:
    """Indexes never scanned since statistics were reset (pghero's unused indexes):
    idx_scan = 0, not unique / primary / backing a constraint, at least
    ``settings.unused_index_min_bytes`` (1 MiB). ``info`` always — dropping is a decision,
    and young statistics (< ``unused_index_min_stats_age``, a week, or unknown) prove
    little; replicas keep their own counters."""
    min_bytes, min_stats_days = settings.unused_index_min_bytes, settings.unused_index_min_stats_age / 86400
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
