"""perfbook listen: the config (one-line errors), Alertmanager's payload, routing, one run
per alert group and firing episode, the answers (400/401/413/503), the resolved
notification in the manifest, and the HTTP shell on a real socket. The real Alertmanager:
tests/integration/test_listen_alertmanager.py."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from perfbook import cli, listen
from perfbook.params import ParamsError

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **over) -> Path:
    (tmp_path / "svc.yaml").write_text((ROOT / "params" / "demo.yaml").read_text())
    data = {"bind": "127.0.0.1:0", "outputs": "out", "max_concurrent": 1, "queue": 2,
            "routes": [{"match": {"service": "demo-api", "severity": "=~warning|critical"}, "params": "svc.yaml",
                        "lookback": "30m", "sections": ["database"]}], **over}
    import yaml
    p = tmp_path / "listen.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def payload(status="firing", group="{}:{alertname=\"HighCPU\"}", starts="2026-12-06T10:00:00Z", **labels) -> dict:
    labels = {"alertname": "HighCPU", "service": "demo-api", "severity": "warning", **labels}
    return {"version": "4", "groupKey": group, "status": status, "receiver": "perfbook",
            "groupLabels": {"alertname": labels["alertname"]}, "commonLabels": labels, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0,
            "alerts": [{"status": status, "labels": labels, "annotations": {}, "startsAt": starts,
                        "endsAt": "2026-12-06T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus/graph", "fingerprint": "abc"}]}


class FakeRuns:
    """Records the runs the receiver starts; each writes a run folder with a manifest."""

    def __init__(self, tmp_path: Path, hold: threading.Event | None = None):
        self.tmp, self.hold, self.started = tmp_path, hold, []

    def __call__(self, ep, route, cfg):
        self.started.append((ep, route))
        if self.hold is not None:
            self.hold.wait(10)
        d = self.tmp / "runs" / f"{ep.incident}-{len(self.started)}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"status": "complete", "notebooks": []}))
        return 0, str(d)


def wait_for(cond, timeout=10):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize("over, field, why", [
    ({"routes": []}, "routes", "at least 1"),
    ({"bind": "localhost"}, "bind", "host:port"),
    ({"token_env": "NOT_SET_ANYWHERE_PB"}, "token_env", "is not set"),
    ({"routes": [{"match": {"service": "=~(("}, "params": "svc.yaml"}]}, "routes[0].match", "does not compile"),
    ({"routes": [{"match": {"service": "x"}, "params": "nope.yaml"}]}, "routes[0].params", "no such file"),
    ({"routes": [{"match": {"service": "x"}, "params": "svc.yaml", "sections": ["nope"]}]}, "routes[0].sections",
     "unknown section"),
    ({"routes": [{"match": {"service": "x"}, "params": "svc.yaml", "command": "rm -rf /"}]}, "routes.0.command",
     "unknown key"),
    ({"token": "s3cret"}, "token", "secret value written inline"),
])
def test_a_bad_config_is_one_line_naming_the_file_and_field(tmp_path, over, field, why):
    path = config(tmp_path, **over)
    with pytest.raises(ParamsError) as exc:
        listen.load_config(path)
    text = str(exc.value)
    assert str(path) in text and field.replace("[0]", ".0").split(".")[0] in text and why in text, text
    assert "\n" not in text


def test_payload_checks_say_what_is_wrong_in_one_line():
    assert listen.parse_payload(json.dumps(payload()).encode())["groupKey"]
    for body, why in [(b"\xff", "not JSON"), (b"[1]", "JSON object"), (json.dumps({**payload(), "version": "3"}), "version"),
                      (json.dumps({**payload(), "alerts": []}), "no alerts"),
                      (json.dumps({**payload(), "groupKey": ""}), "no groupKey"),
                      (json.dumps(payload(starts="yesterday")), "startsAt")]:
        with pytest.raises(listen.BadPayload, match=why):
            listen.parse_payload(body if isinstance(body, bytes) else body.encode())


def test_one_run_per_group_and_firing_episode_with_the_alerts_incident_and_window(tmp_path):
    cfg = listen.load_config(config(tmp_path))
    runs = FakeRuns(tmp_path)
    r = listen.Receiver(cfg, runs, log=lambda m: None)
    assert r.notify(payload())[0] == 200
    assert r.notify(payload())[1].endswith("(same group and firing episode)")          # a re-send
    other = payload(alertname="HighCPU", instance="api-2")                               # joins the same group
    assert "already" in r.notify(other)[1]
    wait_for(lambda: len(runs.started) == 1 and r.running == 0 and r.queue.empty())
    ep, route = runs.started[0]
    assert ep.incident.startswith("HighCPU-") and ep.incident.endswith("-20261206")
    assert ep.since.isoformat() == "2026-12-06T09:30:00+00:00" and route.sections == ["database"]
    # a new firing episode of the same group (it resolved, then fired again): a second run
    wait_for(lambda: ep.state == "done")
    assert "resolved" in r.notify(payload(status="resolved"))[1]
    manifest = json.loads((Path(ep.run_dir) / "manifest.json").read_text())
    assert manifest["alert"]["alertname"] == "HighCPU" and manifest["alert"]["resolved_at"] == "2026-12-06T10:20:00Z"
    assert r.notify(payload(starts="2026-12-06T11:00:00Z"))[0] == 200
    wait_for(lambda: len(runs.started) == 2)
    r.stop()


def test_alerts_of_one_group_in_any_order_start_one_run_from_the_earliest(tmp_path):
    cfg = listen.load_config(config(tmp_path))
    runs = FakeRuns(tmp_path)
    r = listen.Receiver(cfg, runs, log=lambda m: None)
    data = payload()
    later = json.loads(json.dumps(data["alerts"][0]))
    later["labels"] = {**later["labels"], "instance": "api-2"}
    later["startsAt"] = "2026-12-06T10:05:00Z"
    data["alerts"].insert(0, later)   # Alertmanager's order is not the order they fired in
    assert r.notify(data)[0] == 200
    wait_for(lambda: r.running == 0 and r.queue.empty() and len(runs.started) >= 1)
    assert len(runs.started) == 1
    assert runs.started[0][0].since.isoformat() == "2026-12-06T09:30:00+00:00"   # the earliest startsAt - 30m
    r.stop()


def test_labels_only_select_a_route_and_never_reach_a_path_or_command(tmp_path):
    cfg = listen.load_config(config(tmp_path))
    runs = FakeRuns(tmp_path)
    r = listen.Receiver(cfg, runs, log=lambda m: None)
    assert "no route matches" in r.notify(payload(service="billing"))[1]
    assert "no route matches" in r.notify(payload(severity="info"))[1]                  # regex anchored
    evil = payload(alertname="../../etc/passwd; rm -rf /", params="/etc/shadow", group="g2")
    assert r.notify(evil)[0] == 200
    wait_for(lambda: len(runs.started) == 1)
    ep, route = runs.started[0]
    assert "/" not in ep.incident and ";" not in ep.incident and " " not in ep.incident
    assert route.params == str(tmp_path / "svc.yaml")
    r.stop()


def test_a_full_queue_is_503_and_the_running_run_is_not_lost(tmp_path):
    cfg = listen.load_config(config(tmp_path, queue=1))
    hold = threading.Event()
    runs = FakeRuns(tmp_path, hold)
    r = listen.Receiver(cfg, runs, log=lambda m: None)
    assert r.notify(payload(group="a"))[0] == 200
    wait_for(lambda: r.running == 1)
    assert r.notify(payload(group="b"))[0] == 200                                          # waits
    status, line = r.notify(payload(group="c"))
    assert status == 503 and "queue is full" in line
    hold.set()
    wait_for(lambda: len(runs.started) == 2 and r.running == 0)
    r.stop()


def test_the_http_shell_answers_token_size_payload_health_and_status(tmp_path, monkeypatch):
    monkeypatch.setenv("PB_LISTEN_TOKEN", "t0ken-for-tests")
    cfg = listen.load_config(config(tmp_path, token_env="PB_LISTEN_TOKEN"))
    runs = FakeRuns(tmp_path)
    receiver = listen.Receiver(cfg, runs, log=lambda m: None)
    handler = type("H", (listen._Handler,), {"receiver": receiver, "log_message": lambda *a: None})
    server = listen.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    auth = {"Authorization": "Bearer t0ken-for-tests"}
    try:
        assert requests.get(f"{url}/healthz", timeout=5).text == "ok\n"
        assert requests.post(url, json=payload(), timeout=5).status_code == 401
        assert requests.post(url, json=payload(), headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
        r = requests.post(url, data=b"{", headers=auth, timeout=5)
        assert r.status_code == 400 and r.text.startswith("not JSON") and r.text.count("\n") == 1
        assert requests.post(url, data=b"x" * (listen.MAX_BODY + 1), headers=auth, timeout=5).status_code == 413
        r = requests.post(url, json=payload(), headers=auth, timeout=5)
        assert r.status_code == 200 and "queued" in r.text
        wait_for(lambda: len(runs.started) == 1 and receiver.running == 0)
        page = requests.get(url, timeout=5).text
        assert "perfbook listen" in page and runs.started[0][0].incident in page and "<script" not in page
    finally:
        server.shutdown()
        server.server_close()
        receiver.stop()


def test_cli_refuses_a_bad_config_before_listening(tmp_path, capsys):
    assert cli.main(["listen", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "no such file" in err and len(err.strip().splitlines()) == 1


def test_a_restarted_receiver_still_knows_the_episodes_it_ran(tmp_path):
    cfg = listen.load_config(config(tmp_path))
    runs = FakeRuns(tmp_path)
    first = listen.Receiver(cfg, runs, log=lambda m: None)
    assert first.notify(payload())[0] == 200
    wait_for(lambda: len(runs.started) == 1 and first.running == 0 and first.queue.empty())
    first.stop()
    second = listen.Receiver(cfg, runs, log=lambda m: None)      # systemd restarted it
    assert "already done" in second.notify(payload())[1]        # Alertmanager's re-send
    assert "resolved" in second.notify(payload(status="resolved"))[1]
    assert json.loads((Path(runs.started[0][0].run_dir) / "manifest.json").read_text())["alert"]["resolved_at"]
    second.stop()
    state = Path(cfg.outputs) / ".perfbook-listen.json"
    rows = json.loads(state.read_text())
    rows[0]["state"] = "running"                                  # stopped mid-run: that episode runs again
    state.write_text(json.dumps(rows))
    fourth = listen.Receiver(cfg, runs, log=lambda m: None)
    assert "queued" in fourth.notify(payload())[1]
    wait_for(lambda: len(runs.started) == 2 and fourth.running == 0 and fourth.queue.empty())
    fourth.stop()
    state.write_text("{broken")
    third = listen.Receiver(cfg, runs, log=lambda m: None)        # an unreadable state is said, not fatal
    assert third.episodes == {}
    third.stop()
