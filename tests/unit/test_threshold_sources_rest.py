"""Issue 18 point 2 (the checks but the database ones): a ``-P`` value reaches the verdict.

A threshold that decides a verdict lives in the params models (settable with
``-P settings.x.y=...``), never as a second default in a check's signature (tests/unit/test_threshold_sources.py
scans every check); these tests show a ``-P`` value reaching a check's verdict.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from perfbook.checks import latency as lat, resources
from perfbook.params import load, parse_override
from perfbook.sources import prometheus as prom

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"

#: No check carries a second default for a threshold: tests/unit/test_threshold_sources.py scans them all.


# --------------------------------------------------------------------------- -P reaches the verdict


def _params(tmp_path: Path, *overrides: str):
    """The params file below, loaded with ``-P key=value`` overrides as the CLI parses them."""
    f = tmp_path / "params.yaml"
    f.write_text("service: t\n"
                 "endpoints:\n"
                 "  - {method: GET, route: /api/products, targets: {p50: 20ms, p95: 50ms, p99: 80ms}}\n")
    return load(f, dict(parse_override(o) for o in overrides))


def _recorded_latency(params) -> tuple:
    """The recorded prom-client histogram (two scrapes 10 s apart) against the params'
    endpoints, judged as the quick-diagnostics notebook does: (table, findings)."""
    before = prom.parse_exposition((FIX / "metrics.txt").read_text(), instance="i:1")
    after = prom.parse_exposition((FIX / "metrics.after.txt").read_text(), instance="i:1")
    rates = prom.rates(before, after, seconds=10)
    b = rates[rates["metric"] == "http_request_duration_seconds_bucket"].copy()
    b["value"] = b["increase"]
    d = params.settings.diagnostics
    return lat.histogram_slo_breaches(lat.route_percentiles(lat.served_only(b)), params.endpoints,
                                      min_requests=d.min_requests, critical_factor=d.latency_critical_factor)


def _recorded_latency_findings(params) -> dict[str, str]:
    """Per percentile of GET /api/products, the severity on the recorded histogram."""
    _, found = _recorded_latency(params)
    return {f.evidence["percentile"]: f.severity for f in found if f.subject == "GET /api/products"}


def test_a_p_override_of_the_critical_factor_changes_the_verdict_on_recorded_input(tmp_path):
    default = _recorded_latency_findings(_params(tmp_path))
    assert default["p50"] == "critical"  # ~70 ms against a 20 ms target: over 2x
    loose = _recorded_latency_findings(_params(tmp_path, "settings.diagnostics.latency_critical_factor=10"))
    assert loose["p50"] == "warning"     # still over target, no longer 10x over it


def test_the_verdict_table_states_the_critical_factor_in_force(tmp_path):
    params = _params(tmp_path, "settings.diagnostics.latency_critical_factor=3")
    table, found = _recorded_latency(params)
    verdict = resources.verdict_table(found, lat.endpoint_verdicts(table),
                                      critical_factor=params.settings.diagnostics.latency_critical_factor)
    assert set(verdict.loc[verdict["area"] == "Response time", "critical"]) == {"> 3× target"}


@pytest.mark.parametrize("override,read", [
    ("settings.balance.max_over_mean=1.5", lambda p: p.settings.balance.max_over_mean),
    ("settings.caching.critical_share=0.3", lambda p: p.settings.caching.critical_share),
    ("settings.caching.warming_rise=0.3", lambda p: p.settings.caching.warming_rise),
    ("settings.external.timeout_share=0.1", lambda p: p.settings.external.timeout_share),
    ("settings.load_test.min_gain=0.2", lambda p: p.settings.load_test.min_gain),
    ("settings.load_test.headroom_warning=3", lambda p: p.settings.load_test.headroom_warning),
    ("settings.load_test.min_requests=10", lambda p: p.settings.load_test.min_requests),
    ("settings.load_test.generator_cpu_limit=80", lambda p: p.settings.load_test.generator_cpu_limit),
    ("settings.rate_limiting.peak_quantile=0.95", lambda p: p.settings.rate_limiting.peak_quantile),
    ("settings.diagnostics.min_errors=3", lambda p: p.settings.diagnostics.min_errors),
    ("settings.diagnostics.correlation_min_r=0.7", lambda p: p.settings.diagnostics.correlation_min_r),
    ("settings.diagnostics.correlation_min_points=10", lambda p: p.settings.diagnostics.correlation_min_points),
    ("settings.diagnostics.hot_path_share=0.2", lambda p: p.settings.diagnostics.hot_path_share),
    ("settings.diagnostics.gc_share=0.2", lambda p: p.settings.diagnostics.gc_share),
    ("settings.scaling.scale_in_latency_share=0.4", lambda p: p.settings.scaling.scale_in_latency_share),
])
def test_every_new_threshold_is_settable_with_p(tmp_path, override, read):
    _, value = parse_override(override)
    assert read(_params(tmp_path, override)) == value != read(_params(tmp_path))
