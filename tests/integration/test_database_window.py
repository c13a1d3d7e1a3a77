"""Window-only database statistics on a real PostgreSQL (issue 15, point 3).

On the session's incident stack: ``perfbook run database`` stores a snapshot; the demo's
traffic runs; ``perfbook run database --since-run`` counts from that snapshot, and
``perfbook compare`` says where the database time went between the two runs. The N+1
lookup's calls in the window equal the calls the demo service itself counted
(``pg_query_duration_seconds_count{operation="Category.findUnique"}``, summed over the
instances) between the two runs. A ``pg_stat_statements_reset()`` between two snapshots is
detected on a private server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from perfbook.checks.database import window
from perfbook.sources import postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOOKUP_OPERATION = "Category.findUnique"        # the demo service's N+1 lookup (SQL_CATEGORY)


def _lookups_served(urls: list[str]) -> float:
    """How many N+1 lookups the demo service instances ran, by their own /metrics."""
    total = 0.0
    for url in urls:
        text = requests.get(url.rstrip("/") + "/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "pg_query_duration_seconds_count" and s.labels.get("operation") == LOOKUP_OPERATION:
                    total += s.value
    return total


def _get(url: str) -> None:
    """GET as a polite client does: the incident's limiter (40 per 10 s) answers 429 with
    Retry-After, so wait that long and ask again; a 429 never runs the N+1."""
    for _ in range(6):
        r = requests.get(url, timeout=30)
        if r.status_code != 429:
            r.raise_for_status()
            return
        time.sleep(min(10.0, float(r.headers.get("Retry-After") or 1)))
    raise AssertionError(f"{url}: still 429 after six Retry-After waits")


def _snapshot(run_dir: Path) -> dict:
    return json.loads((run_dir / "snapshots" / "database.json").read_text(encoding="utf-8"))


def _lookup(statements: list[dict]) -> dict:
    found = [s for s in statements if "FROM categories WHERE id = $1" in " ".join(str(s.get("query")).split())]
    assert len(found) == 1, [s.get("query") for s in statements]
    return found[0]


def test_since_run_counts_the_n_plus_one_calls_the_traffic_made_between_the_runs(incident_run, tmp_path):
    out = tmp_path / "out"
    urls = incident_run.stack.service_urls
    before = _lookups_served(urls)
    res, first, findings = incident_run.run_section("database", outputs=out)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    snap = _snapshot(first)
    assert window.is_snapshot(snap) and snap["statements_available"] and snap["identity"]["target"]
    assert "snapshots/database.json" in json.loads((first / "manifest.json").read_text())["notebooks"][0]["snapshots"]
    assert not any(f["code"] == "db.stats_window" for f in findings)      # cumulative: no window asked

    stats = incident_run.stack.drive(20, max_requests=2000)
    assert stats.by_route["GET /api/products"] > 0, stats.summary()
    # Lists the traffic never asks for (limit=19: a key of their own in the list cache), so the N+1 runs
    # whatever the cache held: 19 lookups each.
    for category in range(1, 21):
        _get(f"{urls[category % len(urls)]}/api/products?category={category}&page=1&limit=19")
    served = _lookups_served(urls) - before
    assert served >= 20 * 19, served

    res, second, findings = incident_run.run_section("database", "--since-run", str(first), outputs=out)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    win = [f for f in findings if f["code"] == "db.stats_window"]
    assert len(win) == 1 and win[0]["severity"] == "info", win
    assert f"since {first.name}" in win[0]["title"]
    nplus1 = [f for f in findings if f["code"] == "db.n_plus_one" and f["evidence"].get("source") == "pg_stat_statements"
              and f["severity"] in ("warning", "critical")]
    assert nplus1 and nplus1[0]["evidence"]["calls"] == served, (served, nplus1)

    # perfbook compare on the two runs: the same count, and where the time went.
    cmp = subprocess.run([sys.executable, "-m", "perfbook.cli", "compare", str(first), str(second)],
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=300)
    assert cmp.returncode in (0, 1), cmp.stdout + cmp.stderr
    db = json.loads((second / "compare.json").read_text(encoding="utf-8"))["database"]
    assert db["comparable"] and not db["statements_reset"], db
    lookup = _lookup(db["statements"])
    assert lookup["calls"] == served and lookup["since"] == "" and 0 < lookup["share"] <= 1, lookup
    assert "database: " in cmp.stdout and "Where the database time went" in (second / "compare.html").read_text()

    # Bad input: a run without a snapshot stops before any kernel starts, one line naming it.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text((second / "manifest.json").read_text())
    (bare / "findings.json").write_text("[]")
    res, _, _ = incident_run.run_section("database", "--since-run", str(bare), outputs=out)
    assert res.returncode == 2 and "has no snapshots/database.json" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res, _, _ = incident_run.run_section("scaling", "--since-run", str(first), outputs=out)
    assert res.returncode == 2 and "only the database section uses it" in res.stderr, res.stderr


def test_a_stats_reset_between_two_snapshots_is_detected(seeded_postgres):
    import psycopg

    def take() -> dict:
        db = postgres.Session.open(seeded_postgres.dsn())
        try:
            stmts, tables = postgres.statements(db), postgres.table_stats(db)
            return window.snapshot(postgres.identity(db, stmts), stmts, tables, top=200,
                                   limit=postgres.STATEMENTS_LIMIT)
        finally:
            postgres.close(db)

    with psycopg.connect(seeded_postgres.dsn(), autocommit=True) as conn:
        for _ in range(30):
            conn.execute("SELECT count(*) FROM categories WHERE id = %s", (1,))
    first = take()
    assert first["identity"]["system_identifier"] and first["identity"]["statements_reset"]
    with psycopg.connect(seeded_postgres.dsn(), autocommit=True) as conn:
        for _ in range(7):
            conn.execute("SELECT count(*) FROM categories WHERE id = %s", (1,))
    plain, info = window.statement_window(first, take())
    assert info["comparable"] and info["statements_reset"] is None
    row = _lookup_count(plain)
    assert row["calls"] == 7 and row["since"] == "", row

    with psycopg.connect(seeded_postgres.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(3):
            conn.execute("SELECT count(*) FROM categories WHERE id = %s", (1,))
    frame, info = window.statement_window(first, take())
    assert info["statements_reset"], info
    row = _lookup_count(frame)
    assert row["calls"] == 3 and row["since"] == "reset", row        # from the reset, never 3 - 37
    assert (frame["calls"] >= 0).all()
    assert window.window_finding(info, "first").severity == "warning"


def _lookup_count(frame) -> dict:
    rows = [r for r in frame.to_dict("records") if "count(*) FROM categories WHERE id" in r["query"]]
    assert len(rows) == 1, frame["query"].tolist()
    return rows[0]
