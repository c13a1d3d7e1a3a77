"""Caching checks (runbook Issue 5) on recorded and fixed inputs; no service is started
except a loopback HTTP server that serves a recorded /metrics page."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import caching
from perfbook.params import Caching, Params, Thresholds
from perfbook.plots import traffic as plots
from perfbook.sources.prometheus import parse_exposition
from perfbook.sources.window_metrics import WindowMetrics

#: The params' defaults: the runbook's 60 % target and settings.caching.
DEFAULTS = {"target": Thresholds().cache_hit_rate, "settings": Caching()}

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


def counters(rows: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["cache", "value"])


def series(cache: str, rates: list[float], lookups: float = 10.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    ts = [t0 + pd.Timedelta(seconds=15 * i) for i in range(len(rates))]
    hits = pd.DataFrame({"timestamp": ts, "cache": cache, "value": [r * lookups for r in rates]})
    misses = pd.DataFrame({"timestamp": ts, "cache": cache, "value": [(1 - r) * lookups for r in rates]})
    return hits, misses


# --------------------------------------------------------------------------- hit rate


def test_hit_rates_per_cache_and_overall():
    t = caching.hit_rates(counters([("products", 30), ("lists", 5)]), counters([("products", 10), ("lists", 45)]))
    by = t.set_index("cache")
    assert by.loc["products", "hit_rate"] == pytest.approx(0.75)
    assert by.loc["lists", "hit_rate"] == pytest.approx(0.10)
    assert by.loc["overall", "lookups"] == 90 and by.loc["overall", "hit_rate"] == pytest.approx(35 / 90)
    assert list(t["cache"])[-1] == "overall"


def test_low_hit_rate_found_per_cache_with_severity():
    rates = caching.hit_rates(counters([("products", 30), ("lists", 5)]), counters([("products", 10), ("lists", 45)]))
    found = {f.subject: f for f in caching.low_hit_rate(rates, **DEFAULTS)}
    assert found["products"].severity == "ok"
    assert found["lists"].code == "cache.low_hit_rate" and found["lists"].severity == "critical"  # 10 % < 30 %
    assert found["overall"].severity == "warning"                                                # 39 % < 60 %
    assert found["lists"].evidence["hit_rate"] == pytest.approx(0.10)
    assert "3600 s" in found["lists"].recommendation  # a list cache: the runbook's 1 h


def test_healthy_hit_rate_raises_nothing():
    rates = caching.hit_rates(counters([("products", 90), ("analytics", 50)]), counters([("products", 10), ("analytics", 1)]))
    assert {f.severity for f in caching.low_hit_rate(rates, **DEFAULTS)} == {"ok"}


def test_too_few_lookups_are_not_judged():
    rates = caching.hit_rates(counters([("products", 1)]), counters([("products", 5)]))
    found = caching.low_hit_rate(rates, **DEFAULTS)
    assert [(f.subject, f.severity) for f in found] == [("overall", "info")]


def test_no_rates_no_findings():
    assert caching.low_hit_rate(None, **DEFAULTS) == []


def test_recorded_demo_metrics_healthy():
    df = parse_exposition((FIXTURES / "healthy.metrics.txt").read_text())
    hits = df[df["metric"] == "cache_hits_total"][["cache", "value"]]
    misses = df[df["metric"] == "cache_misses_total"][["cache", "value"]]
    rates = caching.hit_rates(hits, misses)
    assert set(rates["cache"]) == {"products", "product-lists", "analytics", "overall"}
    assert all(f.severity == "ok" for f in caching.low_hit_rate(rates, **DEFAULTS))


# --------------------------------------------------------------------------- trend and remedies


def test_cold_start_recommends_prewarming():
    h, m = series("products", [0.05] * 4 + [0.3] * 4 + [0.5] * 4 + [0.55] * 4)
    s = caching.hit_rate_series(h, m)
    rates = caching.hit_rates(counters([("products", 30)]), counters([("products", 70)]))
    f = next(f for f in caching.low_hit_rate(rates, **DEFAULTS, series=s) if f.subject == "products")
    assert f.severity == "warning" and "Pre-warm 'products'" in f.recommendation
    assert f.evidence["early_hit_rate"] < f.evidence["late_hit_rate"]


def test_steady_low_hit_rate_recommends_ttl_not_prewarm():
    h, m = series("analytics", [0.2] * 16)
    s = caching.hit_rate_series(h, m)
    rates = caching.hit_rates(counters([("analytics", 20)]), counters([("analytics", 80)]))
    f = next(f for f in caching.low_hit_rate(rates, **DEFAULTS, series=s) if f.subject == "analytics")
    assert "not a cold start" in f.recommendation and "86400 s" in f.recommendation
    assert "Pre-warm" not in f.recommendation


def test_hit_rate_series_has_overall():
    h, m = series("products", [0.5] * 3)
    s = caching.hit_rate_series(h, m)
    assert set(s["cache"]) == {"products", "overall"} and s["hit_rate"].eq(0.5).all()
    assert caching.hit_rate_series(None, m) is None


def test_runbook_ttl_by_cache_name():
    assert caching.runbook_ttl("product-lists")[0] == 3600
    assert caching.runbook_ttl("analytics")[0] == 86400
    assert caching.runbook_ttl("products")[0] == 7200


# --------------------------------------------------------------------------- Redis


INFO = {"redis_version": "7.0.15", "uptime_in_seconds": 3600, "keyspace_hits": 200, "keyspace_misses": 800,
        "evicted_keys": 1500, "expired_keys": 40, "used_memory": 1_950_000, "maxmemory": 2_000_000,
        "maxmemory_policy": "allkeys-lru", "db0": {"keys": 300, "expires": 290, "avg_ttl": 20000}}


def test_redis_low_keyspace_hit_rate_with_evictions():
    facts = caching.redis_facts(INFO)
    assert facts["hit_rate"] == pytest.approx(0.2) and facts["memory_share"] == pytest.approx(0.975)
    advice = caching.cache_advice(redis=facts)
    [f] = caching.redis_hit_rate(facts, **DEFAULTS, advice=advice)
    assert (f.code, f.subject, f.severity) == ("cache.low_hit_rate", "redis", "critical")
    assert "evicted 1500 keys" in f.recommendation and "raise maxmemory" in f.recommendation


def test_redis_healthy_and_absent():
    facts = caching.redis_facts({**INFO, "keyspace_hits": 900, "keyspace_misses": 100, "evicted_keys": 0})
    assert [f.severity for f in caching.redis_hit_rate(facts, **DEFAULTS)] == ["ok"]
    assert caching.redis_facts(None) is None and caching.redis_hit_rate(None, **DEFAULTS) == []
    assert caching.redis_table(None).empty and len(caching.redis_table(facts)) == 13


def test_ttl_by_prefix_and_short_ttl_advice():
    sample = pd.DataFrame({"key": ["product:1", "product:2", "product:3", "products:all", "trends:daily", "lonely"],
                           "ttl_s": [30.0, 25.0, 35.0, 3500.0, float("nan"), 100.0]})
    t = caching.ttl_by_prefix(sample).set_index("prefix")
    assert t.loc["product", "keys"] == 3 and t.loc["product", "ttl_p50_s"] == 30
    assert t.loc["trends", "no_expiry"] == 1 and "(no prefix)" in t.index
    advice = caching.cache_advice(ttls=t.reset_index())
    assert any("'product:*' (median 30 s" in a and "7200 s" in a for a in advice)
    assert not any("'products:*'" in a for a in advice)  # 3500 s is not short


def test_key_prefix():
    assert caching.key_prefix("product:42") == "product"
    assert caching.key_prefix("a|b", "|") == "a"
    assert caching.key_prefix("plain") == "(no prefix)"


# --------------------------------------------------------------------------- cached routes


def test_cached_routes_vs_rest_and_candidates():
    params = Params(service="t")
    q = pd.DataFrame([
        {"method": "GET", "route": "/api/products", "count": 500, "p50": 0.02, "p95": 0.10, "p99": 0.2},
        {"method": "GET", "route": "/api/products/{id}", "count": 300, "p50": 0.01, "p95": 0.05, "p99": 0.1},
        {"method": "GET", "route": "/api/analytics/summary", "count": 100, "p50": 1.5, "p95": 2.5, "p99": 3.0},
        {"method": "GET", "route": "/health", "count": 100, "p50": 0.3, "p95": 0.6, "p99": 0.9},
    ])
    lat = caching.cached_route_latency(q, params.endpoints)
    assert lat.set_index("endpoint").loc["GET /api/products/{id}", "cached"]  # :id matches {id}
    summary = caching.cached_vs_rest(lat).set_index("routes")
    assert summary.loc["cached", "p95_s"] < summary.loc["not cached", "p95_s"]
    cands = caching.uncached_candidates(lat, min_requests=20)
    assert [c["endpoint"] for c in cands] == ["GET /api/analytics/summary"] and cands[0]["over_target"]
    assert any("Cache GET /api/analytics/summary" in a for a in caching.cache_advice(candidates=cands))
    assert caching.uncached_candidates(None, min_requests=20) == []


# --------------------------------------------------------------------------- snapshot source and plots


class _Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture
def metrics_url():
    _Metrics.body = (FIXTURES / "healthy.metrics.txt").read_bytes()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    srv.shutdown()
    srv.server_close()


def test_snapshot_mode_reads_totals_since_start(metrics_url):
    params = Params(service="t", targets={"metrics_urls": [metrics_url]})
    end = datetime.now(timezone.utc)
    wm = WindowMetrics(params, end - timedelta(minutes=15), end)
    assert wm.mode == "snapshot" and "since each process started" in wm.basis
    hits = wm.increase("cache_hits_total", ["cache"])
    assert hits.set_index("cache").loc["products", "value"] == 383
    assert wm.rate_series("cache_hits_total", ["cache"]) is None
    assert wm.uptime_seconds() is not None and wm.queries == []
    c429 = wm.increase("http_request_duration_seconds_count", ["method", "route"], {"status_code": "429"})
    assert c429.empty or c429["value"].sum() == 0


def test_no_metrics_source_is_unreachable():
    from perfbook.sources import SourceUnreachable

    end = datetime.now(timezone.utc)
    wm = WindowMetrics(Params(service="t"), end - timedelta(minutes=5), end)
    with pytest.raises(SourceUnreachable):
        wm.increase("cache_hits_total", ["cache"])
    assert wm.uptime_seconds() is None


def test_plots_draw_or_return_none():
    h, m = series("products", [0.2, 0.3, 0.4])
    assert plots.hit_rate_over_time(caching.hit_rate_series(h, m), 0.6) is not None
    assert plots.hit_rate_over_time(None) is None
    rates = caching.hit_rates(counters([("products", 3)]), counters([("products", 7)]))
    assert plots.hit_rate_bars(rates, 0.6) is not None
