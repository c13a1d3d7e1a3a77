"""Sources that die in the middle of a run, through the real CLI (`perfbook run`) and papermill.

Starts, per test:

- ``test_http_target_dies_mid_probe``: a local threaded HTTP server on 127.0.0.1 (free port) in
  this test process, two endpoints answering in ~0.2 s; it is shut down after a few probes.
- ``test_postgres_dies_mid_database_section``: a private PostgreSQL server
  (:class:`perfbook.demo.postgres.PostgresServer`, seeded like the demo from the cached seed,
  pg_stat_statements preloaded) and a stand-in Prometheus HTTP API on 127.0.0.1 in this test
  process. The stand-in holds the notebook's first Prometheus query (which comes right after the
  notebook connected to PostgreSQL and read pg_stat_statements) until the test has stopped
  PostgreSQL, so the server dies at a known point of the notebook, deterministically.

The notebooks run in their own kernels via `perfbook run`. Documented exit status
(docs/reliability.md, `perfbook --help`): 1 when checks could not run (source.unreachable).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from runs import report_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]
RUN_TIMEOUT = 90


def finish(proc: subprocess.Popen, t0: float) -> tuple[int, str, str, float]:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"perfbook run still running after {RUN_TIMEOUT} s:\n{out}\n{err}")
    return proc.returncode, out, err, time.monotonic() - t0


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"perfbook ended before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- HTTP target


class SlowHandler(BaseHTTPRequestHandler):
    served = 0
    lock = threading.Lock()

    def do_GET(self):
        time.sleep(0.2)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with SlowHandler.lock:
            SlowHandler.served += 1

    def log_message(self, *a):
        pass


def test_http_target_dies_mid_probe(tmp_path):
    SlowHandler.served = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    alive = True
    try:
        params = tmp_path / "p.yaml"
        # generous targets: the answers before the death are all "within target"
        params.write_text(f"""
service: dying-target
environment: test
window: {{since: -5m, until: now}}
targets:
  base_url: http://127.0.0.1:{srv.server_port}
endpoints:
  - {{method: GET, route: /one, probe_path: /one, targets: {{p50: 1s, p95: 2s, p99: 3s}}}}
  - {{method: GET, route: /two, probe_path: /two, targets: {{p50: 1s, p95: 2s, p99: 3s}}}}
settings:
  probes: {{count: 30, timeout: 1s, retries: 0}}
""")
        t0 = time.monotonic()
        proc = subprocess.Popen(PERFBOOK + ["run", "quick-diagnostics", "-p", str(params), "--outputs",
                                            str(tmp_path / "out")], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: SlowHandler.served >= 4, 60, "the first probes", proc)
        srv.shutdown()
        srv.server_close()
        alive = False
        served_before_death = SlowHandler.served
        port = srv.server_port
        code, out, err, took = finish(proc, t0)
    finally:
        if alive:
            srv.shutdown()
            srv.server_close()
    assert took < RUN_TIMEOUT
    assert 4 <= served_before_death < 30  # died in the middle of /one's 30 probes
    assert code == 1, (out, err)  # checks that could not finish are never "healthy" (exit 0)
    d = report_dir(out)
    findings = json.loads((d / "findings.json").read_text())
    summary = [(f["code"], f["severity"], f["subject"]) for f in findings]
    # neither endpoint is called healthy from the few answers before the death ...
    assert not [f for f in findings if f["severity"] == "ok" and f["subject"] in ("GET /one", "GET /two")], summary
    # ... the report says the target became unreachable
    dead = [f for f in findings if f["code"] == "source.unreachable" and f["severity"] == "error"]
    assert dead, summary
    assert {f["subject"] for f in dead} == {"GET /one", "GET /two"}, summary  # /two: never answered
    for f in dead:  # the in-flight request is reset, the later ones refused
        # how a dying server shows depends on where in the request it died: a refused connect,
        # a reset, or a connection closed before the answer (http.client's RemoteDisconnected)
        assert f["evidence"]["reason"] in ("Connection refused", "Connection reset", "RemoteDisconnected",
                                           "Connection closed by server"), f
        assert f["evidence"]["target"].startswith(f"http://127.0.0.1:{port}/"), f
    html = (d / "quick-diagnostics.html").read_text()
    assert "source.unreachable" in html and "GET /one" in html
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["notebooks"][0]["status"] == "ok", manifest


# --------------------------------------------------------------------------- PostgreSQL


class HeldPrometheus(BaseHTTPRequestHandler):
    """A Prometheus HTTP API that answers every query with no series, holding the first one
    until ``release`` is set."""
    arrived = threading.Event()
    release = threading.Event()

    def _answer(self):
        if self.path.startswith("/api/v1/"):
            HeldPrometheus.arrived.set()
            HeldPrometheus.release.wait(30)
        kind = "matrix" if "query_range" in self.path else "vector"
        body = json.dumps({"status": "success", "data": {"resultType": kind, "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self._answer()

    def log_message(self, *a):
        pass


def test_postgres_dies_mid_database_section(tmp_path, seeded_postgres):
    pg = seeded_postgres
    HeldPrometheus.arrived.clear()
    HeldPrometheus.release.clear()
    prom = ThreadingHTTPServer(("127.0.0.1", 0), HeldPrometheus)
    threading.Thread(target=prom.serve_forever, daemon=True).start()
    try:
        params = tmp_path / "p.yaml"
        params.write_text(f"""
service: dying-db
environment: test
window: {{since: -5m, until: now}}
targets:
  database_env: PB_DYING_DB
  prometheus: {{url: 'http://127.0.0.1:{prom.server_port}', timeout: 40s}}
""")
        env = dict(os.environ, PB_DYING_DB=pg.dsn("demo", "perfbook"))
        t0 = time.monotonic()
        proc = subprocess.Popen(PERFBOOK + ["run", "database", "-p", str(params), "--outputs", str(tmp_path / "out")],
                                cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # the first Prometheus query comes after "connect" and "slow queries (pg_stat_statements)"
        wait_for(HeldPrometheus.arrived.is_set, 60, "the notebook's first Prometheus query", proc)
        pg.stop()
        assert not pg.running
        HeldPrometheus.release.set()
        code, out, err, took = finish(proc, t0)
    finally:
        HeldPrometheus.release.set()
        prom.shutdown()
        prom.server_close()
    assert took < RUN_TIMEOUT
    assert code == 1, (out, err)
    d = report_dir(out)
    findings = json.loads((d / "findings.json").read_text())
    summary = [(f["check"], f["code"], f["severity"]) for f in findings]
    by_check: dict[str, list[dict]] = {}
    for f in findings:
        by_check.setdefault(f["check"], []).append(f)
    # before the death: connected and read pg_stat_statements, no error
    assert "connect to PostgreSQL (read-only)" not in by_check or not any(
        f["severity"] == "error" for f in by_check["connect to PostgreSQL (read-only)"]), summary
    assert not any(f["severity"] == "error" for f in by_check.get("slow queries (pg_stat_statements)", [])), summary
    # after the death: every check that needs the server says it did not run, as postgres unreachable
    for check in ("missing indexes (table scans + EXPLAIN)", "connections (pg_stat_activity)"):
        got = by_check.get(check, [])
        assert [(f["code"], f["severity"], f["subject"]) for f in got] == [("source.unreachable", "error", "postgres")], \
            (check, summary)
    assert not [f for f in findings if f["code"] == "check.failed"], summary  # no traceback
    html = (d / "database.html").read_text()
    assert "source.unreachable" in html and "postgres" in html
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["notebooks"][0]["status"] == "ok", manifest
