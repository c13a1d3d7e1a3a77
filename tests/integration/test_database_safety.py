"""perfbook's PostgreSQL session cannot hurt the database it diagnoses.

Starts a private PostgreSQL (perfbook.demo.postgres.PostgresServer: initdb into a temp
folder, 127.0.0.1 on a free port, pg_stat_statements preloaded) and connects to it as the
*superuser* — the worst case, where no role privilege protects anything — through
perfbook's session. Each write is tried twice: through ``Session.query`` (perfbook's
statement guard refuses it before sending) and straight on the session's connection
(the server's ``default_transaction_read_only`` refuses it). Nothing may change.
The last test runs the database notebook through the real CLI and papermill.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from perfbook.sources import SourceUnreachable, postgres as P

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
XSS = "</td><script>alert(1)</script>"


@pytest.fixture(scope="module")
def pg():
    from perfbook.demo.postgres import PostgresServer

    state = Path(tempfile.mkdtemp(prefix="perfbook-dbsafety-"))
    os.chmod(state, 0o755)
    server = PostgresServer(state)
    server.start()
    try:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE shop")
        with psycopg.connect(server.dsn("shop"), autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
            c.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
            c.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g")
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def db(pg):
    s = P.Session.open(pg.dsn("shop"), statement_timeout=1.0, lock_timeout=0.5)
    yield s
    s.close()


def _state(pg) -> tuple:
    with psycopg.connect(pg.dsn("shop")) as c:
        rows = c.execute("SELECT count(*), sum(id), max(name) FROM items").fetchone()
        tables = c.execute("SELECT array_agg(relname ORDER BY relname) FROM pg_class "
                           "WHERE relnamespace = 'public'::regnamespace").fetchone()[0]
        return rows, tables


WRITES = [
    "INSERT INTO items VALUES (1000, 'evil')",
    "UPDATE items SET name = 'evil'",
    "DELETE FROM items",
    "CREATE TABLE evil (id int)",
    "ALTER TABLE items ADD COLUMN evil int",
    "DROP TABLE items",
    "CREATE INDEX evil_idx ON items (name)",
    "TRUNCATE items",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_refused_by_perfbook_before_sending(pg, db, sql):
    before = _state(pg)
    with pytest.raises(P.ReadOnlyViolation):
        db.query(sql)
    assert _state(pg) == before


@pytest.mark.parametrize("sql", WRITES)
def test_writes_refused_by_the_server_read_only_session(pg, db, sql):
    before = _state(pg)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.conn.execute(sql)   # bypasses perfbook's guard: the server must still refuse
    assert _state(pg) == before


def test_explain_analyze_of_a_delete_fails_and_deletes_nothing(pg, db):
    before = _state(pg)
    with pytest.raises(P.ReadOnlyViolation):
        P.explain_analyze(db, "DELETE FROM items")
    with pytest.raises(P.ReadOnlyViolation):
        db.query("EXPLAIN ANALYZE DELETE FROM items")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.conn.execute("EXPLAIN ANALYZE DELETE FROM items")
    with pytest.raises(P.ReadOnlyViolation):  # a data-modifying CTE inside a SELECT
        P.explain_analyze(db, "WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d")
    assert _state(pg) == before


def test_the_session_cannot_switch_itself_to_read_write(pg, db):
    for sql in ("SET default_transaction_read_only = off", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "SELECT set_config('default_transaction_read_only', 'off', false)", "BEGIN READ WRITE"):
        with pytest.raises(P.ReadOnlyViolation):
            db.query(sql)
    assert db.value("SHOW default_transaction_read_only") == "on"


def test_pg_sleep_is_cut_by_statement_timeout(db):
    t0 = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        db.query("SELECT pg_sleep(30)")
    assert time.monotonic() - t0 < 20  # cut long before pg_sleep's 30 s, even on a busy machine
    assert db.value("SELECT 1") == 1  # the session is still usable


def test_guards_applied_when_a_pooler_drops_startup_options(pg, monkeypatch):
    """Issue 14 point 6: a role that already has default_transaction_read_only=on, behind a
    pooler that drops the startup ``options`` (simulated: the connection is opened without
    them). perfbook must still end up with its timeouts, verified by SHOW, and a migration's
    ACCESS EXCLUSIVE lock must not make its catalog queries queue (and the app behind them)."""
    with psycopg.connect(pg.dsn("shop"), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS pooled_ro")
        c.execute("CREATE ROLE pooled_ro LOGIN")
        c.execute("ALTER ROLE pooled_ro SET default_transaction_read_only = on")
        c.execute("GRANT SELECT ON items TO pooled_ro")
    real_connect, asked = psycopg.connect, []

    def pooler(*args, **kwargs):  # like PgBouncer/Supavisor: startup options never reach the server
        asked.append(kwargs.pop("options", ""))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", pooler)
    s = P.Session.open(pg.dsn("shop", "pooled_ro"), statement_timeout=1.5, lock_timeout=0.25)
    monkeypatch.undo()
    try:
        assert "statement_timeout=1500" in asked[0]           # perfbook asked; the "pooler" dropped it
        with real_connect(pg.dsn("shop", "pooled_ro"), autocommit=True) as plain:
            assert plain.execute("SHOW statement_timeout").fetchone()[0] == "0"  # what the role alone gives
        assert s.value("SHOW statement_timeout") == "1500ms"
        assert s.value("SHOW lock_timeout") == "250ms"
        assert s.value("SHOW transaction_read_only") == "on"
        assert s.value("SHOW default_transaction_read_only") == "on"
        with real_connect(pg.dsn("shop")) as migration:     # a transaction holding the lock
            migration.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                s.query("SELECT count(*) FROM items")
            migration.rollback()
        assert s.value("SELECT count(*) FROM items") == 100   # usable again once the lock is gone
    finally:
        s.close()


def test_guards_set_on_a_session_whose_role_turned_them_off(pg):
    """The startup options do reach the server but the role's own settings won, or were
    changed: whatever is not in force after connecting is SET, checked again."""
    with psycopg.connect(pg.dsn("shop"), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS loose_role")
        c.execute("CREATE ROLE loose_role LOGIN")
    with P.Session.open(pg.dsn("shop", "loose_role"), statement_timeout=2, lock_timeout=0.75) as s:
        assert (s.value("SHOW statement_timeout"), s.value("SHOW lock_timeout")) == ("2s", "750ms")
        s.conn.execute("SET statement_timeout = 0")   # behind perfbook's back: the check finds and fixes it
        s.conn.execute("SET default_transaction_read_only = off")
        s._ensure_guards()
        assert s.value("SHOW statement_timeout") == "2s" and s.value("SHOW transaction_read_only") == "on"


def test_session_settings_and_tag_visible_to_the_dba(pg, db):
    assert db.value("SHOW statement_timeout") == "1s"
    assert db.value("SHOW lock_timeout") == "500ms"
    with psycopg.connect(pg.dsn("shop"), autocommit=True) as c:
        row = c.execute("SELECT application_name, query FROM pg_stat_activity WHERE pid = %s",
                        (db.conn.info.backend_pid,)).fetchone()
    assert row[0] == "perfbook" and row[1].startswith("/*perfbook*/")


def test_explain_analyze_of_a_select_runs_rolled_back(db):
    plan = P.explain_analyze(db, "SELECT count(*) FROM items WHERE id < 50")
    assert plan["Actual Rows"] == 1 and plan["Execution Time"] is not None
    assert db.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_generic_plan_of_a_parameterised_statement(db):
    plan = P.explain(db, "SELECT name FROM items WHERE id = $1")
    assert plan["Node Type"] in ("Index Scan", "Bitmap Heap Scan", "Seq Scan")
    assert db.conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


def test_wrong_dsn_is_source_unreachable_without_the_password():
    with pytest.raises(SourceUnreachable) as e:
        P.Session.open("postgresql://app:hunter2@127.0.0.1:1/shop", connect_timeout=2)
    assert e.value.source == "postgres" and "hunter2" not in str(e.value) and "app" not in e.value.target


def test_query_text_with_script_shows_as_text_in_the_report(pg, tmp_path):
    """A statement whose text carries </td><script>... is in pg_stat_statements; the
    notebook's HTML report must show it escaped, never as markup."""
    with psycopg.connect(pg.dsn("shop"), autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")
        for _ in range(120):
            c.execute(f'SELECT name AS "{XSS}", pg_sleep(0.021) FROM items WHERE id = 1')
    params = tmp_path / "params.yaml"
    params.write_text("service: safety-test\nenvironment: test\nwindow: {since: -5m, until: now}\n"
                      "targets:\n  database_env: PBTEST_SAFETY_DSN\n", encoding="utf-8")
    env = dict(os.environ, PBTEST_SAFETY_DSN=pg.dsn("shop"))
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "run", "database", "-p", str(params),
                          "--outputs", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    report = [ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
    assert report, res.stdout + res.stderr
    html = (Path(report[-1][8:]).parent / "database.html").read_text(encoding="utf-8")
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html   # shown, as text
    assert "<script>alert(1)" not in html                             # never as markup
    assert pg.dsn("shop") not in html


def test_without_the_extension_the_page_says_how_to_enable_it(pg):
    from perfbook.checks import database as D

    with P.Session.open(pg.dsn("postgres")) as s:   # loaded, but never CREATEd in database postgres
        stmts = P.statements(s)
    assert stmts.empty and stmts.attrs["unavailable"] == "not_created"
    [f] = D.statements_available(stmts)
    assert f.severity == "error" and "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in f.recommendation


def test_without_pg_read_all_stats_hidden_statements_are_counted(pg):
    from perfbook.checks import database as D

    with psycopg.connect(pg.dsn("shop"), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS nobody_special")
        c.execute("CREATE ROLE nobody_special LOGIN")
        c.execute("SELECT count(*) FROM items")  # a statement of another role
    with P.Session.open(pg.dsn("shop", "nobody_special")) as s:
        stmts = P.statements(s)
    assert stmts.attrs["hidden"] >= 1
    [f] = D.statements_available(stmts)
    assert f.severity == "info" and "pg_read_all_stats" in f.recommendation
