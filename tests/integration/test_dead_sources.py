"""The whole stack down, and a Prometheus that never answers, through the real CLI.

Starts no real service: every source points at a closed port on 127.0.0.1 (a free port
nobody listens on), except for one small TCP listener in this test process (thread, free
port on 127.0.0.1) that accepts connections and never answers — a hung Prometheus. The
notebooks run in their own kernels via `perfbook batch` / `perfbook run`.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from runs import free_port as closed_port, report_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]

# Per section, the dead sources it must name in a `source.unreachable` finding (subject =
# source kind). load-test is `mode: off` here: documented as no finding at all
# (checks/loadtest.py safety_findings), the page saying that nothing was sent.
EXPECTED_UNREACHABLE = {
    "quick-diagnostics": {"http", "metrics", "prometheus", "postgres"},
    "bottlenecks": {"metrics", "prometheus"},
    "database": {"postgres", "prometheus", "logs"},
    "load-balancing": {"metrics", "prometheus"},   # falls back to /metrics, dead too
    "scaling": {"prometheus"},
    "caching": {"prometheus", "redis"},
    "rate-limiting": {"http", "prometheus"},
    "external-apis": {"http", "prometheus"},
    "monitoring": {"http", "prometheus"},
    "load-test": set(),
}
# Codes whose "ok" would be a claim of health that needs a live source.
HEALTH_CODES = re.compile(r"^(latency\.slo_breach|cpu\.saturation|db\..*|cache\.low_hit_rate|external\..*)$")


def run(args, env=None, timeout=300):
    return subprocess.run(PERFBOOK + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))


def test_every_section_renders_with_the_whole_stack_down(tmp_path):
    port = closed_port()
    dead = f"http://127.0.0.1:{port}"
    params = tmp_path / "dead.yaml"
    params.write_text(f"""
service: dead-stack
environment: test
window: {{since: -5m, until: now}}
targets:
  base_url: {dead}
  metrics_urls: ['{dead}/metrics', '{dead}/metrics2']
  prometheus: {{url: '{dead}', timeout: 2s}}
  database_env: PB_DEAD_DB
  redis_env: PB_DEAD_REDIS
  postgres_logs: ['{tmp_path / "no-such-dir" / "postgresql.log"}']
  external_health_urls: {{ai-api: '{dead}/health'}}
settings:
  probes: {{count: 2, timeout: 1s, retries: 0}}
  external: {{probe_retries: 0, probe_timeout: 1s, probe_budget: 3s}}
  database: {{statement_timeout: 2s}}
  load_test: {{mode: "off"}}
""")
    env = {"PB_DEAD_DB": f"postgresql://perfbook@127.0.0.1:{port}/demo",
           "PB_DEAD_REDIS": f"redis://127.0.0.1:{port}/0"}
    t0 = time.monotonic()
    res = run(["batch", "-p", str(params), "--outputs", str(tmp_path / "out"), "--timeout", "240"], env=env)
    wall = time.monotonic() - t0
    assert wall < 200, f"batch took {wall:.0f} s with every source down"
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])  # could not run ≠ healthy

    d = report_dir(res.stdout)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["exit_code"] == 1
    status = {n["section"]: n["status"] for n in manifest["notebooks"]}
    assert set(status) == set(EXPECTED_UNREACHABLE)
    assert all(s == "ok" for s in status.values()), status  # every notebook itself ran
    for section in status:
        html = d / f"{section}.html"
        assert html.exists() and html.stat().st_size > 2048, section

    findings = json.loads((d / "findings.json").read_text())
    by_section = {s: [f for f in findings if f["section"] == s] for s in status}
    assert not [f for f in findings if f["code"] == "check.failed"], "a check raised under dead sources"

    for section, expected in EXPECTED_UNREACHABLE.items():
        fs = by_section[section]
        unreachable = [f for f in fs if f["code"] == "source.unreachable"]
        assert all(f["severity"] == "error" and f["evidence"].get("reason") for f in unreachable), unreachable
        subjects = {f["subject"] for f in unreachable}
        assert expected <= subjects, f"{section}: expected {expected} unreachable, got {subjects}"
        if fs:
            assert any(f["severity"] != "ok" for f in fs), f"{section}: all findings ok with every source down"

    # load-test, mode off: no finding, and its page says nothing was sent.
    assert by_section["load-test"] == []
    assert "settings.load_test.mode is off: no load test was run" in (d / "load-test.html").read_text()

    # The dependency probe never got an answer: critical, not "ok" (documented in probe_findings).
    ai = [f for f in by_section["external-apis"] if f["code"] == "external.errors" and f["subject"] == "ai-api"]
    assert [f["severity"] for f in ai] == ["critical"] and ai[0]["evidence"]["final_status"] is None

    # Nothing claims health for a check whose source was down: no "ok" with a health code, and
    # the only "ok" at all is the monitoring checklist's baselines item, answered from the params file.
    ok = [f for f in findings if f["severity"] == "ok"]
    assert not [f for f in ok if HEALTH_CODES.match(f["code"])], ok
    assert all(f["section"] == "monitoring" and f["code"] == "checklist.unmet"
               and f["evidence"].get("source") == "params" for f in ok), ok
    # ... and no checklist item is "met" from a source that was down.
    met = [f for f in findings if f["code"] == "checklist.unmet" and f["evidence"].get("status") == "met"]
    assert all(f["evidence"].get("source") == "params" for f in met), met

    index = (d / "index.html").read_text()
    assert "source.unreachable" in index
    for section in status:
        assert f"{section}.html" in index


class HungServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a Prometheus that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)  # held open, never read or written

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def hung_server():
    srv = HungServer()
    yield srv
    srv.close()


def test_slow_prometheus_hits_its_timeout_and_says_so(tmp_path, hung_server):
    params = tmp_path / "slow.yaml"
    params.write_text(f"""
service: slow-prometheus
environment: test
window: {{since: -5m, until: now}}
targets:
  prometheus: {{url: 'http://127.0.0.1:{hung_server.port}', timeout: 2s}}
""")
    t0 = time.monotonic()
    res = run(["run", "quick-diagnostics", "-p", str(params), "--outputs", str(tmp_path / "out")], timeout=180)
    wall = time.monotonic() - t0
    assert wall < 90, f"run took {wall:.0f} s against a 2 s Prometheus timeout"
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert hung_server.conns, "the notebook never connected to the hung Prometheus"

    d = report_dir(res.stdout)
    findings = json.loads((d / "findings.json").read_text())
    prom = [f for f in findings if f["code"] == "source.unreachable" and f["subject"] == "prometheus"]
    assert prom and all(f["severity"] == "error" for f in prom), findings
    for f in prom:
        assert re.search(r"no answer within 2 s|timed? ?out", f["evidence"]["reason"], re.I), f
        assert f["evidence"]["target"] == f"http://127.0.0.1:{hung_server.port}"
    assert not any(f["severity"] == "ok" for f in findings), findings
    assert not any(f["code"] == "check.failed" for f in findings), findings

    manifest = json.loads((d / "manifest.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["ok"]
    html = (d / "quick-diagnostics.html").read_text()
    assert len(html) > 2048 and "source.unreachable" in html and "no answer within 2 s" in html
    assert "source.unreachable" in (d / "index.html").read_text()
