"""Window-only database statistics: pg_stat_statements and pg_stat_user_tables between two
moments, from a stored snapshot (issue 15, point 3). Pure: no I/O.

pg_stat_statements and pg_stat_user_tables count since their last reset, which can be
months: pghero shows those totals, never the incident alone. Each run of the database
section stores a *snapshot* of both (:func:`snapshot`, written by the runner as
``snapshots/database.json`` in the run folder). Two snapshots of the same server give the
counters of the interval between them (:func:`statement_window`, :func:`table_window`):
"this statement ran 40,000 times and took 61 % of database time since the baseline".

Snapshot (``schema`` 1, JSON-safe)::

    {"schema": 1, "kind": "perfbook.pg_snapshot", "taken_at": ISO, "identity": IDENTITY,
     "statements_complete": bool,   # every statement of the database is in "statements"
     "statements": [{queryid, username, query, calls, total_ms, rows, shared_blks_hit,
                     shared_blks_read, blk_read_ms, blk_write_ms}, ...],   # top N by total time
                                                                             # + those findings name
     "tables": [{schema, table, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup,
                 n_dead_tup, vacuum_count, autovacuum_count, analyze_count, autoanalyze_count}]}
    IDENTITY: {system_identifier, database, target (host:port/db, no secret), postmaster_start,
               statements_reset (pg_stat_statements_info), database_reset (pg_stat_database)}

Resets are detected, never turned into negative numbers
    * pg_stat_statements reset after the baseline (``statements_reset`` later than the
      snapshot): every statement counts from the reset; the window is shorter than asked
      and :func:`window_finding` says from when.
    * one statement's counters went down (evicted by ``pg_stat_statements.max`` and seen
      again, or a reset on 13 and older, which has no ``stats_reset``): that statement counts
      from its return; the row is flagged ``reset``.
    * pg_stat_user_tables likewise, from ``pg_stat_database.stats_reset`` and counters.
    * Two snapshots of different servers (system identifier, database, or the address perfbook
      read them through — a copy or a replica has the same identifier) are not compared
      (:func:`incomparable`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from ...findings import Finding
from .. import number

SCHEMA = 1
KIND = "perfbook.pg_snapshot"

#: pg_stat_statements columns that count since the reset (the window's are differences).
STATEMENT_COUNTERS = ("calls", "total_ms", "rows", "shared_blks_hit", "shared_blks_read", "blk_read_ms",
                      "blk_write_ms")
#: pg_stat_user_tables counters, and the gauges kept as they are now.
TABLE_COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "vacuum_count", "autovacuum_count",
                  "analyze_count", "autoanalyze_count")
TABLE_GAUGES = ("n_live_tup", "n_dead_tup")
#: Longest statement text kept in a snapshot (pg_stat_statements keeps up to track_activity_query_size).
QUERY_CHARS = 2000


def _iso(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _time(v: Any) -> datetime | None:
    if v is None:
        return None
    try:
        t = pd.Timestamp(v)
    except (ValueError, TypeError):
        return None
    if pd.isna(t):
        return None
    return (t.tz_localize("UTC") if t.tzinfo is None else t).to_pydatetime()


def named_queryids(findings: Iterable[Any]) -> set[str]:
    """Every ``queryid`` a finding's evidence names (at any depth): kept in the snapshot even
    when outside the top N."""
    out: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "queryid" and x is not None:
                    out.add(str(x))
                else:
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    for f in findings:
        walk(getattr(f, "evidence", None) if not isinstance(f, dict) else f.get("evidence"))
    return out


def snapshot(identity: dict[str, Any], statements: pd.DataFrame | None, tables: pd.DataFrame | None, *,
             top: int, keep: Iterable[str] = (), limit: int | None = None) -> dict[str, Any]:
    """The snapshot (see the module) of ``statements`` (:func:`perfbook.sources.postgres.statements`,
    cumulative) and ``tables`` (:func:`~perfbook.sources.postgres.table_stats`): the ``top``
    statements by total time plus those in ``keep`` (queryids findings name). ``limit``: how
    many rows the statements query could return at most (its LIMIT); fewer means it returned
    every statement, so a statement missing from the snapshot is one that had not run."""
    keep = {str(k) for k in keep}
    stmts: list[dict[str, Any]] = []
    complete = False
    if statements is not None and not statements.empty:
        ordered = statements.sort_values("total_ms", ascending=False, na_position="last")
        complete = len(ordered) <= top and (limit is None or len(ordered) < limit)
        for i, r in enumerate(ordered.to_dict("records")):
            if i >= top and str(r.get("queryid")) not in keep:
                continue
            stmts.append({"queryid": None if r.get("queryid") is None else str(r["queryid"]),
                          "username": r.get("username"), "query": str(r.get("query") or "")[:QUERY_CHARS],
                          **{c: number(r.get(c)) for c in STATEMENT_COUNTERS}})
    elif statements is not None:
        complete = not statements.attrs.get("unavailable")
    tabs: list[dict[str, Any]] = []
    if tables is not None and not tables.empty:
        for r in tables.to_dict("records"):
            tabs.append({"schema": r.get("schema"), "table": r.get("table"),
                         **{c: number(r.get(c)) for c in (*TABLE_COUNTERS, *TABLE_GAUGES)}})
    ident = {k: _iso(v) if isinstance(v, (datetime, pd.Timestamp)) else (None if v is None else str(v))
             for k, v in identity.items()}
    return {"schema": SCHEMA, "kind": KIND, "taken_at": ident.get("taken_at"), "identity": ident,
            "statements_available": statements is not None and not statements.attrs.get("unavailable"),
            "statements_complete": complete, "statements": stmts, "tables": tabs}


def is_snapshot(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND and data.get("schema") == SCHEMA


def incomparable(base: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why two snapshots cannot give a window (None: they can). Same server means the same
    system identifier (when readable), database and address; the second must be later."""
    a, b = base.get("identity") or {}, now.get("identity") or {}
    if a.get("system_identifier") and b.get("system_identifier") and a["system_identifier"] != b["system_identifier"]:
        return (f"the two snapshots are of different PostgreSQL clusters (system identifier "
                f"{a['system_identifier']} vs {b['system_identifier']})")
    if a.get("database") != b.get("database"):
        return f"the two snapshots are of different databases ({a.get('database')} vs {b.get('database')})"
    if a.get("target") != b.get("target"):
        return (f"the two snapshots were read through different addresses ({a.get('target')} vs {b.get('target')}): "
                f"a copy or a replica keeps its own statistics")
    t0, t1 = _time(base.get("taken_at")), _time(now.get("taken_at"))
    if t0 is None or t1 is None:
        return "a snapshot has no time"
    if t1 <= t0:
        return f"the baseline snapshot ({_iso(t0)}) is not earlier than this one ({_iso(t1)})"
    return None


def _reset_after(base: dict[str, Any], now: dict[str, Any], key: str) -> datetime | None:
    """When the statistics ``key`` names were reset after the baseline snapshot (None: not)."""
    r0 = _time((base.get("identity") or {}).get(key))
    r1 = _time((now.get("identity") or {}).get(key))
    t0 = _time(base.get("taken_at"))
    if r1 is not None and (r0 is None or r1 > r0) and (t0 is None or r1 > t0):
        return r1
    return None


def _window(base_rows: list[dict], now_rows: list[dict], key: tuple[str, ...], counters: tuple[str, ...],
            reset: bool, base_complete: bool) -> list[dict[str, Any]]:
    before = {tuple(str(r.get(k)) for k in key): r for r in base_rows}
    out = []
    for r in now_rows:
        b = before.get(tuple(str(r.get(k)) for k in key))
        row = dict(r)
        flag = ""
        if reset:
            flag = "reset"           # counts since the reset, which is inside the window
        elif b is None:
            flag = "new" if base_complete else "not in baseline"  # the latter: at most this much
        elif any((number(r.get(c)) or 0.0) < (number(b.get(c)) or 0.0) for c in counters if number(b.get(c)) is not None):
            flag = "reset"           # this row's counters went down: evicted and back, or reset
        else:
            for c in counters:
                v, v0 = number(r.get(c)), number(b.get(c))
                row[c] = None if v is None else v - (v0 or 0.0)
        row["since"] = flag
        out.append(row)
    return out


def _elapsed(base: dict[str, Any], now: dict[str, Any]) -> float | None:
    t0, t1 = _time(base.get("taken_at")), _time(now.get("taken_at"))
    return (t1 - t0).total_seconds() if t0 and t1 else None


def statement_window(base: dict[str, Any], now: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """pg_stat_statements over the interval between snapshot ``base`` and snapshot ``now``:
    one row per statement that ran in it (the columns of
    :func:`perfbook.sources.postgres.statements`; ``mean_ms``, ``rows_per_call`` and
    ``hit_ratio`` are the window's; ``max_ms`` is not kept per window and is empty), ordered
    by the window's total time, with ``since``: ``""`` (a difference), ``"new"`` (not run
    before), ``"not in baseline"`` (outside the baseline's top N: its numbers are at most
    this) or ``"reset"`` (counted from a reset inside the window). ``info``: what
    :func:`window_finding` says."""
    why = incomparable(base, now)
    info: dict[str, Any] = {"comparable": why is None, "reason": why, "baseline_taken_at": base.get("taken_at"),
                            "taken_at": now.get("taken_at"), "interval_s": _elapsed(base, now),
                            "statements_reset": None, "restarted": None, "rows_reset": 0}
    cols = ["queryid", "username", "query", "calls", "total_ms", "mean_ms", "max_ms", "rows", "rows_per_call",
            "shared_blks_hit", "shared_blks_read", "hit_ratio", "blk_read_ms", "blk_write_ms", "toplevel", "since"]
    if why is not None:
        return pd.DataFrame(columns=cols), info
    reset = _reset_after(base, now, "statements_reset")
    info["statements_reset"] = _iso(reset)
    start = _time((now.get("identity") or {}).get("postmaster_start"))
    t0 = _time(base.get("taken_at"))
    if start and t0 and start > t0:
        info["restarted"] = _iso(start)
    rows = _window(base.get("statements") or [], now.get("statements") or [], ("queryid", "username"),
                   STATEMENT_COUNTERS, reset is not None, bool(base.get("statements_complete")))
    frame = pd.DataFrame(rows, columns=[c for c in cols if c not in ("mean_ms", "max_ms", "rows_per_call",
                                                                      "hit_ratio", "toplevel")])
    for c in STATEMENT_COUNTERS:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame = frame[frame["calls"].fillna(0) > 0].copy()
    frame["mean_ms"] = frame["total_ms"] / frame["calls"]
    frame["max_ms"] = float("nan")
    frame["rows_per_call"] = frame["rows"] / frame["calls"]
    blocks = frame["shared_blks_hit"] + frame["shared_blks_read"]
    frame["hit_ratio"] = (frame["shared_blks_hit"] / blocks.where(blocks > 0)).astype("float64")
    frame["toplevel"] = True
    frame = frame.sort_values("total_ms", ascending=False, na_position="last")[cols].reset_index(drop=True)
    info["rows_reset"] = int((frame["since"] == "reset").sum()) if reset is None else 0
    info["calls"] = float(frame["calls"].sum())
    info["total_ms"] = float(frame["total_ms"].sum())
    info["statements"] = len(frame)
    return frame, info


def table_window(base: dict[str, Any], now: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """pg_stat_user_tables' counters over the interval between the two snapshots (gauges:
    as ``now``), with ``since`` as in :func:`statement_window` (``database_reset``:
    pg_stat_reset() after the baseline)."""
    why = incomparable(base, now)
    cols = ["schema", "table", *TABLE_COUNTERS, *TABLE_GAUGES, "since"]
    info: dict[str, Any] = {"comparable": why is None, "reason": why, "database_reset": None}
    if why is not None:
        return pd.DataFrame(columns=cols), info
    reset = _reset_after(base, now, "database_reset")
    info["database_reset"] = _iso(reset)
    rows = _window(base.get("tables") or [], now.get("tables") or [], ("schema", "table"), TABLE_COUNTERS,
                   reset is not None, True)
    frame = pd.DataFrame(rows, columns=cols)
    for c in (*TABLE_COUNTERS, *TABLE_GAUGES):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return frame.sort_values("seq_tup_read", ascending=False).reset_index(drop=True), info


def as_table_stats(window: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """``current`` (:func:`perfbook.sources.postgres.table_stats`) with its counters replaced by
    the window's, so the table checks judge the window; tables not in the window keep zeros."""
    out = current.copy()
    if window.empty:
        return out
    w = window.set_index(["schema", "table"])
    for c in TABLE_COUNTERS:
        if c in out.columns:
            out[c] = [w[c].get((s, t), 0.0) for s, t in zip(out["schema"], out["table"])]
    out.attrs = dict(current.attrs)
    return out


def _clock(iso: Any) -> str:
    t = _time(iso)
    return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t else "?"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def window_finding(info: dict[str, Any], source: str) -> Finding:
    """What the window is: ``db.stats_window`` info when the statistics are the interval's,
    warning when they could not be (different servers: the page shows cumulative numbers)
    or start later than asked (a reset inside the interval). ``source``: where the
    baseline snapshot came from (a run folder)."""
    ev = {k: info.get(k) for k in ("baseline_taken_at", "taken_at", "interval_s", "statements_reset", "restarted",
                                   "rows_reset", "statements", "calls", "total_ms", "reason")}
    ev["baseline"] = source
    if not info.get("comparable"):
        return Finding("db.stats_window", "warning",
                       f"Statistics since {source} cannot be computed: {info.get('reason')}; the numbers below are "
                       f"cumulative since the last reset", subject="pg_stat_statements", evidence=ev,
                       recommendation="Compare runs of the same database, read through the same address.")
    head = (f"Statement statistics over {_span(info.get('interval_s'))} since {source} "
            f"({_clock(info.get('baseline_taken_at'))}): {info.get('calls', 0):,.0f} calls, "
            f"{info.get('total_ms', 0) / 1000:,.1f} s of statement time in {info.get('statements', 0)} statements")
    notes = window_notes(info)
    title = head + ("; " + "; ".join(n[0].lower() + n[1:].rstrip(".") for n in notes) if notes else "")
    if info.get("statements_reset"):
        return Finding("db.stats_window", "warning", title, subject="pg_stat_statements", evidence=ev,
                       recommendation="Find who calls pg_stat_statements_reset() during incidents; take the "
                                      "baseline after the reset.")
    return Finding("db.stats_window", "info", title, subject="pg_stat_statements", evidence=ev)


def window_notes(info: dict[str, Any]) -> list[str]:
    """What makes a window shorter or different than asked, one sentence each: resets of
    pg_stat_statements or pg_stat_user_tables inside it, statements counted from their own
    reset, a server restart (the finding and ``perfbook compare``'s page say the same)."""
    notes = []
    if info.get("statements_reset"):
        notes.append(f"pg_stat_statements was reset at {_clock(info['statements_reset'])}, inside the interval: "
                     f"statements count from the reset, not from the baseline.")
    if info.get("database_reset"):
        notes.append(f"pg_stat_user_tables was reset at {_clock(info['database_reset'])}: tables count from the "
                     f"reset.")
    if info.get("rows_reset"):
        notes.append(f"{info['rows_reset']} statement(s) counted from a reset of their own (evicted by "
                     f"pg_stat_statements.max and seen again).")
    if info.get("restarted"):
        notes.append(f"The server restarted at {_clock(info['restarted'])}.")
    return notes


def time_shares(frame: pd.DataFrame, top: int) -> list[dict[str, Any]]:
    """The ``top`` statements of a window by total time, with their share of the window's
    statement time (for ``perfbook compare``)."""
    total = float(frame["total_ms"].sum()) if not frame.empty else 0.0
    out = []
    for r in frame.head(top).to_dict("records"):
        out.append({"queryid": r["queryid"], "username": r.get("username"), "query": r["query"],
                    "calls": number(r["calls"]), "total_ms": number(r["total_ms"]), "mean_ms": number(r["mean_ms"]),
                    "rows": number(r["rows"]), "share": (number(r["total_ms"]) or 0.0) / total if total else None,
                    "since": r.get("since") or ""})
    return out


def database_window(base: dict[str, Any], now: dict[str, Any], top: int) -> dict[str, Any]:
    """Where the database's time went between two runs' snapshots (``perfbook compare``):
    the window's statements by total time with their share, and the tables by rows read
    sequentially. JSON-safe."""
    stmts, info = statement_window(base, now)
    tables, tinfo = table_window(base, now)
    out: dict[str, Any] = {**info, "database_reset": tinfo.get("database_reset"),
                           "statements": time_shares(stmts, top) if info["comparable"] else [],
                           "tables": [], "headline": None}
    if info["comparable"]:
        for r in tables.head(top).to_dict("records"):
            out["tables"].append({k: (number(v) if k in (*TABLE_COUNTERS, *TABLE_GAUGES) else v) for k, v in r.items()})
        if out["statements"]:
            s = out["statements"][0]
            share = f"{100 * s['share']:.0f} %" if s["share"] is not None else "?"
            out["headline"] = (f"{_short(s['query'])} ran {s['calls']:,.0f} times and took {share} of database "
                               f"time between the two runs ({_span(info.get('interval_s'))})")
    return out


def interval(statements: pd.DataFrame | None, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The interval the statement statistics cover: from the baseline snapshot to this one when
    ``statements`` is a window (:func:`since`), else ``start``–``end`` (the run's window). Other
    sources read over the same interval (requests per endpoint, for N+1 attribution), so that
    lookups and requests are counted over the same time."""
    w = (statements.attrs.get("window") if statements is not None else None) or {}
    t0, t1 = _time(w.get("baseline_taken_at")), _time(w.get("taken_at"))
    return (t0, t1) if t0 and t1 else (start, end)


def source_name(path: str) -> str:
    """How a finding names the run a snapshot file came from: its run folder
    (``<run>/snapshots/database.json``), else the file."""
    parts = str(path).replace("\\", "/").rstrip("/").split("/")
    return parts[-3] if len(parts) >= 3 and parts[-2] == "snapshots" else parts[-1]


def _now(identity: dict[str, Any], statements: pd.DataFrame | None = None,
         tables: pd.DataFrame | None = None) -> dict[str, Any]:
    """This moment's snapshot, every row kept (the window needs them all)."""
    snap = snapshot(identity, statements, tables, top=max(len(statements) if statements is not None else 0, 1))
    snap["statements_complete"] = True
    return snap


def statements_since(base: dict[str, Any], identity: dict[str, Any], statements: pd.DataFrame, *,
                     source: str) -> tuple[pd.DataFrame, Finding]:
    """The database section's pg_stat_statements over the window since snapshot ``base``
    (``--since-run``), as :func:`statement_window` computes it (attrs kept: SQL, stats_reset...,
    and ``window``), and the ``db.stats_window`` finding saying what the window is. Two
    snapshots that cannot be compared (:func:`incomparable`) leave the frame cumulative, and the
    finding says why."""
    frame, info = statement_window(base, _now(identity, statements=statements))
    if not info["comparable"]:
        return statements, window_finding(info, source)
    frame.attrs = {**statements.attrs, "window": info}
    return frame, window_finding(info, source)


def tables_since(base: dict[str, Any], identity: dict[str, Any],
                 tables: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """pg_stat_user_tables with the window's counters since snapshot ``base`` (:func:`as_table_stats`;
    cumulative when the snapshots cannot be compared), and what makes the window different
    (:func:`window_notes`: a pg_stat_reset() inside it)."""
    twin, info = table_window(base, _now(identity, tables=tables))
    if not info["comparable"]:
        return tables, []
    return as_table_stats(twin, tables), window_notes(info)


def _short(query: str, width: int = 80) -> str:
    from .shapes import short_query
    return short_query(query, width)


__all__ = ["SCHEMA", "KIND", "STATEMENT_COUNTERS", "TABLE_COUNTERS", "TABLE_GAUGES", "snapshot", "is_snapshot",
           "named_queryids", "incomparable", "statement_window", "table_window", "as_table_stats",
           "window_finding", "time_shares", "database_window", "statements_since", "tables_since", "source_name",
           "interval", "window_notes"]
