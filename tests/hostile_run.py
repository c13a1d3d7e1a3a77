"""One real `perfbook batch` fed hostile text, shared by test_hostile_text.py and test_browser.py.

A local HTTP server (127.0.0.1, free port, in the test process) plays the service: its
/metrics carries a prom-client histogram whose route labels are a script-injection payload,
a 100,000-character string and invalid UTF-8 bytes; every other path answers hostile JSON
(with invalid UTF-8) after a short sleep. The params file puts the payload in the service
name, an endpoint's route (its probe path URL-encoded) and the incident ID; the slow answers
breach the endpoint's tiny targets, so findings (titles, subjects, evidence) carry it too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]

PAYLOAD = "</script><script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
ENTITIES = "&amp;lt;b&amp;gt; &#60;i&#62; &lt;/td&gt; &nbsp;"
HOSTILE_ROUTE = f"/x{PAYLOAD}{IMG}&amp;"
LONG_ROUTE = "/" + "L" * 100_000
BAD_UTF8 = b"/bad\xff\xfe\xc3(\xed\xa0\x80"
SERVICE = f"shop{PAYLOAD}{ENTITIES}"[:200]
INCIDENT = f"INC-{PAYLOAD}"

# Secrets, in the environment variables the params file names (never in the file): the
# database's is a libpq key=value DSN whose quoted password holds a quote, an apostrophe, a
# backslash and a space; Redis's password is digits only (a weak secret: masked in context).
DB_PASSWORD = 'q"uo\'te\\Zq9 Sec'
REDIS_PASSWORD = "12345"
SECRET_ENV = {
    "PB_HOSTILE_DB": "host=127.0.0.1 port=1 dbname=shop user=app connect_timeout=2 password='"
                     + DB_PASSWORD.replace("\\", "\\\\").replace("'", "\\'") + "'",
    "PB_HOSTILE_REDIS": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
}
#: Where a secret reaches the service's answers and labels: raw, as password=, in a URL DSN,
#: in libpq's "missing =" error, as an api_key in a query string, quoted with a space.
SECRET_ROUTES = [
    f"/s1?password={DB_PASSWORD}", f"/s2 {DB_PASSWORD} raw", f"/s3 redis://:{REDIS_PASSWORD}@cache:6379/0",
    f"/s4 password={REDIS_PASSWORD}", "/s5?api_key=Zq9ApiKeyValue&x=1", "/s6 password='a b Zq9Quoted'",
    '/s7 missing "=" after "Zq9Frag" in connection info string',
] + [  # the secret across every clip boundary (keys 80, values 120/300, subjects 200, titles 400)
    f"/c{'c' * n}{DB_PASSWORD}/tail" for b in (80, 120, 200, 300, 400) for n in range(b - 24, b + 1, 4)]
#: Text that must never appear in any file of the run (the passwords and their starts).
SECRET_NEEDLES = [DB_PASSWORD, "Zq9 Sec", 'q"uo', "Zq9ApiKeyValue", "Zq9Quoted", "Zq9Frag"]


def _esc(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition() -> bytes:
    """prom-client-shaped /metrics whose route labels are hostile."""
    routes = [HOSTILE_ROUTE.encode(), LONG_ROUTE.encode(), BAD_UTF8, b"/ok"] + [r.encode() for r in SECRET_ROUTES]
    lines = [b"# HELP http_request_duration_seconds Duration of HTTP requests in seconds " + PAYLOAD.encode(),
             b"# TYPE http_request_duration_seconds histogram"]
    for r in routes:
        lab = _esc(r.decode("latin-1")).encode("latin-1")
        slow = r != b"/ok"
        cum = 0
        for le, n in (("0.005", 0 if slow else 90), ("0.05", 0 if slow else 10), ("0.5", 60 if slow else 0),
                      ("1", 40 if slow else 0), ("+Inf", 0)):
            cum += n
            lines.append(b'http_request_duration_seconds_bucket{le="%s",method="GET",route="%s",status_code="200"} %d'
                         % (le.encode(), lab, cum))
        lines.append(b'http_request_duration_seconds_sum{method="GET",route="%s",status_code="200"} %f' % (lab, 40.0 if slow else 0.3))
        lines.append(b'http_request_duration_seconds_count{method="GET",route="%s",status_code="200"} %d' % (lab, cum))
    lines.append(b"# TYPE http_requests_total counter")
    for r in routes:
        lab = _esc(r.decode("latin-1")).encode("latin-1")
        lines.append(b'http_requests_total{method="GET",route="%s",status_code="200"} 100' % lab)
        lines.append(b'http_requests_total{method="GET",route="%s",status_code="500"} 30' % lab)
    lines += [b"# TYPE process_cpu_seconds_total counter", b"process_cpu_seconds_total 12.5",
              b"# TYPE process_resident_memory_bytes gauge", b"process_resident_memory_bytes 123456789",
              b"# TYPE nodejs_eventloop_lag_seconds gauge", b"nodejs_eventloop_lag_seconds 0.2",
              b"# TYPE nodejs_heap_size_used_bytes gauge", b"nodejs_heap_size_used_bytes 95000000",
              b"# TYPE nodejs_heap_size_limit_bytes gauge", b"nodejs_heap_size_limit_bytes 100000000"]
    return b"\n".join(lines) + b"\n"


class HostileHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/metrics":
            body, ctype = exposition(), "text/plain; version=0.0.4; charset=utf-8"
        else:
            if not self.path.startswith("/ok"):
                time.sleep(0.03)
            body = (json.dumps({"error": PAYLOAD, "detail": ENTITIES, "echo": self.path,
                                "dsn": f"postgresql://app:{DB_PASSWORD}@db/shop", "password": DB_PASSWORD,
                                "note": f"password={DB_PASSWORD}"}).encode()[:-1]
                    + b', "raw": "\xff\xfe\xc3("}')
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def start_server() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def write_params(path: Path, port: int) -> Path:
    import yaml

    data = {
        "service": SERVICE,
        "environment": "test",
        "window": {"since": "-5m", "until": "now"},
        "targets": {"base_url": f"http://127.0.0.1:{port}", "metrics_urls": [f"http://127.0.0.1:{port}/metrics"],
                    "database_env": "PB_HOSTILE_DB", "redis_env": "PB_HOSTILE_REDIS"},
        "endpoints": [
            {"method": "GET", "route": HOSTILE_ROUTE, "probe_path": quote(HOSTILE_ROUTE, safe="/"),
             "targets": {"p50": "1ms", "p95": "2ms", "p99": "3ms"}},
            {"method": "GET", "route": LONG_ROUTE, "targets": {"p50": "1ms", "p95": "2ms", "p99": "3ms"}},
            {"method": "GET", "route": "/ok", "probe_path": "/ok", "targets": {"p50": "1s", "p95": "2s", "p99": "3s"}},
        ],
        "settings": {"probes": {"count": 3, "timeout": "2s", "retries": 0},
                     "diagnostics": {"snapshot_interval": 0.5, "min_requests": 1}},
    }
    path.write_text(yaml.safe_dump(data, allow_unicode=True, width=10**9), encoding="utf-8")
    return path


@dataclass
class HostileRun:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str
    findings: list

    def pages(self) -> list[Path]:
        return sorted(self.run_dir.glob("*.html"))


_RUN: HostileRun | None = None


def hostile_run(tmp_root: Path) -> HostileRun:
    """Run quick-diagnostics once per test session on the hostile server (cached)."""
    global _RUN
    if _RUN is not None:
        return _RUN
    srv = start_server()
    try:
        params = write_params(tmp_root / "hostile.yaml", srv.server_port)
        res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(params), "--sections",
                              "quick-diagnostics", "--incident", INCIDENT, "--outputs", str(tmp_root / "out"),
                              "--timeout", "300"],
                             capture_output=True, text=True, timeout=400, cwd=ROOT, env=dict(os.environ, **SECRET_ENV))
    finally:
        srv.shutdown()
        srv.server_close()
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
    assert line, f"no report path printed; exit {res.returncode}\n{res.stderr[-3000:]}"
    run_dir = Path(line[-1].split("Report: ", 1)[1]).parent
    findings = json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))
    _RUN = HostileRun(run_dir, res.returncode, res.stdout, res.stderr, findings)
    return _RUN
