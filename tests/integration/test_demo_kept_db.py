"""Issue 15's "done when": `perfbook demo --scenario healthy`, then `perfbook demo`, then
`perfbook compare` on the two folders shows where the database time went between the two
runs, because both demo runs use one PostgreSQL (the demo's kept database, --db-dir).

The database section alone, 10 s of traffic each: the sections that read Prometheus are
covered on the shared session stacks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, outputs: Path, db_dir: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "demo", *args, "--sections", "database",
                          "--duration", "10", "--db-dir", str(db_dir), "--outputs", str(outputs)],
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res


def _run(outputs: Path, scenario: str) -> Path:
    runs = list(outputs.glob(f"*/*-demo-{scenario}"))
    assert len(runs) == 1, runs
    return runs[0]


def test_healthy_then_incident_on_one_database_then_compare_says_where_the_time_went(tmp_path):
    # the postgres OS user (root runs) must reach the cluster: not pytest's private tmp_path
    db_dir = Path(tempfile.mkdtemp(prefix="perfbook-kept-db-", dir="/var/tmp" if os.geteuid() == 0 else None))
    os.chmod(db_dir, 0o755)
    out = tmp_path / "out"
    try:
        first = _demo("--scenario", "healthy", outputs=out, db_dir=db_dir)
        assert "a new database from the seed" in first.stderr, first.stderr
        port = json.loads((db_dir / "perfbook-db.json").read_text())["port"]
        second = _demo(outputs=out, db_dir=db_dir)
        healthy, incident = _run(out, "healthy"), _run(out, "incident")
        assert "the database of the previous demo run" in second.stderr and str(healthy) in second.stderr, \
            second.stderr
        record = json.loads((db_dir / "perfbook-db.json").read_text())
        assert record["port"] == port and record["last_run"] == str(incident.resolve()), record
        assert record["faults"] == ["bloat", "missing_index"], record

        # the incident run's database section counted from the healthy run's snapshot
        findings = json.loads((incident / "findings.json").read_text())
        win = [f for f in findings if f["code"] == "db.stats_window"]
        assert len(win) == 1 and win[0]["severity"] == "info" and healthy.name in win[0]["title"], win

        cmp = subprocess.run([sys.executable, "-m", "perfbook.cli", "compare", str(healthy), str(incident)],
                             capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=300)
        assert cmp.returncode in (0, 1), cmp.stdout + cmp.stderr
        result = json.loads((incident / "compare.json").read_text())
        db = result["database"]
        assert db["comparable"] and not db["statements_reset"], db
        lookup = [s for s in db["statements"] if "FROM categories WHERE id = $1" in " ".join(str(s["query"]).split())]
        # the N+1 lookup is counted over the interval between the runs, never since the server started
        assert lookup and lookup[0]["calls"] > 0 and lookup[0]["since"] in ("", "new"), lookup
        new = {(c["code"], c["subject"]) for c in result["changes"] if c["status"] == "new"}
        assert any(code == "db.n_plus_one" for code, _ in new), new
        html = (incident / "compare.html").read_text()
        assert "Where the database time went" in html and "database: " in cmp.stdout
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
