"""The three privilege levels on a real server (issue 13): what each role may do, read from the
catalog after connecting, and what perfbook then sends.

A private PostgreSQL with the demo's seeded data (``seeded_postgres``); the roles come from
:func:`perfbook.demo.postgres.create_db_roles`, as ``perfbook demo --db-role`` makes them.
"""
from __future__ import annotations

import pytest

from perfbook.checks import database as D
from perfbook.demo.postgres import DB_ROLES, HypopgUnavailable, create_db_roles, hypopg_available
from perfbook.params import Params
from perfbook.sources import postgres as P

psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.integration

SETTINGS = Params(service="test").settings.database
CLICKS = "SELECT id, source, created_at FROM clicks WHERE product_id = $1 ORDER BY created_at DESC LIMIT $2"


def _session(pg, role):
    return P.Session.open(pg.dsn("demo", role))


def test_each_level_is_detected_and_explain_follows_it(seeded_postgres):
    pg = seeded_postgres
    su = pg.dsn("demo")
    assert create_db_roles(su, "monitor") == "perfbook" == DB_ROLES["monitor"]
    assert create_db_roles(su, "read_all") == "perfbook_read_all"
    with _session(pg, "perfbook") as db:
        priv = P.privileges(db)
        level, [f] = D.privilege_level(priv)
        assert level == "monitor" and priv["pg_monitor"] and not priv["read_all_data"]
        assert "public.clicks" in priv["unreadable"] and f.evidence["tables"] == len(priv["unreadable"])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            P.explain(db, CLICKS)
        # the candidate's statement is not even sent: its reason stands in for the plan
        stmts = pd_stmts()
        tables = P.table_stats(db)
        assert tables["columns"].map(len).gt(0).all()      # column names, with no SELECT on the tables
        _, cands = D.index_candidates(stmts, tables.assign(seq_scan=50, idx_scan=0), P.index_stats(db), SETTINGS)
        todo = D.explain_candidates(stmts, tables, SETTINGS, cands, priv)
        plans = P.explain_all(db, todo)
        assert plans["plan"].isna().all() and plans["error"].str.contains("no SELECT privilege on public.clicks").all()
    with _session(pg, "perfbook_read_all") as db:
        priv = P.privileges(db)
        assert D.privilege_level(priv)[0] == "read_all" and priv["unreadable"] == []
        assert P.explain(db, CLICKS)["Node Type"] == "Limit"


def test_hypopg_level(seeded_postgres):
    su = seeded_postgres.dsn("demo")
    if not hypopg_available(su):
        with pytest.raises(HypopgUnavailable):
            create_db_roles(su, "hypopg")
        pytest.skip("the hypopg extension is not installed (optional: postgresql-<major>-hypopg)")
    assert create_db_roles(su, "hypopg") == "perfbook_read_all"
    with _session(seeded_postgres, "perfbook_read_all") as db:
        level, [f] = D.privilege_level(P.privileges(db))
        assert level == "hypopg" and "level 3 of 3" in f.title
        # the hypothetical index on clicks(product_id, created_at DESC) exists only in this session
        sugg = D.IndexSuggestion(1, CLICKS, "clicks", ["product_id", "created_at"], [("created_at", True)],
                                 "statement text", "", 0.0, 500_000.0, 0.0, schema="public")
        cost = P.verify_with_hypopg(db, [sugg])[(1, "clicks")]
        assert cost["cost_after"] is not None and cost["cost_after"] <= cost["cost_before"]
    with psycopg.connect(su) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'clicks' "
                            "AND indexdef LIKE '%created_at DESC%'").fetchone()[0] == 0


def test_explain_analyze_refuses_what_is_not_on_the_allow_list_before_sending_it(seeded_postgres):
    with _session(seeded_postgres, "perfbook") as db:
        for sql in ("SELECT pg_try_advisory_lock_shared(42)", "SELECT pg_advisory_lock_shared(42)",
                    "SELECT pg_try_advisory_xact_lock_shared(42)"):
            with pytest.raises(P.ReadOnlyViolation):
                P.explain_analyze(db, sql)
            with pytest.raises(P.ReadOnlyViolation):
                db.query(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        held = db.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert held == 0
    create_db_roles(seeded_postgres.dsn("demo"), "read_all")
    with _session(seeded_postgres, "perfbook_read_all") as db:   # an ordinary SELECT still runs
        assert P.explain_analyze(db, "SELECT count(*), max(name) FROM categories WHERE id < 10")["Node Type"]


def pd_stmts():
    import pandas as pd
    return pd.DataFrame([{"queryid": 1, "query": CLICKS, "calls": 1415.0, "total_ms": 9000.0, "mean_ms": 6.4,
                          "rows": 28300.0, "rows_per_call": 20.0}])
