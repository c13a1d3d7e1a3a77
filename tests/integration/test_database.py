"""The database section on the real demo stack.

Uses the session fixtures of conftest.py: ``incident_run`` and ``healthy_run`` (each a
private PostgreSQL 15 with pg_stat_statements and statement logging, a Prometheus
server, two demo-service instances and the external-API stand-in on 127.0.0.1, driven
with traffic, then ``perfbook batch`` through papermill).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from groundtruth import compare
from perfbook.sources import postgres as P
from perfbook.sources import querylog

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


def test_missing_index_on_products_category_id_then_created_at(incident_run):
    f = _one(incident_run, "db.missing_index", "products")
    assert f["subject"] == "products"
    assert f["evidence"]["columns"] == ["category_id", "created_at"]
    assert "CREATE INDEX CONCURRENTLY idx_products_category_id_created_at ON products (category_id, created_at DESC);" \
        in f["recommendation"]


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


def test_every_statement_perfbook_sent_was_a_tagged_read(incident_run):
    """The server's own statement log: everything user perfbook ran is tagged and a read."""
    sent = [s.text for s in querylog.read_postgres_log(incident_run.stack.postgres_log) if s.user == "perfbook"]
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
