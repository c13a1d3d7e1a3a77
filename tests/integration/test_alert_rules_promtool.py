"""The exported rules file (`perfbook alerts export`) checked by Prometheus's own tool.

Starts: `promtool` (the Debian prometheus package's binary) as a subprocess — `check
rules` on the file the real CLI writes, and `test rules` unit tests (input_series) that
put each of the runbook's four rules on its `for` boundary: not firing one evaluation
before `for` has elapsed, firing exactly at it, and starting over after one evaluation
where the expression is false or has no result. The input series are the ones stock
prom-client 15 exports (no nodejs_process_cpu_percent, no nodejs_heap_size_limit_bytes:
HighMemory compares RSS with targets.memory_limit; EventLoopLag reads the max gauge). The
same boundaries for perfbook's own evaluator are in tests/unit/test_alerts.py.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perfbook.checks.alerts import rules_yaml
from perfbook.params import Params

pytestmark = pytest.mark.integration

SELECTOR = '{job="demo-api"}'
LABELS = 'job="demo-api"'


def _promtool() -> Path:
    from perfbook.demo.prometheus import find_promtool
    try:
        return find_promtool()
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} — `make test` installs prometheus (promtool); run it via make")


#: targets.memory_limit of the rule tests, in bytes: RSS 950 of it is 0.95.
MEMORY_LIMIT = 1000


def _params(interval: str, **alert_overrides) -> Params:
    from perfbook.params import DEFAULT_ALERTS
    alerts = [{**a, **alert_overrides} for a in DEFAULT_ALERTS]
    return Params.model_validate({
        "service": "demo-api",
        "targets": {"prometheus": {"url": "http://127.0.0.1:9090", "selector": SELECTOR},
                    "memory_limit": MEMORY_LIMIT},
        "settings": {"monitoring": {"evaluation_interval": interval, "alerts": alerts}}})


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(_promtool()), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _values(*runs: tuple[object, int]) -> str:
    """'0.2 0.2 0.05 ...' from (value, count) runs; a value may be '_' (missing) or 'stale'."""
    return " ".join(" ".join([str(v)] * n) for v, n in runs)


def _counter(increments: list[float], start: float = 0.0) -> str:
    out, total = [start], start
    for inc in increments:
        total += inc
        out.append(total)
    return " ".join(f"{v:g}" for v in out)


def _drop(values: str, missing: tuple[int, ...]) -> str:
    """Replace the samples at ``missing`` (indices) with '_' (no sample: a failed scrape)."""
    return " ".join("_" if i in missing else v for i, v in enumerate(values.split()))


def _annotations(rule: dict, value: str, instance: str | None) -> dict:
    """The rule's annotations as Prometheus renders them for one alert."""
    ann = dict(rule["annotations"])
    d = ann["description"]
    d = re.sub(r"\{\{ with \$labels\.instance \}\} on \{\{ \. \}\}\{\{ end \}\}", f" on {instance}" if instance else "", d)
    ann["description"] = d.replace('{{ $value | printf "%.4g" }}', value)
    return ann


def _expect(rule: dict, value: str, instance: str | None) -> list[dict]:
    labels = {"severity": rule["labels"]["severity"], **({"instance": instance} if instance else {})}
    return [{"exp_labels": labels, "exp_annotations": _annotations(rule, value, instance)}]


# Input series per rule, at one sample a minute, for three stories: "steady" (the
# condition holds from the first evaluation it can), "false_once" (one evaluation where
# the comparison is false) and "missing_once" (one evaluation with no result).
#
# quantile_over_time(...[1m]) and rate(...[1m]) see the samples at t-1m and t (Prometheus
# 2.x ranges include both ends): the 90th percentile of 0.2 and 0.05 is 0.185, so one
# evaluation is false when the samples at t-1m and t both are low; a rate has no result
# when one of the two is missing. Every series is one stock prom-client 15 exports.
def _stories() -> dict[str, dict]:
    lag = f"nodejs_eventloop_lag_max_seconds{{{LABELS},instance=\"a\"}}"
    rss = f"process_resident_memory_bytes{{{LABELS},instance=\"a\"}}"
    cpu = f"process_cpu_seconds_total{{{LABELS},instance=\"a\"}}"
    bucket = "http_request_duration_seconds_bucket{%s,le=\"%s\"}"

    def hist(slow: list[bool], per: int = 10, missing: tuple[int, ...] = ()) -> list[dict]:
        # Each sample interval `per` requests: slow ones land in (1, 5] s (p95 = 4.8 s), fast in (0, 1] s (p95 0.95 s).
        fast_inc = [0 if s else per for s in slow]
        series = [{"series": bucket % (LABELS, "1"), "values": _counter(fast_inc)},
                  {"series": bucket % (LABELS, "5"), "values": _counter([per] * len(slow))},
                  {"series": bucket % (LABELS, "+Inf"), "values": _counter([per] * len(slow))}]
        for s in series:
            s["values"] = _drop(s["values"], missing)
        return series

    return {
        # EventLoopLag, for 5m: the max gauge 0.2 from 0 → fires at 5m.
        # false_once: samples at 3m and 4m are 0.05 → false at 4m only → active again at 5m → fires at 10m.
        # missing_once: samples at 3m and 4m missing → no result at 4m → same.
        "EventLoopLag": {
            "instance": "a", "value": "0.2", "fires_at": 5,
            "steady": [{"series": lag, "values": _values((0.2, 20))}],
            "false_once": [{"series": lag, "values": _values((0.2, 3), (0.05, 2), (0.2, 15))}],
            "missing_once": [{"series": lag, "values": _values((0.2, 3), ("_", 2), (0.2, 15))}],
            "reset_fires_at": 10,
        },
        # HighMemory, for 10m: RSS 950 of the 1000-byte targets.memory_limit from 0 → fires at 10m
        # (no heap-limit gauge: stock prom-client). One sample of 500 (false) or a stale marker (no
        # result: a gauge that disappeared) at 4m → active again at 5m → fires at 15m.
        "HighMemory": {
            "instance": "a", "value": "0.95", "fires_at": 10,
            "steady": [{"series": rss, "values": _values((950, 25))}],
            "false_once": [{"series": rss, "values": _values((950, 4), (500, 1), (950, 20))}],
            "missing_once": [{"series": rss, "values": _values((950, 4), ("stale", 1), (950, 20))}],
            "reset_fires_at": 15,
        },
        # HighCPU, for 10m: 54 CPU-seconds a minute = 90 % from the first rate at 1m → fires at 11m.
        # false_once: 30 s in the 5th minute (50 %) → false at 5m → active at 6m → fires at 16m.
        # missing_once: scrapes every 30 s; the two at 4m30s and 5m missing → the rate at 5m sees one
        # sample, no result (at 4m and 6m it sees two) → same. (At one sample a minute, one missing
        # scrape takes the rate's result away for two evaluations.)
        "HighCPU": {
            "instance": "a", "value": "90", "fires_at": 11,
            "steady": [{"series": cpu, "values": _counter([54] * 25)}],
            "false_once": [{"series": cpu, "values": _counter([54] * 4 + [30] + [54] * 20)}],
            "missing_once": [{"series": cpu, "values": _drop(_counter([27] * 50), (9, 10))}],
            "missing_once_interval": "30s",
            "reset_fires_at": 16,
        },
        # HighResponseTime, for 5m: every minute slow (p95 4.8 s) from the first rate at 1m → fires at 6m.
        # false_once: the 3rd minute fast (p95 0.95 s) → false at 3m → active at 4m → fires at 9m.
        # missing_once: scrapes every 30 s; those at 2m30s and 3m missing → no result at 3m only → same.
        "HighResponseTime": {
            "instance": None, "value": "4.8", "fires_at": 6,
            "steady": hist([True] * 20),
            "false_once": hist([True, True, False] + [True] * 17),
            "missing_once": hist([True] * 40, per=5, missing=(5, 6)),
            "missing_once_interval": "30s",
            "reset_fires_at": 9,
        },
    }


def _suite(rule_file: str, name: str, story: str, rule: dict, spec: dict, at: dict[int, bool],
           unit: str = "m") -> dict:
    return {
        "interval": spec.get(f"{story}_interval", f"1{unit}"),
        "input_series": spec[story],
        "alert_rule_test": [
            {"eval_time": f"{t}{unit}", "alertname": name,
             "exp_alerts": _expect(rule, spec["value"], spec["instance"]) if fires else []}
            for t, fires in sorted(at.items())],
    }


def test_exported_rules_pass_promtool_check(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"service: demo-api\ntargets:\n  prometheus:\n    url: http://127.0.0.1:9090\n"
                      f"    selector: '{SELECTOR}'\n", encoding="utf-8")
    out = tmp_path / "perfbook-rules.yml"
    cli = subprocess.run([sys.executable, "-m", "perfbook.cli", "alerts", "export", "-p", str(params), "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    res = _run("check", "rules", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 4 rules found" in res.stdout
    names = [r["alert"] for r in yaml.safe_load(out.read_text())["groups"][0]["rules"]]
    assert names == ["HighResponseTime", "HighCPU", "HighMemory", "EventLoopLag"]
    # no targets.memory_limit: HighMemory has only the heap-limit ratio, which stock prom-client
    # cannot feed — the export says so instead of writing a silent rule
    assert "note: HighMemory: no targets.memory_limit" in cli.stderr


def test_exported_rules_use_stock_prom_client_metrics(tmp_path):
    from perfbook.checks.resources import PROM_CLIENT_DEFAULT_METRICS, is_runtime_metric
    params = tmp_path / "params.yaml"
    params.write_text(f"service: demo-api\ntargets:\n  memory_limit: 512MB\n  prometheus:\n"
                      f"    url: http://127.0.0.1:9090\n    selector: '{SELECTOR}'\n", encoding="utf-8")
    out = tmp_path / "perfbook-rules.yml"
    cli = subprocess.run([sys.executable, "-m", "perfbook.cli", "alerts", "export", "-p", str(params), "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "note:" not in cli.stderr, cli.stderr
    res = _run("check", "rules", str(out), cwd=tmp_path)
    assert res.returncode == 0 and "SUCCESS: 4 rules found" in res.stdout, res.stdout + res.stderr
    for rule in yaml.safe_load(out.read_text())["groups"][0]["rules"]:
        # the heap-limit gauge appears only as the second alternative of HighMemory's `or`
        first = rule["expr"].split(" or ")[0]
        runtime = {n for n in re.findall(r"[a-z_:][a-z0-9_:]*", first) if is_runtime_metric(n)}
        assert runtime <= PROM_CLIENT_DEFAULT_METRICS, (rule["alert"], runtime - PROM_CLIENT_DEFAULT_METRICS)


@pytest.mark.parametrize("name", ["HighResponseTime", "HighCPU", "HighMemory", "EventLoopLag"])
def test_each_rule_fires_exactly_at_for_and_resets_on_one_false_or_missing_evaluation(tmp_path, name):
    params = _params("1m")
    (tmp_path / "rules.yml").write_text(rules_yaml(params), encoding="utf-8")
    rule = next(r for r in yaml.safe_load((tmp_path / "rules.yml").read_text())["groups"][0]["rules"]
                if r["alert"] == name)
    spec = _stories()[name]
    fire, again = spec["fires_at"], spec["reset_fires_at"]
    tests = [
        _suite("rules.yml", name, "steady", rule, spec, {fire - 1: False, fire: True, fire + 3: True}),
        _suite("rules.yml", name, "false_once", rule, spec, {fire: False, again - 1: False, again: True}),
        _suite("rules.yml", name, "missing_once", rule, spec, {fire: False, again - 1: False, again: True}),
    ]
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    res = _run("test", "rules", "test.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_demo_timescale_rules_fire_after_ten_one_second_evaluations(tmp_path):
    """The demo's params (evaluation every 1 s, `for: 10s`): the gauge rules fire at 10 s, not 9 s."""
    params = _params("1s", **{"for": "10s"})
    (tmp_path / "rules.yml").write_text(rules_yaml(params), encoding="utf-8")
    rules = {r["alert"]: r for r in yaml.safe_load((tmp_path / "rules.yml").read_text())["groups"][0]["rules"]}
    assert rules["EventLoopLag"]["for"] == "10s" and yaml.safe_load((tmp_path / "rules.yml").read_text())[
        "groups"][0]["interval"] == "1s"
    stories = _stories()
    tests = [_suite("rules.yml", name, "steady", rules[name], stories[name], {9: False, 10: True, 12: True}, unit="s")
             for name in ("EventLoopLag", "HighMemory")]
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1s", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    res = _run("test", "rules", "test.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_high_memory_prefers_the_higher_ratio_when_a_service_also_exports_a_heap_limit(tmp_path):
    """A service that adds nodejs_heap_size_limit_bytes: RSS is low (30 % of the machine), the heap at 95 %
    of --max-old-space-size — the rule fires on the heap, the higher of the two ratios."""
    params = _params("1m")
    (tmp_path / "rules.yml").write_text(rules_yaml(params), encoding="utf-8")
    rule = next(r for r in yaml.safe_load((tmp_path / "rules.yml").read_text())["groups"][0]["rules"]
                if r["alert"] == "HighMemory")
    series = [{"series": f'process_resident_memory_bytes{{{LABELS},instance="a"}}', "values": _values((300, 15))},
              {"series": f'nodejs_heap_size_used_bytes{{{LABELS},instance="a"}}', "values": _values((95, 15))},
              {"series": f'nodejs_heap_size_limit_bytes{{{LABELS},instance="a"}}', "values": _values((100, 15))}]
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "9m", "alertname": "HighMemory", "exp_alerts": []},
                            {"eval_time": "10m", "alertname": "HighMemory",
                             "exp_alerts": _expect(rule, "0.95", "a")}]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    res = _run("test", "rules", "test.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_exported_rules_from_a_hostile_service_name_pass_promtool(tmp_path):
    """issue 14 point 9: a newline in the service name reaches the file only through the YAML serializer."""
    params = _params("1m")
    params.service = "shop\ngroups: []\n  - name: evil\n# "
    path = tmp_path / "rules.yml"
    path.write_text(rules_yaml(params), encoding="utf-8")
    res = _run("check", "rules", str(path), cwd=tmp_path)
    assert res.returncode == 0 and "SUCCESS: 4 rules found" in res.stdout, res.stdout + res.stderr
