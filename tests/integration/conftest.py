"""Shared demo-stack runs for the section integration tests.

Starts (once per test session, each): a demo stack — a private PostgreSQL with
pg_stat_statements, a Prometheus server, two demo-service instances and the external-API
stand-in, all on 127.0.0.1 — drives traffic, then runs `perfbook batch` over every section
through the real CLI and papermill. Section tests assert on the findings of:

- ``incident_run``: every fault on (the `incident` scenario);
- ``healthy_run``: no fault (the `healthy` scenario).

Each fixture's stack stays up until the session ends so tests can also query the raw
sources (``run.stack``). PERFBOOK_TEST_TRAFFIC sets the seconds of traffic (default 40).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC_S = float(os.environ.get("PERFBOOK_TEST_TRAFFIC", "40"))


@dataclass
class DemoRun:
    scenario: str
    stack: object
    params_path: Path
    env: dict
    run_dir: Path | None = None
    traffic_until: float = 0.0       # epoch seconds: the driven traffic ended (the batch came after)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    findings: list = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def section(self, name: str) -> list[dict]:
        return [f for f in self.findings if f["section"] == name]

    def alarms(self, section: str) -> list[dict]:
        return [f for f in self.section(section) if f["severity"] in ("warning", "critical")]

    def find(self, code: str, subject: str | None = None, section: str | None = None,
             severities=("warning", "critical")) -> list[dict]:
        return [f for f in self.findings
                if f["code"] == code and f["severity"] in severities
                and (section is None or f["section"] == section)
                and (subject is None or subject.lower() in (f.get("subject") or "").lower())]

    def html(self, section: str) -> str:
        return (self.run_dir / f"{section}.html").read_text(encoding="utf-8")

    def run_section(self, section: str, *extra: str, env: dict | None = None, outputs: Path | None = None):
        """Run one section again through the CLI (e.g. with a -P override)."""
        out = outputs or (self.params_path.parent / "extra-out")
        res = subprocess.run([sys.executable, "-m", "perfbook.cli", "run", section, "-p", str(self.params_path),
                              "--outputs", str(out), *extra], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, **self.env, **(env or {})}, timeout=600)
        run_dir = Path([ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent \
            if "Report: " in res.stdout else None
        findings = json.loads((run_dir / "findings.json").read_text()) if run_dir else []
        return res, run_dir, findings


def _demo_run(scenario: str, tmp_path_factory) -> DemoRun:
    from perfbook.demo.stack import Stack
    from perfbook.demo_cli import arm_alert_rules, write_demo_params

    base = tmp_path_factory.mktemp(f"demo-{scenario}")
    # VictoriaMetrics beside Prometheus (fed by its remote_write: the same samples), for
    # tests/integration/test_victoriametrics.py; the batch here reads Prometheus.
    stack = Stack(scenario, state_dir=base / "stack", tsdb="both")
    stack.start()
    try:
        arm_alert_rules(stack)
        stack.drive(TRAFFIC_S)
        params = write_demo_params(stack, base / "params.yaml")
        run = DemoRun(scenario, stack, params, stack.env(), traffic_until=time.time())
        res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(params), "--outputs",
                              str(base / "out"), "--incident", f"test-{scenario}", "--timeout", "400"],
                             capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **run.env), timeout=900)
        run.exit_code, run.stdout, run.stderr = res.returncode, res.stdout, res.stderr
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
        assert lines, f"perfbook batch printed no report path:\n{res.stdout}\n{res.stderr}"
        run.run_dir = Path(lines[-1][8:]).parent
        run.findings = json.loads((run.run_dir / "findings.json").read_text())
        run.manifest = json.loads((run.run_dir / "manifest.json").read_text())
        return run
    except BaseException:
        stack.stop()
        raise


@pytest.fixture(scope="session")
def incident_run(tmp_path_factory):
    run = _demo_run("incident", tmp_path_factory)
    yield run
    run.stack.stop()


@pytest.fixture(scope="session")
def healthy_run(tmp_path_factory):
    run = _demo_run("healthy", tmp_path_factory)
    yield run
    run.stack.stop()


@pytest.fixture
def seeded_postgres(tmp_path):
    """A private PostgreSQL (own data dir, free port) with the demo's seeded data, from the
    cached seed. `make test` installs the server, so a missing one is a failure, not a skip."""
    from perfbook.demo import seed
    from perfbook.demo.postgres import PostgresServer

    pg = PostgresServer(tmp_path / "pg")
    try:
        seed.prepare(pg, use_cache=True)
        pg.start()
        yield pg
    finally:
        pg.cleanup()
