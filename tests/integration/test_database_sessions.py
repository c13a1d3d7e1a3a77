"""Live sessions on the database, found through the real CLI (`perfbook run database`) and papermill.

Starts a private PostgreSQL server (:class:`perfbook.demo.postgres.PostgresServer`, seeded like
the demo from the cached seed, pg_stat_statements preloaded) for the test, and on it, as the
superuser, three faults that the database section must report:

- an index no query uses (``idx_unused_test`` on ``clicks``, 500k rows: over unused_indexes' 1 MiB);
- a lock wait: session A holds a row lock on ``categories`` in an open transaction, session B
  (a thread) blocks on the same row;
- a long-running statement: session C (a thread) runs ``pg_sleep(60)``, past
  ``settings.database.long_running`` (set to 2 s here).

The notebook connects as the read-only monitoring role ``perfbook`` (pg_monitor). Afterwards A
is rolled back, B and C end, and the server is stopped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from runs import report_dir

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]
RUN_TIMEOUT = 90
SLEEP_SQL = "SELECT pg_sleep(60)"
LOCK_SQL = "UPDATE categories SET name = name WHERE id = 1"


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_long_running_lock_waits_and_unused_index_are_found(tmp_path, seeded_postgres):
    pg = seeded_postgres
    su = pg.dsn("demo")
    admin = psycopg.connect(su, autocommit=True)
    a = b = c = None
    threads: list[threading.Thread] = []
    errors: dict[str, BaseException] = {}

    def run_in_thread(name: str, conn, sql: str) -> threading.Thread:
        def target():
            try:
                conn.execute(sql)
            except BaseException as exc:  # noqa: BLE001  (cancelled at the end: expected for C)
                errors[name] = exc
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        threads.append(t)
        return t

    try:
        # (a) an index nothing scans, well over unused_indexes' 1 MiB floor
        admin.execute("CREATE INDEX idx_unused_test ON clicks (created_at)")
        before = admin.execute("SELECT id, name, slug, created_at FROM categories WHERE id = 1").fetchone()

        # (b) A holds the row lock in an open transaction; B waits on it
        a = psycopg.connect(su, autocommit=False, application_name="pbtest-blocker")
        blocker_pid = a.info.backend_pid  # pg_backend_pid() of A, read without a statement
        a.execute(LOCK_SQL)
        b = psycopg.connect(su, autocommit=True, application_name="pbtest-waiter")
        waiter_pid = b.info.backend_pid
        run_in_thread("B", b, LOCK_SQL)

        # (c) a long statement
        c = psycopg.connect(su, autocommit=True, application_name="pbtest-sleeper")
        sleeper_pid = c.info.backend_pid
        run_in_thread("C", c, SLEEP_SQL)

        wait_until(lambda: admin.execute("SELECT %s = ANY(pg_blocking_pids(%s))",
                                         (blocker_pid, waiter_pid)).fetchone()[0], 10, "B to wait on A's lock")
        wait_until(lambda: admin.execute(
            "SELECT coalesce(EXTRACT(EPOCH FROM now() - query_start), 0) > 3 FROM pg_stat_activity "
            "WHERE pid = %s AND state = 'active'", (sleeper_pid,)).fetchone()[0], 15, "C to run past 3 s")

        params = tmp_path / "p.yaml"
        params.write_text("service: db-sessions\nenvironment: test\nwindow: {since: -5m, until: now}\n"
                          "targets:\n  database_env: PBTEST_SESSIONS_DSN\n")
        env = dict(os.environ, PBTEST_SESSIONS_DSN=pg.dsn("demo", "perfbook"))
        t0 = time.monotonic()
        res = subprocess.run(PERFBOOK + ["run", "database", "-p", str(params), "-P", "settings.database.long_running=2s",
                                         "--outputs", str(tmp_path / "out")],
                             cwd=ROOT, env=env, text=True, capture_output=True, timeout=RUN_TIMEOUT)
        took = time.monotonic() - t0

        # the faults are still in place after the run (perfbook ended nothing, changed nothing)
        assert threads[0].is_alive() and threads[1].is_alive(), errors
        assert admin.execute("SELECT id, name, slug, created_at FROM categories WHERE id = 1").fetchone() == before
        assert admin.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_unused_test'").fetchone()[0] == 1
    finally:
        if a is not None:
            a.rollback()  # releases B
        if c is not None:
            admin.execute("SELECT pg_cancel_backend(%s)", (sleeper_pid,))
        for t in threads:
            t.join(10)
        for conn in (a, b, c, admin):
            if conn is not None:
                conn.close()

    assert not any(t.is_alive() for t in threads)
    assert "B" not in errors, errors  # B got its lock once A rolled back
    assert isinstance(errors.get("C"), psycopg.errors.QueryCanceled), errors
    assert took < RUN_TIMEOUT

    d = report_dir(res.stdout)
    findings = json.loads((d / "findings.json").read_text())
    summary = [(f["check"], f["code"], f["severity"], f["subject"]) for f in findings]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["notebooks"][0]["status"] == "ok", (manifest, res.stdout, res.stderr)
    assert not [f for f in findings if f["code"] == "check.failed"], summary

    locks = [f for f in findings if f["code"] == "db.lock_waits" and f["severity"] in ("warning", "critical")]
    assert locks, summary
    [lock] = [f for f in locks if f["evidence"]["blocking_pid"] == blocker_pid] or [None]
    assert lock is not None, (blocker_pid, [f["evidence"] for f in locks])
    assert lock["subject"] == f"pid {blocker_pid}"
    assert waiter_pid in lock["evidence"]["waiting_pids"], lock
    assert lock["evidence"]["blocker_state"] == "idle in transaction", lock
    assert "UPDATE categories" in (lock["evidence"]["blocker_query"] or ""), lock

    slow = [f for f in findings if f["code"] == "db.long_running" and f["severity"] in ("warning", "critical")
            and f["evidence"]["pid"] == sleeper_pid]
    assert len(slow) == 1, summary
    assert "pg_sleep(60)" in slow[0]["evidence"]["query"] and "pg_sleep" in slow[0]["subject"], slow
    assert slow[0]["evidence"]["state"] == "active" and slow[0]["evidence"]["seconds"] > 2, slow
    assert slow[0]["evidence"]["threshold_s"] == 2.0, slow

    unused = [f for f in findings if f["code"] == "db.unused_index" and f["subject"] == "idx_unused_test"]
    assert len(unused) == 1, summary
    assert unused[0]["severity"] == "info" and unused[0]["evidence"]["idx_scan"] == 0, unused
    assert unused[0]["evidence"]["index_bytes"] >= 1 << 20, unused
    assert "DROP INDEX CONCURRENTLY public.idx_unused_test;" in unused[0]["recommendation"], unused

    html = (d / "database.html").read_text()
    assert "idx_unused_test" in html and f"pid {blocker_pid}" in html and "pg_sleep(60)" in html
