"""perfbook.sources.prometheus: scraping recorded prom-client output, snapshot rates, and the
PromQL client against a small fake HTTP API started in this module (127.0.0.1, port 0).

Recorded inputs: tests/fixtures/promclient/ (real prom-client 15 output from generate.js;
observations.json is what was observed, the ground truth for counts and rates).
"""
from __future__ import annotations

import json
import math
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from perfbook.checks.quantile import histogram_quantile, quantiles_by
from perfbook.sources import SourceError, SourceUnreachable, safe_target
from perfbook.sources.prometheus import (
    MAX_POINTS_PER_SERIES,
    PromClient,
    auto_step,
    duration_seconds,
    explicit_subquery_step,
    parse_exposition,
    prometheus_counters,
    rates,
    render,
    scrape,
    scrape_twice,
    split_range,
    with_selector,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"
OBSERVED = json.loads((FIXTURES / "observations.json").read_text())
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.inf]
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def recorded(name: str, **kwargs) -> pd.DataFrame:
    return parse_exposition((FIXTURES / name).read_text(), **kwargs)


def expected_counts(phase: list) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for method, route, status, _seconds, times in phase:
        out[(method, route, status)] = out.get((method, route, status), 0) + times
    return out


def expected_buckets(phase: list, by_route: bool = False) -> dict:
    """Cumulative bucket counts prom-client keeps: an observation v counts in every le >= v."""
    out: dict = {}
    for method, route, status, seconds, times in phase:
        key = route if by_route else (method, route, status)
        counts = out.setdefault(key, [0] * len(BOUNDS))
        for i, le in enumerate(BOUNDS):
            if seconds <= le:
                counts[i] += times
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- parsing recorded prom-client output ---------------------------------------------

def test_counter_family_loses_total_but_samples_keep_it():
    df = recorded("metrics.txt")
    counters = df[df["metric_type"] == "counter"]
    assert "http_requests" not in set(df["metric"])
    rows = counters[counters["metric"] == "http_requests_total"]
    got = {(r.method, r.route, r.status_code): r.value for r in rows.itertuples()}
    assert got == expected_counts(OBSERVED["phase_1"])
    assert "process_cpu_seconds_total" in set(counters["metric"])


def test_histogram_buckets_are_cumulative_with_le_labels():
    df = recorded("metrics.txt")
    buckets = df[df["metric"] == "http_request_duration_seconds_bucket"]
    for key, counts in expected_buckets(OBSERVED["phase_1"]).items():
        method, route, status = key
        rows = buckets[(buckets["method"] == method) & (buckets["route"] == route)
                       & (buckets["status_code"] == status)]
        got = dict(zip(rows["le"].map(float), rows["value"]))
        assert got == dict(zip(BOUNDS, counts)), key
    counts = df[df["metric"] == "http_request_duration_seconds_count"]
    assert counts["value"].sum() == sum(expected_counts(OBSERVED["phase_1"]).values())
    assert set(df.loc[df["metric"].str.startswith("http_request_duration"), "metric_type"]) == {"histogram"}


def test_eventloop_lag_p99_is_present_and_positive():
    df = recorded("metrics.txt")
    for name in ("nodejs_eventloop_lag_seconds", "nodejs_eventloop_lag_p50_seconds",
                 "nodejs_eventloop_lag_p90_seconds", "nodejs_eventloop_lag_p99_seconds"):
        assert name in set(df["metric"]), name
    p99 = df.loc[df["metric"] == "nodejs_eventloop_lag_p99_seconds", "value"].item()
    assert 0.01 < p99 < 1  # the generator blocked the loop for 30 ms at a time


def test_prom_client_nan_reads_as_nan():
    df = recorded("metrics.restarted.txt")  # no event-loop samples yet: prom-client writes "Nan"
    assert math.isnan(df.loc[df["metric"] == "nodejs_eventloop_lag_mean_seconds", "value"].item())


def test_openmetrics_recording_parses_to_the_same_http_samples():
    text = recorded("metrics.txt")
    om = recorded("metrics.openmetrics.txt", content_type=OM_TYPE)
    assert om.attrs["format"] == "openmetrics" and text.attrs["format"] == "prometheus"

    def http(df):
        rows = df[df["metric"].str.startswith("http_")]
        return rows[["metric", "method", "route", "status_code", "le", "value"]] \
            .sort_values(["metric", "method", "route", "status_code", "le"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(http(text), http(om))
    assert "http_requests_total" in set(om["metric"])


def test_counter_declared_without_total_keeps_its_exposed_name():
    df = parse_exposition("# TYPE jobs counter\njobs 3\n# TYPE done_total counter\ndone_total 4\n")
    assert dict(zip(df["metric"], df["value"])) == {"jobs": 3, "done_total": 4}


def test_reserved_label_names_are_exported_and_absent_labels_nan():
    df = parse_exposition('# TYPE up gauge\nup{instance="pushed:1",job="x"} 1\nup 0\n', instance="h:9")
    assert list(df["instance"]) == ["h:9", "h:9"]
    assert df["exported_instance"].iloc[0] == "pushed:1" and pd.isna(df["exported_instance"].iloc[1])
    assert pd.isna(df["job"].iloc[1])
    assert str(df["timestamp"].dt.tz) == "UTC"


def test_sample_timestamps_are_used_when_present():
    df = parse_exposition("# TYPE g gauge\ng 1 1700000000000\n")
    assert df["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")


# --- scraping over HTTP ---------------------------------------------------------------

class _MetricsHandler(BaseHTTPRequestHandler):
    routes: dict = {}
    sequence: list = []
    seen_headers: list = []

    def do_GET(self):
        type(self).seen_headers.append(dict(self.headers))
        path = urlsplit(self.path).path
        if path == "/seq":
            status, ctype, body = 200, TEXT_TYPE, type(self).sequence.pop(0)
        else:
            status, ctype, body = type(self).routes.get(path, (404, "text/plain", "not found"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def metrics_server():
    handler = type("H", (_MetricsHandler,), {"routes": {
        "/metrics": (200, TEXT_TYPE, (FIXTURES / "metrics.txt").read_text()),
        "/om": (200, OM_TYPE, (FIXTURES / "metrics.openmetrics.txt").read_text()),
        "/html": (200, "text/html", "<html><body>{not metrics}</body></html>"),
        "/private": (401, "text/plain", "no"),
    }, "sequence": [], "seen_headers": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_scrape_sets_instance_to_host_port_and_picks_the_parser(metrics_server):
    base, handler = metrics_server
    df = scrape(f"{base}/metrics")
    assert set(df["instance"]) == {base.removeprefix("http://")}
    assert df.attrs["format"] == "prometheus"
    om = scrape(f"{base}/om")
    assert om.attrs["format"] == "openmetrics"
    assert "http_requests_total" in set(om["metric"])
    assert "text/plain;version=0.0.4" in handler.seen_headers[0]["Accept"]


def test_scrape_sends_bearer_token_and_names_env_var_on_401(metrics_server):
    base, handler = metrics_server
    scrape(f"{base}/metrics", bearer_token="tok-123")
    assert handler.seen_headers[-1]["Authorization"] == "Bearer tok-123"
    with pytest.raises(SourceError) as err:
        scrape(f"{base}/private", bearer_token="tok-123", token_env="METRICS_TOKEN")
    assert "METRICS_TOKEN" in str(err.value) and "tok-123" not in str(err.value)


def test_scrape_http_errors_and_non_expositions_raise_source_error(metrics_server):
    base, _ = metrics_server
    with pytest.raises(SourceError, match="HTTP 404"):
        scrape(f"{base}/nowhere")
    with pytest.raises(SourceError, match="not a Prometheus exposition"):
        scrape(f"{base}/html")


def test_scrape_of_a_closed_port_raises_source_unreachable():
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(SourceUnreachable) as err:
        scrape(url, timeout=2)
    assert err.value.source == "metrics" and err.value.target == url
    assert str(err.value).startswith(f"metrics at {url} unreachable: ")
    assert "refused" in err.value.reason.lower()


# --- snapshot mode: two scrapes, rates, quantiles ---------------------------------------

def test_scrape_twice_rates_and_quantiles_match_what_was_observed(metrics_server):
    base, handler = metrics_server
    handler.sequence[:] = [(FIXTURES / "metrics.txt").read_text(), (FIXTURES / "metrics.after.txt").read_text()]
    started = time.monotonic()
    before, after = scrape_twice([f"{base}/seq"], interval_s=0.3)
    assert time.monotonic() - started >= 0.3
    r = rates(before, after)

    req = r[r["metric"] == "http_requests_total"]
    got = {(x.method, x.route, x.status_code): x.increase for x in req.itertuples()}
    want = expected_counts(OBSERVED["phase_2"])
    assert {k: v for k, v in got.items() if v} == want
    assert (req["seconds"] > 0.25).all() and not req["reset"].any()
    assert req["value"].to_numpy() == pytest.approx((req["increase"] / req["seconds"]).to_numpy())

    # p50/p95/p99 per route from the bucket rates equal those of what phase 2 observed
    q = quantiles_by(r, [0.5, 0.95, 0.99], by=["route"], histogram="http_request_duration_seconds")
    q = q.set_index("route")
    for route, counts in expected_buckets(OBSERVED["phase_2"], by_route=True).items():
        for name, quant in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert q.loc[route, name] == pytest.approx(histogram_quantile(quant, zip(BOUNDS, counts))), (route, name)


def test_rates_treat_a_drop_as_a_counter_reset():
    before = recorded("metrics.after.txt", instance="a:1", scraped_at="2024-01-01T00:00:00Z")
    after = recorded("metrics.restarted.txt", instance="a:1", scraped_at="2024-01-01T00:00:10Z")
    r = rates(before, after)
    row = r[(r["metric"] == "http_requests_total") & (r["route"] == "/api/products")
            & (r["status_code"] == "200")].iloc[0]
    assert row["reset"] and row["increase"] == 5 and row["value"] == pytest.approx(0.5)
    assert row["seconds"] == 10
    # series the restarted process has not recreated yet are gone, not negative
    assert (r["increase"] >= 0).all()


def test_rates_leave_gauges_out():
    before = recorded("metrics.txt", instance="a:1", scraped_at="2024-01-01T00:00:00Z")
    after = recorded("metrics.after.txt", instance="a:1", scraped_at="2024-01-01T00:00:05Z")
    r = rates(before, after)
    names = set(r["metric"])
    assert "nodejs_eventloop_lag_p99_seconds" not in names
    assert "nodejs_active_handles_total" not in names  # a gauge despite its name
    assert {"http_request_duration_seconds_bucket", "process_cpu_seconds_total"} <= names
    assert set(r["metric_type"]) <= {"counter", "histogram", "summary"}


def test_rates_count_a_new_series_from_zero_and_honour_explicit_seconds():
    before = parse_exposition('# TYPE c_total counter\nc_total{route="/a"} 10\n', instance="a:1")
    after = parse_exposition('# TYPE c_total counter\nc_total{route="/a"} 16\nc_total{route="/b"} 3\n',
                             instance="a:1")
    r = rates(before, after, seconds=2).set_index("route")
    assert r.loc["/a", "value"] == 3 and r.loc["/b", "increase"] == 3 and r.loc["/b", "value"] == 1.5


# --- PromQL client against a fake API ---------------------------------------------------

TOKEN = "s3cret-token-value"


def _series(metric: dict, points: list) -> dict:
    return {"metric": metric, "values": [[t, str(v)] for t, v in points]}


class _FakeProm(BaseHTTPRequestHandler):
    """Answers like Prometheus's /api/v1, incl. its 11,000-points limit and error envelope."""

    calls: list = []

    def do_GET(self):
        parts = urlsplit(self.path)
        self._answer(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}, "GET")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self._answer(urlsplit(self.path).path, {k: v[0] for k, v in parse_qs(body).items()}, "POST")

    def _send(self, status, payload, ctype="application/json"):
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _answer(self, path, params, method):
        type(self).calls.append({"path": path, "params": params, "method": method,
                                 "auth": self.headers.get("Authorization")})
        if path.startswith("/vm/"):  # VictoriaMetrics 1.79's answers, recorded (tests/fixtures/victoriametrics)
            return self._answer_vm(path[len("/vm"):], params)
        if path.startswith("/limited/"):  # a rate limit: 429 + Retry-After for the first `limited` requests
            if type(self).limited > 0:
                type(self).limited -= 1
                self.send_response(429)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "17")
                self.end_headers()
                self.wfile.write(b"Too Many Requests")
                return None
            path = path[len("/limited"):]
        if path.startswith("/auth/"):
            auth = self.headers.get("Authorization")
            if auth is None:
                return self._send(401, "Unauthorized", "text/plain")
            if auth != f"Bearer {TOKEN}":
                return self._send(403, "Forbidden", "text/plain")
            path = path[len("/auth"):]
        if path.startswith("/prometheus/my-org/"):  # Fly.io's /prometheus/<org> prefix
            path = path[len("/prometheus/my-org"):]
        if path.startswith("/html/"):
            return self._send(200, "<html>login</html>", "text/html")
        if path.startswith("/proxy/"):
            return self._send(502, "<html>Bad Gateway</html>", "text/html")
        query = params.get("query", "")
        if path == "/api/v1/query":
            if query == "bad(":
                return self._send(400, {"status": "error", "errorType": "bad_data",
                                        "error": 'invalid parameter "query": 1:5: parse error: unclosed left parenthesis'})
            if query == "slow":
                time.sleep(1.5)
            if query in ("scalar(1)", "1"):
                return self._send(200, {"status": "success", "data": {"resultType": "scalar",
                                                                       "result": [1700000000.5, "1"]}})
            data = {"resultType": "vector", "result": [
                {"metric": {"__name__": "up", "job": "api", "instance": "10.0.0.1:9091"},
                 "value": [1700000000.123, "1"]},
                {"metric": {"__name__": "up", "job": "db", "instance": "10.0.0.2:9187", "zone": "ams"},
                 "value": [1700000000.123, "NaN"]},
            ]}
            body = {"status": "success", "data": data}
            if query == "warn":
                body["warnings"] = ["results truncated"]
            return self._send(200, body)
        if path == "/api/v1/query_range":
            start, end, step = float(params["start"]), float(params["end"]), float(params["step"])
            if (end - start) / step > 11000:
                return self._send(400, {"status": "error", "errorType": "bad_data", "error":
                                        "exceeded maximum resolution of 11,000 points per timeseries. "
                                        "Try decreasing the query resolution (?step=XX)"})
            n = int((end - start) / step + 1e-9) + 1
            points = [(start + i * step, i) for i in range(n)]
            return self._send(200, {"status": "success", "data": {"resultType": "matrix", "result": [
                _series({"__name__": "x", "route": "/a"}, points),
                _series({"__name__": "x", "route": "/b"}, [(t, v * 2) for t, v in points]),
            ]}})
        if path == "/api/v1/rules":
            return self._send(200, {"status": "success", "data": {"groups": [{
                "name": "performance", "file": "/etc/prometheus/rules.yml", "rules": [
                    {"type": "alerting", "name": "HighResponseTime", "query": "p95 > 1", "duration": 300,
                     "labels": {"severity": "warning"}, "annotations": {"summary": "slow"},
                     "health": "ok", "state": "firing", "alerts": [{}], "lastError": ""},
                    {"type": "recording", "name": "job:rps", "query": "sum(rate(x[1m]))", "health": "ok"},
                ]}]}})
        if path == "/api/v1/alerts":
            return self._send(200, {"status": "success", "data": {"alerts": [
                {"labels": {"alertname": "HighResponseTime", "severity": "warning", "route": "/a"},
                 "annotations": {"summary": "slow"}, "state": "firing",
                 "activeAt": "2024-05-01T10:00:00.123456789Z", "value": "1.25e+00"}]}})
        return self._send(404, "404 page not found", "text/plain")

    def _answer_vm(self, path, params):
        def recorded(name):
            rec = json.loads((VM_FIXTURES / name).read_text())
            return self._send(rec["status"], rec["body"], rec["headers"]["Content-Type"])
        query = params.get("query", "")
        if path == "/api/v1/status/buildinfo":
            return recorded("buildinfo.json")
        if path == "/api/v1/rules":
            return recorded("rules-without-vmalert.json")
        if path == "/api/v1/query" and query == "1":
            return recorded("scalar-as-vector.json")
        if path == "/api/v1/query" and "rate_prometheus" in query:
            return recorded("error-unknown-function.json")
        if path == "/api/v1/query" and query.startswith("up") and query.endswith("[5m]"):
            points = [(1700000000.25 + 15 * i, 1) for i in range(20)]
            return self._send(200, {"status": "success", "data": {"resultType": "matrix", "result": [
                _series({"__name__": "up", "instance": "a"}, points)]}})
        return self._answer(path, params, "GET")

    def log_message(self, *args):
        pass


VM_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "victoriametrics"


def _fake_class(fake):
    return _FAKE_CLASSES[fake[0]]


_FAKE_CLASSES: dict = {}


@pytest.fixture(scope="module")
def fake_prom():
    handler = type("FakeProm", (_FakeProm,), {"calls": [], "limited": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    _FAKE_CLASSES[f"http://127.0.0.1:{server.server_address[1]}"] = handler
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.calls
    server.shutdown()
    server.server_close()


def test_query_returns_labels_utc_timestamp_and_float_values(fake_prom):
    base, calls = fake_prom
    with PromClient(base) as client:
        df = client.query("up", at=pd.Timestamp("2023-11-14 22:13:20", tz="UTC"))
    assert list(df.columns) == ["metric", "instance", "job", "zone", "timestamp", "value"]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20.123", tz="UTC")
    assert df["value"].iloc[0] == 1.0 and math.isnan(df["value"].iloc[1])
    assert pd.isna(df["zone"].iloc[0])
    assert calls[-1]["params"] == {"query": "up", "time": "1700000000.000", "nocache": "1"}


def test_query_scalar_is_one_row(fake_prom):
    base, _ = fake_prom
    df = PromClient(base).query("scalar(1)")
    assert list(df.columns) == ["timestamp", "value"] and df["value"].tolist() == [1.0]


def test_error_envelope_becomes_source_error_with_the_servers_message(fake_prom):
    base, _ = fake_prom
    with pytest.raises(SourceError) as err:
        PromClient(base).query("bad(")
    message = str(err.value)
    assert message.startswith(f"prometheus at {base} answered with an error: bad_data: ")
    assert "unclosed left parenthesis" in message and "query: bad(" in message


def test_bearer_token_is_sent_and_never_shown(fake_prom):
    base, calls = fake_prom
    client = PromClient(f"{base}/auth", bearer_token=TOKEN, token_env="PROMETHEUS_TOKEN")
    assert len(client.query("up")) == 2
    assert calls[-1]["auth"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(client) and "PROMETHEUS_TOKEN" in repr(client)

    with pytest.raises(SourceError) as missing:
        PromClient(f"{base}/auth", token_env="PROMETHEUS_TOKEN").query("up")
    assert "401" in str(missing.value) and "PROMETHEUS_TOKEN" in str(missing.value)
    with pytest.raises(SourceError) as wrong:
        PromClient(f"{base}/auth", bearer_token="not-" + TOKEN, token_env="PROMETHEUS_TOKEN").query("up")
    assert "403" in str(wrong.value) and "PROMETHEUS_TOKEN" in str(wrong.value)
    assert TOKEN not in str(wrong.value) and TOKEN not in repr(wrong.value)


def test_from_env_reads_the_token_from_the_named_variable(fake_prom, monkeypatch):
    base, _calls = fake_prom
    monkeypatch.setenv("PERFBOOK_TEST_PROM_TOKEN", TOKEN)
    assert len(PromClient.from_env(f"{base}/auth", "PERFBOOK_TEST_PROM_TOKEN").query("up")) == 2
    monkeypatch.delenv("PERFBOOK_TEST_PROM_TOKEN")
    with pytest.raises(SourceError, match="PERFBOOK_TEST_PROM_TOKEN"):
        PromClient.from_env(f"{base}/auth", "PERFBOOK_TEST_PROM_TOKEN").query("up")


def test_query_range_is_split_to_stay_under_11000_points(fake_prom):
    base, calls = fake_prom
    start = pd.Timestamp("2024-05-01T00:00:00Z")
    end = start + pd.Timedelta("2D")  # 17,281 points at 10 s: one request would be refused
    before = len(calls)
    df = PromClient(base).query_range("x", start, end, "10s")
    ranged = [c for c in calls[before:] if c["path"] == "/api/v1/query_range"]
    assert len(ranged) == 2 == df.attrs["requests"]
    for call in ranged:
        p = call["params"]
        assert (float(p["end"]) - float(p["start"])) / float(p["step"]) + 1 <= MAX_POINTS_PER_SERIES
    assert list(df.columns) == ["metric", "route", "timestamp", "value"]
    a = df[df["route"] == "/a"]
    assert len(a) == 17_281 and a["timestamp"].is_unique and a["timestamp"].is_monotonic_increasing
    assert a["timestamp"].iloc[0] == start and a["timestamp"].iloc[-1] == end
    assert set(a["timestamp"].diff().dropna()) == {pd.Timedelta("10s")}
    assert str(df["timestamp"].dt.tz) == "UTC"


def test_split_range_math():
    assert split_range(0, 100, 10) == [(0.0, 100.0)]
    chunks = split_range(0, 109_999, 10, max_points=11_000)  # 11,000 points: one chunk
    assert chunks == [(0.0, 109_999.0)]
    chunks = split_range(0, 110_000, 10, max_points=11_000)  # 11,001 points: two
    assert chunks == [(0.0, 109_990.0), (110_000.0, 110_000.0)]
    chunks = split_range(5, 1000, 7, max_points=13)
    grid = [t for s, e in chunks for t in _grid(s, e, 7)]
    assert grid == _grid(5, 1000, 7)
    assert all(len(_grid(s, e, 7)) <= 13 for s, e in chunks)
    with pytest.raises(ValueError):
        split_range(10, 0, 1)


def _grid(start, end, step):
    out, t = [], start
    while t <= end + 1e-9:
        out.append(round(t, 6))
        t += step
    return out


def test_query_range_refuses_absurd_request_counts(fake_prom):
    base, _ = fake_prom
    with pytest.raises(ValueError, match="coarser step"):
        PromClient(base).query_range("x", 0, 86400 * 365, 1)


def test_a_closed_port_raises_source_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceUnreachable) as err:
        PromClient(url, timeout=2).query("up")
    assert err.value.source == "prometheus"
    assert str(err.value).startswith(f"prometheus at {url} unreachable: ")


def test_a_timeout_raises_source_unreachable(fake_prom):
    base, _ = fake_prom
    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match=r"no answer within 0\.3 s"):
        PromClient(base, timeout=0.3).query("slow")
    assert time.monotonic() - started < 1.4  # read timeouts are not retried


def test_pages_that_are_not_the_api_are_named_as_such(fake_prom):
    base, _ = fake_prom
    with pytest.raises(SourceError, match="not a Prometheus API answer"):
        PromClient(f"{base}/html").query("up")
    with pytest.raises(SourceError, match="HTTP 404"):
        PromClient(f"{base}/nothing-here").query("up")
    with pytest.raises(SourceUnreachable, match="HTTP 502"):
        PromClient(f"{base}/proxy").query("up")


def test_long_queries_are_posted_and_warnings_kept(fake_prom):
    base, calls = fake_prom
    client = PromClient(base + "/api/v1/")  # a base URL given with the API path still works
    long_expr = "up" + " " * 2000
    client.query(long_expr)
    assert calls[-1]["method"] == "POST" and calls[-1]["path"] == "/api/v1/query"
    df = client.query("warn")
    assert df.attrs["warnings"] == ["results truncated"] == client.last_warnings


def test_rules_and_alerts_as_frames(fake_prom):
    base, _ = fake_prom
    client = PromClient(base)
    rules = client.rules()
    assert rules["name"].tolist() == ["HighResponseTime", "job:rps"]
    assert rules.loc[0, "state"] == "firing" and rules.loc[0, "duration"] == 300
    assert rules.loc[0, "labels"] == {"severity": "warning"} and rules.loc[0, "active_alerts"] == 1
    alerts = client.alerts()
    assert list(alerts.columns) == ["alertname", "route", "severity", "state", "active_at", "value", "annotations"]
    assert alerts.loc[0, "value"] == 1.25
    assert alerts.loc[0, "active_at"].tz is not None


def test_flavor():
    assert PromClient("https://api.fly.io/prometheus/my-org").flavor == "victoriametrics"
    assert PromClient(f"http://127.0.0.1:{free_port()}", timeout=1).flavor == "unknown"


# --- VictoriaMetrics (Fly.io's managed Prometheus) ---------------------------------------

def test_victoriametrics_is_recognised_by_its_answers_though_buildinfo_is_empty(fake_prom):
    base, _ = fake_prom
    assert PromClient(base + "/vm").flavor == "victoriametrics"   # scalar 1 answered as a vector
    assert PromClient(base).flavor == "unknown"                   # neither buildinfo nor MetricsQL


def test_counters_are_sent_the_prometheus_way_to_victoriametrics(fake_prom):
    base, calls = fake_prom
    expr = 'histogram_quantile(0.95, sum by (le) (rate(h_bucket{route="rate(x[1m])"}[1m]))) / sum(increase(c[50s]))'
    PromClient(base + "/vm", flavor="victoriametrics").query(expr)
    assert calls[-1]["params"]["query"] == (
        'histogram_quantile(0.95, sum by (le) ('
        + scaled('h_bucket{route="rate(x[1m])"}[1m]', 60) + ')) / sum(' + scaled('c[50s]') + ')')
    PromClient(base).query(expr)                                   # Prometheus: sent as written
    assert calls[-1]["params"]["query"] == expr


def test_counter_rewrite_leaves_strings_irate_and_odd_ranges_alone():
    assert prometheus_counters('irate(x[1m]) + rate(y[$__rate_interval])') == 'irate(x[1m]) + rate(y[$__rate_interval])'
    assert prometheus_counters('rate(x[1m30s] offset 5m)') == scaled('x[1m30s] offset 5m', 90)
    assert prometheus_counters('max(rate(x[1m]) > bool 0)') == f"max({scaled('x[1m]', 60)} > bool 0)"
    assert prometheus_counters('delta(g[5m])') == scaled('g[5m]', fn="delta")
    inner = scaled('x[1m]', 60)   # a rate inside a subquery, rewritten inside out
    assert prometheus_counters('max_over_time(rate(x[1m])[10m:15s])') == f"max_over_time({inner}[10m:15s])"


def scaled(arg: str, seconds: int | None = None, fn: str = "increase") -> str:
    """What PromQL's ``increase``/``rate`` of ``arg`` is sent as to VictoriaMetrics: the
    range's own increase scaled by n / (n - 1) (checked against a real VictoriaMetrics: a
    4-sample CPU rate 0.885 both ways; a series born in the range 62 and 1.033/s, as PromQL)."""
    body = f"{fn}_prometheus({arg}) * count_over_time({arg}) / (count_over_time({arg}) - 1)"
    return f"({body} / {seconds})" if seconds else f"({body})"
    assert prometheus_counters('up{job="increase(a[1m])"}') == 'up{job="increase(a[1m])"}'
    assert duration_seconds("1h30m") == 5400 and duration_seconds("5x") is None


def test_subqueries_get_an_explicit_resolution_on_both_flavors(fake_prom):
    """VictoriaMetrics runs ``x[1m:]`` at the instant query's step (5 min): one point."""
    base, calls = fake_prom
    expr = 'avg_over_time((w{a="[1m:]"} > bool 0)[60s:])'
    PromClient(base, subquery_step=1).query(expr)
    assert calls[-1]["params"]["query"] == 'avg_over_time((w{a="[1m:]"} > bool 0)[60s:1s])'
    vm = PromClient(base + "/vm", flavor="victoriametrics")
    vm.query(expr)
    assert vm.scrape_interval() == 15                              # from the spacing of up's samples
    assert calls[-1]["params"]["query"].endswith("[60s:15s])")
    assert explicit_subquery_step("x[5m:1m]", 15) == "x[5m:1m]"


def test_victoriametrics_error_envelope_is_the_servers_message(fake_prom):
    base, _ = fake_prom
    with pytest.raises(SourceError) as err:
        PromClient(base + "/vm").query("sum(rate_prometheus(x[1m]))")
    assert 'unknown func \\"rate_prometheus\\"' in str(err.value) or 'unknown func "rate_prometheus"' in str(err.value)
    assert "422: error when executing query" in str(err.value)


def test_empty_rules_on_victoriametrics_are_unknown_not_none(fake_prom):
    base, _ = fake_prom
    with pytest.raises(SourceError, match="vmalert"):
        PromClient(base + "/vm").rules()


def test_range_query_near_now_waits_for_victoriametrics_latency_offset(fake_prom):
    base, calls = fake_prom
    client = PromClient(base + "/vm", flavor="victoriametrics", latency_offset=1)
    now = time.time()
    client.query_range("x", now - 10, now, 5)
    assert time.time() >= now + 1                                  # asked only once `end` was 1 s old
    assert any("latencyOffset" in n for n in client.notes)
    client.query_range("x", now - 10, now, 5)                      # settled: no second wait
    assert len(client.notes) == 1
    assert calls[-1]["params"]["nocache"] == "1"


def test_rate_limit_is_waited_out_then_reported_unreachable(fake_prom):
    base, _calls = fake_prom
    server_cls = _fake_class(fake_prom)
    server_cls.limited = 2
    df = PromClient(base + "/limited", rate_limit_retries=3).query("up")
    assert len(df) == 2 and server_cls.limited == 0
    server_cls.limited = 10
    client = PromClient(base + "/limited", rate_limit_retries=2)
    with pytest.raises(SourceUnreachable, match="HTTP 429 Too Many Requests"):
        client.query("up")
    assert sum("429" in n for n in client.notes) >= 2
    server_cls.limited = 0


def test_fly_path_prefix_and_token_from_the_named_variable(fake_prom, monkeypatch):
    """Fly.io: ``https://api.fly.io/prometheus/<org>`` is the base; the API is under it."""
    base, calls = fake_prom
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    client = PromClient.from_env(base + "/auth/prometheus/my-org/", token_env="FLY_API_TOKEN")
    client.query("up")
    assert calls[-1]["path"] == "/auth/prometheus/my-org/api/v1/query"
    assert calls[-1]["auth"] == f"Bearer {TOKEN}" and TOKEN not in repr(client)
    fly = PromClient("https://api.fly.io/prometheus/my-org/", bearer_token=TOKEN)
    assert fly.url == "https://api.fly.io/prometheus/my-org" and fly.flavor == "victoriametrics"


# --- selectors, steps, exceptions -------------------------------------------------------

def test_with_selector_merges_label_matchers():
    assert with_selector("http_requests_total", 'app="api"') == 'http_requests_total{app="api"}'
    assert with_selector('http_requests_total{status_code=~"5.."}', '{app="api", env="prod"}') == \
        'http_requests_total{status_code=~"5..",app="api", env="prod"}'
    assert with_selector("up{}", 'app="api"') == 'up{app="api"}'
    assert with_selector("up", None) == "up" and with_selector("up", "{}") == "up"


def test_render_fills_or_removes_the_placeholder():
    t = 'sum(rate(http_requests_total{status_code=~"5..",__SEL__}[5m])) / sum(rate(http_requests_total{__SEL__}[5m]))'
    assert render(t, '{app="api"}') == \
        'sum(rate(http_requests_total{status_code=~"5..",app="api"}[5m])) / sum(rate(http_requests_total{app="api"}[5m]))'
    assert render(t, "") == \
        'sum(rate(http_requests_total{status_code=~"5.."}[5m])) / sum(rate(http_requests_total{}[5m]))'
    assert render("x{__SEL__, a=\"b\"}", None) == 'x{a="b"}'
    assert PromClient("http://127.0.0.1:1", selector='app="api"').render("up{__SEL__}") == 'up{app="api"}'


def test_auto_step_is_nice_bounded_and_never_below_scrape_interval():
    assert auto_step(0, 3600) == 15           # 12 s raw → 15 s
    assert auto_step(0, 3600, scrape_interval=30) == 30
    assert auto_step(0, 86400) == 300         # 289 points
    assert auto_step(0, 600, scrape_interval=5) == 5
    assert auto_step("2024-01-01", "2024-01-31") == 10800
    span = 7 * 86400
    assert span / auto_step(0, span) + 1 <= 300


def test_source_exceptions_format_and_hide_credentials():
    err = SourceUnreachable("postgres", "postgresql://app:pw@db:5432/shop?sslmode=require&password=x",
                            "connection refused\n(retried once)")
    assert str(err) == "postgres at postgresql://db:5432/shop?sslmode=require unreachable: connection refused (retried once)"
    assert (err.source, err.target) == ("postgres", "postgresql://db:5432/shop?sslmode=require")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)
    assert safe_target("/var/log/postgresql/pg.log") == "/var/log/postgresql/pg.log"
    assert str(SourceError("prometheus", "https://u:p@h/x?token=t", "bad_data: x")) == \
        "prometheus at https://h/x answered with an error: bad_data: x"


def test_fly_example_params_validate_and_point_at_the_managed_endpoint(monkeypatch):
    """params/fly.example.yaml works unchanged: `perfbook check-params` accepts it, and the
    client it makes talks VictoriaMetrics to api.fly.io/prometheus/<org> with the token from
    FLY_API_TOKEN (by name only)."""
    import os
    import subprocess
    import sys

    from perfbook.params import load
    from perfbook.sources.window_metrics import WindowMetrics

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "check-params", "params/fly.example.yaml"],
                         capture_output=True, text=True, cwd=root, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "FLY_API_TOKEN"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FLY_API_TOKEN" in res.stdout + res.stderr
    params = load(root / "params" / "fly.example.yaml")
    p = params.targets.prometheus
    assert p.bearer_token_env == "FLY_API_TOKEN" and p.flavor == "victoriametrics"
    start = pd.Timestamp("2026-12-06T14:00Z")
    wm = WindowMetrics(params, start, start + pd.Timedelta(minutes=30), bearer_token=TOKEN)
    assert wm.client.url == "https://api.fly.io/prometheus/YOUR-ORG"
    assert wm.client.flavor == "victoriametrics" and wm.client.selector == 'app="YOUR-APP"'
    assert TOKEN not in repr(wm.client)


def test_backend_comparison_keeps_time_series_checks_only():
    from perfbook.demo.victoriametrics import compare_verdicts

    def f(check, severity, section="quick-diagnostics", code="latency.slo_breach", subject="GET /a"):
        return {"section": section, "check": check, "code": code, "subject": subject, "severity": severity}
    prom = [f("latency per route (histogram)", "critical"), f("response time probes", "warning")]
    vm = [f("latency per route (histogram)", "critical"), f("response time probes", "ok")]
    assert compare_verdicts(prom, vm) == []                       # a live probe may differ: not compared
    vm[0]["severity"] = "warning"
    assert compare_verdicts(prom, vm) == [
        "only on Prometheus:      quick-diagnostics latency.slo_breach [GET /a] critical",
        "only on VictoriaMetrics: quick-diagnostics latency.slo_breach [GET /a] warning"]


def test_backend_comparison_tells_a_flip_on_the_threshold_from_a_different_diagnosis():
    """Prometheus extrapolates rate() to the window's edges, VictoriaMetrics does not: a CV of
    0.35 against 0.33 on a 0.34 line is the same data; a pool waiting in 49 % of scrapes on one
    backend and 0 % on the other is not."""
    from perfbook.demo.victoriametrics import compare_verdicts, verdict_differences

    def f(severity, cv, section="load-balancing", code="balance.uneven", check="uneven load across instances"):
        return {"section": section, "check": check, "code": code, "subject": "all instances",
                "severity": severity, "evidence": {"cv": cv, "threshold": 0.34, "ok": True}}
    diff, near = verdict_differences([f("warning", 0.35)], [f("ok", 0.33)])
    assert diff == [] and len(near) == 1 and "near its threshold" in near[0]
    assert compare_verdicts([f("warning", 0.35)], [f("ok", 0.33)]) == []
    pool = dict(section="quick-diagnostics", code="db.connections", check="DB connections")
    diff, near = verdict_differences([f("warning", 0.49, **pool)], [f("ok", 0.0, **pool)])
    assert near == [] and len(diff) == 2
    # a finding only one backend produced is always a difference
    assert len(compare_verdicts([f("warning", 0.35)], [])) == 1
