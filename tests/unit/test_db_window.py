"""Window-only database statistics (issue 15, point 3): snapshots, deltas, resets, --since-run."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from perfbook.baseline import BadBaseline, since_snapshot
from perfbook.checks.database import window
from perfbook.compare import Run, summary_lines
from perfbook.findings import Finding, collect_records
from perfbook.report.comparison import compare_html, compare_runs

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "healthy"
T0, T1 = "2026-12-06T10:00:00+00:00", "2026-12-06T10:30:00+00:00"
IDENT = {"system_identifier": "7716", "database": "shop", "target": "postgresql://db:5432/shop",
         "postmaster_start": "2026-12-01T00:00:00+00:00", "database_reset": "2026-11-01T00:00:00+00:00",
         "statements_reset": "2026-11-01T00:00:00+00:00"}
LOOKUP = "SELECT id, name FROM categories WHERE id = $1"


def _stmts(rows):
    """A pg_stat_statements frame as sources.postgres.statements returns it: rows of
    (queryid, query, calls, total_ms, rows)."""
    df = pd.DataFrame([{"queryid": q, "username": "app", "query": text, "calls": float(c), "total_ms": float(t),
                        "mean_ms": t / c if c else None, "max_ms": 900.0, "rows": float(n),
                        "rows_per_call": n / c if c else None, "shared_blks_hit": 10.0 * c, "shared_blks_read": 1.0 * c,
                        "hit_ratio": 10 / 11, "blk_read_ms": 0.0, "blk_write_ms": 0.0, "toplevel": True}
                       for q, text, c, t, n in rows])
    df.attrs.update(stats_reset=None, sql="SELECT ...", unavailable=None)
    return df


def _tables(rows):
    return pd.DataFrame([{"schema": "public", "table": t, "seq_scan": float(s), "seq_tup_read": float(r),
                          "idx_scan": float(i), "idx_tup_fetch": 0.0, "n_live_tup": 1000.0, "n_dead_tup": 5.0,
                          "vacuum_count": 0.0, "autovacuum_count": 1.0, "analyze_count": 0.0, "autoanalyze_count": 1.0}
                         for t, s, r, i in rows])


def _snap(rows, tables=(("products", 10, 10_000, 50),), taken=T0, top=200, **ident):
    return window.snapshot({**IDENT, "taken_at": taken, **ident}, _stmts(rows), _tables(tables), top=top, limit=500)


BASE = [("1", LOOKUP, 1000, 500.0, 1000), ("2", "SELECT * FROM products WHERE category_id = $1", 100, 2000.0, 2000),
        ("3", "SELECT 1", 50, 1.0, 50)]
NOW = [("1", LOOKUP, 41_000, 20_500.0, 41_000), ("2", "SELECT * FROM products WHERE category_id = $1", 140, 2800.0,
                                                   2800),
       ("3", "SELECT 1", 50, 1.0, 50), ("4", "SELECT * FROM orders", 10, 9000.0, 10)]


def test_the_window_is_the_difference_and_idle_statements_drop_out():
    frame, info = window.statement_window(_snap(BASE), _snap(NOW, taken=T1))
    got = {r["queryid"]: r for r in frame.to_dict("records")}
    assert set(got) == {"1", "2", "4"}                                # "3" did not run in the window
    assert got["1"]["calls"] == 40_000 and got["1"]["total_ms"] == 20_000 and got["1"]["mean_ms"] == 0.5
    assert got["1"]["since"] == "" and got["2"]["calls"] == 40 and got["2"]["rows_per_call"] == 20
    assert got["4"]["since"] == "new"                                 # the baseline held every statement
    assert pd.isna(got["1"]["max_ms"])                                # max is since reset, never windowed
    assert info["comparable"] and info["interval_s"] == 1800 and info["statements_reset"] is None
    assert list(frame["queryid"]) == ["1", "4", "2"]                  # by the window's total time
    f = window.window_finding(info, "100000-before")
    assert f.severity == "info" and "30.0 min since 100000-before" in f.title and "40,050 calls" in f.title


def test_a_statement_outside_the_baselines_top_is_marked_at_most():
    base = _snap(BASE, top=1)                                         # only "2" kept, not complete
    assert not base["statements_complete"] and [s["queryid"] for s in base["statements"]] == ["2"]
    frame, _ = window.statement_window(base, _snap(NOW, taken=T1))
    row = frame.set_index("queryid").loc["1"]
    assert row["since"] == "not in baseline" and row["calls"] == 41_000   # at most: its baseline is unknown


def test_snapshot_keeps_the_statements_findings_name_beyond_the_top():
    keep = window.named_queryids([Finding("db.slow_query", "warning", "t", evidence={"queryid": "3"}),
                                  {"evidence": {"also_serves": [{"queryid": 1}]}}])
    assert keep == {"3", "1"}
    snap = window.snapshot({**IDENT, "taken_at": T0}, _stmts(BASE), _tables([]), top=1, keep=keep, limit=500)
    assert sorted(s["queryid"] for s in snap["statements"]) == ["1", "2", "3"]
    json.dumps(snap)                                                  # JSON-safe as it is


def test_a_reset_between_the_snapshots_is_detected_never_negative():
    # pg_stat_statements_reset() after the baseline (14+: pg_stat_statements_info.stats_reset moved).
    after = _snap([("1", LOOKUP, 300, 150.0, 300)], taken=T1, statements_reset="2026-12-06T10:20:00+00:00")
    frame, info = window.statement_window(_snap(BASE), after)
    assert info["statements_reset"].startswith("2026-12-06T10:20") and frame["calls"].tolist() == [300]
    assert (frame["since"] == "reset").all() and (frame[list(window.STATEMENT_COUNTERS)] >= 0).all().all()
    f = window.window_finding(info, "run-a")
    assert f.severity == "warning" and "reset at 2026-12-06 10:20:00 UTC" in f.title
    # No stats_reset to read (13 and older), or one statement evicted and back: its counters went down.
    frame, info = window.statement_window(_snap(BASE, statements_reset=None),
                                          _snap([("1", LOOKUP, 300, 150.0, 300), *NOW[1:]], taken=T1,
                                                statements_reset=None))
    row = frame.set_index("queryid").loc["1"]
    assert row["since"] == "reset" and row["calls"] == 300 and info["rows_reset"] == 1
    assert "1 statement(s) counted from a reset" in window.window_finding(info, "run-a").title


def test_tables_window_and_their_reset():
    base = _snap(BASE, tables=[("products", 10, 10_000, 50), ("orders", 1, 5, 1)])
    now = _snap(NOW, tables=[("products", 30, 210_000, 50), ("orders", 1, 5, 3)], taken=T1)
    frame, info = window.table_window(base, now)
    got = frame.set_index("table")
    assert got.loc["products", "seq_tup_read"] == 200_000 and got.loc["orders", "idx_scan"] == 2
    assert got.loc["products", "n_live_tup"] == 1000                  # gauges as they are now
    reset = _snap(NOW, tables=[("products", 3, 300, 0)], taken=T1, database_reset="2026-12-06T10:10:00+00:00")
    frame, info = window.table_window(base, reset)
    assert info["database_reset"] and frame.loc[0, "since"] == "reset" and frame.loc[0, "seq_scan"] == 3


@pytest.mark.parametrize("change, why", [
    ({"system_identifier": "9999"}, "different PostgreSQL clusters"),
    ({"database": "other"}, "different databases"),
    ({"target": "postgresql://replica:5432/shop"}, "different addresses"),
])
def test_snapshots_of_another_server_give_no_window(change, why):
    frame, info = window.statement_window(_snap(BASE), _snap(NOW, taken=T1, **change))
    assert frame.empty and not info["comparable"] and why in info["reason"]
    f = window.window_finding(info, "run-a")
    assert f.severity == "warning" and why in f.title and "cumulative" in f.title
    # --since-run on another server: the checks see the cumulative frames, and the page says why.
    stmts, tables = _stmts(NOW), _tables([("products", 1, 1, 1)])
    s2, f2 = window.statements_since(_snap(BASE), {**IDENT, "taken_at": T1, **change}, stmts, source="run-a")
    t2, notes = window.tables_since(_snap(BASE), {**IDENT, "taken_at": T1, **change}, tables)
    assert s2 is stmts and t2 is tables and f2.severity == "warning" and notes == []


def test_a_later_baseline_is_refused():
    _, info = window.statement_window(_snap(BASE, taken=T1), _snap(NOW, taken=T0))
    assert "not earlier" in info["reason"]


def test_since_gives_the_checks_window_frames_with_the_sources_attrs():
    stmts = _stmts(NOW)
    tables = _tables([("products", 30, 210_000, 50)])
    tables.attrs["sql"] = "SELECT ... pg_stat_user_tables"
    s2, f = window.statements_since(_snap(BASE), {**IDENT, "taken_at": T1}, stmts, source="run-a")
    t2, notes = window.tables_since(_snap(BASE), {**IDENT, "taken_at": T1}, tables)
    assert s2.set_index("queryid").loc["1", "calls"] == 40_000 and s2.attrs["sql"] == "SELECT ..."
    assert t2.loc[0, "seq_tup_read"] == 200_000 and t2.attrs["sql"].endswith("pg_stat_user_tables") and not notes
    _, notes = window.tables_since(_snap(BASE), {**IDENT, "taken_at": T1, "database_reset": T1}, tables)
    assert notes and "pg_stat_user_tables was reset" in notes[0]
    assert f.code == "db.stats_window" and f.severity == "info"
    assert window.source_name("/o/2026-12-06/100000-x/snapshots/database.json") == "100000-x"


def _run(folder, snap):
    return Run(folder=folder, run_dir=f"/o/{folder}", service="demo-api", environment="demo",
               started=T0, status="complete", findings=[], sections_ok=frozenset({"database"}),
               snapshots={"database": snap} if snap else {})


def test_compare_says_where_the_database_time_went():
    result = compare_runs(_run("a", _snap(BASE)), _run("b", _snap(NOW, taken=T1)))
    db = result["database"]
    top = db["statements"][0]
    assert top["queryid"] == "1" and top["calls"] == 40_000 and round(top["share"], 2) == round(20_000 / 29_800, 2)
    assert db["headline"].startswith("SELECT") and "ran 40,000 times and took 67 % of database time" in db["headline"]
    assert any("database: SELECT" in ln for ln in summary_lines(result))
    page = compare_html(result)
    assert "Where the database time went" in page and "40,000" in page and "67 %" in page
    json.dumps(result)
    # A run without a snapshot: said, not guessed.
    none = compare_runs(_run("a", None), _run("b", _snap(NOW, taken=T1)))
    assert none["database"] is None and "Not known" in compare_html(none)


def test_records_are_collected_from_the_notebook():
    nb = {"cells": [{"outputs": [{"data": {"application/vnd.perfbook.record+json":
                                           {"name": "database", "data": {"a": 1}}}}]},
                    {"outputs": [{"data": {"text/plain": "x"}}]}]}
    assert collect_records(nb) == {"database": {"a": 1}}


def _folder(out: Path, snap: dict | None) -> Path:
    d = out / "2026-12-06" / "100000-before"
    d.mkdir(parents=True)
    shutil.copy(FIX / "findings.json", d / "findings.json")
    shutil.copy(FIX / "manifest.json", d / "manifest.json")
    if snap is not None:
        (d / "snapshots").mkdir()
        (d / "snapshots" / "database.json").write_text(json.dumps(snap))
    return d


def test_since_run_names_the_snapshot_or_says_in_one_line_why_not(tmp_path):
    from perfbook.compare import service_identity
    service, env = service_identity(json.loads((FIX / "manifest.json").read_text()))
    d = _folder(tmp_path / "with", _snap(BASE))
    assert since_snapshot(str(d), service, env, tmp_path / "with") == d / "snapshots" / "database.json"
    assert since_snapshot("previous", service, env, tmp_path / "with") == d / "snapshots" / "database.json"
    bare = _folder(tmp_path / "bare", None)
    with pytest.raises(BadBaseline, match=r"^--since-run .*has no snapshots/database.json"):
        since_snapshot(str(bare), service, env, tmp_path)
    with pytest.raises(BadBaseline, match=r"^--since-run .*: a run of .*, not of other"):
        since_snapshot(str(d), "other", env, tmp_path)
    (d / "snapshots" / "database.json").write_text('{"kind": "something else"}')
    with pytest.raises(BadBaseline, match="not a perfbook database snapshot"):
        since_snapshot(str(d), service, env, tmp_path)
