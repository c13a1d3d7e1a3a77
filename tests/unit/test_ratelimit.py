"""Rate-limiting checks (runbook Issue 6) on fixed inputs, and the bounded burst against
small loopback HTTP servers started here (one with a limiter, one without)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from perfbook.checks import ratelimit
from perfbook.params import Params
from perfbook.plots import traffic as plots
from perfbook.sources import SourceUnreachable, burst

# Increases over a window: the incident's products limiter rejecting most listing traffic.
#: settings.rate_limiting as the params default it.
RL = Params(service="t").settings.rate_limiting
SHARE = {"warning": RL.rejection_share.warning, "critical": RL.rejection_share.critical}
LIMITS = {"headroom": RL.headroom, "peak_quantile": RL.peak_quantile}
EXPENSIVE = {"max_per_minute": RL.expensive_max_per_minute}

HTTP_COUNTS = pd.DataFrame([
    ("GET", "/api/products", "200", 520.0), ("GET", "/api/products", "429", 780.0),
    ("GET", "/api/products/{id}", "200", 900.0), ("GET", "/api/products/{id}", "429", 5.0),
    ("GET", "/api/analytics/summary", "200", 300.0),
    ("POST", "/api/content/generate", "201", 40.0),
], columns=["method", "route", "status_code", "value"])
LIMITER_HITS = pd.DataFrame([
    ("/api/products", "products", None, 780.0), ("/api/products/{id}", "products", None, 5.0),
    ("/api/content/generate", "expensive", None, 0.0),
], columns=["route", "limiter", "ip", "value"])
HEALTHY_COUNTS = HTTP_COUNTS[HTTP_COUNTS["status_code"] != "429"]


def burst_frame(statuses, headers=None) -> pd.DataFrame:
    rows = [{"endpoint": "POST /api/content/generate", "seq": i, "status": s, "seconds": 0.05, "error": "",
             "headers": dict(headers or {})} for i, s in enumerate(statuses)]
    df = pd.DataFrame(rows)
    df.attrs.update(stopped="429" if 429 in statuses else "done", seconds=1.0)
    return df


# --------------------------------------------------------------------------- rejections


def test_rejections_found_on_products_listing():
    table = ratelimit.rejections_by_route(HTTP_COUNTS, LIMITER_HITS)
    top = table.iloc[0]
    assert top["endpoint"] == "GET /api/products" and top["share_429"] == pytest.approx(0.6)
    assert top["limiter_hits"] == 780 and top["limiters"] == "products"
    found = {f.subject: f for f in ratelimit.rejection_findings(table, **SHARE)}
    assert found["GET /api/products"].code == "ratelimit.rejections"
    assert found["GET /api/products"].severity == "critical"
    assert found["GET /api/products/{id}"].severity == "info"  # 5 of 905: under 1 %
    assert "GET /api/analytics/summary" not in found


def test_rejection_severity_levels():
    counts = pd.DataFrame([("GET", "/a", "200", 95.0), ("GET", "/a", "429", 5.0)],
                          columns=["method", "route", "status_code", "value"])
    [f] = ratelimit.rejection_findings(ratelimit.rejections_by_route(counts), **SHARE)
    assert f.severity == "warning" and f.evidence["share_429"] == pytest.approx(0.05)


def test_no_rejections_is_ok():
    found = ratelimit.rejection_findings(ratelimit.rejections_by_route(HEALTHY_COUNTS, LIMITER_HITS.assign(value=0.0)),
                                         **SHARE)
    assert [(f.code, f.severity) for f in found] == [("ratelimit.rejections", "ok")]


def test_limiter_hits_without_method_go_to_their_route():
    table = ratelimit.rejections_by_route(None, LIMITER_HITS)
    assert set(table["endpoint"]) == {"/api/products", "/api/products/{id}", "/api/content/generate"}
    f = next(f for f in ratelimit.rejection_findings(table, **SHARE) if f.subject == "/api/products")
    assert f.severity == "info" and "limiter count" in f.title


def test_top_offenders_only_with_a_client_label():
    assert ratelimit.top_offenders(LIMITER_HITS, ["client", "ip"]) is None
    hits = pd.DataFrame([("/api/products", "products", "10.0.0.7", 700.0), ("/api/products", "products", "10.0.0.8", 80.0)],
                        columns=["route", "limiter", "ip", "value"])
    top = ratelimit.top_offenders(hits, ["client", "ip"])
    assert list(top["ip"]) == ["10.0.0.7", "10.0.0.8"] and top["rejections"].iloc[0] == 700


# --------------------------------------------------------------------------- headers and bursts


def test_parse_rate_limit_headers_styles():
    d7 = ratelimit.parse_rate_limit_headers({"RateLimit-Limit": "5", "RateLimit-Remaining": "0",
                                             "RateLimit-Reset": "42", "RateLimit-Policy": "5;w=60",
                                             "Retry-After": "42"})
    assert (d7["limit"], d7["remaining"], d7["reset_s"], d7["window_s"], d7["retry_after_s"]) == (5, 0, 42, 60, 42)
    d8 = ratelimit.parse_rate_limit_headers({"ratelimit": '"default";r=3;t=20', "ratelimit-policy": '"default";q=10;w=60'})
    assert d8["style"].startswith("RateLimit (draft-8)") and d8["remaining"] == 3 and d8["reset_s"] == 20
    legacy = ratelimit.parse_rate_limit_headers({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "7"})
    assert legacy["style"].startswith("X-RateLimit") and legacy["limit"] == 100
    assert ratelimit.parse_rate_limit_headers({})["style"] is None


def test_expensive_route_without_limiter_is_missing():
    params = Params(service="t")
    table, found = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": burst_frame([201] * 20)}, **EXPENSIVE)
    [f] = found
    assert (f.code, f.subject, f.severity) == ("ratelimit.missing", "POST /api/content/generate", "warning")
    assert "expensiveLimiter" in f.recommendation and "max: 5" in f.recommendation
    assert table["limited"].tolist() == [False]


def test_expensive_route_with_only_a_loose_global_limit_is_missing():
    params = Params(service="t")
    b = burst_frame([201] * 20, {"ratelimit-limit": "100000", "ratelimit-remaining": "99000"})
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": b}, **EXPENSIVE)[1]
    assert f.severity == "warning" and "100000" in f.title and f.evidence["limit_per_minute"] == 100000


def test_expensive_route_limited_by_429_or_tight_headers():
    params = Params(service="t")
    b = burst_frame([201] * 5 + [429], {"ratelimit-limit": "5", "retry-after": "60"})
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": b}, **EXPENSIVE)[1]
    assert f.severity == "ok" and f.evidence["first_429_at"] == 6
    b = burst_frame([201] * 20, {"ratelimit-limit": "60", "ratelimit-policy": "60;w=60"})
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": b}, **EXPENSIVE)[1]
    assert f.severity == "ok" and "60 per 60 s" in f.title


def test_expensive_route_not_burst_is_not_verified():
    params = Params(service="t")
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": "host not allowed"}, **EXPENSIVE)[1]
    assert f.severity == "info" and "not verified" in f.title
    limiter = ratelimit.rejections_by_route(None, LIMITER_HITS.assign(value=[0.0, 0.0, 3.0]))
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": "off"}, limiter, **EXPENSIVE)[1]
    assert f.severity == "ok"


# --------------------------------------------------------------------------- recommended limits


def test_recommended_limits_from_observed_peaks():
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = []
    for i in range(60):
        ts = t0 + pd.Timedelta(seconds=15 * i)
        rows.append((ts, "GET", "/api/products", 2.0))
        rows.append((ts, "POST", "/api/content/generate", 0.1))
    rates = pd.DataFrame(rows, columns=["timestamp", "method", "route", "value"])
    params = Params(service="t")
    limits = ratelimit.recommended_limits(rates, params.endpoints, **LIMITS).set_index("limiter")
    api = limits.loc["apiLimiter"]
    # p99 over time of 2.1 req/s (all /api/) × 900 s × 2 = 3780 → rounded up to 1-2-5
    assert api["windowMs"] == 900_000 and api["max"] == 5000 and api["runbook_max"] == 100
    gen = limits.loc["expensiveLimiter"]
    assert gen["path"] == "/api/content/generate" and gen["max"] == 20  # 0.1 × 60 × 2 = 12 → 20
    code = ratelimit.express_rate_limit_config(limits.reset_index())
    assert "windowMs: 900000" in code and "max: 5000" in code and "app.use('/api/content/generate'" in code


def test_recommended_limits_without_traffic_keep_the_runbook():
    limits = ratelimit.recommended_limits(None, Params(service="t").endpoints, **LIMITS)
    assert limits["max"].tolist() == [100, 5]


def test_recommended_limits_snapshot_average():
    limits = ratelimit.recommended_limits(None, Params(service="t").endpoints, **LIMITS, totals=HTTP_COUNTS,
                                          average_only_over_s=600.0)
    assert limits.iloc[0]["basis"].startswith("average")


def test_rejection_plots():
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    s = pd.DataFrame({"timestamp": [t0, t0 + pd.Timedelta(seconds=15)], "method": "GET", "route": "/api/products",
                      "value": [1.0, 2.0]})
    assert plots.rejections_by_route(s) is not None
    assert plots.rejections_by_route(s.assign(value=0.0)) is None
    assert plots.rejections_bars(ratelimit.rejections_by_route(HTTP_COUNTS)) is not None


# --------------------------------------------------------------------------- the burst, for real on loopback


class _Api(BaseHTTPRequestHandler):
    limit: int | None = None      # None: no limiter
    count = 0
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            type(self).count += 1
            n = type(self).count
        if self.limit is not None and n > self.limit:
            self.send_response(429)
            self.send_header("RateLimit-Limit", str(self.limit))
            self.send_header("RateLimit-Remaining", "0")
            self.send_header("Retry-After", "60")
        else:
            time.sleep(0.02)
            self.send_response(201)
            if self.limit is not None:
                self.send_header("RateLimit-Limit", str(self.limit))
                self.send_header("RateLimit-Remaining", str(self.limit - n))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


def _serve(limit):
    handler = type("H", (_Api,), {"limit": limit, "count": 0, "lock": threading.Lock()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, handler


@pytest.fixture
def limited_api():
    srv, h = _serve(5)
    yield f"http://127.0.0.1:{srv.server_address[1]}", h
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def unlimited_api():
    srv, h = _serve(None)
    yield f"http://127.0.0.1:{srv.server_address[1]}", h
    srv.shutdown()
    srv.server_close()


def test_burst_stops_at_first_429(limited_api):
    base, handler = limited_api
    t = burst.BurstTarget("POST /api/content/generate", "POST", base + "/api/content/generate")
    df = burst.burst(t, ["127.0.0.1"], requests_=20, concurrency=2, timeout=5, budget=10)
    assert df.attrs["stopped"] == "429" and (df["status"] == 429).any()
    assert handler.count <= 5 + 2 + 1  # stopped soon after the limit (requests in flight finish)
    s = ratelimit.burst_summary(df)
    assert s["headers"]["limit"] == 5 and s["first_429_at"] >= 5  # a 429 may overtake a slower 201


def test_burst_without_limiter_sends_exactly_the_bound(unlimited_api):
    base, handler = unlimited_api
    params = Params(service="t", targets={"base_url": base},
                    settings={"rate_limiting": {"burst_requests": 12, "burst_concurrency": 3}})
    out = burst.run_all(params)
    df = out["POST /api/content/generate"]
    assert isinstance(df, pd.DataFrame) and len(df) == 12 and handler.count == 12
    assert df.attrs["stopped"] == "done" and set(df["status"]) == {201}
    [f] = ratelimit.expensive_route_limits(params.endpoints, out, **EXPENSIVE)[1]
    assert f.code == "ratelimit.missing" and f.severity == "warning"


def test_burst_refuses_hosts_not_allowed():
    t = burst.BurstTarget("POST /x", "POST", "http://example.com/x")
    with pytest.raises(burst.BurstRefused):
        burst.burst(t, ["127.0.0.1", "localhost"])
    params = Params(service="t", targets={"base_url": "http://api.example.com"})
    out = burst.run_all(params)
    assert "not allowed" in out["POST /api/content/generate"]
    assert burst.host_allowed("http://api.example.com/x", ["127.0.0.1"], ["api.example.com"])


def test_burst_off_and_budget_bounds():
    params = Params(service="t", targets={"base_url": "http://127.0.0.1:9"}, settings={"rate_limiting": {"burst_requests": 0}})
    assert "off" in burst.run_all(params)["POST /api/content/generate"]


def test_burst_to_closed_port_is_unreachable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = burst.BurstTarget("POST /x", "POST", f"http://127.0.0.1:{port}/x")
    with pytest.raises(SourceUnreachable):
        burst.burst(t, ["127.0.0.1"], requests_=20, concurrency=4, timeout=2, budget=5)


def test_missing_limiter_code_uses_the_recommended_numbers():
    params = Params(service="t")
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    rates = pd.DataFrame([(t0 + pd.Timedelta(seconds=15 * i), "POST", "/api/content/generate", 0.5) for i in range(20)],
                         columns=["timestamp", "method", "route", "value"])
    limits = ratelimit.recommended_limits(rates, params.endpoints, **LIMITS)
    [f] = ratelimit.expensive_route_limits(params.endpoints, {"POST /api/content/generate": burst_frame([201] * 20)},
                                           limits=limits, **EXPENSIVE)[1]
    assert "max: 100," in f.recommendation and "runbook's strict value is 5" in f.recommendation  # 0.5 × 60 × 2 = 60
