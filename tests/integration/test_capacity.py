"""Capacity sections on the real demo stack: load balancing, scaling, load/stress tests.

Uses the shared session runs ``incident_run`` / ``healthy_run`` (tests/integration/
conftest.py: a private PostgreSQL with pg_stat_statements, a Prometheus server, two
demo-service instances and the external-API stand-in on 127.0.0.1, traffic driven, then
``perfbook batch`` through papermill). The scale-out test starts its own two-instance
``cpu_saturation`` stack, the scale-in and instance-down tests a four-instance healthy one; the allow-list test needs no stack: a listener on a loopback
alias that is not on the allow-list counts connections.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from runs import hostport

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None, timeout: int = 600) -> tuple[subprocess.CompletedProcess, list[dict]]:
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", *args], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **(env or {})), timeout=timeout)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
    assert lines, f"no report path:\n{res.stdout}\n{res.stderr}"
    run_dir = Path(lines[-1][8:]).parent
    return res, json.loads((run_dir / "findings.json").read_text())


# --------------------------------------------------------------------------- load balancing


def test_uneven_load_is_found_and_the_hot_instance_named(incident_run):
    hot = hostport(incident_run.stack.service_urls[0])      # the driver sends it ~80 %
    found = incident_run.find("balance.uneven", section="load-balancing")
    assert found, incident_run.section("load-balancing")
    f = found[0]
    assert f["subject"] == hot
    assert f["evidence"]["share_by_instance"][hot] > 0.6
    assert f["evidence"]["hot_since"]
    assert "flyctl scale count" in f["recommendation"]
    assert hot in incident_run.html("load-balancing")


def test_healthy_load_is_even(healthy_run):
    assert healthy_run.alarms("load-balancing") == []
    ok = [f for f in healthy_run.section("load-balancing") if f["code"] == "balance.uneven"]
    assert ok and ok[0]["severity"] == "ok"


# --------------------------------------------------------------------------- scaling


def test_scaling_recommends_nothing_on_healthy(healthy_run):
    assert healthy_run.alarms("scaling") == []
    codes = {(f["code"], f["severity"]) for f in healthy_run.section("scaling")}
    assert ("scaling.scale_out", "ok") in codes and ("scaling.scale_in", "ok") in codes


def test_scaling_evaluates_the_incident_from_its_metrics(incident_run):
    # The incident's slow routes come from the pool, the N+1 and the slow enrichment step; whatever
    # the verdict, it must rest on per-instance CPU and a projection, and every check must have run.
    assert [f for f in incident_run.section("scaling") if f["severity"] == "error"] == []
    out = [f for f in incident_run.section("scaling") if f["code"] == "scaling.scale_out"]
    assert out
    ev = out[0]["evidence"]
    assert ev["instances"] == 2 and len(ev["cpu_median_by_instance"]) == 2
    assert ev["latency_above_target"]          # the slow /api/products/{id} is seen


def _median_cpu_by_instance(prometheus_url: str, start: float, end: float) -> dict[str, float]:
    from perfbook.sources.prometheus import PromClient

    with PromClient(prometheus_url) as prom:
        df = prom.query_range('100 * rate(process_cpu_seconds_total{job="demo-api"}[30s])', start, end, 1)
    return {k: float(v) for k, v in df.groupby("instance")["value"].median().items()}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _drive_window(stack, tmp_path: Path, traffic_s: float, settle_s: float = 30, **drive):
    """Drive ``traffic_s`` of the demo mix at ``stack``; the window is the traffic from
    ``settle_s`` after its start (30: once the 30 s rate() range holds only traffic).
    Returns ``(params_path, since, until, cpu)``: cpu is the median CPU % per instance
    Prometheus measured over that window."""
    from perfbook.demo_cli import write_demo_params

    t0 = time.time()
    stack.drive(traffic_s, **drive)
    t1 = time.time()
    since, until = t0 + settle_s, t1 - 1
    time.sleep(2)
    params_path = write_demo_params(stack, tmp_path / "params.yaml")
    return params_path, since, until, _median_cpu_by_instance(stack.prometheus_url, since, until)


def _scaling_on(stack, tmp_path: Path, traffic_s: float, settle_s: float = 30, **drive) -> tuple[dict, list[dict]]:
    """:func:`_drive_window`, then the scaling section over that window with the params'
    defaults. Returns the median CPU % per instance and the findings."""
    params_path, since, until, cpu = _drive_window(stack, tmp_path, traffic_s, settle_s, **drive)
    return cpu, _scaling_run(stack, params_path, tmp_path / "out", since, until)


def _scaling_run(stack, params_path: Path, out: Path, since: float, until: float, *overrides: str) -> list[dict]:
    """The scaling section over [since, until] with ``-P`` overrides; no error findings."""
    extra = [a for o in overrides for a in ("-P", o)]
    _res, findings = _cli("run", "scaling", "-p", str(params_path), "--outputs", str(out),
                         "--since", _iso(since), "--until", _iso(until), *extra, env=stack.env())
    assert [f for f in findings if f["severity"] == "error"] == [], findings
    return findings


def test_scaling_recommends_scale_out_at_the_runbooks_70_percent(tmp_path):
    """Starts a two-instance stack with the ``cpu_saturation`` fault on both instances (a
    background job on two worker threads keeps about a core busy while traffic flows) and
    drives light traffic: CPU above the runbook's 70 % on all instances, at the default
    line (settings.scaling.target_cpu_percent = 70, not lowered).

    Two instances over 70 % need 1.4 of this machine's 2 cores: on a busy machine the fault
    cannot get them. Then the rule is checked both ways on what was measured: no scale-out
    at 70 (CPU is not above it on all instances), and a scale-out at a line just under the
    lowest instance's measured CPU — the same rule, the same window, never a skip."""
    from perfbook.demo.stack import Stack

    with Stack("cpu_saturation", state_dir=tmp_path / "stack", everywhere={"cpu_saturation"}) as stack:
        params_path, since, until, cpu = _drive_window(stack, tmp_path, 45, workers=2, think_time=0.2)
        findings = _scaling_run(stack, params_path, tmp_path / "out", since, until)
        # the fault did load both instances (idle: a few %; seen 25 % each at load 9 on 2 cores, ~50 % with
        # one core busy, 70-90 % on an idle machine)
        assert len(cpu) == 2 and min(cpu.values()) > 15, cpu
        target = 70
        if min(cpu.values()) <= 72:                            # (a busy machine: 2 cores shared)
            assert not [f for f in findings if f["code"] == "scaling.scale_out"
                        and f["severity"] in ("warning", "critical")], (cpu, findings)
            target = int(min(cpu.values()) * 0.8)
            findings = _scaling_run(stack, params_path, tmp_path / "out-lower", since, until,
                                    f"settings.scaling.target_cpu_percent={target}")
    out = [f for f in findings if f["code"] == "scaling.scale_out"]
    assert out and out[0]["severity"] in ("warning", "critical"), (cpu, target, findings)
    ev = out[0]["evidence"]
    assert ev["target_cpu_percent"] == target and ev["scale_to"] > 2, ev
    assert f"CPU above {target} % on all 2 instances" in out[0]["title"]
    assert f"flyctl scale count {ev['scale_to']} --app demo-api" in out[0]["recommendation"]
    assert "min_machines" in out[0]["recommendation"]
    assert [f["severity"] for f in findings if f["code"] == "scaling.scale_in"] == ["ok"]


@pytest.fixture(scope="module")
def four_instances(tmp_path_factory):
    """A healthy stack of four instances (over-provisioned for the demo's traffic)."""
    from perfbook.demo.stack import Stack

    with Stack("healthy", state_dir=tmp_path_factory.mktemp("four") / "stack", instances=4) as stack:
        yield stack


def test_scaling_recommends_scale_in_when_over_provisioned(four_instances, tmp_path):
    """Light traffic on four healthy instances: every instance far under 20 % CPU, every
    endpoint well within target, more instances than the runbook's minimum of 2 — scale
    in to 2, one step at a time."""
    # idle is idle from the start: no need to wait for the rate() range to fill
    cpu, findings = _scaling_on(four_instances, tmp_path, 25, settle_s=10, workers=2, think_time=0.3)
    assert len(cpu) == 4 and max(cpu.values()) < 20, cpu
    scale_in = [f for f in findings if f["code"] == "scaling.scale_in"]
    assert [f["severity"] for f in scale_in] == ["info"], findings
    ev = scale_in[0]["evidence"]
    assert ev["instances"] == 4 and ev["scale_to"] == 2, ev
    assert "flyctl scale count 2 --app demo-api" in scale_in[0]["recommendation"]
    assert [f["severity"] for f in findings if f["code"] == "scaling.scale_out"] == ["ok"]


def test_an_instance_that_dies_is_named_down(four_instances, tmp_path):
    """api-4 is killed (SIGKILL, a crash) in the middle of the traffic: quick diagnostics says
    instance.down, critical (still down at the end of the window), for api-4 alone, and
    points to the load-balancing section."""
    import signal

    from perfbook.demo import traffic
    from perfbook.demo_cli import write_demo_params

    stack = four_instances
    t0 = time.time()
    stack.drive(6, workers=2, think_time=0.2)
    os.kill(stack.procs["api-4"].pid, signal.SIGKILL)
    killed = time.time()
    traffic.drive(stack.service_urls[:3], 6, workers=2, think_time=0.2)
    # an outage is failed scrapes spanning settings.diagnostics.down_for (15 s; shorter is a
    # flap): the window ends well past it (Prometheus scrapes every second)
    from perfbook.params import Params
    down_for = Params(service="x").settings.diagnostics.down_for
    time.sleep(max(3.0, down_for + 5 - (time.time() - killed)))
    params_path = write_demo_params(stack, tmp_path / "params.yaml")
    res, findings = _cli("run", "quick-diagnostics", "-p", str(params_path), "--outputs", str(tmp_path / "out"),
                         "--since", _iso(t0 - 10), "--until", _iso(time.time()), env=stack.env())
    dead = hostport(stack.service_urls[3])
    down = [f for f in findings if f["code"] == "instance.down" and f["severity"] != "ok"]
    assert [(f["severity"], f["subject"]) for f in down] == [("critical", dead)], findings
    assert down[0]["evidence"]["failed_scrapes"] >= 3 and down[0]["evidence"]["down_at_end"]
    run_dir = Path([ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent
    html = (run_dir / "quick-diagnostics.html").read_text(encoding="utf-8")
    assert "Instances up" in html and "instance down in the window" in html


# --------------------------------------------------------------------------- load / stress test


def _breaking(run) -> list[dict]:
    return [f for f in run.section("load-test") if f["code"] == "loadtest.breaking_point"]


def test_stress_test_finds_a_breaking_point_on_the_incident(incident_run):
    found = _breaking(incident_run)
    assert found, incident_run.section("load-test")
    f = found[0]
    assert f["severity"] in ("warning", "critical"), f
    assert f["subject"].endswith("users") and f["evidence"]["breaking_users"] >= 1
    assert f["evidence"]["reasons"]
    assert "<img" in incident_run.html("load-test")      # the latency / throughput plots


def test_healthy_stack_holds_the_low_stages_within_target(healthy_run):
    assert healthy_run.alarms("load-test") == []
    found = _breaking(healthy_run)
    assert found
    stages = found[0]["evidence"]["stages"]
    expected = found[0]["evidence"]["expected_users"]
    low = [s for s in stages if s["users"] <= 2 * expected]
    assert low and all(s["verdict"] == "holds" for s in low), stages
    assert [f for f in healthy_run.section("load-test") if f["severity"] == "error"] == []


class Listener:
    """Accepts TCP connections on a loopback alias and counts them."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_a_host_outside_the_allow_list_is_refused_before_any_request(tmp_path):
    # 127.0.0.2 is loopback, but not on the default allow-list (127.0.0.1, localhost, ::1).
    listener = Listener("127.0.0.2")
    try:
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({
            "service": "not-ours", "window": {"since": "-5m", "until": "now"},
            "targets": {"base_url": f"http://127.0.0.2:{listener.port}"},
            "settings": {"load_test": {"mode": "stress", "stages": [{"users": 5, "duration": "3s"}], "recovery": 0}}}))
        res, findings = _cli("run", "load-test", "-p", str(params), "--outputs", str(tmp_path / "out"), timeout=300)
        time.sleep(0.5)
        refused = [f for f in findings if f["code"] == "loadtest.refused"]
        assert [f["severity"] for f in refused] == ["error"], findings
        assert "refused before any request" in refused[0]["title"]
        assert refused, findings
        assert refused[0]["evidence"]["host"] == f"http://127.0.0.2:{listener.port}"
        assert not [f for f in findings if f["code"] == "loadtest.breaking_point"]
        assert listener.accepted == 0
        assert res.returncode == 1            # a check that could not run is never read as healthy
    finally:
        listener.close()
