"""Issue 16's "done when": an alert firing on the demo stack produces, with no one typing
anything, a dated report that the archive index lists, and `perfbook bundle` turns it into
one file.

The real chain, all on 127.0.0.1: the session stack's Prometheus evaluates the runbook's
alert rules (armed by the fixture, `for: 10s`) and sends to a real Alertmanager (Debian's
prometheus-alertmanager, group_wait 1 s), which posts its webhook with a bearer token to
`perfbook listen` (a child process); listen starts the batch. On the healthy stack nothing
fires and nothing runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from runs import wait_for

from perfbook.demo.alertmanager import AlertmanagerServer
from perfbook.demo.processes import free_port
from perfbook.report.bundle import write_bundle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "listen-test-t0ken-9f2c"
ALERT = "HighMemory"      # fires on the incident (api-2 at ~105 % of its 512 MB) and stays firing after the traffic


class Listening:
    def __init__(self, tmp_path: Path, run, alertname: str):
        self.port = free_port()
        self.out = tmp_path / "out"
        cfg = {"bind": f"127.0.0.1:{self.port}", "token_env": "PB_TEST_LISTEN_TOKEN", "outputs": str(self.out),
               "routes": [{"match": {"alertname": alertname}, "params": str(run.params_path), "lookback": "5m",
                           "sections": ["quick-diagnostics"]}]}
        self.config = tmp_path / "listen.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, **run.env, "PB_TEST_LISTEN_TOKEN": TOKEN}
        self.log = tmp_path / "listen.log"
        self._log = open(self.log, "w")  # noqa: SIM115 - the child's stderr, closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "perfbook.cli", "listen", "--config", str(self.config)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._up(), 30, "perfbook listen to answer /healthz", every=0.5)
        self.am = AlertmanagerServer(tmp_path / "am", f"{self.url}/", token=TOKEN)
        self.am.start()
        self.prom = run.stack.prometheus
        self.prom.alertmanagers = [self.am.address]
        self.prom.reload()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"perfbook listen exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    def runs(self) -> list[Path]:
        return sorted(p.parent for p in self.out.glob("*/*/manifest.json"))

    def close(self) -> int:
        self.prom.alertmanagers = []
        self.prom.reload()
        self.am.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()


def _complete(run_dir: Path) -> bool:
    try:
        m = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("status") == "complete" and "alert" in m


def test_a_firing_alert_starts_a_run_the_archive_lists_and_bundle_packs(incident_run, tmp_path):
    listening = Listening(tmp_path, incident_run, ALERT)
    try:
        run_dir = wait_for(lambda: [r for r in listening.runs() if _complete(r)], 300,
                        f"a complete run started by {ALERT} (listen log: {listening.log})")[0]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["incident"].startswith(f"{ALERT}-") and manifest["alert"]["alertname"] == ALERT
        assert run_dir.parent.name == time.strftime("%Y-%m-%d") or run_dir.parent.name[:4].isdigit()
        findings = json.loads((run_dir / "findings.json").read_text())
        pressure = [f for f in findings if f["code"] == "memory.pressure" and f["severity"] in ("warning", "critical")]
        assert pressure, [(f["code"], f["severity"]) for f in findings]
        # the archive index lists it; the status page names it; one run for the one alert group
        archive = (listening.out / "index.html").read_text()
        assert f"{run_dir.parent.name}/{run_dir.name}/index.html" in archive and manifest["incident"] in archive
        assert manifest["incident"] in requests.get(listening.url, timeout=5).text
        time.sleep(6)                       # past Alertmanager's group_interval: a re-send changes nothing
        assert len(listening.runs()) == 1, listening.runs()
        # and the postmortem's one file
        (bundle,) = write_bundle(run_dir, tmp_path / "postmortem.html")
        assert "perfbook incident report" in bundle.read_text() and "memory.pressure" in bundle.read_text()
    finally:
        code = listening.close()
    assert code == 0, listening.log.read_text()


def test_nothing_fires_on_the_healthy_stack_and_nothing_runs(healthy_run, tmp_path):
    listening = Listening(tmp_path, healthy_run, "=~.+")
    try:
        time.sleep(15)                      # rules evaluate every 1 s, `for` is 10 s, group_wait 1 s
        alerts = requests.get(f"{listening.am.url}/api/v2/alerts", timeout=5).json()
        assert alerts == [], alerts
        assert listening.runs() == []
        assert "No alert yet" in requests.get(listening.url, timeout=5).text
    finally:
        code = listening.close()
    assert code == 0, listening.log.read_text()
