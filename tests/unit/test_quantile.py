"""histogram_quantile in Python (perfbook.checks.quantile) against Prometheus's algorithm.

The unit tests pin each rule of promql/quantile.go (bucketQuantile). The integration test
starts a real Prometheus server (/usr/bin/prometheus) on 127.0.0.1, lets it scrape a fixed
histogram exposition from a tiny HTTP server started here, and checks that Prometheus's own
``histogram_quantile`` and ours agree within 1e-9 on every group and quantile.
"""
from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from perfbook.checks.quantile import bucket_quantile, histogram_quantile, quantile_label, quantiles_by
from perfbook.sources import SourceError
from perfbook.sources.prometheus import PromClient, parse_exposition

INF = math.inf
NAN = math.nan


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol


# --- bucketQuantile, rule by rule ------------------------------------------------------

BASIC = [("0.1", 10), ("0.5", 30), ("1", 40), ("+Inf", 40)]


def test_interpolates_linearly_inside_the_bucket():
    # rank 0.5*40 = 20 lies in (0.1, 0.5]: 0.1 + 0.4 * (20-10)/(30-10)
    assert histogram_quantile(0.5, BASIC) == pytest.approx(0.3)


def test_lowest_bucket_starts_at_zero():
    # rank 0.2*40 = 8 in (0, 0.1]: 0.1 * 8/10
    assert histogram_quantile(0.2, BASIC) == pytest.approx(0.08)


def test_rank_in_inf_bucket_returns_second_highest_upper_bound():
    buckets = [(0.1, 1), (0.5, 2), (INF, 10)]
    assert histogram_quantile(0.95, buckets) == 0.5
    assert histogram_quantile(1.0, [(0.1, 5), (1, 9), (INF, 10)]) == 1.0


def test_q_exactly_one_with_empty_inf_bucket_stays_in_last_finite_bucket():
    assert histogram_quantile(1.0, BASIC) == 1.0


def test_without_inf_bucket_the_answer_is_nan():
    assert math.isnan(histogram_quantile(0.5, [(0.1, 1), (0.5, 2)]))


def test_zero_observations_give_nan():
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0), (INF, 0)]))


def test_a_lone_inf_bucket_gives_nan():
    assert math.isnan(histogram_quantile(0.5, [(INF, 10)]))


def test_q_out_of_range_and_nan():
    assert histogram_quantile(-0.1, BASIC) == -INF
    assert histogram_quantile(1.1, BASIC) == INF
    assert math.isnan(histogram_quantile(NAN, BASIC))
    assert histogram_quantile(-1, []) == -INF  # q is checked before the buckets


def test_buckets_are_sorted_first():
    shuffled = [("+Inf", 40), ("1", 40), ("0.1", 10), ("0.5", 30)]
    assert histogram_quantile(0.5, shuffled) == histogram_quantile(0.5, BASIC)


def test_same_upper_bound_is_coalesced():
    # le="0.5" and le="0.50" are one bucket: counts add up (Prometheus coalesceBuckets)
    value, forced, _ = bucket_quantile(0.5, [("0.5", 10), ("0.50", 10), ("+Inf", 20)])
    assert value == pytest.approx(0.25)
    assert not forced


def test_non_monotonic_counts_are_raised_to_the_envelope():
    buckets = [(0.1, 20), (0.25, 15), (0.5, 30), (INF, 30)]
    value, forced, _ = bucket_quantile(0.6, buckets)
    assert forced
    # after the fix: 0.1→20, 0.25→20, 0.5→30; rank 18 lies in the first bucket
    assert value == pytest.approx(0.1 * 18 / 20)
    assert histogram_quantile(0.8, buckets) == pytest.approx(0.25 + 0.25 * (24 - 20) / 10)


def test_precision_noise_is_ignored_not_forced():
    noisy = [(0.1, 10.0), (0.5, 10.0 * (1 - 1e-14)), (INF, 20.0)]
    value, forced, fixed = bucket_quantile(0.5, noisy)
    assert fixed and not forced
    assert value == pytest.approx(0.1)


def test_lowest_bucket_at_or_below_zero_returns_its_bound():
    buckets = [(-1, 2), (0, 5), (1, 10), (INF, 10)]
    assert histogram_quantile(0.1, buckets) == -1
    # second bucket interpolates from the first bucket's bound
    assert histogram_quantile(0.4, buckets) == pytest.approx(-1 + 1 * (4 - 2) / 3)


def test_q_zero_in_an_empty_lowest_bucket_is_nan_like_go():
    # rank 0 stops at the empty first bucket: 0/0 in Go is NaN, and so is the answer
    assert math.isnan(histogram_quantile(0.0, [(0.005, 0), (0.01, 1), (INF, 1)]))
    assert histogram_quantile(0.0, [(0.005, 2), (INF, 4)]) == 0.0


def test_a_drop_to_zero_is_forced_monotonic_not_a_division_error():
    value, forced, fixed = bucket_quantile(0.5, [(0.1, 4), (0.5, 0), (INF, 8)])
    assert forced and not fixed
    assert value == pytest.approx(0.1)


def test_rates_work_like_counts():
    rates = [(0.1, 0.5), (0.5, 1.5), (INF, 2.0)]
    counts = [(0.1, 50), (0.5, 150), (INF, 200)]
    assert histogram_quantile(0.9, rates) == pytest.approx(histogram_quantile(0.9, counts))


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e6)), min_size=1, max_size=12),
    q1=st.floats(min_value=1e-9, max_value=1),  # q*count must not underflow to 0
    q2=st.floats(min_value=1e-9, max_value=1),
)
def test_quantile_is_monotonic_in_q_and_within_bounds(counts, q1, q2):
    bounds = [0.005 * 2 ** i for i in range(len(counts))]
    cumulative = []
    total = 0.0
    for c in counts:
        total += c
        cumulative.append(total)
    buckets = list(zip(bounds, cumulative)) + [(INF, total)]
    lo, hi = sorted((q1, q2))
    a, b = histogram_quantile(lo, buckets), histogram_quantile(hi, buckets)
    if total == 0:
        assert math.isnan(a) and math.isnan(b)
        return
    assert a <= b + 1e-12
    assert a >= 0 and b <= bounds[-1]


# --- quantiles_by -----------------------------------------------------------------------

def _bucket_rows(route, instance, pairs):
    return [{"metric": "http_request_duration_seconds_bucket", "route": route, "instance": instance,
             "le": le, "value": v} for le, v in pairs]


def test_quantiles_by_sums_instances_like_sum_by_le_route():
    rows = (_bucket_rows("/a", "i1:1", [("0.1", 10), ("0.5", 30), ("+Inf", 40)])
            + _bucket_rows("/a", "i2:1", [("0.1", 0), ("0.5", 10), ("+Inf", 10)])
            + _bucket_rows("/b", "i1:1", [("0.1", 5), ("0.5", 5), ("+Inf", 5)]))
    rows.append({"metric": "http_request_duration_seconds_count", "route": "/a", "instance": "i1:1",
                 "le": None, "value": 40})
    out = quantiles_by(pd.DataFrame(rows), [0.5, 0.95, 0.99], by=["route"],
                       histogram="http_request_duration_seconds")
    assert list(out.columns) == ["route", "count", "p50", "p95", "p99"]
    a = out.set_index("route").loc["/a"]
    assert a["count"] == 50
    assert a["p50"] == pytest.approx(histogram_quantile(0.5, [(0.1, 10), (0.5, 40), (INF, 50)]))
    assert out.set_index("route").loc["/b", "p99"] == pytest.approx(0.099)


def test_quantiles_by_single_q_and_groups_without_inf_are_nan():
    rows = (_bucket_rows("/a", "i1:1", [("0.1", 1), ("+Inf", 2)])
            + _bucket_rows("/c", "i1:1", [("0.1", 1), ("0.5", 2)]))
    out = quantiles_by(pd.DataFrame(rows), 0.5, by=["route"]).set_index("route")
    assert out.loc["/a", "value"] == pytest.approx(0.1)
    assert math.isnan(out.loc["/c", "value"]) and math.isnan(out.loc["/c", "count"])


def test_quantiles_by_none_keeps_every_label_and_absent_labels_stay_nan():
    rows = (_bucket_rows("/a", "i1:1", [("0.1", 1), ("+Inf", 2)])
            + _bucket_rows(None, "i1:1", [("0.1", 2), ("+Inf", 2)]))
    out = quantiles_by(pd.DataFrame(rows), 0.5, by=None)
    assert set(out.columns) == {"route", "instance", "count", "value"}
    assert out["route"].isna().sum() == 1


def test_quantile_labels():
    assert [quantile_label(q) for q in (0.5, 0.95, 0.99, 0.999)] == ["p50", "p95", "p99", "p99.9"]


# --- against a real Prometheus server ---------------------------------------------------

# Integer and fractional counts; every rule: interpolation, +Inf bucket, non-monotonic,
# bound <= 0, zero observations, no +Inf bucket.
GROUPS = {
    "/normal": [("0.05", 10), ("0.1", 30), ("0.25", 80), ("0.5", 95), ("1", 99), ("+Inf", 100)],
    "/tail": [("0.1", 1), ("0.5", 2), ("+Inf", 10)],
    "/nonmonotonic": [("0.1", 20), ("0.25", 15), ("0.5", 30), ("1", 28), ("+Inf", 30)],
    "/negative": [("-1", 2), ("0", 5), ("1", 10), ("+Inf", 10)],
    "/fractional": [("0.1", 1.5), ("0.5", 2.25), ("2.5", 3.0625), ("+Inf", 3.75)],
    "/empty": [("0.1", 0), ("0.5", 0), ("+Inf", 0)],
    "/firstempty": [("0.1", 0), ("0.5", 4), ("+Inf", 4)],
    "/drop": [("0.1", 4), ("0.5", 0), ("1", 6), ("+Inf", 8)],
    "/noinf": [("0.1", 3), ("0.5", 7)],
}
QS = [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0, -0.5, 1.5]


def _exposition() -> str:
    lines = ["# HELP http_request_duration_seconds Duration of HTTP requests in seconds",
             "# TYPE http_request_duration_seconds histogram"]
    for route, pairs in GROUPS.items():
        for le, count in pairs:
            lines.append(f'http_request_duration_seconds_bucket{{le="{le}",route="{route}"}} {count}')
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Exposition(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus (127.0.0.1, free port, temp TSDB) scraping a fixed exposition every 1 s."""
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        pytest.fail("prometheus binary not installed (Debian package 'prometheus'; `make test` installs it)")
    _Exposition.body = _exposition().encode()
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=target.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: fixed\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target.server_address[1]}']\n")
    port = _free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115  (closed in the finally below)
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT)
    client = PromClient(f"http://127.0.0.1:{port}", timeout=5)
    try:
        expected = sum(len(p) for p in GROUPS.values())
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(work / 'prometheus.log').read_text()[-2000:]}")
            try:
                got = client.query("count(http_request_duration_seconds_bucket)")
                if len(got) and got["value"].iloc[0] == expected:
                    break
            except Exception:  # noqa: BLE001  (not up yet)
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not scrape the fixed exposition within 15 s")
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        target.shutdown()
        target.server_close()


@pytest.mark.integration
def test_histogram_quantile_matches_prometheus_server(prometheus):
    ours = parse_exposition(_exposition(), instance="fixed")
    at = time.time()
    mismatches = []
    for q in QS:
        theirs = prometheus.query(f"histogram_quantile({q}, http_request_duration_seconds_bucket)", at=at)
        theirs = dict(zip(theirs["route"], theirs["value"]))
        mine = quantiles_by(ours, q, by=["route"], histogram="http_request_duration_seconds")
        mine = dict(zip(mine["route"], mine["value"]))
        assert set(theirs) == set(GROUPS), theirs
        for route in GROUPS:
            if not same(mine[route], theirs[route]):
                mismatches.append((q, route, mine[route], theirs[route]))
    assert not mismatches, mismatches
    # the +Inf-bucket case was exercised: /tail's p95 is the second-highest bound
    assert quantiles_by(ours, 0.95, histogram="http_request_duration_seconds",
                        by=["route"]).set_index("route").loc["/tail", "value"] == 0.5


@pytest.mark.integration
def test_query_range_chunks_join_seamlessly_on_a_real_server(prometheus):
    end = time.time()
    start = end - 6
    whole = prometheus.query_range("sum(http_request_duration_seconds_bucket)", start, end, 0.5)
    small = PromClient(prometheus.url, timeout=5, max_points_per_series=4)
    try:
        chunked = small.query_range("sum(http_request_duration_seconds_bucket)", start, end, 0.5)
    finally:
        small.close()
    assert chunked.attrs["requests"] == 4 and whole.attrs["requests"] == 1
    pd.testing.assert_frame_equal(whole, chunked, check_like=False)


@pytest.mark.integration
def test_real_server_error_envelope_becomes_source_error(prometheus):
    with pytest.raises(SourceError) as err:
        prometheus.query("sum(rate(http_requests_total[5m])")
    assert "bad_data" in str(err.value) and "parse error" in str(err.value)
    assert prometheus.flavor == "prometheus"
