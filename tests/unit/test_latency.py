"""Latency against the Response Time Targets: probes (the lead's functions, whose
behaviour the CLI test relies on) and the HTTP duration histogram by route, on recorded
prom-client output (tests/fixtures/promclient) and fixed frames."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import latency as lat
from perfbook.checks.quantile import quantiles_by
from perfbook.params import Endpoint, Params
from perfbook.sources import prometheus as prom

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"
ENDPOINTS = Params(service="t").endpoints  # the runbook's table, routes in Express form (/api/products/:id)
#: settings.diagnostics.latency_critical_factor as the params default it.
CRITICAL_FACTOR = Params(service="t").settings.diagnostics.latency_critical_factor


def ep(method, route, p50, p95, p99):
    return Endpoint(method=method, route=route, targets={"p50": p50, "p95": p95, "p99": p99})


# --------------------------------------------------------------------------- probes (existing behaviour)


def probes_frame(name, seconds):
    return pd.DataFrame([{"endpoint": name, "method": "GET", "url": "u", "seq": i, "status": 200, "seconds": s,
                          "bytes": 2, "error": ""} for i, s in enumerate(seconds)])


def test_probe_percentiles_and_breaches_keep_the_params_name_as_subject():
    slow = ep("GET", "/slow", "50ms", "100ms", "150ms")
    observed = lat.percentiles_from_probes(probes_frame("GET /slow", [0.25] * 6))
    assert list(observed.columns) == ["endpoint", "requests", "failed", "status_5xx", "p50", "p95", "p99"]
    table, found = lat.slo_breaches(observed, [slow], critical_factor=CRITICAL_FACTOR)
    assert {(f.subject, f.evidence["percentile"], f.severity) for f in found} == {
        ("GET /slow", "p50", "critical"), ("GET /slow", "p95", "critical"), ("GET /slow", "p99", "warning")}
    assert set(table["verdict"]) == {"critical", "warning"}


def test_probe_within_target_is_one_ok_finding():
    fast = ep("GET", "/fast", "50ms", "100ms", "150ms")
    _, found = lat.slo_breaches(lat.percentiles_from_probes(probes_frame("GET /fast", [0.01] * 6)), [fast],
                                critical_factor=CRITICAL_FACTOR)
    assert [(f.severity, f.subject) for f in found] == [("ok", "GET /fast")]


def test_subject_column_renames_the_endpoint_as_the_metrics_spell_it():
    observed = lat.percentiles_from_probes(probes_frame("GET /api/products/:id", [1.5] * 5))
    aliases = {"GET /api/products/:id": "GET /api/products/{id}"}
    _, found = lat.slo_breaches(lat.with_subjects(observed, aliases), ENDPOINTS, critical_factor=CRITICAL_FACTOR,
                                source_label="probed now")
    assert {f.subject for f in found} == {"GET /api/products/{id}"}
    assert all(f.title.endswith("— probed now") for f in found)


# --------------------------------------------------------------------------- route matching


@pytest.mark.parametrize("method,route,expected", [
    ("GET", "/api/products/{id}", "GET /api/products/:id"),   # Starlette / FastAPI
    ("GET", "/api/products/:id", "GET /api/products/:id"),    # Express
    ("GET", "/api/products", "GET /api/products"),
    ("POST", "/api/products/{id}", None),                     # method differs
    ("GET", "/api/products/{id}/reviews", None),
    ("GET", "unmatched", None),
    ("GET", float("nan"), None),
])
def test_match_endpoint(method, route, expected):
    e = lat.match_endpoint(method, route, ENDPOINTS)
    assert (e.name if e else None) == expected


def test_match_endpoint_glob_as_the_runbook_writes_it():
    eps = [ep("GET", "/api/analytics/*", "1s", "2s", "3s"), ep("GET", "/api/analytics/live", "10ms", "20ms", "30ms")]
    assert lat.match_endpoint("GET", "/api/analytics/summary", eps).route == "/api/analytics/*"
    assert lat.match_endpoint("GET", "/api/analytics/live", eps).route == "/api/analytics/live"  # exact wins


# --------------------------------------------------------------------------- histogram, recorded prom-client output


@pytest.fixture(scope="module")
def buckets():
    before = prom.parse_exposition((FIX / "metrics.txt").read_text(), instance="i:1")
    after = prom.parse_exposition((FIX / "metrics.after.txt").read_text(), instance="i:1")
    rates = prom.rates(before, after, seconds=10)
    b = rates[rates["metric"] == "http_request_duration_seconds_bucket"].copy()
    b["value"] = b["increase"]
    return after[after["metric"] == "http_request_duration_seconds_bucket"], b


def test_route_percentiles_equal_histogram_quantile_by_route(buckets):
    cumulative, _ = buckets
    got = lat.route_percentiles(cumulative)
    want = quantiles_by(cumulative, [0.5, 0.95, 0.99], by=["method", "route"])
    merged = got.merge(want, on=["method", "route"], suffixes=("", "_want"))
    assert len(merged) == 3
    for q in ("p50", "p95", "p99"):
        assert merged[q].tolist() == pytest.approx(merged[f"{q}_want"].tolist(), nan_ok=True)
    assert set(got["endpoint"]) == {"GET /api/products", "GET /api/products/:id", "POST /api/orders"}


def test_served_only_leaves_out_rejections_and_server_errors(buckets):
    _, increase = buckets
    served = lat.route_percentiles(lat.served_only(increase))
    everything = lat.route_percentiles(increase)
    prod = lambda d: d.set_index("endpoint").loc["GET /api/products"]  # noqa: E731
    # phase 2: 60 x 0.09 s served, 3 x 2.2 s answered 500
    assert prod(served)["requests"] == 60 and prod(everything)["requests"] == 63
    assert prod(served)["p99"] <= 0.1 < prod(everything)["p99"]
    assert lat.is_served("200") and lat.is_served("404") and not lat.is_served("429") and not lat.is_served("503")


def test_histogram_breach_named_as_the_metrics_spell_the_route(buckets):
    _, increase = buckets
    observed = lat.route_percentiles(lat.served_only(increase))
    eps = [ep("GET", "/api/products", "20ms", "50ms", "80ms"), ep("GET", "/api/products/{id}", "10ms", "50ms", "100ms"),
           ep("GET", "/health", "10ms", "20ms", "50ms")]
    table, found = lat.histogram_slo_breaches(observed, eps, min_requests=20, critical_factor=CRITICAL_FACTOR,
                                                 source="test")
    bad = {(f.subject, f.evidence["percentile"]) for f in found if f.severity != "ok"}
    assert ("GET /api/products", "p95") in bad and all(s == "GET /api/products" for s, _ in bad)
    assert all(f.evidence["requests"] == 60 for f in found if f.subject == "GET /api/products")
    verdicts = lat.endpoint_verdicts(table).set_index("endpoint")["verdict"].to_dict()
    assert verdicts["GET /api/products"] == "critical"        # p50 ~ 0.07 s vs 20 ms target
    assert verdicts["GET /api/products/:id"] == "too few requests"  # 10 in the interval
    assert verdicts["POST /api/orders"] == "no target"
    assert verdicts["GET /health"] == "no requests"


def test_histogram_healthy_routes_raise_nothing(buckets):
    _, increase = buckets
    _, found = lat.histogram_slo_breaches(lat.route_percentiles(lat.served_only(increase)), ENDPOINTS, min_requests=5,
                                          critical_factor=CRITICAL_FACTOR)
    assert found and all(f.severity == "ok" for f in found)
    assert {f.subject for f in found} == {"GET /api/products", "GET /api/products/:id"}


def test_subject_aliases_map_params_names_to_metric_routes():
    observed = pd.DataFrame([{"endpoint": "GET /api/products/{id}", "method": "GET", "route": "/api/products/{id}",
                              "requests": 5, "p50": 0.1, "p95": 0.2, "p99": 0.3}])
    assert lat.subject_aliases(observed, ENDPOINTS) == {"GET /api/products/:id": "GET /api/products/{id}"}
    assert lat.subject_aliases(None, ENDPOINTS) == {}


def test_percentiles_over_time_pick_the_worst_routes_for_the_plot():
    rows = []
    for i in range(5):
        t = pd.Timestamp("2025-01-01T00:00:00Z") + pd.Timedelta(seconds=15 * i)
        for route, le_counts in (("/api/products", [(0.5, 1), (1, 1), (2, 5), ("+Inf", 5)]),
                                 ("/health", [(0.005, 5), (0.01, 5), ("+Inf", 5)])):
            rows += [{"timestamp": t, "le": str(le), "method": "GET", "route": route, "value": c} for le, c in le_counts]
    over_time = lat.route_percentiles(pd.DataFrame(rows), by_time=True)
    plot = lat.percentile_series_for_plot(over_time, ENDPOINTS)
    assert plot["endpoint"].iloc[0] == "GET /api/products" and plot["p95_target"].iloc[0] == 1.0
    assert plot.groupby("endpoint")["ratio"].first()["GET /api/products"] > 1


def test_route_time_shares_rank_routes_by_the_time_they_take():
    s = pd.DataFrame({"method": ["GET", "GET"], "route": ["/api/products/{id}", "/health"], "value": [90.0, 10.0]})
    c = pd.DataFrame({"method": ["GET", "GET"], "route": ["/api/products/{id}", "/health"], "value": [60.0, 1000.0]})
    df = lat.route_time_shares(s, c, ENDPOINTS, window_s=100)
    first = df.iloc[0]
    assert first["endpoint"] == "GET /api/products/{id}" and first["time_share"] == 0.9
    assert first["mean_s"] == 1.5 and first["p95_target_s"] == 1.0 and first["req_per_s"] == 0.6
