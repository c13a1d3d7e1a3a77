"""Load and stress tests (runbook Performance Testing): thresholds, stage analysis, safety.

No locust process here (see tests/integration for real runs): locust's outputs are
recorded below, and the plan's safety checks are pure.
"""
from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest

from perfbook.checks import loadtest
from perfbook.params import Params
from perfbook.sources import loadgen

# Recorded from a real `python -m locust ... --csv stage00` run (locust 2.47) against a local endpoint.
STATS_CSV = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,GET /api/products/:id,149,0,1,0.6491144295244297,0.2077389999612933,5.569972999978745,2.0,74.7404565144075,0.0,1,1,1,1,1,1,3,3,6,6,6
GET,GET /health,53,0,1,0.6941589622672253,0.23440900008608878,2.524659999949108,2.0,26.585531511836223,0.0,1,1,1,1,1,2,2,3,3,3,3
,Aggregated,202,0,1,0.6609330445510048,0.2077389999612933,5.569972999978745,2.0,101.32598802624372,0.0,1,1,1,1,1,1,2,3,6,6,6
"""
HISTORY_CSV = """Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,Total Min Response Time,Total Max Response Time,Total Average Content Size
1795731945,0,,Aggregated,0.000000,0.000000,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0,0,0.0,0,0,0
1795731946,5,,Aggregated,0.000000,0.000000,1,1,1,1,1,2,3,3,6,6,6,102,0,1,0.7741870490139816,0.2458559999922727,5.569972999978745,2.0
"""
FAILURES_CSV = """Method,Name,Error,Occurrences,First Seen,Last Seen
GET,GET /api/products/:id [429],HTTP 429 (rate limited),12,1795731946,1795731948
"""


def params(**load_test) -> Params:
    return Params.model_validate({"service": "demo-api", "targets": {"base_url": "http://127.0.0.1:18081"},
                                  "settings": {"load_test": load_test}})


def stats(stages: list[dict]) -> pd.DataFrame:
    """A run.stats()-shaped frame. Each stage: users, kind, and endpoints
    {name: (requests, failures, rps, p50, p95, p99)}; Aggregated is derived."""
    rows = []
    for st in stages:
        label = st.get("label", f"{st['users']} users")
        tot_n = tot_f = tot_rps = 0.0
        p95s = []
        for name, (n, f, rps, p50, p95, p99) in st["endpoints"].items():
            rows.append({"method": "GET", "name": name, "requests": n, "failures": f, "rps": rps, "fail_rps": 0,
                         "avg_ms": p50, "min_ms": 1, "max_ms": p99, "p50": p50, "p66": p50, "p75": p50, "p80": p95,
                         "p90": p95, "p95": p95, "p98": p99, "p99": p99, "p99.9": p99, "p100": p99})
            tot_n, tot_f, tot_rps = tot_n + n, tot_f + f, tot_rps + rps
            p95s.append(p95)
        agg = max(p95s)
        rows.append({"method": "", "name": "Aggregated", "requests": tot_n, "failures": tot_f, "rps": tot_rps,
                     "fail_rps": 0, "avg_ms": agg / 2, "min_ms": 1, "max_ms": agg * 2, "p50": agg / 2, "p66": agg / 2,
                     "p75": agg / 2, "p80": agg, "p90": agg, "p95": agg, "p98": agg, "p99": agg * 1.5,
                     "p99.9": agg * 2, "p100": agg * 2})
        for r in rows[-len(st["endpoints"]) - 1:]:
            r.update(stage=label, users=st["users"], kind=st.get("kind", "stage"), duration_s=60,
                     generator_cpu_percent=st.get("cpu", 20.0))
    return pd.DataFrame(rows)


ENDPOINTS = Params(service="x").endpoints
LT = Params(service="x").settings.load_test
#: How stages are judged by default: settings.load_test and thresholds.error_rate.warning.
JUDGE = {"settings": LT, "error_rate": Params(service="x").thresholds.error_rate.warning}
P, H = "GET /api/products", "GET /health"


def analyse(stages, expected=None):
    s = stats(stages)
    st, ep = loadtest.stage_table(s), loadtest.endpoint_table(s, ENDPOINTS, min_requests=LT.min_requests)
    return st, ep, loadtest.breaking_point_findings(st, ep, **JUDGE, service="demo-api", expected_users=expected)


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("text,metric,op,value,column", [
    ("p(95)<1000", "p95", "<", 1000, "p95_ms"),
    ("p(99) <= 2000", "p99", "<=", 2000, "p99_ms"),
    ("p(97)<1500", "p98", "<", 1500, "p98_ms"),      # the next percentile locust reports: stricter
    ("med<200", "p50", "<", 200, "p50_ms"),
    ("avg<300", "avg", "<", 300, "avg_ms"),
    ("failed<0.01", "failed", "<", 0.01, "failed_rate"),
    ("rate<0.05", "failed", "<", 0.05, "failed_rate"),
])
def test_k6_thresholds_parse(text, metric, op, value, column):
    th = loadtest.parse_threshold(text)
    assert (th.metric, th.op, th.value, th.column) == (metric, op, value, column)


@pytest.mark.parametrize("bad", ["p95<1000", "p(95)=1000", "latency<3", "p(0)<1", ""])
def test_bad_k6_thresholds_are_refused(bad):
    with pytest.raises(ValueError):
        loadtest.parse_threshold(bad)


def test_threshold_holds_or_fails_per_stage():
    st, _, _ = analyse([{"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500)}},
                        {"users": 50, "endpoints": {P: (2900, 60, 48, 400, 1200, 1800)}}])
    table, found = loadtest.threshold_findings(st, ["p(95)<1000", "failed<0.01"], expected_users=10)
    sev = {f.subject: f.severity for f in found}
    # both fail only at 50 users, 5x the expected load: information, not an alarm
    assert sev == {"p(95)<1000": "info", "failed<0.01": "info"}
    assert table[table["stage"] == "10 users"]["holds"].all()
    _, found = loadtest.threshold_findings(st, ["p(95)<1000"], expected_users=50)
    assert found[0].severity == "warning" and found[0].evidence["first_failing_stage"] == "50 users"


def test_load_mode_threshold_failure_is_a_warning():
    st, _, _ = analyse([{"users": 100, "kind": "load", "label": "load (100 users)",
                         "endpoints": {P: (3000, 0, 50, 500, 1400, 2000)}}])
    _, found = loadtest.threshold_findings(st, ["p(95)<1000"], mode="load")
    assert found[0].severity == "warning" and "the load test" in found[0].title


# --------------------------------------------------------------------------- stages


def test_breaking_point_on_latency_names_the_stage():
    _st, _ep, (judged, found) = analyse([
        {"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500), H: (60, 0, 1, 5, 10, 20)}},
        {"users": 50, "endpoints": {P: (3000, 0, 50, 120, 400, 600), H: (300, 0, 5, 5, 12, 20)}},
        {"users": 100, "endpoints": {P: (5400, 0, 90, 700, 1800, 2500), H: (540, 0, 9, 50, 150, 200)}},
        {"users": 200, "endpoints": {P: (5500, 0, 92, 1500, 4000, 6000), H: (550, 0, 9, 300, 900, 1000)}},
    ])
    f = found[0]
    assert (f.code, f.subject) == ("loadtest.breaking_point", "100 users")
    assert f.evidence["max_sustainable_users"] == 50
    assert f.evidence["max_sustainable_rps"] == pytest.approx(55)
    assert f.severity == "info"  # 10x the baseline: headroom
    assert "GET /api/products" in f.title and "1800 ms > target 1000 ms" in f.title
    assert judged["verdict"].tolist() == ["holds", "holds", "breaks", "breaks"]


def test_breaking_at_the_expected_load_is_critical_and_close_to_it_a_warning():
    stages = [{"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500)}},
              {"users": 15, "endpoints": {P: (900, 30, 15, 100, 300, 500)}}]   # 3.3 % errors
    _, _, (_, found) = analyse(stages)
    assert found[0].severity == "warning" and found[0].subject == "15 users"
    assert "error rate 3.3% > 1%" in found[0].title
    _, _, (_, found) = analyse(stages, expected=15)
    assert found[0].severity == "critical"


def test_breaking_at_twice_the_expected_load_is_a_warning_above_it_info():
    # the capacity lies below the breaking stage: a break at exactly 2x leaves less than 2x headroom
    def at(users: int) -> str:
        _, _, (_, found) = analyse([{"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500)}},
                                    {"users": users, "endpoints": {P: (900, 0, 15, 700, 1800, 2500)}}])
        assert found[0].subject == f"{users} users"
        return found[0].severity
    assert (at(20), at(21), at(50)) == ("warning", "info", "info")


def test_throughput_plateau_is_saturation_not_an_alarm():
    _, _, (judged, found) = analyse([
        {"users": 10, "endpoints": {P: (600, 0, 10, 100, 200, 300)}},
        {"users": 50, "endpoints": {P: (3000, 0, 50, 100, 250, 300)}},
        {"users": 100, "endpoints": {P: (3200, 0, 52, 200, 600, 900)}},      # +4 % for 2x users
    ])
    assert judged["verdict"].tolist() == ["holds", "holds", "saturated"]
    assert found[0].severity == "info" and found[0].subject == "100 users"
    assert "saturates at 100 users" in found[0].title


def test_no_breaking_point_is_ok_and_recovery_is_checked():
    stages = [{"users": 5, "endpoints": {P: (300, 0, 5, 10, 20, 30)}},
              {"users": 10, "endpoints": {P: (600, 0, 10, 10, 22, 30)}},
              {"users": 5, "kind": "recovery", "label": "recovery (5 users)", "endpoints": {P: (300, 0, 5, 10, 20, 30)}}]
    _, _, (_, found) = analyse(stages)
    assert found[0].severity == "ok" and found[0].subject == "none"
    assert found[0].evidence["recovered"] is True


def test_no_recovery_after_the_peak_raises_the_severity():
    stages = [{"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500)}},
              {"users": 100, "endpoints": {P: (3000, 0, 50, 900, 2500, 4000)}},
              {"users": 10, "kind": "recovery", "label": "recovery (10 users)",
               "endpoints": {P: (200, 0, 3, 900, 2200, 3000)}}]
    _, _, (_, found) = analyse(stages)
    assert found[0].subject == "100 users"
    assert found[0].severity == "warning"      # info (10x headroom) raised: it did not recover
    assert found[0].evidence["recovered"] is False
    assert "did NOT recover" in found[0].title


def test_rejections_are_counted_apart_from_errors_and_latency():
    s = stats([{"users": 10, "endpoints": {"GET /api/products/:id": (20, 0, 2, 900, 1500, 1600),
                                           "GET /api/products/:id [429]": (80, 80, 8, 2, 3, 4)}}])
    st = loadtest.stage_table(s)
    assert st.iloc[0]["rejected_rate"] == pytest.approx(0.8)
    assert st.iloc[0]["error_rate"] == pytest.approx(0.0)
    assert st.iloc[0]["failed_rate"] == pytest.approx(0.8)
    assert st.iloc[0]["served_rps"] == pytest.approx(2.0)
    ep = loadtest.endpoint_table(s, ENDPOINTS, min_requests=LT.min_requests)
    assert ep["endpoint"].tolist() == ["GET /api/products/:id"]     # the served requests, held to the target
    assert bool(ep.iloc[0]["over_target"]) and ep.iloc[0]["rejected"] == 80
    _, found = loadtest.threshold_findings(st, ["failed<0.01"])
    assert "HTTP 429" in found[0].title


def test_too_few_requests_are_not_judged():
    s = stats([{"users": 1, "endpoints": {P: (3, 0, 1, 2000, 5000, 5000)}}])
    assert not loadtest.endpoint_table(s, ENDPOINTS, min_requests=LT.min_requests)["over_target"].any()


def test_stop_rule_stops_on_latency_not_on_plateau():
    rule = loadtest.stop_rule(ENDPOINTS, **JUDGE)
    s = stats([{"users": 10, "endpoints": {P: (600, 0, 10, 700, 1800, 2500)}}])
    res = loadgen.StageResult(loadgen.Stage("10 users", 10, 60), s.drop(columns=["stage", "users", "kind"]),
                              pd.DataFrame(), pd.DataFrame(), pd.Timestamp.now(tz="UTC"), pd.Timestamp.now(tz="UTC"),
                              60, 3, 0)
    assert "p95 of GET /api/products" in rule(res)
    ok = stats([{"users": 10, "endpoints": {P: (600, 0, 10, 100, 200, 300)}}])
    res.stats = ok.drop(columns=["stage", "users", "kind"])
    assert rule(res) is None


# --------------------------------------------------------------------------- plan and safety


def test_plan_follows_the_params_stages_and_adds_recovery():
    plan = loadgen.plan_from_params(params(stages=[{"users": 10, "duration": "30s"}, {"users": 50, "duration": "30s"}],
                                           recovery="10s"))
    assert plan.refused is None
    assert [(s.label, s.users, s.duration, s.kind) for s in plan.stages] == [
        ("10 users", 10, 30, "stage"), ("50 users", 50, 30, "stage"), ("recovery (10 users)", 10, 10, "recovery")]
    assert plan.expected_users == 10


def test_notebook_knobs_override_the_stages():
    plan = loadgen.plan_from_params(params(), stages="5,10,20,40", stage_duration="5s", recovery="5s")
    assert [s.users for s in plan.stages] == [5, 10, 20, 40, 5]
    assert plan.total_duration == 25
    assert loadgen.parse_stages("10x30s, 50x1m") == [(10, 30.0), (50, 60.0)]
    with pytest.raises(ValueError):
        loadgen.parse_stages("5,10")  # no duration
    bad = loadgen.plan_from_params(params(), stages="5,ten", stage_duration="5s")
    assert bad.refused.startswith("invalid load-test settings") and loadgen.run(bad).stages == []
    assert loadtest.safety_findings(bad)[0].severity == "error"


def test_the_default_runbook_mix_is_named_after_params_endpoints():
    plan = loadgen.plan_from_params(params())
    assert [(m.path, m.name) for m in plan.mix] == [
        ("/api/products?limit=20", "GET /api/products"), ("/api/products/1", "GET /api/products/:id"),
        ("/health", "GET /health")]
    with pytest.raises(ValueError):
        loadgen.parse_mix({"GET http://evil.example/x": 1})
    with pytest.raises(ValueError):
        loadgen.parse_mix({"GET //evil.example/x": 1})


@pytest.mark.parametrize("url,allowed,opt_in,ok", [
    ("http://127.0.0.1:8080", ["127.0.0.1", "localhost", "::1"], [], True),
    ("http://LOCALHOST:8080/x", ["127.0.0.1", "localhost", "::1"], [], True),
    ("http://[::1]:8080", ["127.0.0.1", "localhost", "::1"], [], True),
    ("http://127.0.0.2:8080", ["127.0.0.1", "localhost", "::1"], [], False),   # loopback, but not listed
    ("https://api.example.com", ["127.0.0.1"], [], False),
    ("https://staging.example.com", ["127.0.0.1"], ["staging.example.com"], True),
    ("ftp://127.0.0.1/", ["127.0.0.1"], [], False),
])
def test_allow_list_is_literal(url, allowed, opt_in, ok):
    assert (loadgen.host_allowed(url, allowed, opt_in) is None) is ok


def test_refused_plans_send_nothing():
    plan = loadgen.plan_from_params(params(), host="https://ai-affiliate-empire.fly.dev")
    assert plan.refused and "not in targets.allowed_hosts" in plan.refused
    run = loadgen.run(plan)
    assert run.refused == plan.refused and run.stages == []
    with pytest.raises(loadgen.LoadTestRefused):
        loadgen.run_stage(plan, plan.stages[0], "/nonexistent")
    found = loadtest.safety_findings(plan)
    assert [(f.code, f.severity) for f in found] == [("loadtest.refused", "error")]
    assert "Nothing was sent" in found[0].recommendation


def test_opting_in_a_host_in_the_params_allows_it():
    plan = loadgen.plan_from_params(params(allow_hosts=["staging.example.com"]), host="https://staging.example.com")
    assert plan.refused is None


def test_caps_refuse_knobs_over_max_users_or_duration():
    small = params(max_users=50, stages=[{"users": 10, "duration": "5s"}], recovery=0, max_duration="60s")
    assert "max_users" in loadgen.plan_from_params(small, stages="10,100", stage_duration="5s").refused
    assert "max_duration" in loadgen.plan_from_params(small, stages="10,20", stage_duration="40s").refused
    assert loadgen.plan_from_params(params(mode="off")).refused.startswith("settings.load_test.mode is off")
    off = loadgen.plan_from_params(params(mode="off"))
    assert loadtest.safety_findings(off) == [] and "mode is off" in loadgen.run(off).describe()


def test_no_base_url_is_refused():
    p = Params.model_validate({"service": "x"})
    assert "no target" in loadgen.plan_from_params(p).refused


def test_short_stages_spawn_faster():
    stage = loadgen.Stage("40 users", 40, 5)
    assert loadgen.spawn_rate_for(stage, 10) == pytest.approx(32.0)  # 40 users within 1.25 s
    assert loadgen.spawn_rate_for(loadgen.Stage("10 users", 10, 60), 50) == 50


def test_locust_command_is_headless_bounded_and_never_imports_locust_here():
    plan = loadgen.plan_from_params(params(), stages="5", stage_duration="5s", recovery=0)
    cmd = loadgen.locust_command(plan, plan.stages[0], "/tmp/x/stage00")
    assert cmd[1:3] == ["-m", "locust"] and "--headless" in cmd
    assert cmd[cmd.index("--host") + 1] == "http://127.0.0.1:18081"
    assert cmd[cmd.index("-t") + 1] == "5s" and cmd[cmd.index("-u") + 1] == "5"
    assert "--reset-stats" in cmd and "--csv" in cmd and "--only-summary" in cmd
    config = json.loads(cmd[cmd.index("--perfbook-config") + 1])
    assert config["mix"][0]["name"] == "GET /api/products"
    master = loadgen.locust_command(plan, plan.stages[0], "/tmp/x/s", role="master", master_port=5557, workers=2)
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "2"
    assert master[master.index("--master-bind-host") + 1] == "127.0.0.1"
    worker = loadgen.locust_command(plan, plan.stages[0], "/tmp/x/s", role="worker", master_port=5557)
    assert "--worker" in worker and "--host" not in worker
    assert "locust" not in sys.modules and "gevent" not in sys.modules


def test_locust_csv_files_are_read_when_the_summary_is_missing(tmp_path):
    prefix = tmp_path / "stage00"
    (tmp_path / "stage00_stats.csv").write_text(STATS_CSV)
    (tmp_path / "stage00_stats_history.csv").write_text(HISTORY_CSV)
    (tmp_path / "stage00_failures.csv").write_text(FAILURES_CSV)
    stats_, errors, source = loadgen._read_stats(str(prefix))
    assert source == "csv"
    agg = stats_[stats_["name"] == "Aggregated"].iloc[0]
    assert (agg["requests"], agg["p95"], round(agg["rps"], 1)) == (202, 1, 101.3)
    assert errors.iloc[0]["occurrences"] == 12
    hist = loadgen._read_history(str(tmp_path / "stage00_stats_history.csv"))
    assert hist["users"].tolist() == [0, 5] and math.isnan(hist["p95_ms"].iloc[0])


def test_the_summary_written_by_the_locustfile_is_preferred(tmp_path):
    summary = {"entries": [{"method": "GET", "name": "GET /health", "requests": 10, "failures": 1, "rps": 5.0,
                            "fail_rps": 0.5, "avg_ms": 3, "min_ms": 1, "max_ms": 9, "p50": 2, "p95": 8, "p99": 9}],
               "total": {"method": "", "name": "Total", "requests": 10, "failures": 1, "rps": 5.0, "p95": 8},
               "errors": [{"method": "GET", "name": "GET /health", "error": "HTTP 500", "occurrences": 1}]}
    (tmp_path / "s_summary.json").write_text(json.dumps(summary))
    (tmp_path / "s_stats.csv").write_text(STATS_CSV)
    stats_, errors, source = loadgen._read_stats(str(tmp_path / "s"))
    assert source == "summary"
    assert stats_["name"].tolist() == ["GET /health", "Aggregated"]
    assert errors.iloc[0]["error"] == "HTTP 500"


def test_stress_figures_are_drawn_with_the_breaking_point():
    from perfbook.plots import capacity as plots

    st, ep, _ = analyse([{"users": 10, "endpoints": {P: (600, 0, 10, 100, 300, 500)}},
                         {"users": 50, "endpoints": {P: (3000, 0, 50, 900, 1800, 2500)}},
                         {"users": 10, "kind": "recovery", "label": "recovery (10 users)",
                          "endpoints": {P: (600, 0, 10, 100, 300, 500)}}])
    brk = loadtest.breaking_stage(st, ep, **JUDGE)
    assert brk["users"] == 50
    for fig in (plots.stress_latency(st, ep, brk), plots.stress_throughput(st, brk)):
        assert fig is not None and fig.axes[0].get_title()
    # the history plot takes loadgen._read_history's columns, plus the stage
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=4, freq="1s", tz="UTC"),
                          "users": [0, 10, 10, 10], "rps": [0, 9, 10, 10], "fail_rps": 0,
                          "p50_ms": [None, 3, 3, 3], "p95_ms": [None, 9, 8, 8], "p99_ms": None,
                          "requests_total": [0, 9, 19, 29], "stage": "10 users"})
    assert plots.load_timeline(frame) is not None
    assert plots.stress_latency(loadtest.stage_table(pd.DataFrame()), None) is None


def _idle_run(users_sent: dict[int, int]) -> pd.DataFrame:
    """run.stats() of a stress test whose generator sent nothing in some stages: locust's
    Aggregated row with 0 requests and N/A percentiles (seen on a starved 2-core machine:
    all five 5-s stages empty, and the breaking-point check crashed on float(None))."""
    rows = []
    for users, n in users_sent.items():
        p = None if n == 0 else 20.0
        rows.append({"method": "", "name": "Aggregated", "requests": n, "failures": 0, "rps": n / 60, "fail_rps": 0,
                     "avg_ms": p or 0, "min_ms": p or 0, "max_ms": p or 0, **{k: p for k in (
                         "p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99", "p99.9", "p100")},
                     "stage": f"{users} users", "users": users, "kind": "stage", "duration_s": 5,
                     "generator_cpu_percent": 15.0})
        if n:
            rows.append({**rows[-1], "method": "GET", "name": P})
    rows.append({**rows[0], "stage": "recovery (5 users)", "kind": "recovery"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sent", [{5: 0, 10: 0, 20: 0}, {5: 0, 10: 300, 20: 600}])
def test_stages_without_a_request_give_no_verdict_but_say_so(sent):
    s = _idle_run(sent)
    st, ep = loadtest.stage_table(s), loadtest.endpoint_table(s, ENDPOINTS, min_requests=LT.min_requests)
    judged, found = loadtest.breaking_point_findings(st, ep, **JUDGE, service="demo-api")
    [f] = found
    assert f.code == "loadtest.no_requests" and f.severity == "error"
    assert f.evidence["idle_stages"] == [f"{u} users" for u, n in sent.items() if n == 0]
    assert "5 users" in f.title and set(judged["verdict"]) <= {"no requests", "not judged"}
    _, ths = loadtest.threshold_findings(st, ["p(95)<1000", "failed<0.01"])
    assert len(ths) == 2 and not [t for t in ths if t.severity == "ok" and "with requests" not in t.title]


def test_plots_of_a_run_without_requests_do_not_break_the_notebook():
    """No stage served a request: no latency plot (a log axis of nothing raised at draw time,
    after the cell, as 'Data cannot be log-scaled'); the throughput plot shows the zeros."""
    import matplotlib

    matplotlib.use("Agg")
    from perfbook.plots import capacity as plots

    s = _idle_run({5: 0, 10: 0})
    st, ep = loadtest.stage_table(s), loadtest.endpoint_table(s, ENDPOINTS, min_requests=LT.min_requests)
    assert plots.stress_latency(st, ep, None) is None
    assert plots.stress_throughput(st, None) is not None
    partly = _idle_run({5: 0, 10: 300})
    assert plots.stress_latency(loadtest.stage_table(partly), loadtest.endpoint_table(partly, ENDPOINTS, min_requests=LT.min_requests), None) is not None
