"""The database section on the real demo stack, at each privilege level.

Uses the session fixtures of conftest.py: ``incident_run`` and ``healthy_run`` (each a
private PostgreSQL 15 with pg_stat_statements and statement logging, a Prometheus
server, two demo-service instances and the external-API stand-in on 127.0.0.1, driven
with traffic, then ``perfbook batch`` through papermill). The batch connects as the demo's
default role, ``perfbook`` (pg_monitor only, the README's recommendation: no EXPLAIN). The
same stacks are then diagnosed again by ``perfbook run database`` with a second DSN, as
``perfbook_read_all`` (+ pg_read_all_data: EXPLAIN verifies), and, when the server has the
extension, with hypopg created: the ground truth holds at both levels, and a level never
changes a verdict without saying why.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from groundtruth import compare

from perfbook.sources import postgres as P, querylog

pytestmark = pytest.mark.integration

SECTION = "database"
ROOT = Path(__file__).resolve().parents[2]


def _one(run, code, subject, source=None):
    found = [f for f in run.find(code, subject, section=SECTION)
             if source is None or f["evidence"].get("source") == source]
    assert found, [(f["code"], f["severity"], f["subject"]) for f in run.section(SECTION)]
    return found[0]


def test_n_plus_one_found_from_pg_stat_statements(incident_run):
    f = _one(incident_run, "db.n_plus_one", "categories", "pg_stat_statements")
    assert "WHERE id = $1" in f["subject"]
    assert f["evidence"]["endpoint"] == "GET /api/products"
    assert 15 <= f["evidence"]["lookups_per_parent_call"] <= 25
    assert "include: { category: true }" in f["recommendation"]


def test_n_plus_one_found_in_the_query_log(incident_run):
    f = _one(incident_run, "db.n_plus_one", "categories", "query log")
    assert f["evidence"]["runs"] >= 5 and f["evidence"]["longest_run"] >= 5
    assert f["evidence"]["endpoint"] == "GET /api/products"


CREATE_INDEX = ("CREATE INDEX CONCURRENTLY idx_products_category_id_created_at ON public.products "
                "(category_id, created_at DESC);")


def test_privilege_level_monitor_is_said_with_what_the_next_level_adds(incident_run):
    [f] = [f for f in incident_run.section(SECTION) if f["code"] == "db.privileges"]
    assert f["severity"] == "info" and f["evidence"]["level"] == "monitor" and f["subject"] == "role perfbook"
    assert "level 1 of 3" in f["title"] and "pg_read_all_data" in f["title"]
    assert f["recommendation"].startswith("GRANT pg_read_all_data TO perfbook;")
    assert "Privilege level 1 of 3" in incident_run.html(SECTION)


def test_missing_index_on_products_category_id_then_created_at(incident_run):
    """pg_monitor only: EXPLAIN cannot run, the statement text still names the index."""
    f = _one(incident_run, "db.missing_index", "products")
    assert f["subject"] == "products"
    assert f["evidence"]["columns"] == ["category_id", "created_at"]
    assert CREATE_INDEX in f["recommendation"]
    assert "not verified by EXPLAIN: no SELECT privilege on public.products" in f["title"]
    assert "grant pg_read_all_data to verify" in f["title"]
    assert f["evidence"]["verified_by"] is None and f["evidence"]["seq_scan"] >= 10


def test_bloated_sessions_table_with_the_vacuum_to_run(incident_run):
    f = _one(incident_run, "db.bloat", "sessions")
    assert f["evidence"]["dead_pct"] >= 20 and f["evidence"]["autovacuum_enabled"] is False
    assert "VACUUM (ANALYZE) sessions;" in f["recommendation"]


def test_large_result_of_unpaginated_products_listing(incident_run):
    f = _one(incident_run, "db.large_result", "products")
    assert f["evidence"]["rows_per_call"] > 1000 and f["evidence"]["has_limit"] is False
    assert "take: 100" in f["recommendation"]


def test_connection_pool_saturation(incident_run):
    f = _one(incident_run, "db.connections", "connection pool")
    assert f["evidence"]["saturated_instances"]


def test_incident_matches_ground_truth(incident_run):
    result = compare(incident_run.run_dir / "findings.json", "incident", sections=[SECTION])
    assert result.ok, str(result)


def test_healthy_stack_raises_nothing(healthy_run):
    assert healthy_run.alarms(SECTION) == []
    assert not [f for f in healthy_run.section(SECTION) if f["severity"] == "error"], healthy_run.section(SECTION)
    result = compare(healthy_run.run_dir / "findings.json", "healthy", sections=[SECTION])
    assert result.ok, str(result)


# --------------------------------------------------------------------------- the higher privilege levels


def _run_as(run, role: str, name: str):
    """The database section again on the same stack, connected as ``role`` (a second DSN)."""
    from perfbook.demo.stack import DATABASE_ENV

    res, run_dir, findings = run.run_section(SECTION, env={DATABASE_ENV: run.stack.database_url(role)},
                                             outputs=run.params_path.parent / f"out-{name}")
    assert run_dir is not None, res.stdout + res.stderr
    return run_dir, findings


@pytest.fixture(scope="module")
def incident_read_all(incident_run):
    return _run_as(incident_run, "perfbook_read_all", "read-all")


@pytest.fixture(scope="module")
def healthy_read_all(healthy_run):
    return _run_as(healthy_run, "perfbook_read_all", "read-all")


def _level(findings):
    [f] = [f for f in findings if f["code"] == "db.privileges"]
    return f


def _missing(findings, subject):
    return [f for f in findings if f["code"] == "db.missing_index" and f["subject"] == subject]


def test_read_all_level_verifies_the_missing_index_with_the_same_verdict(incident_run, incident_read_all):
    _run_dir, findings = incident_read_all
    assert _level(findings)["evidence"]["level"] == "read_all"
    [mon] = [f for f in _missing(incident_run.section(SECTION), "products") if f["severity"] != "info"]
    [f] = _missing(findings, "products")
    assert f["severity"] in ("warning", "critical") and mon["severity"] in ("warning", "critical")
    assert (f["evidence"]["columns"], f["evidence"]["create_index"]) == \
        (mon["evidence"]["columns"], mon["evidence"]["create_index"]) == (["category_id", "created_at"], CREATE_INDEX)
    assert f["evidence"]["verified_by"] == "EXPLAIN" and "verified by EXPLAIN: Seq Scan on products" in f["title"]
    assert "not verified" not in f["title"]


def test_read_all_level_matches_the_ground_truth(incident_read_all, healthy_read_all):
    for (run_dir, findings), scenario in ((incident_read_all, "incident"), (healthy_read_all, "healthy")):
        errors = [f for f in findings if f["severity"] == "error"]
        assert not errors, errors
        result = compare(run_dir / "findings.json", scenario, sections=[SECTION])
        assert result.ok, str(result)


def test_healthy_stays_quiet_at_both_levels(healthy_run, healthy_read_all):
    _, findings = healthy_read_all
    for fs in (healthy_run.section(SECTION), findings):
        assert [f for f in fs if f["severity"] in ("warning", "critical")] == []
        assert [f["severity"] for f in fs if f["code"] == "db.missing_index"] == ["ok"]


def test_hypopg_level_adds_the_cost_and_never_changes_a_verdict_silently(incident_run, incident_read_all):
    import psycopg

    from perfbook.demo.postgres import hypopg_available

    su = incident_run.stack.pg.dsn("demo")
    if not hypopg_available(su):
        pytest.skip("the hypopg extension is not installed (Debian: postgresql-15-hypopg; optional)")
    with psycopg.connect(su, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    try:
        _run_dir, findings = _run_as(incident_run, "perfbook_read_all", "hypopg")
    finally:
        with psycopg.connect(su, autocommit=True) as conn:
            conn.execute("DROP EXTENSION IF EXISTS hypopg")
    assert _level(findings)["evidence"]["level"] == "hypopg" and "level 3 of 3" in _level(findings)["title"]
    [f] = _missing(findings, "products")
    [before] = _missing(incident_read_all[1], "products")
    assert f["evidence"]["columns"] == before["evidence"]["columns"]
    assert f["evidence"]["hypopg_cost_before"] > 0 and f["evidence"]["hypopg_cost_after"] > 0
    if f["severity"] == "info":   # a different verdict, and it says why: the planner's two costs
        assert "not halved" in f["title"] and f"{f['evidence']['hypopg_cost_before']:.0f}" in f["title"]
    else:
        assert f["evidence"]["verified_by"] == "EXPLAIN + hypopg"


def test_every_statement_perfbook_sent_was_a_tagged_read(incident_run, incident_read_all):
    """The server's own statement log: everything the monitoring roles ran is tagged and a read."""
    sent = [s.text for s in querylog.read_postgres_log(incident_run.stack.postgres_log)
            if s.user in ("perfbook", "perfbook_read_all")]
    assert len(sent) > 10
    for text in sent:
        assert text.startswith("/*perfbook*/"), text
        body = text[len("/*perfbook*/"):].strip()
        if body.upper().startswith(("BEGIN READ ONLY", "ROLLBACK", "SET LOCAL STATEMENT_TIMEOUT")):
            continue  # explain_analyze's own read-only transaction
        P.check_read_only(body)


def test_wrong_dsn_is_source_unreachable_and_the_rest_renders(healthy_run, tmp_path):
    from perfbook.demo.stack import DATABASE_ENV

    env = dict(os.environ, **healthy_run.env)
    env[DATABASE_ENV] = "postgresql://perfbook:pw-not-shown@127.0.0.1:1/demo"
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "run", SECTION, "-p", str(healthy_run.params_path),
                          "--outputs", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    report = [ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
    assert report, res.stdout + res.stderr
    run_dir = Path(report[-1][8:]).parent
    findings = json.loads((run_dir / "findings.json").read_text())
    unreachable = [f for f in findings if f["code"] == "source.unreachable" and f["subject"] == "postgres"]
    assert unreachable and unreachable[0]["severity"] == "error"
    assert unreachable[0]["evidence"]["target"] == "postgresql://127.0.0.1:1/demo"
    # the checks that do not need PostgreSQL still ran: the pool, from Prometheus
    assert any(f["code"] == "db.connections" and f["subject"] == "connection pool" for f in findings)
    html = (run_dir / "database.html").read_text(encoding="utf-8")
    assert "pw-not-shown" not in html and "Summary" in html
