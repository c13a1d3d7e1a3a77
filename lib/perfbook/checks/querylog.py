"""N+1 from query logs (runbook Issue 2: "check logs for repeated similar queries").

Pure: consumes the :class:`~perfbook.sources.querylog.Statement` stream of
:mod:`perfbook.sources.querylog` in one pass, in constant memory (bounded caches and
session table), and keeps

- per statement fingerprint (pglast's, the one pg_stat_statements' queryid is built
  like): calls, total and max time, a sample text — for at most
  ``settings.limits.max_fingerprints`` fingerprints: past that, the cheapest half (by total
  time, then calls) is folded into one ``other`` row, so memory stays flat however many
  distinct statements the log holds (as pg_stat_statements does with ``pg_stat_statements.max``);
- *runs*: Sentry's N+1 rule adapted to a server log — at least ``min_repeats`` (5)
  consecutive executions of one key lookup (a single-table SELECT by ``col = $n``) in
  one session, back to back (each
  within ``max_gap_ms`` of the one before), costing together at least ``min_total_ms``
  (50 ms). Sentry measures client-side spans; a server log only has execution times,
  so a run's cost also counts its wall-clock span in the log (the round trips the
  request waited for), and the 50 ms is judged over the window's runs of that
  statement. Transaction control (BEGIN/COMMIT/SET...) between them does not break a
  run. Prisma lines without durations or times need twice the repeats instead.

:func:`n_plus_one_from_log` turns the runs into ``db.n_plus_one`` findings.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..findings import Finding
from ..params import Database, Limits
from .database import UTILITY, endpoint_for_table, n_plus_one_fix, query_shape, short_query

# Literals and parameters → "?": a cheap key so that lookups differing only in their
# constants share one pglast fingerprint computation.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\$\d+|\b\d+(?:\.\d+)?\b")
_CACHE_MAX = 10_000
_WHERE = re.compile(r"\bwhere\b", re.I)
#: Texts longer than this are fingerprinted each time, never kept as cache keys.
_CACHE_TEXT_MAX = 2_000
#: The sample text kept per fingerprint (enough to show, parse and fix the statement).
SAMPLE_MAX = 20_000
OTHER = "other"


class Fingerprinter:
    """Text → (fingerprint, kind) with bounded caches. ``kind``: ``lookup`` (a SELECT of
    one table by key, ``WHERE col = $n`` only — what an N+1 loop repeats), ``select``,
    ``utility`` (transaction control, SET...: transparent to runs) or ``other``."""

    def __init__(self) -> None:
        self.raw: dict[str, tuple[str, str]] = {}
        self.normalized: dict[str, tuple[str, str]] = {}
        self.misses = 0

    def __call__(self, text: str) -> tuple[str, str]:
        hit = self.raw.get(text)
        if hit is not None:
            return hit
        if len(text) > _CACHE_TEXT_MAX:
            self.misses += 1
            return self._compute(text, _LITERALS.sub("?", text))
        key = _LITERALS.sub("?", text)
        hit = self.normalized.get(key)
        if hit is None:
            self.misses += 1
            hit = self._compute(text, key)
            if len(self.normalized) >= _CACHE_MAX:
                self.normalized.clear()
            self.normalized[key] = hit
        if len(self.raw) >= _CACHE_MAX:
            self.raw.clear()
        self.raw[text] = hit
        return hit

    @staticmethod
    def _compute(text: str, key: str) -> tuple[str, str]:
        from pglast.parser import fingerprint

        if UTILITY.match(text):
            return ("utility:" + key.split(None, 1)[0].upper() if key.strip() else "utility", "utility")
        head = text.lstrip()[:6].upper()
        kind = "select" if head.startswith(("SELECT", "WITH", "(SELEC", "VALUES", "TABLE ")) else "other"
        # A key lookup needs "WHERE col = ...": parse the shape only then (the parse costs
        # far more than the fingerprint, and a log may hold a million distinct statements).
        if kind == "select" and "=" in text and _WHERE.search(text):
            shape = query_shape(text)
            if shape.key_columns and not shape.order_by and len(shape.from_tables) == 1:
                kind = "lookup"
        try:
            return fingerprint(text), kind
        except Exception:  # noqa: BLE001 - not PostgreSQL's grammar, truncated: hash the shape
            return "text:" + key.strip()[:200], kind


@dataclass
class LogAnalysis:
    """What one pass over the logs found, and the bars it was read with (``settings.database``)."""

    statements: int
    with_duration: int
    fingerprints: pd.DataFrame   # fingerprint, calls, total_ms, max_ms, query
    runs: pd.DataFrame           # one row per fingerprint with N+1 runs
    min_repeats: int
    min_total_ms: float
    first_timestamp: str = ""
    last_timestamp: str = ""
    # settings.limits: fingerprints folded into the "other" row, log lines cut
    max_fingerprints: int = 0
    folded_fingerprints: int = 0
    folded_runs: int = 0
    cut_lines: int = 0
    max_line_length: int = 0

    def limits_note(self) -> str:
        """One sentence on what the caps left out ("" when nothing was)."""
        parts = []
        if self.folded_fingerprints:
            parts.append(f"{self.folded_fingerprints:,} distinct statements beyond settings.limits.max_fingerprints "
                         f"({self.max_fingerprints:,}) were counted together in the '{OTHER}' row")
        if self.folded_runs:
            parts.append(f"{self.folded_runs:,} statements' N+1 runs beyond that cap were dropped (the cheapest)")
        if self.cut_lines:
            parts.append(f"{self.cut_lines:,} log lines longer than settings.limits.max_line_length "
                         f"({self.max_line_length:,} characters) were cut")
        return "; ".join(parts)

    def top(self, n: int = 10, by: str = "total_ms") -> pd.DataFrame:
        if self.fingerprints.empty:
            return self.fingerprints
        out = self.fingerprints.nlargest(n, by).copy()
        out["query"] = out["query"].map(short_query)
        return out.reset_index(drop=True)


class _Runs:
    """Aggregate of the runs of one fingerprint (bounded examples)."""

    __slots__ = ("runs", "statements", "cost_ms", "longest", "longest_cost_ms", "max_cost_ms", "sessions",
                 "first_ts", "last_ts", "sample", "preceding", "untimed")

    def __init__(self, sample: str, preceding: str | None, ts: str):
        self.runs = self.statements = self.longest = 0
        self.cost_ms = self.longest_cost_ms = self.max_cost_ms = 0.0
        self.sessions: list[str] = []
        self.first_ts = self.last_ts = ts
        self.sample, self.preceding = sample, preceding
        self.untimed = False


def _ms_of_day(ts: str) -> float | None:
    """``2026-11-26 22:30:05.843 UTC`` → milliseconds since midnight (None if not that shape)."""
    try:
        return (int(ts[11:13]) * 3_600_000 + int(ts[14:16]) * 60_000 + int(ts[17:19]) * 1000
                + (int(ts[20:23]) if ts[19:20] == "." else 0))
    except (ValueError, IndexError):
        return None


def _fold(stats: dict[str, list], other: list, keep: int) -> int:
    """Fold all but the ``keep`` costliest fingerprints (total time, then calls) into
    ``other`` ([calls, total_ms, max_ms, fingerprints]); how many were folded."""
    ranked = sorted((k for k in stats if not k.startswith("utility")), key=lambda k: (stats[k][1], stats[k][0]),
                    reverse=True)
    for k in ranked[keep:]:
        calls, total, mx = stats.pop(k)[:3]
        other[0] += calls
        other[1] += total
        other[2] = max(other[2], mx)
        other[3] += 1
    return max(0, len(ranked) - keep)


def analyze(statements: Iterable[Any], settings: Database, limits: Limits) -> LogAnalysis:
    """One pass over ``statements``, in constant memory.

    A *run* is ≥ ``min_repeats`` (``settings.n_plus_one_min_repeats``) consecutive
    executions of one SELECT fingerprint in one session, each logged within ``max_gap_ms``
    (``settings.n_plus_one_max_gap``) of the one before: one request's loop,
    not successive requests that happen to reuse a pooled connection (``%m`` has
    millisecond resolution; Prisma lines without times have no gap test and need twice
    the repeats). A run's *cost* is the larger of its statements' logged durations and
    its wall-clock span in the log: a server log sees execution time only, while the
    request also waits for every round trip — the span is what Sentry's client-side
    spans measure. Transaction control (BEGIN/COMMIT/SET) does not break a run; runs cost
    ``min_total_ms`` (``settings.n_plus_one_min_total``) or more to become findings
    (:func:`n_plus_one_from_log`).
    ``limits.max_log_sessions`` bounds the open-session table (least recently seen closed first).
    ``limits.max_fingerprints`` bounds the per-statement
    table and the runs: when it is reached, the cheaper half is folded into one ``other``
    row (runs: dropped, counted in ``folded_runs``). Memory is flat in the number of
    distinct statements; statement texts kept are cut at :data:`SAMPLE_MAX` characters.
    A ``statements`` iterable with ``cut_lines`` (:class:`perfbook.sources.querylog.Statements`)
    passes on how many log lines its reader cut.
    """
    min_repeats, min_total_ms = settings.n_plus_one_min_repeats, 1000 * settings.n_plus_one_min_total
    max_gap_ms, max_sessions = 1000 * settings.n_plus_one_max_gap, limits.max_log_sessions
    cap = max(2, int(limits.max_fingerprints))
    other = [0, 0.0, 0.0, 0]           # calls, total_ms, max_ms, fingerprints folded
    folded_runs = 0
    fp_of = Fingerprinter()
    stats: dict[str, list] = {}        # fp -> [calls, total_ms, max_ms, sample]
    # session -> [fp, count, dur_sum, timed, first_ts, sample, preceding, last_seen, last_text,
    #             first_ms, last_ms, last_dur]
    sessions: dict[str, list] = {}
    found: dict[str, _Runs] = {}
    n = with_dur = 0
    first_ts = last_ts = ""

    def close(state: list, session: str) -> None:
        nonlocal folded_runs
        fp, count = state[0], state[1]
        if fp is None:
            return
        timed = state[3] or state[9] is not None
        if count < (min_repeats if timed else 2 * min_repeats):
            return
        span = (state[10] - state[9] + (state[11] or 0.0)) if state[9] is not None and state[10] is not None else 0.0
        cost = max(state[2], span)
        r = found.get(fp)
        if r is None:
            if len(found) >= cap:
                for k in sorted(found, key=lambda k: found[k].cost_ms)[: len(found) - cap // 2]:
                    del found[k]
                    folded_runs += 1
            sample, preceding = state[5], state[6]
            r = found[fp] = _Runs(sample[:SAMPLE_MAX], preceding[:SAMPLE_MAX] if preceding else preceding,
                                  state[4])
        r.runs += 1
        r.statements += count
        r.cost_ms += cost
        r.max_cost_ms = max(r.max_cost_ms, cost)
        r.last_ts = state[4]
        r.untimed |= not timed
        if count > r.longest:
            r.longest, r.longest_cost_ms = count, cost
        if len(r.sessions) < 5 and session not in r.sessions:
            r.sessions.append(session)

    for st in statements:
        n += 1
        text = st.text
        fp, kind = fp_of(text)
        ms = st.duration_ms
        if ms is not None:
            with_dur += 1
        s = stats.get(fp)
        if s is None:
            if len(stats) >= cap:
                _fold(stats, other, cap // 2)
            stats[fp] = [1, ms or 0.0, ms or 0.0, text if len(text) <= SAMPLE_MAX else text[:SAMPLE_MAX]]
        else:
            s[0] += 1
            if ms is not None:
                s[1] += ms
                if ms > s[2]:
                    s[2] = ms
        if kind == "utility":
            continue
        ts = st.timestamp
        if not first_ts:
            first_ts = ts
        last_ts = ts
        now = _ms_of_day(ts) if ts else None
        state = sessions.get(st.session)
        if state is None:
            sessions[st.session] = [fp if kind == "lookup" else None, 1, ms or 0.0, ms is not None, ts, text, None,
                                    n, text, now, now, ms]
            if len(sessions) > max_sessions:
                for key, old in sorted(sessions.items(), key=lambda kv: kv[1][7])[: max_sessions // 2]:
                    close(old, key)
                    del sessions[key]
            continue
        state[7] = n
        if kind == "lookup" and state[0] == fp and (
                now is None or state[10] is None or 0 <= now - state[10] <= max_gap_ms):
            state[1] += 1
            if ms is not None:
                state[2] += ms
            else:
                state[3] = False
            state[10], state[11], state[8] = now, ms, text
            continue
        close(state, st.session)
        state[6] = state[8]
        state[0] = fp if kind == "lookup" else None
        state[1], state[2], state[3], state[4], state[5], state[8] = 1, ms or 0.0, ms is not None, ts, text, text
        state[9] = state[10] = now
        state[11] = ms
    for key, state in sessions.items():
        close(state, key)

    rows = [(k, v[0], v[1], v[2], v[3]) for k, v in stats.items() if not k.startswith("utility")]
    if other[3]:
        rows.append((OTHER, other[0], other[1], other[2],
                     f"({other[3]:,} other distinct statements, beyond settings.limits.max_fingerprints)"))
    fps = pd.DataFrame(rows, columns=["fingerprint", "calls", "total_ms", "max_ms", "query"])
    runs = pd.DataFrame([{"fingerprint": k, "query": r.sample, "runs": r.runs, "statements": r.statements,
                          "cost_ms": r.cost_ms, "max_run_cost_ms": r.max_cost_ms, "longest_run": r.longest,
                          "longest_run_cost_ms": r.longest_cost_ms, "timed": not r.untimed,
                          "sessions": list(r.sessions), "first_seen": r.first_ts, "last_seen": r.last_ts,
                          "preceding_query": r.preceding}
                         for k, r in found.items()],
                        columns=["fingerprint", "query", "runs", "statements", "cost_ms", "max_run_cost_ms",
                                 "longest_run", "longest_run_cost_ms", "timed", "sessions", "first_seen",
                                 "last_seen", "preceding_query"])
    runs = runs.sort_values("statements", ascending=False).reset_index(drop=True)
    return LogAnalysis(n, with_dur, fps, runs, min_repeats, min_total_ms, first_ts, last_ts,
                       max_fingerprints=cap, folded_fingerprints=other[3], folded_runs=folded_runs,
                       cut_lines=int(getattr(statements, "cut_lines", 0) or 0),
                       max_line_length=int(getattr(statements, "max_line_length", 0) or 0))


def fingerprint(text: str) -> str:
    """pglast's fingerprint of one statement ("text:..." when it does not parse)."""
    return Fingerprinter._compute(text, _LITERALS.sub("?", text))[0]


def _normalized(text: str) -> str:
    """The statement with constants as ``$n`` (pg_stat_statements' form), for display."""
    try:
        from pglast.parser import normalize
        return normalize(text)
    except Exception:  # noqa: BLE001
        return text


def n_plus_one_from_log(analysis: LogAnalysis, endpoints: Sequence[Any] = (),
                        known: Sequence[Finding] = (), files: Sequence[str] | None = None
                        ) -> tuple[pd.DataFrame, list[Finding]]:
    """``db.n_plus_one`` for each fingerprint with runs (see :func:`analyze`): a warning
    when its runs cost ≥ ``min_total_ms`` (Sentry's 50 ms) in the window, ``info`` for a
    pattern too cheap to matter yet. Evidence: the query, how many runs, the longest, a few sessions, the
    statement before a run. The endpoint: from ``known`` (the findings of
    :func:`perfbook.checks.database.n_plus_one_from_statements`, same fingerprint),
    else from the route that names the preceding statement's or the query's table."""
    cols = ["query", "runs", "statements", "longest_run", "cost_ms", "endpoint", "sessions", "preceding_query"]
    r = analysis.runs
    if analysis.statements == 0:
        none = files is not None and not files
        return pd.DataFrame(columns=cols), [Finding(
            "db.n_plus_one", "info",
            "No query log configured (targets.postgres_logs / targets.app_logs): N+1 checked from "
            "pg_stat_statements only" if none else "The query logs hold no statements in the window",
            subject="query log", evidence={"statements": 0, "files": list(files or [])},
            recommendation="Log statements and name the files in the params (targets.postgres_logs):\n"
                           "ALTER SYSTEM SET log_min_duration_statement = 0;  -- or e.g. 100 (ms) in production\n"
                           "ALTER SYSTEM SET log_line_prefix = '%m [%p] %c %q%u@%d ';\nSELECT pg_reload_conf();")]
    hints: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}   # the statistics' finding could not name one endpoint
    parents: dict[str, str] = {}
    for f in known or ():
        if f.code == "db.n_plus_one" and f.evidence.get("query"):
            fp = fingerprint(f.evidence["query"])
            if f.evidence.get("endpoint"):
                hints[fp] = f.evidence["endpoint"]
            elif f.evidence.get("endpoint_ambiguous"):
                ambiguous[fp] = [c.get("endpoint") for c in f.evidence.get("endpoint_candidates") or []
                                 if c.get("endpoint")]
            pq = query_shape(f.evidence.get("parent_query") or "")
            if pq.from_tables:
                parents[fp] = pq.from_tables[0]
    rows, found = [], []
    for rec in r.to_dict("records"):
        text = _normalized(rec["query"])
        shape = query_shape(text)
        table = shape.from_tables[0] if shape.from_tables else (shape.tables[0] if shape.tables else None)
        prev = query_shape(rec["preceding_query"]) if rec["preceding_query"] else None
        ptable = parents.get(rec["fingerprint"]) or (
            prev.from_tables[0] if prev and prev.kind == "select" and prev.from_tables and not prev.key_columns else None)
        candidates = ambiguous.get(rec["fingerprint"])
        endpoint = hints.get(rec["fingerprint"]) or (None if candidates is not None else (
            endpoint_for_table(ptable, endpoints) or endpoint_for_table(table, endpoints)))
        per_run = rec["statements"] / rec["runs"]
        costly = rec["cost_ms"] >= analysis.min_total_ms or not rec["timed"]
        rows.append({"query": short_query(text), "runs": rec["runs"], "statements": rec["statements"],
                     "longest_run": rec["longest_run"], "cost_ms": rec["cost_ms"] if rec["timed"] else None,
                     "endpoint": endpoint, "sessions": ", ".join(rec["sessions"]),
                     "preceding_query": short_query(rec["preceding_query"] or "")})
        found.append(Finding(
            "db.n_plus_one", "warning" if costly else "info",
            f"N+1 in the query log: {rec['runs']} run(s) of ≥ {analysis.min_repeats} identical lookups"
            + (f" on {table}" if table else "") + f", {per_run:.0f} per run on average (longest {rec['longest_run']})"
            + (f", {rec['cost_ms']:.0f} ms spent in them" if rec["timed"] else "")
            + (f" — likely {endpoint}" if endpoint else
               f" — endpoint ambiguous: {', '.join(candidates[:4])}" if candidates else ""),
            subject=short_query(text),
            evidence={"query": text, "fingerprint": rec["fingerprint"], "table": table, "runs": rec["runs"],
                      "statements": rec["statements"], "longest_run": rec["longest_run"],
                      "cost_ms": rec["cost_ms"] if rec["timed"] else None,
                      "max_run_cost_ms": rec["max_run_cost_ms"] if rec["timed"] else None,
                      "sessions": rec["sessions"], "first_seen": rec["first_seen"], "last_seen": rec["last_seen"],
                      "preceding_query": rec["preceding_query"], "endpoint": endpoint, "source": "query log",
                      "endpoint_candidates": candidates or ([endpoint] if endpoint else []),
                      "min_repeats": analysis.min_repeats, "min_total_ms": analysis.min_total_ms},
            recommendation=n_plus_one_fix(table or "items", shape.key_columns[0] if shape.key_columns else "id",
                                          ptable)))
    if not found:
        found.append(Finding(
            "db.n_plus_one", "ok",
            f"No run of ≥ {analysis.min_repeats} identical lookups in one session "
            f"({analysis.statements:,} logged statements read)",
            subject="query log",
            evidence={"statements": analysis.statements, "with_duration": analysis.with_duration,
                      "fingerprints": len(analysis.fingerprints), "min_repeats": analysis.min_repeats,
                      "min_total_ms": analysis.min_total_ms}))
    note = analysis.limits_note()
    if note:
        found.append(Finding(
            "db.n_plus_one", "info", f"The query logs were read within settings.limits: {note}",
            subject="query log limits",
            evidence={"max_fingerprints": analysis.max_fingerprints,
                      "folded_fingerprints": analysis.folded_fingerprints, "folded_runs": analysis.folded_runs,
                      "max_line_length": analysis.max_line_length, "cut_lines": analysis.cut_lines},
            recommendation="The costliest statements are all kept; to keep more, raise "
                           "settings.limits.max_fingerprints (or max_line_length) in the params file."))
    return pd.DataFrame(rows, columns=cols), found
