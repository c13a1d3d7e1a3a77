"""perfbook on a stock Node.js service that is not its own demo (issue 13, point 7).

tests/nodesvc is a small real express + prom-client 15 + node-postgres service; tests/nodestack.py
starts two stacks of it side by side (each: PostgreSQL 15 with pg_stat_statements, two instances
with an 80/20 traffic split, Prometheus scraping both every second), one with five faults on and
one healthy, warms them up, drives traffic, and `perfbook batch` runs quick-diagnostics,
bottlenecks and database on each through the CLI, connected as a role with ``pg_monitor`` only.

Asserted, by code and subject: the missing index on clicks (product_id, created_at), the N+1 of
GET /api/products (not /health, not the detail page), event-loop lag on the blocked instance
(api-2), the saturated connection pool, the 200k-row export; and nothing at warning or above on
the healthy stack. Verdicts only, no exact numbers: the machine may be busy.
PERFBOOK_NODESVC_TRAFFIC sets the seconds of traffic after warm-up (default 30).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests
from nodestack import BLOCKED, HEALTHY, INCIDENT, MONITOR_USER, NodeStack
from runs import report_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECTIONS = "quick-diagnostics,bottlenecks,database"
TRAFFIC_S = float(os.environ.get("PERFBOOK_NODESVC_TRAFFIC", "30"))
ALARM = ("warning", "critical")


@dataclass
class NodeRun:
    name: str
    instances: dict = field(default_factory=dict)   # api-1/api-2 -> host:port (the instance label)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    run_dir: Path | None = None
    findings: list = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    traffic: str = ""
    metric_types: dict = field(default_factory=dict)   # api-1's /metrics: family -> type
    role: dict = field(default_factory=dict)            # what perfbook's role may do

    def find(self, code: str, section: str | None = None, severities=ALARM) -> list[dict]:
        return [f for f in self.findings if f["code"] == code and f["severity"] in severities
                and (section is None or f["section"] == section)]

    def alarms(self) -> list[dict]:
        return [f for f in self.findings if f["severity"] in ALARM]

    def __str__(self) -> str:
        lines = [f"{self.name} run (exit {self.exit_code}, {self.run_dir}); timings {self.timings}",
                 f"traffic: {self.traffic}"]
        lines += [f"  {f['section']}: {f['severity']} {f['code']} [{f.get('subject')}] {f['title'][:160]}"
                  for f in self.findings if f["severity"] != "ok"]
        if self.exit_code not in (0, 1):
            lines.append(self.stdout[-2000:] + self.stderr[-2000:])
        return "\n".join(lines)


def _run(stack: NodeStack, run: NodeRun, base: Path) -> None:
    """Start, warm up, drive traffic, run the batch, stop: one stack, start to end."""
    t0 = time.monotonic()
    try:
        run.timings["start"] = stack.start()["total"]
        run.instances = {n: stack.instance(n) for n in stack.names}
        t = time.monotonic()
        # The incident's own memory growth is not asserted: a shorter warm-up is enough there.
        warm = stack.warm_up(max_s=20 if stack.faults else 30)
        run.timings["warm_up"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        run.traffic = f"warm-up {warm.summary()}; window {stack.drive(TRAFFIC_S).summary()}"
        run.timings["traffic"] = round(time.monotonic() - t, 1)
        params = stack.write_params(base / f"{run.name}.yaml")
        text = requests.get(f"{stack.url('api-1')}/metrics", timeout=10).text
        run.metric_types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        with psycopg.connect(stack.pg.dsn("shop")) as conn:
            run.role = dict(zip(("select_clicks", "pg_monitor", "pg_read_all_data", "superuser"), conn.execute(
                "SELECT has_table_privilege(%(r)s, 'public.clicks', 'SELECT'), pg_has_role(%(r)s, 'pg_monitor', 'USAGE'),"
                " pg_has_role(%(r)s, 'pg_read_all_data', 'USAGE'), rolsuper FROM pg_roles WHERE rolname = %(r)s",
                {"r": MONITOR_USER}).fetchone()))
        t = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(params), "--sections", SECTIONS,
                              "--outputs", str(base / f"{run.name}-out"), "--incident", f"nodesvc-{run.name}",
                              "--timeout", "300"], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, **stack.env()}, timeout=600)
        run.timings["batch"] = round(time.monotonic() - t, 1)
    finally:
        stack.stop()
        run.timings["total"] = round(time.monotonic() - t0, 1)
    run.exit_code, run.stdout, run.stderr = res.returncode, res.stdout, res.stderr
    run.run_dir = report_dir(res.stdout)
    run.findings = json.loads((run.run_dir / "findings.json").read_text())
    run.manifest = json.loads((run.run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def node_runs(tmp_path_factory):
    """Both stacks side by side, each started, warmed up, driven, diagnosed by `perfbook batch`
    and stopped again before the tests look at the findings."""
    base = tmp_path_factory.mktemp("nodesvc")
    runs = {"incident": NodeRun("incident"), "healthy": NodeRun("healthy")}
    stacks = {"incident": NodeStack(base / "incident-stack", INCIDENT),
              "healthy": NodeStack(base / "healthy-stack", HEALTHY)}
    with ThreadPoolExecutor(max_workers=2) as ex:
        futures = [ex.submit(_run, stacks[n], runs[n], base) for n in runs]
        for fut in futures:
            fut.result()
    for run in runs.values():
        sys.stderr.write(f"nodesvc {run.name}: timings {run.timings}; {run.traffic}\n")
    return runs


@pytest.fixture(scope="module")
def incident(node_runs) -> NodeRun:
    return node_runs["incident"]


@pytest.fixture(scope="module")
def healthy(node_runs) -> NodeRun:
    return node_runs["healthy"]


def test_the_service_is_stock_and_perfbook_only_monitors(node_runs):
    """What keeps this test honest: prom-client's defaults and nothing the demo adds, and a
    database role with pg_monitor only (it cannot read the tables, so cannot EXPLAIN them)."""
    for run in node_runs.values():
        types = run.metric_types
        for name, kind in {"http_request_duration_seconds": "histogram", "process_cpu_seconds_total": "counter",
                           "nodejs_heap_size_used_bytes": "gauge", "nodejs_eventloop_lag_p99_seconds": "gauge",
                           "nodejs_eventloop_lag_max_seconds": "gauge", "pg_pool_connections_busy": "gauge"}.items():
            assert types.get(name) == kind, (name, types)
        for absent in ("nodejs_heap_size_limit_bytes", "nodejs_process_cpu_percent", "http_requests_total",
                       "prisma_pool_connections_open"):
            assert absent not in types, absent
        assert run.role == {"select_clicks": False, "pg_monitor": True, "pg_read_all_data": False,
                            "superuser": False}, run.role


def test_every_section_ran_on_both_stacks(node_runs):
    for run in node_runs.values():
        assert run.exit_code in (0, 1), str(run)
        sections = {f["section"] for f in run.findings}
        assert sections == set(SECTIONS.split(",")), str(run)
        failed = [f for f in run.findings if f["code"] == "check.failed"]
        assert not failed, str(run)
    assert node_runs["incident"].exit_code == 1, "the incident has critical findings"


def test_missing_index_on_clicks(incident):
    """clicks (300k rows) has no index for WHERE product_id = $1 ORDER BY created_at DESC; the
    pg_monitor-only role cannot EXPLAIN it, so the candidate comes from the statement text."""
    found = [f for f in incident.find("db.missing_index", "database") if "clicks" in (f.get("subject") or "")]
    assert found, str(incident)
    ev = found[0]["evidence"]
    assert ev.get("columns") == ["product_id", "created_at"], found[0]
    assert "create index" in (found[0].get("recommendation") or "").lower(), found[0]
    for f in incident.find("db.missing_index", "database"):   # no other table is blamed
        assert "clicks" in (f.get("subject") or ""), f


def test_n_plus_one_is_the_product_list(incident):
    """One categories lookup per listed product, from GET /api/products; the product page's single
    lookup per request is not an N+1, and /health or /metrics are never its parent."""
    found = incident.find("db.n_plus_one", "database")
    assert found, str(incident)
    cats = [f for f in found if "categories" in (f.get("subject") or "")]
    assert cats, str(incident)
    assert cats[0]["evidence"].get("endpoint") == "GET /api/products", cats[0]
    for f in found:
        assert "FROM products WHERE id" not in (f.get("subject") or ""), f"the detail page is not an N+1: {f}"
        text = f"{f['title']} {f['evidence'].get('endpoint')}"
        assert "/health" not in text and "/metrics" not in text, f


def test_event_loop_lag_on_the_blocked_instance(incident):
    """api-2 blocks its event loop 250 ms every second (prom-client's p99 gauge hardly shows it:
    its max gauge and the request latency do)."""
    blocked = incident.instances[BLOCKED]
    for section in ("bottlenecks", "quick-diagnostics"):
        subjects = [f.get("subject") or "" for f in incident.find("eventloop.lag", section)]
        assert any(blocked in s for s in subjects), f"{section}: {subjects}\n{incident}"


def test_connection_pool_saturated(incident):
    found = incident.find("db.connections", "database")
    pool = [f for f in found if f.get("subject") == "connection pool"]
    assert pool, str(incident)
    assert pool[0]["evidence"].get("saturated_instances"), pool[0]


def test_large_export_is_a_large_result(incident):
    """GET /api/export returns ~200k clicks per call, every 20 s: few calls, but a finding."""
    found = [f for f in incident.find("db.large_result", "database")
             if "clicks" in json.dumps([f.get("subject"), f.get("title"), f.get("evidence")], default=str)]
    assert found, str(incident)
    assert not [f for f in incident.findings if f["code"] == "db.large_result" and f["severity"] == "ok"], \
        str(incident)


def test_incident_never_reports_an_instance_down(incident):
    """Both instances answer throughout (api-2 slowly): no instance.down."""
    assert not incident.find("instance.down"), str(incident)


def test_healthy_raises_nothing(healthy):
    assert not [f for f in healthy.alarms() if f["code"] != "eventloop.lag"], str(healthy)
    assert not [f for f in healthy.findings if f["severity"] == "error"], str(healthy)


def test_healthy_event_loop_is_not_lagging(healthy):
    """A healthy Node process on a busy machine: occasional GC pauses and preemption, no lag."""
    assert not healthy.find("eventloop.lag"), str(healthy)
