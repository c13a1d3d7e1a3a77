"""External-API checks (runbook Issue 7) on recorded and fixed inputs, and the probes with
backoff against a small loopback HTTP server started here."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import external
from perfbook.params import External
from perfbook.plots import traffic as plots
from perfbook.sources import SourceError, dependencies

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
BOUNDS = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
T0 = pd.Timestamp("2026-01-01T00:00:00Z")

#: settings.external as the params default it (10 s timeout, 5 %/20 % error rate, 3 calls).
DEFAULTS = External()


def buckets(service: str, observations: list[float]) -> pd.DataFrame:
    """Cumulative bucket counts of a histogram that saw ``observations``."""
    rows = [(service, le, float(sum(1 for o in observations if o <= float(le)))) for le in BOUNDS]
    return pd.DataFrame(rows, columns=["service", "le", "value"])


def outcomes(service: str, **counts: float) -> pd.DataFrame:
    return pd.DataFrame([(service, k, v) for k, v in counts.items()], columns=["service", "outcome", "value"])


def timeout_10(_: str) -> float:
    return 10.0


def states(values: list[int], name: str = "ai-api", instance: str = "a:1", step: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"name": name, "instance": instance,
                         "timestamp": [T0 + pd.Timedelta(seconds=step * i) for i in range(len(values))],
                         "value": [float(v) for v in values]})


# --------------------------------------------------------------------------- /health/services


def test_health_services_recorded_healthy():
    body = json.loads((FIXTURES / "healthy.health_services.json").read_text())
    t = external.parse_health_services(body).set_index("service")
    assert set(t.index) == {"database", "ai-api", "cache"} and t["healthy"].all()
    assert "circuit_breaker=closed" in t.loc["ai-api", "detail"]
    assert {f.severity for f in external.health_findings(t.reset_index(), 200)} == {"ok"}


def test_health_services_down_dependency():
    body = {"status": "degraded", "services": {"database": {"status": "up"},
                                               "ai-api": {"status": "down", "circuit_breaker": "open"}}}
    found = {f.subject: f for f in external.health_findings(external.parse_health_services(body), 503)}
    assert (found["ai-api"].code, found["ai-api"].severity) == ("external.errors", "warning")
    assert found["database"].severity == "ok"


def test_health_services_other_shapes():
    assert external.parse_health_services({"stripe": "ok", "openai": "fail"})["healthy"].tolist() == [True, False]
    listed = external.parse_health_services({"checks": [{"name": "s3", "status": "pass"}]})
    assert listed.iloc[0]["service"] == "s3" and listed.iloc[0]["healthy"]


# --------------------------------------------------------------------------- latency


def test_slow_dependency_at_its_timeout():
    obs = [0.2] * 10 + [2.0] * 20 + [4.0] * 10   # timed-out calls observed at ~4 s
    lat = external.dependency_latency(buckets("ai-api", obs), lambda s: 3.0)
    [f] = external.slow_dependencies(lat, settings=External(min_calls=5))
    assert (f.code, f.subject, f.severity) == ("external.slow", "ai-api", "critical")
    assert f.evidence["timeout_ms"] == 3000 and f.evidence["p99_ms"] >= 3000


def test_counted_timeouts_judge_over_a_p99_interpolated_past_the_timeout():
    """9 calls, 1 timed out (11 %): the histogram's p99 lies past the 3 s timeout by
    interpolation, but the count says a tenth of the calls timed out: warning, not critical."""
    obs = [2.0] * 8 + [3.2]
    lat = external.dependency_latency(buckets("ai-api", obs), lambda s: 3.0)
    assert lat.iloc[0]["p99_s"] >= 3.0
    errors = external.dependency_errors(outcomes("ai-api", success=8, error=0, timeout=1, rejected=0))
    [f] = external.slow_dependencies(lat, errors, settings=External(min_calls=5))
    assert f.severity == "warning" and f.evidence["timed_out_share"] == pytest.approx(1 / 9)


def test_slow_dependency_by_share_of_timeouts_when_timeout_unknown():
    lat = external.dependency_latency(buckets("ai-api", [0.2] * 3 + [1.8, 1.9]), timeout_10)
    errors = external.dependency_errors(outcomes("ai-api", success=1, error=3, timeout=1, rejected=10))
    [f] = external.slow_dependencies(lat, errors, settings=DEFAULTS)
    assert f.severity == "critical" and f.evidence["timed_out_share"] == pytest.approx(0.2)
    assert "hit the 10 s timeout" in f.recommendation and "errorThresholdPercentage: 50" in f.recommendation


def test_half_the_timeout_is_a_warning_and_fast_is_ok():
    lat = external.dependency_latency(buckets("ai-api", [6.0] * 20), timeout_10)
    assert [f.severity for f in external.slow_dependencies(lat, settings=DEFAULTS)] == ["warning"]
    lat = external.dependency_latency(buckets("ai-api", [0.3] * 20), timeout_10)
    [f] = external.slow_dependencies(lat, settings=DEFAULTS)
    assert f.severity == "ok"


def test_suggested_timeout():
    assert external.suggested_timeout_s(0.4, 10) == 1.0
    assert external.suggested_timeout_s(2.2, 10) == 4.0
    assert external.suggested_timeout_s(12.0, 10) == 10


def test_latency_series_per_time():
    b = pd.concat([buckets("ai-api", [0.3] * 10).assign(timestamp=T0),
                   buckets("ai-api", [3.0] * 10).assign(timestamp=T0 + pd.Timedelta(seconds=15))])
    s = external.latency_series(b)
    assert len(s) == 2 and s.iloc[1]["p95"] > s.iloc[0]["p95"]


# --------------------------------------------------------------------------- errors


def test_failing_dependency():
    errors = external.dependency_errors(outcomes("ai-api", success=4, error=30, timeout=6, rejected=60))
    row = errors.iloc[0]
    assert row["calls"] == 100 and row["failure_rate"] == pytest.approx(0.96)
    [f] = external.failing_dependencies(errors, settings=DEFAULTS)
    assert (f.code, f.subject, f.severity) == ("external.errors", "ai-api", "critical")
    assert "1 s, 2 s, 4 s" in f.recommendation and "volumeThreshold" in f.recommendation


def test_healthy_dependency_errors_ok():
    errors = external.dependency_errors(outcomes("ai-api", success=200, error=1, timeout=0, rejected=0))
    assert [f.severity for f in external.failing_dependencies(errors, settings=DEFAULTS)] == ["ok"]


def test_recorded_demo_outcomes_healthy():
    from perfbook.sources.prometheus import parse_exposition

    df = parse_exposition((FIXTURES / "healthy.metrics.txt").read_text())
    req = df[df["metric"] == "external_api_requests_total"][["service", "outcome", "value"]]
    errors = external.dependency_errors(req)
    assert [f.severity for f in external.failing_dependencies(errors, settings=DEFAULTS)] == ["ok"]
    b = df[df["metric"] == "external_api_duration_seconds_bucket"][["service", "le", "value"]]
    assert [f.severity for f in external.slow_dependencies(external.dependency_latency(b, lambda s: 3.0), settings=DEFAULTS)] == ["ok"]


# --------------------------------------------------------------------------- the circuit breaker


def test_breaker_open_now_is_critical():
    s = pd.concat([states([0, 0, 1, 1, 2, 1, 1, 1], instance="a:1"), states([0, 0, 0, 1, 1, 1, 1, 1], instance="b:1")])
    t = external.breaker_transitions(s)
    row = t.iloc[0]
    assert row["opens"] == 3 and row["half_opens"] == 1 and row["state_now"] == "open" and row["instances"] == 2
    [f] = external.open_breakers(t, ["ai-api"], timeout_for=DEFAULTS.timeout_for)
    assert (f.code, f.subject, f.severity) == ("external.circuit_open", "ai-api", "critical")
    assert "resetTimeout: 30000" in f.recommendation


def test_breaker_that_opened_and_closed_is_a_warning_and_closed_is_ok():
    [f] = external.open_breakers(external.breaker_transitions(states([0, 1, 1, 2, 0, 0])), ["ai-api"],
                               timeout_for=DEFAULTS.timeout_for)
    assert f.severity == "warning" and f.evidence["opens"] == 1
    [f] = external.open_breakers(external.breaker_transitions(states([0] * 10)), ["ai-api"],
                               timeout_for=DEFAULTS.timeout_for)
    assert f.severity == "ok"


def test_breaker_name_maps_to_dependency():
    assert external.dependency_of("ai-api-breaker", ["ai-api", "db"]) == "ai-api"
    assert external.dependency_of("payments", ["ai-api"]) == "payments"


def test_breaker_bands_align_instances_scraped_at_different_times():
    a = states([0, 1, 1, 1, 0], instance="a:1", step=2)
    b = states([0, 0, 0, 0, 0], instance="b:1", step=2).assign(timestamp=lambda d: d["timestamp"] + pd.Timedelta(seconds=1))
    bands = external.breaker_bands(pd.concat([a, b]))
    assert len(bands) == 1 and bands.iloc[0]["state"] == "open"  # one band, not stripes
    assert bands.iloc[0]["start"] == T0 + pd.Timedelta(seconds=2)


def test_dependency_plot():
    b = pd.concat([buckets("ai-api", [0.3] * 10).assign(timestamp=T0 + pd.Timedelta(seconds=i)) for i in range(5)])
    fig = plots.dependency_latency(external.latency_series(b), lambda s: 3.0,
                                   external.breaker_bands(states([0, 1, 1, 0, 0])))
    assert fig is not None
    assert plots.dependency_latency(None, {}, None) is None


# --------------------------------------------------------------------------- probes with backoff, on loopback


class _Dep(BaseHTTPRequestHandler):
    script: list[int] = []
    calls = 0

    def do_GET(self):
        cls = type(self)
        status = cls.script[min(cls.calls, len(cls.script) - 1)]
        cls.calls += 1
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


@pytest.fixture
def dep():
    def start(script):
        handler = type("D", (_Dep,), {"script": script, "calls": 0})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/health", handler
    servers: list = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_probe_retries_with_exponential_backoff_then_fails(dep):
    url, _handler = dep([503])
    df = dependencies.probe_with_backoff("ai-api", url, timeout=2, retries=3, backoff=0.05, budget=30)
    assert df["attempt"].tolist() == [1, 2, 3, 4] and df["waited_s"].tolist() == [0, 0.05, 0.1, 0.2]
    [f] = external.probe_findings(external.probe_summary(df), timeout_for=DEFAULTS.timeout_for)
    assert (f.code, f.subject, f.severity) == ("external.errors", "ai-api", "critical")


def test_probe_recovers_after_a_retry(dep):
    url, _ = dep([503, 200])
    df = dependencies.probe_with_backoff("ai-api", url, timeout=2, retries=3, backoff=0.01)
    assert len(df) == 2 and df.iloc[-1]["ok"]
    assert [f.severity for f in external.probe_findings(external.probe_summary(df), timeout_for=DEFAULTS.timeout_for)] == ["info"]


def test_probe_healthy_first_time_and_4xx_not_retried(dep):
    url, _ = dep([200])
    assert [f.severity for f in external.probe_findings(external.probe_summary(
        dependencies.probe_all({"ai-api": url}, retries=3)), timeout_for=DEFAULTS.timeout_for)] == ["ok"]
    url, handler = dep([404])
    df = dependencies.probe_with_backoff("x", url, retries=3, backoff=0.01)
    assert len(df) == 1 and handler.calls == 1


def test_probe_budget_bounds_the_retries(dep):
    url, _ = dep([503])
    t0 = time.monotonic()
    df = dependencies.probe_with_backoff("ai-api", url, timeout=1, retries=5, backoff=1.0, budget=2.5)
    # attempt 2 after 1 s fits (1 s wait + 1 s timeout < 2.5 s); attempt 3 after 2 s more would not
    assert df["attempt"].tolist() == [1, 2] and time.monotonic() - t0 < 2.5


def test_probe_of_closed_port_is_an_answer_not_a_crash():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    df = dependencies.probe_with_backoff("ai-api", f"http://127.0.0.1:{port}/health", retries=1, backoff=0.01)
    assert len(df) == 2 and not df["ok"].any() and "refused" in df.iloc[0]["error"].lower()


def test_health_services_needs_base_url():
    with pytest.raises(SourceError):
        dependencies.health_services(None)


def test_fast_failures_never_make_a_slow_dependency_look_fast():
    """fc8 (issue 14): nine 500s answered in 0.1 s and one 3.8 s success gave 'p95 243 ms, well under its
    3 s timeout'. Latency is judged on the calls that succeeded or timed out (the SRE book's latency of
    successful requests); the failures are errors, counted apart."""
    def by_status(status, obs):
        return buckets("ai-api", obs).assign(status=status)
    fast_errors, slow = by_status("500", [0.1] * 9), by_status("200", [2.6, 2.8, 3.2])
    mixed = pd.concat([fast_errors, slow, by_status("timeout", [3.5])])
    diluted = external.dependency_latency(mixed, lambda s: 3.0)                      # every call, as before
    judged = external.dependency_latency(mixed, lambda s: 3.0, status_label="status")
    assert diluted.iloc[0]["calls"] == 13 and diluted.iloc[0]["p50_s"] < 0.25
    assert judged.iloc[0]["calls"] == 4 and judged.iloc[0]["p50_s"] > 2.5
    [f] = external.slow_dependencies(judged, settings=DEFAULTS)
    assert f.severity == "critical", f
    # An instrumentation without the status label: every call (nothing dropped).
    assert external.dependency_latency(buckets("ai-api", [0.1] * 9), lambda s: 3.0,
                                       status_label="status").iloc[0]["calls"] == 9


def test_calls_timing_out_are_slow_even_with_no_latency_to_read():
    errors = external.dependency_errors(outcomes("ai-api", error=6, timeout=3, rejected=20))
    empty = external.dependency_latency(buckets("ai-api", [0.1] * 9).assign(status="500"), lambda s: 3.0,
                                        status_label="status")
    assert empty.empty or empty.iloc[0]["calls"] == 0
    lat = pd.DataFrame([{"service": "ai-api", "calls": 0.0, "p50_s": None, "p95_s": None, "p99_s": None,
                         "timeout_s": 3.0, "p95_of_timeout": None, "p99_of_timeout": None}])
    [f] = external.slow_dependencies(lat, errors, settings=DEFAULTS)
    assert f.severity == "critical" and "33 % of calls timed out" in f.title
    no_timeouts = external.dependency_errors(outcomes("ai-api", error=9, rejected=20))
    assert external.slow_dependencies(lat, no_timeouts, settings=DEFAULTS) == []   # its errors say it all
