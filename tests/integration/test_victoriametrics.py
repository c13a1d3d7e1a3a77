"""VictoriaMetrics (the engine of Fly.io's managed Prometheus) gives the same diagnosis as
Prometheus: issue 20.

The session's incident and healthy stacks (tests/integration/conftest.py) run a
VictoriaMetrics single node beside Prometheus, fed by Prometheus's remote_write, so both
hold the same samples. Here the same batch runs once more against VictoriaMetrics — the
same params file and the same fixed window as the Prometheus batch, started once the
samples are in — over the sections that read the time-series database, and the verdicts
of the checks that come from it alone (:data:`perfbook.demo.victoriametrics.TSDB_CHECKS`:
not probes, load tests, PostgreSQL or the rules API, which answer differently from one
moment to the next) are compared by section, code, subject and severity.

Starts: one more batch per scenario (no new stack).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from groundtruth import compare

from perfbook.demo.victoriametrics import (
    KNOWN_DIFFERENCES,
    TSDB_CHECKS,
    compare_verdicts,
    near_threshold,
    tsdb_verdicts,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: On the healthy stack, the sections whose verdicts rest on rates, subqueries and alert evaluation
#: (where the two engines differ); the counters of caching, rate limiting and external calls are
#: compared on the incident, where they are not zero.
HEALTHY_SECTIONS = ["quick-diagnostics", "bottlenecks", "load-balancing", "scaling", "monitoring"]


def _count_up(url: str, until: str, since: str) -> float:
    """Samples of ``up`` in the window, as the server holds them."""
    seconds = int(pd_ts(until) - pd_ts(since))
    r = requests.get(f"{url}/api/v1/query", params={"query": f"sum(count_over_time(up[{seconds}s]))",
                                                     "time": pd_ts(until), "nocache": "1"}, timeout=10)
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def pd_ts(text: str) -> float:
    import pandas as pd
    return pd.Timestamp(text).timestamp()


def _vm_batch(run, sections: list[str]) -> tuple[Path, list[dict]]:
    stack = run.stack
    data = yaml.safe_load(run.params_path.read_text(encoding="utf-8"))
    # The very same params and window; only the time-series database differs.
    data["targets"]["prometheus"] = stack.params_dict("victoriametrics")["targets"]["prometheus"]
    path = run.params_path.with_name("params-victoriametrics.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    since, until = str(data["window"]["since"]), str(data["window"]["until"])
    # Once the samples are in: VictoriaMetrics holds as many `up` samples of the window as Prometheus.
    deadline = time.monotonic() + 120
    while _count_up(stack.tsdb_url("victoriametrics"), until, since) < _count_up(stack.tsdb_url("prometheus"),
                                                                                   until, since):
        assert time.monotonic() < deadline, "VictoriaMetrics never received Prometheus's samples (remote_write)"
        time.sleep(2)
    out = run.params_path.parent / "out-victoriametrics"
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(path), "--sections",
                          ",".join(sections), "--outputs", str(out), "--incident", f"test-{run.scenario}-vm",
                          "--timeout", "400"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **run.env), timeout=900)
    lines = [line for line in res.stdout.splitlines() if line.startswith("Report: ")]
    assert lines, f"perfbook batch printed no report path:\n{res.stdout}\n{res.stderr}"
    run_dir = Path(lines[-1][8:]).parent
    return run_dir, json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vm_incident(incident_run):
    return _vm_batch(incident_run, list(TSDB_CHECKS))


@pytest.fixture(scope="module")
def vm_healthy(healthy_run):
    return _vm_batch(healthy_run, HEALTHY_SECTIONS)


def _tsdb_only(findings: list[dict], path: Path) -> Path:
    """A findings.json holding only the findings of time-series checks (for groundtruth.compare)."""
    path.write_text(json.dumps([f for f in findings if f.get("check") in TSDB_CHECKS.get(f["section"], ())]),
                    encoding="utf-8")
    return path


def test_incident_same_verdicts_on_victoriametrics_as_on_prometheus(incident_run, vm_incident):
    _run_dir, vm = vm_incident
    assert not [f for f in vm if f["severity"] == "error"], [f["title"] for f in vm if f["severity"] == "error"]
    prom = tsdb_verdicts(incident_run.findings)
    # the comparison means something: the faults' time-series verdicts are there on both
    alarms = {(s, c) for s, c, _, sev in prom if sev in ("warning", "critical")}
    assert {("quick-diagnostics", "eventloop.lag"), ("quick-diagnostics", "db.connections"),
            ("database", "db.connections"), ("caching", "cache.low_hit_rate")} <= alarms, sorted(alarms)
    diff = compare_verdicts(incident_run.findings, vm)
    assert not diff, "\n".join(diff)


def test_incident_ground_truth_holds_on_victoriametrics(incident_run, vm_incident, tmp_path):
    _, vm = vm_incident
    sections = list(TSDB_CHECKS)
    on_prom = compare(_tsdb_only(incident_run.findings, tmp_path / "p.json"), "incident", sections=sections)
    on_vm = compare(_tsdb_only(vm, tmp_path / "vm.json"), "incident", sections=sections)
    near = _near(incident_run.findings, vm)
    # every fault the time-series checks find on Prometheus they find on VictoriaMetrics, and no other
    # alarm — but for a verdict on its threshold whose numbers agree within NEAR (15 %) on both
    missed = {str(m) for m in on_vm.misses
              if (m.section, m.code) not in KNOWN_DIFFERENCES
              and not any(m.section == s and m.code == c and (m.subject or "").lower() in subj.lower()
                          for s, c, subj in near)}
    assert missed <= {str(m) for m in on_prom.misses}, str(on_vm)
    assert len(on_vm.misses) < sum(len(s.expected) for s in on_vm.sections.values())
    assert _alarms(on_vm.false_alarms, near) <= _alarms(on_prom.false_alarms), str(on_vm)


def _alarms(findings: list[dict], near: set[tuple] = frozenset()) -> set[tuple]:
    return {(f["section"], f["code"], f.get("subject") or "", f["severity"]) for f in findings
            if (f["section"], f["code"], f.get("subject") or "") not in near}


def _near(prom: list[dict], vm: list[dict]) -> set[tuple]:
    """(section, code, subject) of the verdicts that flip on their threshold between the two
    backends with the same numbers within NEAR (15 %: subquery alignment, docs/fly.md)."""
    key = lambda f: (f["section"], f["code"], f.get("subject") or "")  # noqa: E731
    by = {key(f): f for f in prom}
    return {key(f) for f in vm if key(f) in by and by[key(f)]["severity"] != f["severity"]
            and near_threshold(by[key(f)], f)} | {key(f) for f in [*prom, *vm] if key(f)[:2] in KNOWN_DIFFERENCES}


def test_healthy_stack_is_quiet_on_victoriametrics(healthy_run, vm_healthy, tmp_path):
    _, vm = vm_healthy
    sections = HEALTHY_SECTIONS
    on_prom = compare(_tsdb_only(healthy_run.findings, tmp_path / "p.json"), "healthy", sections=sections)
    on_vm = compare(_tsdb_only(vm, tmp_path / "vm.json"), "healthy", sections=sections)
    near = _near(healthy_run.findings, vm)
    # No alarm Prometheus does not raise on the same samples (the healthy ground truth on Prometheus
    # itself is test_demo_batch's: a scrape every instance missed at the same second on a busy
    # machine is instance.down's business there, not the backend's).
    assert _alarms(on_vm.false_alarms, near) <= _alarms(on_prom.false_alarms), str(on_vm)
    assert not [f for f in vm if f["severity"] == "error"], [f["title"] for f in vm if f["severity"] == "error"]
    diff = compare_verdicts([f for f in healthy_run.findings if f["section"] in sections], vm)
    assert not diff, "\n".join(diff)


def test_victoriametrics_alone_scrapes_the_stack_and_stores_no_start_up_outage(tmp_path):
    """``perfbook demo --tsdb victoriametrics``: VictoriaMetrics scrapes the instances itself, as
    Fly's does. It scrapes from its first second, so it starts once the instances answer: every
    ``up`` sample it holds is 1 (before, the stack's own start-up read as 5-7 missed scrapes of
    every instance: instance.down on a healthy stack)."""
    from perfbook.demo.prometheus import JOB
    from perfbook.demo.stack import Stack
    from perfbook.sources.prometheus import PromClient

    stack = Stack("healthy", state_dir=tmp_path / "stack", tsdb="victoriametrics")
    stack.start()
    try:
        assert stack.prometheus is None and "prometheus" not in stack.ports
        url = stack.tsdb_url("victoriametrics")
        assert stack.params_dict()["targets"]["prometheus"] == {
            "url": url, "selector": f'{{job="{JOB}"}}', "flavor": "victoriametrics"}
        time.sleep(3)
        answer = requests.get(f"{url}/api/v1/query", params={"query": f'up{{job="{JOB}"}}[5m]', "nocache": "1"},
                              timeout=30).json()
        series = answer["data"]["result"]
        assert len(series) == stack.n_instances
        for s in series:
            assert s["values"] and all(v == "1" for _, v in s["values"]), s
        assert PromClient(url).flavor == "victoriametrics"   # recognised without the params saying so
    finally:
        stack.stop()
    assert not any(stack.running().values())


def test_counter_functions_read_as_promql_on_a_real_victoriametrics(tmp_path):
    """PromQL's ``rate``/``increase`` as :class:`PromClient` sends them to VictoriaMetrics give
    PromQL's numbers on a real VictoriaMetrics. Expected values worked by PromQL's
    extrapolation (prometheus/promql/functions.go, extrapolatedRate), for samples every second:

    - ``cpu`` rises 0.885 a second for 100 s: ``rate(cpu[4s])`` holds 4 samples spanning 3 s,
      extrapolated by half a second to each edge: 0.885/s (it read 0.664 before: 3 s of
      increase over 4 s — the CPU % a quarter low of issue 20); ``increase(cpu[60s])`` 53.1;
    - ``born`` starts at 1 at second 50 and rises 2 a second: at second 80.5,
      ``increase(born[60s])`` spans 30 s of samples, extrapolated half a second at the end and,
      towards zero, half a second at the start: 60 x 31/30 = 62, ``rate`` 62/60 = 1.033/s
      (VictoriaMetrics' own ``increase``/``rate`` read 61 and 2.0);
    - a range with one sample: no result, as in PromQL.
    """
    from perfbook.demo.victoriametrics import VictoriaMetricsServer
    from perfbook.sources.prometheus import PromClient

    vm = VictoriaMetricsServer(tmp_path / "vm", scrape=False)
    vm.start()
    try:
        t0 = int(time.time()) - 300
        lines = []
        for i in range(100):
            ts = (t0 + i) * 1000
            lines.append(json.dumps({"metric": {"__name__": "cpu", "job": "t"}, "values": [5 + 0.885 * i],
                                     "timestamps": [ts]}))
            if i >= 50:
                lines.append(json.dumps({"metric": {"__name__": "born", "job": "t"}, "values": [1 + 2.0 * (i - 50)],
                                         "timestamps": [ts]}))
        requests.post(f"{vm.url}/api/v1/import", data="\n".join(lines), timeout=10).raise_for_status()
        requests.get(f"{vm.url}/internal/force_flush", timeout=10)
        client = PromClient(vm.url, flavor="victoriametrics")
        at = t0 + 80.5

        def value(expr: str) -> float | None:
            deadline = time.monotonic() + 30
            while True:   # imported samples become searchable within a second or two
                df = client.query(expr, at=at)
                if not df.empty or time.monotonic() > deadline:
                    return None if df.empty else float(df["value"].iloc[0])
                time.sleep(0.5)

        assert value("rate(cpu[4s])") == pytest.approx(0.885, rel=1e-6)
        assert value("increase(cpu[60s])") == pytest.approx(53.1, rel=1e-6)
        assert value("increase(born[60s])") == pytest.approx(62.0, rel=1e-6)
        assert value("rate(born[60s])") == pytest.approx(62.0 / 60, rel=1e-6)
        assert value("sum(rate(cpu[10s])) / sum(rate(born[10s]))") == pytest.approx(0.885 / 2, rel=1e-6)
        assert client.query("rate(cpu[1s])", at=at).empty
    finally:
        vm.stop()
