"""The monitoring section on the demo stack: alerts evaluated by perfbook agree with the
alerts Prometheus itself fires, and the optimization checklist follows the faults.

Starts (through the shared session fixtures in conftest.py): the `incident` and `healthy`
demo stacks — PostgreSQL, Prometheus, two demo-service instances, the external-API
stand-in on 127.0.0.1 — and `perfbook batch` over them. The cross-check loads the
exported rules into each stack's Prometheus when it does not have them yet (rules file
+ POST /-/reload), drives traffic for a bounded time, and compares the server's ALERTS
with perfbook's evaluation over the same period.
"""
from __future__ import annotations

import time

import pytest

from perfbook.checks import alerts, checklist
from perfbook.findings import Finding
from perfbook.params import load
from perfbook.sources import monitoring as monsource
from perfbook.sources.prometheus import PromClient

pytestmark = pytest.mark.integration

SECTION = "monitoring"
#: Seconds of traffic after the rules are loaded, when the stack's Prometheus did not have them.
CROSS_CHECK_TRAFFIC_S = 45


def _alert(run, name: str) -> dict | None:
    return next((f for f in run.section(SECTION) if f["code"] == "alert.firing" and f["subject"] == name), None)


def _item(run, text: str) -> dict:
    found = [f for f in run.section(SECTION) if f["code"] == "checklist.unmet" and f["subject"] == text]
    assert len(found) == 1, f"checklist item {text!r}: {len(found)} findings"
    return found[0]


def _longest_true_run(ev) -> float:
    """Seconds of the longest stretch where the comparison held, any series."""
    best = 0.0
    for _, g in ev.states.groupby("series"):
        run = 0
        for holds in g.sort_values("timestamp")["holds"]:
            run = run + 1 if holds else 0
            best = max(best, run * ev.interval_s)
    return best


def _borderline(ev) -> bool:
    """A rule whose condition held for about `for` (within two intervals) can fire on one
    side and not the other when the tick grids differ: agreement is not decidable."""
    return abs(_longest_true_run(ev) - (ev.rule.for_ + ev.interval_s)) <= 2 * ev.interval_s


def cross_check(run) -> tuple[list, monsource.ServerView, object]:
    """perfbook's evaluation and the server's ALERTS over the same period (see module doc)."""
    params = load(run.params_path)
    stack = run.stack
    prom = PromClient(stack.prometheus_url, timeout=10)
    want = {r.name: alerts.alert_expr(r, params) for r in params.settings.monitoring.alerts}
    rules = prom.rules()
    have = {r["name"]: r["query"] for _, r in rules.iterrows() if r["type"] == "alerting"}
    interval = params.settings.monitoring.evaluation_interval
    if all(n in have and alerts.same_promql(have[n], q) for n, q in want.items()):
        start, end = params.window.resolve()
        # the rules were loaded (arm_alert_rules) just before the traffic began, and the window opens
        # 10 s earlier: from the window's start the server had no state to carry, so neither has perfbook
        armed = getattr(stack, "traffic_started_at", None)
        prime = not (armed and armed > start.timestamp())
        if not prime:
            start = type(start).fromtimestamp(armed, tz=start.tzinfo)
    else:
        path = stack.state_dir / "perfbook-test.rules.yml"
        path.write_text(alerts.rules_yaml(params), encoding="utf-8")
        if str(path) not in stack.prometheus.rule_files:
            stack.prometheus.rule_files.append(str(path))
        start = time.time()
        stack.prometheus.reload()
        deadline = time.time() + 20
        while time.time() < deadline:
            got = prom.rules()
            if set(want) <= set(got.loc[got["type"] == "alerting", "name"]):
                break
            time.sleep(0.5)
        stack.drive(CROSS_CHECK_TRAFFIC_S)
        end = time.time()
        prime = False
    time.sleep(2 * interval + 1)  # the server's evaluation of the last tick is stored
    evaluations = monsource.fetch_evaluations(prom.query_range, params, start, end, prime=prime)
    server = monsource.fetch_server(prom, params, start, end)
    return evaluations, server, alerts.compare_with_server(evaluations, server.spans, server.configured)


def _assert_agree(evaluations, table):
    by = {ev.name: ev for ev in evaluations}
    for _, row in table.iterrows():
        assert row["server"] in ("fired", "did not fire"), f"{row['alert']}: the server {row['server']}"
        if not row["agree"] and not _borderline(by[row["alert"]]):
            pytest.fail(f"perfbook and Prometheus disagree on {row['alert']}:\n{table.to_string()}")


# --------------------------------------------------------------------------- alerts

def test_event_loop_lag_alert_fires_on_incident_in_perfbooks_evaluation(incident_run):
    params = load(incident_run.params_path)
    rule = next(r for r in params.settings.monitoring.alerts if r.name == "EventLoopLag")
    f = _alert(incident_run, "EventLoopLag")
    assert f is not None and f["severity"] == rule.severity, f
    ev = f["evidence"]
    assert ev["fired_at"] and ev["duration_s"] > 0 and ev["peak"] > rule.threshold
    assert ev["threshold"] == rule.threshold and ev["for_s"] == rule.for_


def test_every_rule_is_evaluated_and_none_fires_on_healthy(healthy_run):
    found = [f for f in healthy_run.section(SECTION) if f["code"] == "alert.firing"]
    params = load(healthy_run.params_path)
    assert sorted(f["subject"] for f in found) == sorted(r.name for r in params.settings.monitoring.alerts)
    assert not [f for f in found if f["severity"] in ("warning", "critical", "error")], found


def test_perfbook_agrees_with_prometheus_on_incident(incident_run):
    evaluations, _server, table = cross_check(incident_run)
    print(table.to_string())
    _assert_agree(evaluations, table)
    row = table.set_index("alert").loc["EventLoopLag"]
    assert row["perfbook"] == "fired" and row["server"] == "fired", table.to_string()


def test_perfbook_agrees_with_prometheus_on_healthy(healthy_run):
    evaluations, _server, table = cross_check(healthy_run)
    print(table.to_string())
    _assert_agree(evaluations, table)
    assert (table["server"] == "did not fire").all() and (table["perfbook"] != "fired").all(), table.to_string()


# --------------------------------------------------------------------------- checklist

MEASURED_FAULTY = {
    "Caching implemented (60%+ hit rate)": "low_cache_hit",
    "Rate limiting enabled": "no_rate_limit_on_generate",
    "Async operations (no blocking calls)": "cpu_blocking",
    "Connection pooling": "pool_saturation",
}


@pytest.mark.parametrize("item", sorted(MEASURED_FAULTY))
def test_checklist_item_unmet_on_incident(incident_run, item):
    f = _item(incident_run, item)
    assert f["severity"] == "warning" and f["evidence"]["status"] == "unmet", f


@pytest.mark.parametrize("item", sorted(MEASURED_FAULTY) + ["Compression enabled (gzip/brotli)",
                                                             "Pagination on large datasets",
                                                             "Connection pooling configured",
                                                             "Horizontal scaling configured",
                                                             "Baseline metrics documented"])
def test_checklist_item_met_on_healthy(healthy_run, item):
    f = _item(healthy_run, item)
    assert f["severity"] == "ok" and f["evidence"]["status"] == "met", f


def test_checklist_answers_every_item_once_on_both(incident_run, healthy_run):
    for run in (incident_run, healthy_run):
        items = [f["subject"] for f in run.section(SECTION) if f["code"] == "checklist.unmet"]
        assert sorted(items) == sorted(i.text for i in checklist.ITEMS)


def test_healthy_monitoring_section_raises_nothing(healthy_run):
    assert not healthy_run.alarms(SECTION), healthy_run.alarms(SECTION)
    assert not [f for f in healthy_run.section(SECTION) if f["severity"] == "error"]


def test_index_page_shows_the_checklist_with_other_sections_evidence(incident_run):
    page = (incident_run.run_dir / "index.html").read_text(encoding="utf-8")
    assert "Performance Optimization Checklist" in page
    answers = {a.key: a for a in checklist.combine(Finding.from_dict(f) for f in incident_run.findings)}
    db = {f["code"] for f in incident_run.alarms("database")}
    for code, key in (("db.missing_index", "indexes"), ("db.n_plus_one", "no_n_plus_one"), ("db.bloat", "vacuum")):
        if code in db:
            assert answers[key].status == "unmet" and answers[key].source == "database", answers[key]
            assert checklist._BY_KEY[key].text in page
