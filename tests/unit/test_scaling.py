"""Horizontal scaling (runbook Issue 4): the rules, the trend test, the projection, the commands."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from perfbook.checks import balance, scaling
from perfbook.params import Endpoint, Params, Scaling
from perfbook.sources import flytoml

T0 = pd.Timestamp("2026-01-01T12:00:00Z")
ENDPOINTS = Params(service="x").endpoints


def frame(per_instance: dict[str, dict[str, list[float]]], routes: dict[tuple[str, str], list[float]] | None = None,
          step_s: int = 15) -> pd.DataFrame:
    """Tidy series: {instance: {measure: values}} plus {(method, route): p95 values}."""
    rows = []
    for inst, measures in per_instance.items():
        for measure, values in measures.items():
            for k, v in enumerate(values):
                rows.append({"instance": inst, "measure": measure, "method": np.nan, "route": np.nan,
                             "timestamp": T0 + pd.Timedelta(seconds=k * step_s), "value": float(v)})
    for (method, route), values in (routes or {}).items():
        for k, v in enumerate(values):
            rows.append({"instance": np.nan, "measure": "route_p95", "method": method, "route": route,
                         "timestamp": T0 + pd.Timedelta(seconds=k * step_s), "value": float(v)})
    return pd.DataFrame(rows)


def decide(series: pd.DataFrame, settings: Scaling | None = None, fly=None, spacing_s: float = 0.0):
    settings = settings or Scaling()
    summary = balance.instance_summary(series)
    table, info = scaling.scaling_rules(series, summary, ENDPOINTS, settings, spacing_s=spacing_s, fly=fly)
    return table, info, scaling.scaling_findings(info, service="ai-affiliate-empire")


def by_code(findings):
    return {f.code: f for f in findings}


def test_mann_kendall_sees_a_steady_rise_and_not_noise():
    rng = np.random.default_rng(7)
    rising = np.linspace(100, 160, 40) + rng.normal(0, 3, 40)
    flat = 100 + rng.normal(0, 3, 40)
    assert scaling.mann_kendall(rising)[2] < 0.001
    assert scaling.mann_kendall(flat)[2] > 0.05
    assert scaling.mann_kendall([1, 2, 3])[2] == 1.0  # too few points


def test_theil_sen_ignores_an_outlier():
    t = np.arange(10.0)
    y = 2 * t + 5
    y[4] = 500
    slope, intercept = scaling.theil_sen(t, y)
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(5.0)


def test_traffic_trend_thins_overlapping_rate_windows():
    # 1 s steps over a 60 s window of rate[30s]: only 2 independent points, no verdict
    ts = [T0 + pd.Timedelta(seconds=s) for s in range(60)]
    total = pd.DataFrame({"timestamp": ts, "value": np.linspace(10, 30, 60)})
    trend = {"p_value": Scaling().trend_p_value, "min_growth": Scaling().trend_min_growth}
    assert scaling.traffic_trend(total, spacing_s=30, **trend)["rising"] is False
    assert scaling.traffic_trend(total, spacing_s=0, **trend)["rising"] is True


def test_scale_out_when_cpu_is_high_on_all_instances_and_latency_over_target():
    cpu = [82, 85, 88, 84] * 5
    series = frame({"a:1": {"rps": [100] * 20, "cpu": cpu}, "b:1": {"rps": [100] * 20, "cpu": cpu}},
                   routes={("GET", "/api/products"): [1.4] * 20})
    table, info, found = decide(series)
    out = by_code(found)["scaling.scale_out"]
    assert out.severity == "critical"
    # 200 req/s over 2 instances at ~85 % CPU: 100/85*70 = 82 req/s per instance at 70 % -> 3 instances
    assert info["capacity_per_instance_rps"] == pytest.approx(200 / (2 * np.mean(cpu)) * 70)
    assert out.evidence["scale_to"] == math.ceil(200 / info["capacity_per_instance_rps"]) == 3
    assert "flyctl scale count 3 --app ai-affiliate-empire" in out.recommendation
    assert "min_machines = 3" in out.recommendation
    assert table["holds"].tolist()[:2] == [True, True]
    assert by_code(found)["scaling.scale_in"].severity == "ok"


def test_cpu_high_on_one_instance_only_is_not_the_runbooks_rule():
    series = frame({"a:1": {"rps": [150] * 10, "cpu": [90] * 10}, "b:1": {"rps": [50] * 10, "cpu": [30] * 10}})
    _, info, found = decide(series)
    assert info["cpu_all"] is False
    assert by_code(found)["scaling.scale_out"].severity == "ok"


def test_latency_over_target_without_cpu_pressure_is_not_a_reason_to_scale():
    series = frame({"a:1": {"rps": [20] * 10, "cpu": [20] * 10}, "b:1": {"rps": [20] * 10, "cpu": [22] * 10}},
                   routes={("GET", "/api/products/{id}"): [1.9] * 10})
    _, info, found = decide(series)
    assert info["latency_above"] == ["GET /api/products/:id"]  # Starlette's {id} matched to :id
    out = by_code(found)["scaling.scale_out"]
    assert out.severity == "ok" and "CPU is not the limit" in out.title


def test_rising_traffic_beyond_capacity_scales_out():
    rps = list(np.linspace(60, 120, 40))
    cpu = [r / 120 * 65 for r in rps]  # CPU follows traffic, just under 70 % at the end
    series = frame({"a:1": {"rps": rps, "cpu": cpu}, "b:1": {"rps": rps, "cpu": cpu}})
    _, info, found = decide(series, spacing_s=30)
    assert info["trend"]["rising"] is True
    out = by_code(found)["scaling.scale_out"]
    assert out.severity in ("warning", "info")
    assert out.evidence["scale_to"] > 2


def test_clearly_over_provisioned_fleet_scales_in_to_the_minimum():
    series = frame({f"i{k}:1": {"rps": [10] * 10, "cpu": [6] * 10} for k in range(5)},
                   routes={("GET", "/api/products"): [0.1] * 10, ("GET", "/health"): [0.01] * 10})
    _, _info, found = decide(series)
    f = by_code(found)["scaling.scale_in"]
    assert f.severity == "info"
    assert f.evidence["scale_to"] == 2
    assert "flyctl scale count 2" in f.recommendation
    assert by_code(found)["scaling.scale_out"].severity == "ok"


def test_no_scale_in_at_the_minimum_or_with_fly_min_machines():
    series = frame({"a:1": {"rps": [5] * 10, "cpu": [3] * 10}, "b:1": {"rps": [5] * 10, "cpu": [3] * 10},
                    "c:1": {"rps": [5] * 10, "cpu": [3] * 10}}, routes={("GET", "/health"): [0.01] * 10})
    fly = flytoml.parse("[scaling]\nmin_machines = 3\nmax_machines = 6\n")
    _, info, found = decide(series, fly=fly)
    assert info["minimum"] == 3
    assert {f.code: f.severity for f in found} == {"scaling.scale_out": "ok", "scaling.scale_in": "ok"}


def test_below_the_minimum_for_availability_scales_out():
    series = frame({"a:1": {"rps": [5] * 10, "cpu": [10] * 10}})
    _, _, found = decide(series)
    out = by_code(found)["scaling.scale_out"]
    assert out.severity == "warning" and out.evidence["scale_to"] == 2


def test_healthy_fleet_raises_nothing():
    series = frame({"a:1": {"rps": [30] * 20, "cpu": [35] * 20}, "b:1": {"rps": [31] * 20, "cpu": [36] * 20}},
                   routes={("GET", "/api/products"): [0.2] * 20})
    _, _, found = decide(series)
    assert all(f.severity == "ok" for f in found)


def test_route_latency_ignores_routes_that_are_not_params_endpoints():
    series = frame({}, routes={("GET", "/metrics"): [5.0] * 3, ("GET", "/health"): [0.05] * 3})
    lat = scaling.route_latency(series, [Endpoint(method="GET", route="/health", probe_path="/health",
                                                  targets={"p50": "0.1s", "p95": "0.2s", "p99": "0.5s"})],
                                well_within=Scaling().scale_in_latency_share)
    assert lat["endpoint"].tolist() == ["GET /health"]
    assert bool(lat["well_within"].iloc[0]) is True
