"""perfbook's own alert evaluation (checks/alerts.py): Prometheus's `for` semantics at
the boundaries, the findings, the exported rules file, and the comparison with the
server's ALERTS. Pure: no server (promtool tests are in tests/integration)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from perfbook.checks import alerts
from perfbook.params import AlertRule, Params
from perfbook.promql import number_literal

T0 = pd.Timestamp("2025-10-31T12:00:00Z")


def params(selector='{job="demo-api"}', **monitoring):
    data = {"service": "demo-api", "targets": {"prometheus": {"url": "http://127.0.0.1:9090", "selector": selector}}}
    if monitoring:
        data["settings"] = {"monitoring": monitoring}
    return Params.model_validate(data)


def rule(name="EventLoopLag", threshold=0.1, for_="10s", op=">", severity="warning", unit="s"):
    return AlertRule.model_validate({"name": name, "expr": "max by (instance) (x{__SEL__})", "threshold": threshold,
                                     "for": for_, "op": op, "severity": severity, "unit": unit})


def samples(values, labels=None, start=T0, step=1.0):
    """A range-query frame: one sample per tick; None = no sample (absent from the result)."""
    rows = [{**(labels or {}), "timestamp": start + pd.Timedelta(seconds=i * step), "value": v}
            for i, v in enumerate(values) if v is not None]
    return pd.DataFrame(rows)


def ticks(n, start=T0, step=1.0):
    return [start + pd.Timedelta(seconds=i * step) for i in range(n)]


def states_of(values, for_s=10, threshold=0.1, op=">", labels=None):
    st = alerts.series_states(samples(values, labels), ticks(len(values)), threshold, for_s, op)
    return list(st["state"])


# --------------------------------------------------------------------------- the for boundary

def test_fires_exactly_when_for_has_elapsed_not_a_tick_before():
    st = states_of([0.2] * 12, for_s=10)
    assert st[0] == "pending"                       # active at t=0
    assert st[:10] == ["pending"] * 10              # t=9: 9 s < for
    assert st[10] == "firing"                       # t=10: tick - activeAt == for
    assert st[11] == "firing"


def test_for_zero_fires_at_the_first_true_evaluation():
    assert states_of([0.05, 0.2, 0.2], for_s=0) == ["inactive", "firing", "firing"]


def test_one_false_evaluation_resets_the_pending_alert():
    values = [0.2] * 5 + [0.05] + [0.2] * 12
    st = states_of(values, for_s=10)
    assert st[5] == "inactive"
    assert st[6] == "pending"                       # new activeAt = 6
    assert "firing" not in st[:16]
    assert st[16] == "firing"                       # 16 - 6 == 10


def test_one_missing_evaluation_resets_the_pending_alert():
    values = [0.2] * 9 + [None] + [0.2] * 12
    st = alerts.series_states(samples(values), ticks(len(values)), 0.1, 10)
    by_t = dict(zip([(t - T0).total_seconds() for t in st["timestamp"]], st["state"]))
    assert by_t[9] == "inactive" and math.isnan(st["value"].iloc[9])
    assert by_t[10] == "pending" and by_t[19] == "pending" and by_t[20] == "firing"


def test_a_firing_alert_resolves_on_one_false_evaluation_and_must_wait_for_again():
    values = [0.2] * 12 + [0.0] + [0.2] * 11
    st = states_of(values, for_s=10)
    assert st[11] == "firing" and st[12] == "inactive" and st[13] == "pending"
    assert st[22] == "pending" and st[23] == "firing"


def test_threshold_equal_is_not_above_and_nan_never_holds():
    assert states_of([0.1, 0.1, float("nan"), 0.1], for_s=0) == ["inactive"] * 4
    assert states_of([0.1, 0.1], for_s=0, op=">=") == ["firing", "firing"]


def test_below_rules_compare_the_other_way():
    assert states_of([0.7, 0.5, 0.5, 0.5], for_s=2, threshold=0.6, op="<") == ["inactive", "pending", "pending", "firing"]


def test_series_are_evaluated_independently():
    a = samples([0.2] * 4, {"instance": "a"})
    b = samples([0.2, 0.0, 0.2, 0.2], {"instance": "b"})
    st = alerts.series_states(pd.concat([a, b]), ticks(4), 0.1, 2)
    got = {s: list(p["state"]) for s, p in st.groupby("series")}
    assert got['{instance="a"}'] == ["pending", "pending", "firing", "firing"]
    assert got['{instance="b"}'] == ["pending", "inactive", "pending", "pending"]


def test_longer_interval_needs_a_tick_at_or_after_for():
    # 15 s interval, for 1m: active at 0, ticks 15/30/45 pending, 60 firing.
    values = [5.0] * 6
    st = alerts.series_states(samples(values, step=15), ticks(6, step=15), 3, 60)
    assert list(st["state"]) == ["pending"] * 4 + ["firing"] * 2


# --------------------------------------------------------------------------- spans and evaluate

def test_spans_give_pending_then_firing_with_peak_and_end():
    values = [0.2] * 5 + [0.3] * 10 + [0.0] * 3
    st = alerts.series_states(samples(values, {"instance": "a"}), ticks(len(values)), 0.1, 10)
    sp = alerts.alert_spans(st)
    assert list(sp["state"]) == ["pending", "firing"]
    pend, fire = sp.iloc[0], sp.iloc[1]
    assert pend["start"] == T0 and pend["end"] == T0 + pd.Timedelta(seconds=10) and not pend["ongoing"]
    assert fire["start"] == T0 + pd.Timedelta(seconds=10) and fire["end"] == T0 + pd.Timedelta(seconds=15)
    assert fire["duration_s"] == 5 and fire["peak"] == pytest.approx(0.3)
    assert fire["active_at"] == T0


def test_evaluate_primes_the_state_before_the_window_so_an_old_alert_is_firing_at_start():
    r = rule(for_="10s")
    start = T0 + pd.Timedelta(seconds=20)
    data = samples([0.2] * 40)                      # true since T0, window opens at T0+20s
    ev = alerts.evaluate(r, data, start, T0 + pd.Timedelta(seconds=39), 1.0)
    assert ev.fired
    assert ev.first_fired_at == start               # clipped to the window, already firing
    assert (ev.states["timestamp"] >= start).all()
    assert ev.state_at_end() == "firing"


def test_evaluation_ticks_are_aligned_to_the_interval():
    t = alerts.evaluation_ticks(T0 + pd.Timedelta(seconds=7.3), T0 + pd.Timedelta(seconds=61), 15)
    assert [(x - T0).total_seconds() for x in t] == [15, 30, 45, 60]


def _ev(values, **kw):
    r = rule(**kw)
    n = len(values)
    return alerts.evaluate(r, samples(values, {"instance": "127.0.0.1:8101"}), T0 + pd.Timedelta(seconds=11),
                           T0 + pd.Timedelta(seconds=n - 1), 1.0, expr="max by (instance) (x)")


def test_firing_finding_carries_when_how_long_peak_threshold_and_for():
    values = [0.0] * 12 + [0.2] * 10 + [0.45] * 8 + [0.0] * 5
    [f] = alerts.alert_findings(_ev(values, severity="critical"))
    assert (f.code, f.severity, f.subject) == ("alert.firing", "critical", "EventLoopLag")
    ev = f.evidence
    assert ev["fired_at"] == "2025-10-31T12:00:22Z"            # active at 12, +10 s
    assert ev["resolved_at"] == "2025-10-31T12:00:30Z" and ev["still_firing"] is False
    assert ev["duration_s"] == 8 and ev["peak"] == pytest.approx(0.45)
    assert ev["threshold"] == 0.1 and ev["for_s"] == 10 and ev["series"] == ['{instance="127.0.0.1:8101"}']
    assert "450 ms" in f.title and "10s" in f.title


def test_pending_only_is_info_and_quiet_is_ok_and_no_data_is_info():
    [pend] = alerts.alert_findings(_ev([0.0] * 12 + [0.2] * 5 + [0.0] * 5))
    assert pend.severity == "info" and pend.evidence["longest_pending_s"] == 5
    [quiet] = alerts.alert_findings(_ev([0.01] * 20))
    assert quiet.severity == "ok" and quiet.evidence["peak"] == pytest.approx(0.01)
    empty = alerts.evaluate(rule(), pd.DataFrame({"timestamp": [], "value": []}), T0, T0 + pd.Timedelta(seconds=30), 1)
    [nodata] = alerts.alert_findings(empty)
    assert nodata.severity == "info" and "no data" in nodata.title


# --------------------------------------------------------------------------- PromQL and the rules file

def test_render_expr_uses_metric_names_and_selector_and_drops_empty_braces():
    p = params()
    assert alerts.render_expr("max(${heap_used}{__SEL__} / ${heap_limit}{__SEL__})", p) == \
        'max(nodejs_heap_size_used_bytes{job="demo-api"} / nodejs_heap_size_limit_bytes{job="demo-api"})'
    bare = params(selector="")
    assert alerts.render_expr("max(${eventloop_lag}{__SEL__})", bare) == "max(nodejs_eventloop_lag_seconds)"
    custom = Params.model_validate({"service": "x", "metrics": {"heap_used": "jvm_heap_used"}})
    assert alerts.render_expr("${heap_used}{__SEL__}", custom) == "jvm_heap_used"


def test_alert_expr_adds_the_comparison_with_parentheses_only_when_needed():
    p = params()
    by_name = {r.name: alerts.alert_expr(r, p) for r in p.settings.monitoring.alerts}
    assert by_name["HighResponseTime"].startswith("histogram_quantile(0.95, sum by (le) (rate(http_request_duration")
    assert by_name["HighResponseTime"].endswith(") > 3")
    assert by_name["HighCPU"] == '(100 * max by (instance) (rate(process_cpu_seconds_total{job="demo-api"}[1m]))) > 80'
    # stock prom-client: the max gauge (reset at every scrape), the p99 gauge where there is no max
    assert by_name["EventLoopLag"] == (
        'max by (instance) (quantile_over_time(0.9, nodejs_eventloop_lag_max_seconds{job="demo-api"}[1m]) or '
        'quantile_over_time(0.9, nodejs_eventloop_lag_p99_seconds{job="demo-api"}[1m])) > 0.1')
    assert by_name["HighMemory"].endswith(") > 0.9")


def test_high_memory_evaluates_on_stock_prom_client_with_a_memory_limit():
    # stock prom-client 15 has no nodejs_heap_size_limit_bytes: with targets.memory_limit the rule
    # compares RSS with it, and heap used with the heap-limit gauge only where one is exported
    p = Params.model_validate({"service": "demo-api", "targets": {
        "memory_limit": "512MB", "prometheus": {"url": "http://127.0.0.1:9090", "selector": '{job="demo-api"}'}}})
    expr = {r.name: alerts.alert_expr(r, p) for r in p.settings.monitoring.alerts}["HighMemory"]
    assert expr == ('max by (instance) (label_replace(process_resident_memory_bytes{job="demo-api"} / 5.36870912e+08, '
                    '"basis", "rss/memory_limit", "__name__", ".*") or label_replace(nodejs_heap_size_used_bytes'
                    '{job="demo-api"} / nodejs_heap_size_limit_bytes{job="demo-api"}, "basis", "heap/heap_limit", '
                    '"__name__", ".*")) > 0.9')
    assert alerts.export_notes(p) == []
    # without a memory limit only the heap-limit ratio is left, which stock prom-client cannot feed: said so
    bare = params()
    assert "nodejs_heap_size_limit_bytes" in alerts.render_expr("${memory_ratio}", bare)
    [note] = alerts.export_notes(bare)
    assert note.startswith("HighMemory: no targets.memory_limit") and "set targets.memory_limit" in note


@pytest.mark.parametrize("x,text", [(3, "3"), (0.9, "0.9"), (100000, "100000"), (536870912, "5.36870912e+08"),
                                    (1e-05, "1e-05"), (0.0001, "0.0001"), (1048576, "1.048576e+06"), (-2.5, "-2.5")])
def test_numbers_are_written_as_prometheus_prints_them(x, text):
    # /api/v1/rules returns a rule as the server prints it (Go's %v); "5.36870912e+08" was read back
    # from a real Prometheus for 536870912 — the exported text must read the same
    assert number_literal(x) == text


def test_same_promql_ignores_whitespace_and_number_spelling():
    assert alerts.same_promql("max(a / 536870912) > 0.9", "max(a/5.36870912e+08)>0.9")
    assert not alerts.same_promql("x[1m] > 2", "x[1m] > 3")
    assert not alerts.same_promql("x[1m] > 2", "x[5m] > 2")


def test_export_notes_name_rules_on_metrics_prom_client_does_not_have():
    p = params(alerts=[{"name": "CPU", "expr": "max(${cpu_seconds}{__SEL__})", "threshold": 80, "for": "1m"},
                       {"name": "Lag", "expr": "max(${eventloop_lag_max}{__SEL__})", "threshold": 0.1, "for": "1m"}])
    p.metrics.cpu_seconds = "nodejs_process_cpu_percent"      # the runbook's name: not a prom-client metric
    [note] = alerts.export_notes(p)
    assert note.startswith("CPU: nodejs_process_cpu_percent (metrics.cpu_seconds) is not a prom-client 15 default")


def test_rules_file_from_a_service_name_with_a_newline_injects_nothing():
    # issue 14 point 9: the name is free text; it reaches the file only through the YAML serializer
    p = params()
    p.service = "shop\ngroups: []\nevil: {alert: Pwned, expr: vector(1)}\n# "
    text = alerts.rules_yaml(p)
    assert "shop" not in text.split("groups:")[0]               # not in the header comment
    doc = yaml.safe_load(text)
    assert list(doc) == ["groups"] and len(doc["groups"]) == 1
    assert set(doc["groups"][0]) == {"name", "interval", "rules"}
    assert [r["alert"] for r in doc["groups"][0]["rules"]] == ["HighResponseTime", "HighCPU", "HighMemory",
                                                              "EventLoopLag"]
    assert "\n" not in doc["groups"][0]["name"]


@pytest.mark.parametrize("seconds,text", [(300, "5m"), (600, "10m"), (90, "1m30s"), (10, "10s"), (0.5, "500ms"),
                                          (0, "0s"), (3600, "1h"), (86400 + 60, "1d1m")])
def test_prom_duration(seconds, text):
    assert alerts.prom_duration(seconds) == text


def test_rules_yaml_has_the_four_rules_with_threshold_for_severity_and_summary():
    p = params(evaluation_interval="5s")
    doc = yaml.safe_load(alerts.rules_yaml(p))
    [group] = doc["groups"]
    assert group["name"] == "perfbook-demo-api" and group["interval"] == "5s"
    rules = {r["alert"]: r for r in group["rules"]}
    assert list(rules) == ["HighResponseTime", "HighCPU", "HighMemory", "EventLoopLag"]
    assert rules["HighCPU"]["for"] == "10m" and rules["EventLoopLag"]["for"] == "5m"
    assert rules["HighMemory"]["labels"] == {"severity": "critical"}
    assert rules["EventLoopLag"]["annotations"]["summary"] == "event loop lag > 100ms"
    assert "nodejs_heap_size_limit_bytes" not in rules["HighCPU"]["expr"] + rules["EventLoopLag"]["expr"]
    assert "nodejs_process_cpu_percent" not in alerts.rules_yaml(p)
    assert "{{ $value" in rules["EventLoopLag"]["annotations"]["description"]
    assert all('job="demo-api"' in r["expr"] and "__SEL__" not in r["expr"] and "${" not in r["expr"]
               for r in rules.values())


def test_rules_yaml_follows_the_params_for_and_threshold():
    p = params(evaluation_interval="1s", alerts=[{"name": "Lag", "expr": "max(${eventloop_lag}{__SEL__})",
                                                  "threshold": 0.25, "for": "15s", "severity": "critical"}])
    [r] = yaml.safe_load(alerts.rules_yaml(p))["groups"][0]["rules"]
    assert r == {"alert": "Lag", "expr": 'max(nodejs_eventloop_lag_seconds{job="demo-api"}) > 0.25', "for": "15s",
                 "labels": {"severity": "critical"},
                 "annotations": {"summary": "Lag: above 0.25", "description": r["annotations"]["description"],
                                 "runbook": r["annotations"]["runbook"]}}


def test_params_refuse_unknown_metric_placeholders_and_duplicate_alerts():
    import os
    import tempfile

    from perfbook.params import ParamsError, load
    for body, field in [("settings: {monitoring: {alerts: [{name: X, expr: '${nope}', threshold: 1, for: 1m}]}}",
                         "settings.monitoring.alerts[0].expr"),
                        ("settings: {monitoring: {alerts: [{name: X, expr: up, threshold: 1, for: 1m}, "
                         "{name: X, expr: up, threshold: 2, for: 1m}]}}", "settings.monitoring.alerts")]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write("service: a\n" + body + "\n")
        try:
            with pytest.raises(ParamsError) as exc:
                load(fh.name)
            assert exc.value.field == field
        finally:
            os.unlink(fh.name)


# --------------------------------------------------------------------------- the server's side

def alerts_frame(states, alertname="EventLoopLag", labels=None, start=T0):
    """ALERTS as a range query returns it: one sample per tick where the alert is active."""
    rows = []
    for i, s in enumerate(states):
        if s in ("pending", "firing"):
            rows.append({"alertname": alertname, "alertstate": s, "severity": "warning", **(labels or {}),
                         "metric": "ALERTS", "timestamp": start + pd.Timedelta(seconds=i), "value": 1.0})
    return pd.DataFrame(rows)


def test_server_spans_read_alerts_series_and_drop_rule_labels():
    st = ["inactive"] * 2 + ["pending"] * 10 + ["firing"] * 5 + ["inactive"] * 3
    sp = alerts.server_spans(alerts_frame(st, labels={"instance": "a"}), ticks(len(st)))
    assert list(sp["state"]) == ["pending", "firing"]
    assert set(sp["series"]) == {'{instance="a"}'}
    assert sp.iloc[1]["start"] == T0 + pd.Timedelta(seconds=12) and sp.iloc[1]["duration_s"] == 5


def test_compare_agrees_within_tolerance_and_flags_a_disagreement():
    values = [0.0] * 2 + [0.2] * 18
    ev = alerts.evaluate(rule(), samples(values, {"instance": "a"}), T0, T0 + pd.Timedelta(seconds=19), 1.0)
    assert ev.first_fired_at == T0 + pd.Timedelta(seconds=12)
    near = alerts.server_spans(alerts_frame(["inactive"] * 3 + ["pending"] * 10 + ["firing"] * 7,
                                            labels={"instance": "a"}), ticks(20))
    row = alerts.compare_with_server([ev], near, configured={"EventLoopLag"}).iloc[0]
    assert row["agree"] and row["delta_s"] == -1 and row["server"] == "fired"
    silent = alerts.server_spans(alerts_frame(["pending"] * 5 + ["inactive"] * 15), ticks(20))
    row = alerts.compare_with_server([ev], silent, configured={"EventLoopLag"}).iloc[0]
    assert not row["agree"] and row["server"] == "did not fire"
    row = alerts.compare_with_server([ev], silent, configured=set()).iloc[0]
    assert row["server"] == "not configured on the server" and row["agree"] is None


def test_server_rules_table_puts_server_rules_beside_ours():
    p = params()
    ours = alerts.alert_expr(p.settings.monitoring.alerts[3], p)
    rules = pd.DataFrame([{"group": "g", "file": "f", "name": "EventLoopLag", "type": "alerting", "query": ours,
                           "duration": 300.0, "labels": {}, "annotations": {}, "health": "ok", "state": "firing",
                           "active_alerts": 1, "last_error": ""},
                          {"group": "g", "file": "f", "name": "Other", "type": "alerting", "query": "up == 0",
                           "duration": 60.0, "labels": {}, "annotations": {}, "health": "ok", "state": "inactive",
                           "active_alerts": 0, "last_error": ""}])
    active = pd.DataFrame([{"alertname": "EventLoopLag", "instance": "a", "state": "firing",
                            "active_at": T0, "value": 0.3, "annotations": {}}])
    t = alerts.server_rules_table(p, rules, active).set_index("alert")
    assert t.loc["EventLoopLag", "same_expr"] and t.loc["EventLoopLag", "server_for"] == "5m"
    assert t.loc["EventLoopLag", "active_now"] == "1 firing"
    assert not t.loc["HighCPU", "on_server"] and not t.loc["Other", "in_params"]


def test_unix_seconds_are_accepted_as_times():
    t = T0.timestamp()
    ev = alerts.evaluate(rule(for_="2s"), samples([0.2] * 6), t, t + 5, 1.0, prime=False)
    assert ev.first_fired_at == T0 + pd.Timedelta(seconds=2)
    assert list(alerts.evaluation_ticks(t, t + 2, 1)) == ticks(3)


# --------------------------------------------------------------------------- figures

def test_figures_draw_data_thresholds_and_empty_panels():
    from perfbook.plots import monitoring as plots
    p = params()
    panels = plots.key_metric_panels(p)
    assert [pn.key for pn in panels] == ["latency", "throughput", "errors", "cpu", "memory", "eventloop", "db",
                                         "external", "cache", "connections"]
    queries = plots.panel_queries(panels, p, 30)
    assert all("__RANGE__" not in q and "${" not in q and "__SEL__" not in q for q in queries.values())
    assert 'status_code=~"5.."' in queries[("errors", "5xx")]
    data = {("cpu", ""): samples([12.0, 15.0, 90.0], {"instance": "a"}),
            ("latency", "p95"): samples([0.2, 0.4, 3.5])}
    fig = plots.key_metrics_figure(panels, data, T0, T0 + pd.Timedelta(seconds=2),
                                   errors={("db", "p95"): "bad_data: unknown metric"})
    assert len([a for a in fig.axes if a.get_visible()]) == 10
    cpu_ax = fig.axes[3]
    assert {round(ln.get_ydata()[0], 3) for ln in cpu_ax.get_lines() if len(set(ln.get_ydata())) == 1} >= {70.0, 85.0, 80.0}
    values = [0.0] * 3 + [0.2] * 15
    ev = alerts.evaluate(rule(), samples(values, {"instance": "a"}), T0, T0 + pd.Timedelta(seconds=17), 1.0)
    quiet = alerts.evaluate(rule(name="HighCPU", threshold=80, unit="%"), samples([1.0] * 18), T0,
                            T0 + pd.Timedelta(seconds=17), 1.0)
    assert plots.alert_values_figure([ev, quiet]) is not None
    srv = alerts.server_spans(alerts_frame(["inactive"] * 3 + ["pending"] * 10 + ["firing"] * 5,
                                           labels={"instance": "a"}), ticks(18))
    assert plots.alert_timeline_figure([ev, quiet], srv) is not None
    assert plots.alert_timeline_figure([]) is None
