"""The optimization checklist (checks/checklist.py): each measured item's verdict, the
findings, and the batch index's summary combining other sections' findings. Pure:
recorded values only (the HTTP probes and Prometheus run in tests/integration)."""
from __future__ import annotations

import pandas as pd
import pytest

from perfbook.checks import checklist as cl
from perfbook.findings import Finding
from perfbook.params import Params
from perfbook.report import checklist_index_html
from perfbook.sources.monitoring import Evidence

P = Params.model_validate({"service": "demo-api", "targets": {"base_url": "http://127.0.0.1:8101"}})
DB = P.settings.database
#: The checklist's pooling item is judged by the bars of the database section and quick diagnostics.
POOLING = {"max_wait_s": DB.pool_wait_p95, "max_waiting_share": DB.pool_exhausted_share}
#: The params' levels the answers are judged by (thresholds and settings.diagnostics).
LAG = {"warning_s": P.thresholds.eventloop_lag_seconds.warning, "critical_s": P.thresholds.eventloop_lag_seconds.critical,
       "q": P.settings.diagnostics.sustained_quantile}
SIZE = {"cpu_warning": P.thresholds.cpu_percent.warning, "memory_warning": P.thresholds.memory_percent.warning}


def probe(purpose, endpoint, status=200, headers=None, expensive=False, **kw):
    return {"purpose": purpose, "endpoint": endpoint, "path": "/", "status": status, "headers": headers or {},
            "expensive": expensive, "wire_bytes": kw.get("wire_bytes"), "body_bytes": kw.get("body_bytes"),
            "items": kw.get("items"), "paging": kw.get("paging", []), "error": ""}


RL = {"ratelimit-limit": "100", "ratelimit-remaining": "99", "ratelimit-reset": "60"}


def test_the_runbook_checklist_has_its_25_items_in_four_levels():
    assert len(cl.ITEMS) == 25
    assert [sum(1 for i in cl.ITEMS if i.level == lv) for lv in cl.LEVELS] == [8, 6, 6, 5]
    assert cl.ITEMS[2].text == "Caching implemented (60%+ hit rate)"


@pytest.mark.parametrize("hits,misses,status", [(90, 10, "met"), (60, 40, "met"), (59, 41, "unmet"),
                                                (3, 97, "unmet"), (5, 5, "unknown"), (None, None, "unknown")])
def test_caching_against_the_60_percent_target(hits, misses, status):
    assert cl.answer_caching(hits, misses, target=P.thresholds.cache_hit_rate, min_lookups=P.settings.caching.min_lookups).status == status


def test_rate_limiting_unmet_when_an_expensive_route_has_no_limit_headers():
    probes = [probe("rate_limit", "GET /api/products", headers=RL),
              probe("rate_limit", "POST /api/content/generate", status=405, expensive=True)]
    a = cl.answer_rate_limiting(probes, rejections=0)
    assert a.status == "unmet" and a.evidence["expensive_without_limit"] == ["POST /api/content/generate"]


def test_rate_limiting_met_with_headers_everywhere_or_rejections_seen():
    probes = [probe("rate_limit", "GET /api/products", headers=RL),
              probe("rate_limit", "POST /api/content/generate", status=405, expensive=True, headers=RL)]
    assert cl.answer_rate_limiting(probes).status == "met"
    assert cl.answer_rate_limiting([probe("rate_limit", "GET /x")], rejections=12).status == "met"
    assert cl.answer_rate_limiting([probe("rate_limit", "GET /x")], rejections=0).status == "unmet"
    assert cl.answer_rate_limiting([probe("rate_limit", "GET /x", status=None)]).status == "unknown"


def test_compression_met_on_content_encoding_unmet_on_a_large_plain_body_unknown_when_small():
    gz = probe("compression", "GET /api/products", headers={"content-encoding": "gzip"}, wire_bytes=1004,
               body_bytes=3445)
    assert cl.answer_compression([gz]).status == "met"
    plain = probe("compression", "GET /api/products", wire_bytes=5000, body_bytes=5000)
    assert cl.answer_compression([plain]).status == "unmet"
    small = probe("compression", "GET /health", wire_bytes=60, body_bytes=60)
    assert cl.answer_compression([small]).status == "unknown"


def test_pagination_by_items_returned_without_paging_parameters():
    ok = probe("pagination", "GET /api/products", items=20, paging=["page", "limit"])
    big = probe("pagination", "GET /api/everything", items=5000)
    assert cl.answer_pagination([ok], max_rows=DB.large_result_rows).status == "met"
    assert cl.answer_pagination([ok, big], max_rows=DB.large_result_rows).status == "unmet"
    assert cl.answer_pagination([], max_rows=DB.large_result_rows).status == "unknown"


def test_items_reads_a_list_or_the_longest_list_in_an_object():
    from perfbook.sources import monitoring as source
    assert source._items([1, 2, 3]) == (3, [])
    assert source._items({"data": [1, 2], "page": 1, "limit": 2, "meta": {}}) == (2, ["page", "limit"])
    assert source._items({"status": "ok"}) == (None, [])


def test_async_reads_the_typical_delay_and_the_recurring_stalls():
    # lag_stalls: per instance the 90th percentile over the window of prom-client's max gauge (critical
    # level); lag_typical: the median of the p99 gauge (warning level)
    a = cl.answer_async({"a": 0.284, "b": 0.01}, {"a": 0.012, "b": 0.011}, **LAG)
    assert a.status == "unmet" and "284 ms" in a.why and "10%" in a.why and "Critical 100 ms" in a.why
    # a busy machine: the worst delay per scrape 60 ms, the typical one 12 ms — no blocking call
    b = cl.answer_async({"a": 0.060}, {"a": 0.012}, **LAG)
    assert b.status == "met" and "12 ms" in b.why and "60 ms" in b.why
    c = cl.answer_async({"a": 0.07}, {"a": 0.055}, **LAG)
    assert c.status == "unmet" and "Median event-loop lag p99 55 ms" in c.why
    assert cl.answer_async({"a": 0.012, "b": 0.008}, **LAG).status == "met"
    assert cl.answer_async(None, **LAG).status == "unknown"


def test_async_query_reads_the_max_gauge_and_falls_back_to_p99():
    q = cl.checklist_queries(P, 600)["lag_stalls"]
    assert q.index("${eventloop_lag_max}") < q.index(" or ") < q.index("${eventloop_lag_p99}")
    assert "quantile_over_time(0.9," in q


def test_db_pooling_unmet_when_queries_wait_long_for_a_connection():
    # incident (pool of 2 held across a 300 ms call): p95 wait 143 ms on one instance
    a = cl.answer_db_pooling({"i1": 2, "i2": 2}, {"i1": 2, "i2": 2}, {"i1": 0.016, "i2": 0.0}, {"i1": 4, "i2": 0},
                             {"i1": 0.143, "i2": 0.001}, **POOLING)
    assert a.status == "unmet" and "i1" in a.why and "143 ms" in a.why
    # healthy under load: the gauge reads 1 waiting at most scrapes, but nobody waits long
    b = cl.answer_db_pooling({"i1": 3}, {"i1": 3}, {"i1": 0.9}, {"i1": 1}, {"i1": 0.004}, **POOLING)
    assert b.status == "met"
    # the incident of a CI run: p95 42 ms, the database section's "saturated" (>= 20 ms): never "met" beside it
    c = cl.answer_db_pooling({"i1": 2}, {"i1": 2}, {"i1": 0.37}, {"i1": 2}, {"i1": 0.042}, **POOLING)
    assert c.status == "unmet" and "42 ms" in c.why
    # no wait histogram: the gauge decides, at quick diagnostics' exhaustion bar (20 % of scrapes)
    assert cl.answer_db_pooling({"i1": 2}, {"i1": 2}, {"i1": 0.15}, {"i1": 2}, **POOLING).status == "met"
    assert cl.answer_db_pooling({"i1": 2}, {"i1": 2}, {"i1": 0.3}, {"i1": 5}, **POOLING).status == "unmet"
    assert cl.answer_db_pooling(None, None, None, None, **POOLING).status == "unknown"
    assert cl.answer_pool_configured({"i1": 2}).status == "met"


def test_instance_size_against_warning_levels():
    assert cl.answer_instance_size({"a": 17}, {"a": 30}, **SIZE).status == "met"
    assert cl.answer_instance_size({"a": 75}, {"a": 30}, **SIZE).status == "unmet"
    assert cl.answer_instance_size({"a": 10}, {"a": 85}, **SIZE).status == "unmet"
    # stock prom-client without targets.memory_limit: no memory ratio; the answer says it rests on CPU
    a = cl.answer_instance_size({"a": 17}, None, **SIZE)
    assert a.status == "met" and "memory not measured" in a.why


def test_memory_query_is_stock_prom_client_compatible():
    q = cl.checklist_queries(P, 600)["memory_p95"]
    assert "${memory_ratio}" in q and "heap_limit" not in q
    from perfbook.checks.alerts import render_expr
    limited = Params.model_validate({"service": "x", "targets": {"memory_limit": "512MB"}})
    assert "process_resident_memory_bytes / 5.36870912e+08" in render_expr(q, limited)


def test_scaling_items_from_instances_and_fly_toml():
    from perfbook.sources import flytoml
    assert cl.answer_horizontal_scaling(2).status == "met"
    assert cl.answer_horizontal_scaling(1).status == "unmet"
    runbook_fly = flytoml.parse('app = "x"\n[scaling]\n  min_machines = 2\n  max_machines = 10\n'
                                '[[metrics]]\n  type = "cpu"\n  target = 70\n', "deploy/fly.production.toml")
    a = cl.answer_autoscaling(runbook_fly, "deploy/fly.production.toml")
    assert a.status == "met" and "2 to 10" in a.why
    assert cl.answer_autoscaling(flytoml.parse('app = "x"\n'), "fly.toml").status == "unmet"
    assert cl.answer_autoscaling(None, None).status == "unknown"
    assert cl.answer_autoscaling(None, "fly.toml", "no such file").status == "unknown"
    assert cl.answer_horizontal_scaling(1, runbook_fly).status == "met"


def test_alerts_configured_from_the_rules_api():
    rules = pd.DataFrame([{"name": n, "type": "alerting", "query": q} for n, q in
                          [("HighResponseTime", "x"), ("HighCPU", "y"), ("HighMemory", "z"),
                           ("LagHigh", "max(nodejs_eventloop_lag_seconds) > 0.1")]])
    wanted = P.settings.monitoring.alerts
    metric_of = {"EventLoopLag": "nodejs_eventloop_lag_seconds"}
    assert cl.answer_alerts_configured(rules, wanted, metric_names=metric_of).status == "met"
    a = cl.answer_alerts_configured(rules.iloc[:2], wanted, metric_names=metric_of)
    assert a.status == "unmet" and a.evidence["missing"] == ["HighMemory", "EventLoopLag"]
    empty = pd.DataFrame(columns=["name", "type", "query"])
    assert cl.answer_alerts_configured(empty, wanted).status == "unmet"
    assert cl.answer_alerts_configured(None, wanted, "bad_data: no rules API").status == "unknown"


def test_dashboard_and_baselines():
    assert cl.answer_dashboard({k: True for k in cl.KEY_METRICS}).status == "met"
    stock = {**{k: True for k in cl.KEY_METRICS}, "heap_limit": False}   # prom-client 15 has no heap limit
    a = cl.answer_dashboard(stock)
    assert a.status == "unmet" and "set targets.memory_limit" in a.why
    ok = cl.answer_dashboard(stock, {"heap_limit": "process_resident_memory_bytes / targets.memory_limit"})
    assert ok.status == "met" and "heap_limit as process_resident_memory_bytes" in ok.why
    assert ok.evidence["missing"] == [] and "heap_limit" in ok.evidence["fallbacks"]
    assert cl.answer_baselines(P).status == "met"
    off = Params.model_validate({"service": "x", "baselines_documented": False})
    assert cl.answer_baselines(off).status == "unmet"


def _evidence(**values):
    return Evidence(values=values, probes=[
        probe("compression", "GET /api/products", headers={"content-encoding": "gzip"}, wire_bytes=1000,
              body_bytes=3000),
        probe("rate_limit", "GET /api/products", headers=RL),
        probe("rate_limit", "POST /api/content/generate", status=405, expensive=True, headers=RL),
        probe("pagination", "GET /api/products", items=20, paging=["page"])],
        rules=pd.DataFrame([{"name": r.name, "type": "alerting", "query": "q"} for r in P.settings.monitoring.alerts]))


def test_measured_answers_cover_every_item_in_order_and_make_one_finding_each():
    ev = _evidence(cache_hits=900.0, cache_misses=100.0, lag_stalls={"a": 0.01}, pool_open_max={"a": 10.0},
                   pool_busy_max={"a": 3.0}, pool_waiting_share={"a": 0.0}, pool_waiting_max={"a": 0.0},
                   cpu_p95={"a": 20.0}, memory_p95={"a": 30.0}, instances_up=2.0,
                   **{f"present:{k}": 2.0 for k in cl.KEY_METRICS})
    answers = cl.measured_answers(ev, P)
    assert [a.key for a in answers] == [i.key for i in cl.ITEMS]
    by = {a.key: a.status for a in answers}
    measured = ["async", "app_pooling", "caching", "rate_limiting", "compression", "pagination", "db_pooling",
                "instance_size", "horizontal", "dashboard", "alerts", "baselines"]
    assert all(by[k] == "met" for k in measured), by
    assert by["static_cdn"] == by["prepared"] == by["autoscaling"] == "unknown"
    findings = cl.checklist_findings(answers)
    assert len(findings) == 25 and {f.code for f in findings} == {"checklist.unmet"}
    assert {f.severity for f in findings} == {"ok", "info"}
    f = next(f for f in findings if f.subject == "Caching implemented (60%+ hit rate)")
    assert f.evidence["status"] == "met" and f.evidence["hit_rate"] == pytest.approx(0.9)


def test_stock_prom_client_with_a_memory_limit_gets_no_no_data_warning():
    # the key metrics of a stock prom-client service: everything but the heap-limit gauge; the
    # params give the instance's memory, and RSS is exported: the dashboard item is met
    limited = Params.model_validate({"service": "demo-api", "targets": {"base_url": "http://127.0.0.1:8101",
                                                                        "memory_limit": "512MB"}})
    values = {**{f"present:{k}": 2.0 for k in cl.KEY_METRICS}, "present:heap_limit": None,
              "fallback:resident_memory": 2.0}
    by = {a.key: a for a in cl.measured_answers(_evidence(**values), limited)}
    assert by["dashboard"].status == "met" and "targets.memory_limit" in by["dashboard"].why
    # no memory limit: nothing stands in for the heap limit, and the answer says what to set
    by = {a.key: a for a in cl.measured_answers(_evidence(**values), P)}
    assert by["dashboard"].status == "unmet" and "heap_limit" in by["dashboard"].why


def test_unmet_items_are_warnings_with_the_runbook_action():
    ev = _evidence(cache_hits=3.0, cache_misses=97.0)
    [f] = [f for f in cl.checklist_findings(cl.measured_answers(ev, P)) if f.subject.startswith("Caching")]
    assert f.severity == "warning" and f.evidence["status"] == "unmet" and "TTL" in f.recommendation
    assert f.runbook_ref == "Performance Optimization Checklist (Application Level)"


def _f(code, severity, section, title="t", subject=None, **evidence):
    return Finding(code, severity, title, section=section, subject=subject, evidence=evidence)


def test_index_combines_other_sections_findings_unmet_beats_met():
    mon = cl.checklist_findings(cl.measured_answers(_evidence(cache_hits=900.0, cache_misses=100.0), P))
    for f in mon:
        f.section = "monitoring"
    others = [_f("db.missing_index", "warning", "database", "products: seq scans", "products"),
              _f("db.n_plus_one", "critical", "database", "N+1 on categories", "categories"),
              _f("db.bloat", "ok", "database", "no bloat"),
              _f("cache.low_hit_rate", "warning", "caching", "hit rate 3 %"),
              _f("balance.uneven", "ok", "load-balancing", "even")]
    by = {a.key: a for a in cl.combine(mon + others)}
    assert by["indexes"].status == "unmet" and by["indexes"].source == "database"
    assert by["no_n_plus_one"].status == "unmet"
    assert by["vacuum"].status == "met"
    assert by["caching"].status == "unmet" and by["caching"].source == "caching"   # overrules monitoring's met
    assert by["load_balancing"].status == "met"
    assert by["prepared"].status == "unknown"
    html = checklist_index_html(mon + others)
    assert "Performance Optimization Checklist" in html and "Indexes on filtered/sorted columns" in html
    assert html.count("<tr style=") == 25


def test_index_escapes_text_and_is_empty_without_checklist_evidence():
    evil = _f("db.missing_index", "warning", "database", "<script>alert(1)</script>", "products")
    html = checklist_index_html([evil])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert checklist_index_html([_f("latency.slo_breach", "warning", "quick-diagnostics")]) == ""
    assert checklist_index_html([]) == ""
