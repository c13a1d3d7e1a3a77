"""Load balancing (runbook Issue 3): imbalance measures, the hot instance, fly.toml limits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfbook.checks import balance
from perfbook.params import Balance, Metrics, Scaling, Thresholds
from perfbook.sources import SourceError, SourceUnreachable, flytoml
from perfbook.sources.prometheus import parse_exposition
from perfbook.sources.window_metrics import instance_query

#: The params' defaults for the balance check (settings.balance, the CPU levels, the scaling target).
DEFAULTS = {"settings": Balance(), "cpu": Thresholds().cpu_percent, "target_cpu": Scaling().target_cpu_percent}

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"
T0 = pd.Timestamp("2026-01-01T12:00:00Z")

RUNBOOK_FLY_TOML = """
app = "ai-affiliate-empire"
primary_region = "sjc"

[[services]]
  internal_port = 3000
  protocol = "tcp"

  [[services.ports]]
    handlers = ["http"]
    port = 80

  [[services.ports]]
    handlers = ["tls", "http"]
    port = 443

  [services.concurrency]
    type = "connections"
    hard_limit = 250  # Adjust based on capacity
    soft_limit = 200

[scaling]
  min_machines = 2
  max_machines = 10

[[metrics]]
  type = "cpu"
  target = 70

[[metrics]]
  type = "memory"
  target = 80

[[metrics]]
  type = "requests"
  target = 1000  # requests per second
"""


def make_series(rates: dict[str, list[float]], cpu: dict[str, list[float]] | None = None,
                step_s: int = 15, conns: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """A tidy per-instance frame as pb.instance_series returns it."""
    rows = []
    for measure, data in (("rps", rates), ("cpu", cpu or {}), ("connections", conns or {})):
        for inst, values in data.items():
            for k, v in enumerate(values):
                rows.append({"instance": inst, "measure": measure, "method": np.nan, "route": np.nan,
                             "timestamp": T0 + pd.Timedelta(seconds=k * step_s), "value": float(v)})
    for inst, values in rates.items():
        for k, _ in enumerate(values):
            ts = T0 + pd.Timedelta(seconds=k * step_s)
            rows.append({"instance": inst, "measure": "p95", "method": np.nan, "route": np.nan, "timestamp": ts, "value": 0.2})
            rows.append({"instance": inst, "measure": "latency_mean", "method": np.nan, "route": np.nan, "timestamp": ts, "value": 0.05})
            rows.append({"instance": inst, "measure": "memory", "method": np.nan, "route": np.nan, "timestamp": ts, "value": 200e6})
    return pd.DataFrame(rows)


def test_imbalance_of_the_runbooks_example():
    # flyctl status: 85 % next to 30 %
    mom, cv = balance.imbalance(pd.Series([85.0, 30.0]))
    assert mom == pytest.approx(85 / 57.5)
    assert cv == pytest.approx(27.5 / 57.5)


def test_imbalance_needs_two_instances_and_load():
    assert np.isnan(balance.imbalance(pd.Series([10.0]))[0])
    assert np.isnan(balance.imbalance(pd.Series([0.0, 0.0]))[1])


def test_uneven_load_names_the_hot_instance_and_since_when():
    n = 20
    hot = [5.0] * 8 + [16.0] * 12          # becomes hot at point 8
    cold = [5.0] * 8 + [4.0] * 12
    series = make_series({"127.0.0.1:18081": hot, "127.0.0.1:18082": cold},
                         cpu={"127.0.0.1:18081": [20] * 8 + [75] * 12, "127.0.0.1:18082": [20] * n})
    summary = balance.instance_summary(series, memory_limit_bytes=512 * 1024 ** 2)
    table, found = balance.uneven_load(series, summary, service="demo-api", **DEFAULTS)
    assert [f.code for f in found] == ["balance.uneven"]
    f = found[0]
    assert f.subject == "127.0.0.1:18081"
    assert f.severity in ("warning", "critical")
    assert f.evidence["hot_since"] == (T0 + pd.Timedelta(seconds=8 * 15)).isoformat()
    assert f.evidence["rps_max_over_mean"] > 1.3
    assert "flyctl scale count" in f.recommendation
    assert set(table["verdict"]) >= {"uneven"}


def test_even_load_is_ok():
    series = make_series({"a:1": [10, 11, 10, 9] * 5, "b:1": [10, 9, 10, 11] * 5},
                         cpu={"a:1": [40] * 20, "b:1": [42] * 20})
    summary = balance.instance_summary(series)
    _, found = balance.uneven_load(series, summary, **DEFAULTS)
    assert [(f.code, f.severity) for f in found] == [("balance.uneven", "ok")]


def test_a_short_spike_is_not_imbalance():
    # hot for 2 points of 20: under settings.balance.min_hot_share of the window
    a = [10.0] * 18 + [60.0, 60.0]
    b = [10.0] * 20
    series = make_series({"a:1": a, "b:1": b})
    _, found = balance.uneven_load(series, balance.instance_summary(series), **DEFAULTS)
    assert found[0].severity == "ok"


def test_idle_traffic_and_single_instance_are_not_judged():
    idle = make_series({"a:1": [0.1] * 5, "b:1": [0.0] * 5})
    _, found = balance.uneven_load(idle, balance.instance_summary(idle), **DEFAULTS)
    assert found[0].severity == "ok" and "Too little traffic" in found[0].title
    one = make_series({"a:1": [50.0] * 5})
    _, found = balance.uneven_load(one, balance.instance_summary(one), **DEFAULTS)
    assert found[0].severity == "info" and found[0].evidence["instances"] == 1


def test_cpu_imbalance_alone_counts_when_the_fleet_is_busy():
    series = make_series({"a:1": [10] * 10, "b:1": [10] * 10}, cpu={"a:1": [85] * 10, "b:1": [30] * 10})
    _, found = balance.uneven_load(series, balance.instance_summary(series), **DEFAULTS)
    assert found[0].severity == "critical" and found[0].subject == "a:1"
    assert found[0].evidence["measure"] == "cpu"


def test_hot_since_tolerates_one_cold_point():
    series = make_series({"a:1": [5, 5, 20, 20, 5, 20, 20, 20], "b:1": [5] * 8})
    since, share = balance.hot_since(series, "a:1", "rps", ratio=Balance().max_over_mean)
    assert since == T0 + pd.Timedelta(seconds=2 * 15)
    assert share == pytest.approx(5 / 8)


def test_concurrency_from_littles_law_without_the_gauge():
    series = make_series({"a:1": [100.0] * 4, "b:1": [100.0] * 4})
    summary = balance.instance_summary(series)
    # 100 req/s x 0.05 s mean latency = 5 in flight
    assert summary["concurrency_mean"].tolist() == [pytest.approx(5.0)] * 2
    assert summary["concurrency_from"].iloc[0].startswith("req/s x mean latency")


def test_concurrency_at_the_hard_limit_is_a_warning():
    fly = flytoml.parse(RUNBOOK_FLY_TOML)
    series = make_series({"a:1": [10.0] * 4, "b:1": [10.0] * 4},
                         conns={"a:1": [120, 260, 240, 200], "b:1": [50, 210, 60, 50]})
    summary = balance.instance_summary(series)
    table, found = balance.concurrency_vs_limits(summary, fly)
    by = {f.subject: f.severity for f in found}
    assert by == {"a:1": "warning", "b:1": "info"}
    assert set(table["hard_limit"]) == {250}


def test_fly_toml_of_the_runbook():
    fly = flytoml.parse(RUNBOOK_FLY_TOML, "deploy/fly.production.toml")
    assert fly.app == "ai-affiliate-empire"
    svc = fly.concurrency
    assert (svc.internal_port, svc.concurrency_type, svc.soft_limit, svc.hard_limit) == (3000, "connections", 200, 250)
    assert svc.ports == [80, 443]
    assert (fly.min_machines, fly.max_machines) == (2, 10)
    assert fly.scaling_targets == {"cpu": 70.0, "memory": 80.0, "requests": 1000.0}
    assert "soft_limit = 200" in flytoml.describe(fly)


def test_fly_toml_http_service_and_metrics_endpoint():
    fly = flytoml.parse("""
app = "x"
[http_service]
  internal_port = 8080
  min_machines_running = 1
  [http_service.concurrency]
    type = "requests"
    soft_limit = 20
    hard_limit = 25
[metrics]
  port = 9091
  path = "/metrics"
[[vm]]
  cpus = 2
  memory = "1gb"
""")
    assert fly.concurrency.concurrency_type == "requests" and fly.concurrency.soft_limit == 20
    assert fly.min_machines_running == 1
    assert fly.metrics_endpoint == {"port": 9091, "path": "/metrics"}
    assert (fly.vm_cpus, fly.vm_memory) == (2, "1gb")


def test_fly_toml_missing_or_broken_is_a_source_problem(tmp_path):
    with pytest.raises(SourceUnreachable):
        flytoml.read(tmp_path / "nope.toml")
    bad = tmp_path / "fly.toml"
    bad.write_text("[services\n")
    with pytest.raises(SourceError):
        flytoml.read(bad)
    assert flytoml.read_optional(None) is None
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "fly.toml").write_text(RUNBOOK_FLY_TOML)
    assert flytoml.read("deploy/fly.toml", base=tmp_path).app == "ai-affiliate-empire"


def test_instance_query_tags_every_measure_and_keeps_the_selector_placeholder():
    q = instance_query(Metrics(), 60)
    for measure in ("rps", "err_rps", "cpu", "memory", "p95", "latency_mean", "connections", "route_p95", "route_rps"):
        assert f'"measure", "{measure}"' in q
    assert q.count("__SEL__") >= 9
    assert "rate(process_cpu_seconds_total{__SEL__}[60s])" in q


def test_tidy_series_renames_labels_and_drops_nan():
    m = Metrics(instance_label="machine")
    raw = pd.DataFrame({"machine": ["a", "a", None], "measure": ["rps", "p95", "route_p95"],
                        "route": [None, None, "/x"], "method": [None, None, "GET"],
                        "timestamp": [T0] * 3, "value": [1.0, float("nan"), 0.3]})
    out = balance.tidy_series(raw, m)
    assert list(out.columns) == ["instance", "measure", "method", "route", "timestamp", "value"]
    assert out["measure"].tolist() == ["rps", "route_p95"]


def test_series_from_a_real_prom_client_scrape():
    text = (FIXTURES / "metrics.txt").read_text()
    start = 1795731673
    a = parse_exposition(text, instance="127.0.0.1:18081", scraped_at=pd.Timestamp(start + 100, unit="s", tz="UTC"))
    b = parse_exposition(text, instance="127.0.0.1:18082", scraped_at=pd.Timestamp(start + 400, unit="s", tz="UTC"))
    series = balance.series_from_scrape(pd.concat([a, b], ignore_index=True), Metrics())
    rps = series[series["measure"] == "rps"].set_index("instance")["value"]
    # 92 requests since start: over 100 s and over 400 s
    assert rps["127.0.0.1:18081"] == pytest.approx(92 / 100)
    assert rps["127.0.0.1:18082"] == pytest.approx(92 / 400)
    assert set(series["measure"]) >= {"rps", "cpu", "memory", "p95", "route_p95", "route_rps"}
    summary = balance.instance_summary(series)
    assert summary.iloc[0]["instance"] == "127.0.0.1:18081"
    assert summary["share"].sum() == pytest.approx(1.0)


def test_series_from_picks_the_reading_by_kind():
    m = Metrics()
    raw = pd.DataFrame({"instance": ["a"], "measure": ["rps"], "timestamp": [T0], "value": [2.0]})
    assert balance.series_from("prometheus", raw, m)["value"].tolist() == [2.0]
    assert balance.series_from("snapshot", pd.DataFrame(), m).empty


class _FakeWindow:
    def __init__(self, kind, frame):
        self.answer = (kind, frame)

    def instance_frame(self, m):
        return self.answer


def test_instance_series_asks_the_window_and_reads_its_answer():
    from perfbook import notebook as pb

    raw = pd.DataFrame({"instance": ["a"], "measure": ["rps"], "timestamp": [T0], "value": [2.0]})
    out = pb.instance_series(_FakeWindow("prometheus", raw), Metrics())
    assert out["measure"].tolist() == ["rps"]


def test_instance_figures_are_drawn_with_the_hot_instance():
    from perfbook.plots import capacity as plots

    series = make_series({"a:1": [10, 12, 30, 31], "b:1": [10, 9, 5, 4]}, cpu={"a:1": [20, 22, 70, 72], "b:1": [20] * 4})
    assert plots.instances_over_time(series, ("rps", "cpu", "p95"), hot="a:1") is not None
    assert plots.instance_bars(balance.instance_summary(series), hot="a:1") is not None
    assert plots.cpu_vs_target(series, 70) is not None
    assert plots.instances_over_time(series.iloc[0:0]) is None


class _RecordingClient:
    def __init__(self):
        self.asked = []

    def render(self, template):
        return template.replace("__SEL__", 'app="demo"')

    def query_range(self, expr, start, end, step):
        self.asked.append((expr, step))
        return pd.DataFrame({"instance": ["a"], "measure": ["rps"], "timestamp": [T0], "value": [3.0]})


def test_window_metrics_instance_frame_runs_the_one_range_query():
    from datetime import timedelta

    from perfbook.params import Params
    from perfbook.sources.window_metrics import WindowMetrics

    client = _RecordingClient()
    end = T0.to_pydatetime()
    wm = WindowMetrics(Params(service="t"), end - timedelta(minutes=10), end, client=client)
    kind, frame = wm.instance_frame(Metrics())
    assert kind == "prometheus" and len(client.asked) == 1
    expr, step = client.asked[0]
    assert 'app="demo"' in expr and "__SEL__" not in expr and step == wm.step
    assert wm.queries[-1][0].startswith("per-instance load")
    assert balance.series_from(kind, frame, Metrics())["value"].tolist() == [3.0]
    with pytest.raises(SourceUnreachable):   # no source configured at all
        WindowMetrics(Params(service="t"), end - timedelta(minutes=10), end).instance_frame(Metrics())
