"""Bounded reads (settings.limits): an answer or a log line over its cap stops the read with
a clear message, never a MemoryError. Real HTTP servers on loopback, real files."""
from __future__ import annotations

import gzip
import io
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from perfbook.params import Limits, Params
from perfbook.sources import SourceError, bounded, http, prometheus as prom

BIG = 3 * 1024 * 1024        # what the servers send
CAP = 64 * 1024              # the cap the tests read with

METRICS_LINE = b'http_requests_total{route="/x",status="200"} 1\n'


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        if self.path.startswith("/chunked"):        # no Content-Length: only counting stops it
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = METRICS_LINE * 1000
            try:
                for _ in range(BIG // len(chunk) + 1):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        headers = {"Content-Type": "text/plain; version=0.0.4"}
        if self.path.startswith("/gzip-bomb"):      # small on the wire, huge decoded
            body = gzip.compress(b"0" * BIG)
            headers["Content-Encoding"] = "gzip"
        elif self.path.startswith("/api/v1/"):      # a Prometheus answer over the cap
            one = b'{"metric":{},"value":[1,"1"]}'
            body = (b'{"status":"success","data":{"resultType":"vector","result":['
                    + b",".join([one] * (BIG // len(one))) + b"]}}")
            headers["Content-Type"] = "application/json"
        elif self.path.startswith("/small"):
            body = METRICS_LINE
        else:                                       # Content-Length says it is too big
            body = METRICS_LINE * (BIG // len(METRICS_LINE))
        self.send_response(200)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path", ["/declared", "/chunked", "/gzip-bomb"])
def test_read_body_stops_at_the_cap(server, path):
    resp = requests.get(server + path, stream=True, timeout=30)
    tracemalloc.start()
    with pytest.raises(bounded.TooLarge) as e:
        bounded.read_body(resp, CAP, source="http", target=server + path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(e.value, SourceError)
    assert "settings.limits.max_response_bytes (64 KiB)" in str(e.value) and "\n" not in str(e.value)
    assert peak < 1024 * 1024    # never more than the cap and a chunk


def test_read_body_under_the_cap(server):
    resp = requests.get(server + "/small", stream=True, timeout=30)
    assert bounded.read_body(resp, CAP, source="http", target=server) == METRICS_LINE


def test_metrics_scrape_over_the_cap_is_a_source_error(server):
    with pytest.raises(SourceError, match=r"the /metrics page .*max_response_bytes"):
        prom.scrape(server + "/chunked", timeout=30, max_bytes=CAP)
    assert len(prom.scrape(server + "/small", timeout=30, max_bytes=CAP)) == 1


def test_prometheus_answer_over_the_cap_is_a_source_error(server):
    with prom.PromClient(server, timeout=30, max_response_bytes=CAP) as c, \
            pytest.raises(SourceError, match=r"api/v1/query .*max_response_bytes"):
        c.query("up")


def test_probe_body_over_the_cap_is_a_row_with_the_reason(server):
    df = http.probe([http.ProbeSpec("GET /chunked", "GET", server + "/chunked")], count=2, timeout=30,
                    max_bytes=CAP)
    assert list(df["status"]) == [200, 200] and df["bytes"].isna().all()
    assert df["error"].str.contains("max_response_bytes").all()


def test_get_json_over_the_cap_raises(server):
    with pytest.raises(bounded.TooLarge):
        http.get_json(server + "/api/v1/query", timeout=30, max_bytes=CAP)


def test_limits_of_params_and_defaults():
    p = Params(service="s", settings={"limits": {"max_response_bytes": 5000}})
    assert bounded.limits_of(p).max_response_bytes == 5000
    assert bounded.limits_of(None).max_response_bytes == Limits().max_response_bytes


@pytest.mark.parametrize("bad", [{"max_response_bytes": 0}, {"max_fingerprints": 1}, {"max_line_length": "x"},
                                 {"max_lines": 3}])
def test_limits_validated(bad):
    with pytest.raises(ValueError):
        Params(service="s", settings={"limits": bad})


def test_line_cap_cuts_and_counts():
    cap = bounded.LineCap(1024)
    text = "short\n" + "y" * 5000 + "\n" + "z" * 3000 + "\ttail\n" + "last"
    got = list(cap.lines(io.StringIO(text)))
    assert got == ["short\n", "y" * 1024 + "\n", "z" * 1024 + "\n", "last"]
    assert cap.cut == 2 and cap.longest >= 5000
