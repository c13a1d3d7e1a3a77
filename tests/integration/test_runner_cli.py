"""The chain params file → papermill → dated HTML reports, through the real CLI.

Starts: a local HTTP server on 127.0.0.1 (free port) with one fast and one slow endpoint,
in this test process; the notebooks run in their own kernels via `perfbook batch`.
"""
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from runs import report_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.25)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_params(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(f"""
service: local-target
environment: test
window: {{since: -5m, until: now}}
targets:
  base_url: http://127.0.0.1:{port}
endpoints:
  - {{method: GET, route: /fast, probe_path: /fast, targets: {{p50: 50ms, p95: 100ms, p99: 150ms}}}}
  - {{method: GET, route: /slow, probe_path: /slow, targets: {{p50: 50ms, p95: 100ms, p99: 150ms}}}}
settings:
  probes: {{count: 6, timeout: 2s, retries: 1}}
{extra}""")
    return path


def run(args, env=None, timeout=240):
    return subprocess.run(PERFBOOK + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))


def test_slow_endpoint_flagged_fast_one_not(tmp_path, server):
    params = write_params(tmp_path / "p.yaml", server.server_port)
    res = run(["batch", "-p", str(params), "--sections", "quick-diagnostics", "--outputs", str(tmp_path / "out"),
               "--incident", "INC-7"])
    assert res.returncode == 1, res.stderr  # 0.25 s vs 0.1 s target is critical
    d = report_dir(res.stdout)
    assert d.parent.parent == tmp_path / "out" and d.name.endswith("-INC-7")
    findings = json.loads((d / "findings.json").read_text())
    slow = [f for f in findings if f["subject"] == "GET /slow" and f["code"] == "latency.slo_breach"]
    assert {f["evidence"]["percentile"] for f in slow if f["severity"] in ("warning", "critical")} == {"p50", "p95", "p99"}
    fast = [f for f in findings if f["subject"] == "GET /fast"]
    assert fast and all(f["severity"] == "ok" for f in fast), fast
    html = (d / "quick-diagnostics.html").read_text()
    assert "GET /slow" in html and "latency.slo_breach" in html
    assert "<script src" not in html and "cdn" not in html.lower()  # opens offline
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["notebooks"][0]["status"] == "ok"
    assert manifest["versions"]["papermill"]
    index = (d / "index.html").read_text()
    assert "quick-diagnostics.html" in index and "GET /slow" in index


def test_dead_target_still_renders_with_source_unreachable(tmp_path, server):
    port = server.server_port
    server.shutdown()
    server.server_close()
    params = write_params(tmp_path / "p.yaml", port)
    res = run(["batch", "-p", str(params), "--sections", "quick-diagnostics", "--outputs", str(tmp_path / "out")])
    assert res.returncode == 1, res.stderr  # checks that could not run are never "healthy" (exit 0)
    d = report_dir(res.stdout)
    findings = json.loads((d / "findings.json").read_text())
    assert [f["code"] for f in findings if f["severity"] == "error"] == ["source.unreachable"]
    assert not any(f["severity"] == "ok" for f in findings)
    assert (d / "quick-diagnostics.html").stat().st_size > 1000 and (d / "index.html").exists()


def test_bad_params_stop_before_any_kernel(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: x\ntargets: {base_url: 'ftp://nope'}\n")
    res = run(["batch", "-p", str(bad), "--outputs", str(tmp_path / "out")])
    assert res.returncode == 2
    assert res.stderr.strip() == f"perfbook: {bad}: targets.base_url: must be an http(s) URL with a host, got 'ftp://nope'"
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_unknown_section_is_bad_input(tmp_path, server):
    params = write_params(tmp_path / "p.yaml", server.server_port)
    res = run(["run", "no-such-section", "-p", str(params), "--outputs", str(tmp_path / "out")])
    assert res.returncode == 2 and "unknown section" in res.stderr


def test_no_secret_reaches_the_outputs(tmp_path, server):
    secrets = {"PB_TEST_DB": "postgresql://perfbook:Zq9SecretPgPw77@127.0.0.1:1/shop",
               "PB_TEST_TOKEN": "FlyV1-tok-Xk3SecretTokenValue88"}
    extra = ("  database: {statement_timeout: 2s}\n")
    params = write_params(tmp_path / "p.yaml", server.server_port, extra)
    text = params.read_text().replace("  base_url:", "  database_env: PB_TEST_DB\n  prometheus: {url: 'http://127.0.0.1:1', "
                                      "bearer_token_env: PB_TEST_TOKEN}\n  base_url:")
    params.write_text(text)
    res = run(["batch", "-p", str(params), "--sections", "quick-diagnostics", "--outputs", str(tmp_path / "out")],
              env=secrets)
    assert res.returncode in (0, 1), res.stderr
    d = report_dir(res.stdout)
    needles = [b"Zq9SecretPgPw77", b"Xk3SecretTokenValue88"]
    files = [p for p in d.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for p in files:
        data = p.read_bytes()
        for n in needles:
            assert n not in data, f"secret found in {p}"


def test_failing_and_hanging_notebooks_do_not_stop_the_others(tmp_path, server):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name, body in [("ok-one", "x = 1"), ("boom", "raise RuntimeError('kaboom')"),
                       ("hang", "import time\ntime.sleep(600)")]:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        p = nbformat.v4.new_code_cell("params_file = None\nsince = until = incident = None\noverrides = '{}'")
        p.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), p, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, str(nbdir / f"{name}.ipynb"))
    params = write_params(tmp_path / "p.yaml", server.server_port)
    t0 = time.monotonic()
    # A timeout generous enough for a kernel start on a busy 2-core machine (load 15 seen):
    # only `hang` can reach it.
    res = run(["batch", "-p", str(params), "--outputs", str(tmp_path / "out"), "--timeout", "60", "--jobs", "3"],
              env={"PERFBOOK_NOTEBOOKS": str(nbdir)}, timeout=500)
    assert time.monotonic() - t0 < 400
    assert res.returncode == 3, res.stderr
    d = report_dir(res.stdout)
    m = {n["section"]: n for n in json.loads((d / "manifest.json").read_text())["notebooks"]}
    assert m["ok-one"]["status"] == "ok"
    assert m["boom"]["status"] == "failed" and "kaboom" in m["boom"]["error"]
    assert m["hang"]["status"] == "timeout"
    assert {n["timeout_s"] for n in m.values()} == {60}  # --timeout, recorded per notebook
    for s in ("ok-one", "boom", "hang"):
        assert (d / f"{s}.html").exists()
    assert "kaboom" in (d / "boom.html").read_text()


def test_two_batches_in_the_same_second_never_share_a_folder(tmp_path, server):
    params = write_params(tmp_path / "p.yaml", server.server_port)
    cmd = PERFBOOK + ["batch", "-p", str(params), "--sections", "quick-diagnostics", "--outputs", str(tmp_path / "out")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    dirs = {report_dir(o) for o in outs}
    assert len(dirs) == 2
    for d in dirs:
        assert json.loads((d / "manifest.json").read_text())["status"] == "complete"
