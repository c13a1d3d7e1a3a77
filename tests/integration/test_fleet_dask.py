"""Fleet runs on a real Dask LocalCluster of 2 worker processes (issue 17).

- The issue's "done when": the demo stack under two service names, `perfbook batch -p A -p B
  --executor dask-local:2`, gives one fleet page and two complete service reports with the same
  findings as `--executor local`.
- A worker killed (SIGKILL) while its notebook runs: the notebook is run again on a worker or
  reported failed, never hangs the batch, and leaves no notebook process behind.
- A variable the params name, missing on the workers but set on the client: a clear
  `source.unreachable` finding naming it, and the manifest says which worker lacked it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from runs import report_dir, tiny_notebook, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: Sections of the demo both executors run: the database (pg_stat_statements, tables), the
#: monitoring checklist, and the external APIs: findings that do not move from one minute to
#: the next on a stack whose traffic has stopped.
SECTIONS = "database,monitoring,external-apis"


def _service(run, name: str) -> Path:
    """The demo's params under another service name, beside the original (relative paths hold)."""
    data = yaml.safe_load(run.params_path.read_text())
    data["service"] = name
    path = run.params_path.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fleet(run, files: list[Path], out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    args = [sys.executable, "-m", "perfbook.cli", "batch", "--outputs", str(out), "--sections", SECTIONS,
            "--incident", "fleet-test", "--timeout", "300", *extra]
    for f in files:
        args += ["-p", str(f)]
    res = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **run.env), timeout=900)
    assert "Report: " in res.stdout, (res.returncode, res.stdout[-3000:], res.stderr[-3000:])
    return res, report_dir(res.stdout)


#: Checks that read the present (a probe, the service's /health/services, pg_stat_activity): what
#: they see may change between two runs a minute apart, so only that they found the same things
#: (code and subject) is compared; every other check reads the params' fixed window or the
#: statistics of an idle database, and must agree to the severity.
LIVE_CHECKS = {"/health/services", "active probes with backoff", "connections (pg_stat_activity)", "lock waits",
               "long-running statements and idle transactions"}


def _verdicts(fleet_dir: Path) -> dict[str, set[tuple[str, ...]]]:
    findings = json.loads((fleet_dir / "findings.json").read_text())
    out: dict[str, set] = {}
    for f in findings:
        key = (f["section"], f["code"], f.get("subject") or "")
        out.setdefault(f["service"], set()).add(key if f.get("check") in LIVE_CHECKS else (*key, f["severity"]))
    return out


def test_demo_fleet_on_dask_local_matches_the_local_executor(incident_run, tmp_path):
    files = [_service(incident_run, "demo-api"), _service(incident_run, "demo-api-eu")]
    local, local_dir = _fleet(incident_run, files, tmp_path / "out-local")
    dask, dask_dir = _fleet(incident_run, files, tmp_path / "out-dask", "--executor", "dask-local:2")
    assert dask.returncode == local.returncode == 1, dask.stderr[-3000:]   # critical findings: the incident
    assert "on dask-local:2" in dask.stderr

    # One fleet page, two complete service reports.
    manifest = json.loads((dask_dir / "manifest.json").read_text())
    assert manifest["kind"] == "fleet" and manifest["status"] == "complete" and manifest["exit_code"] == 1
    assert manifest["executor"]["executor"] == "dask-local:2" and len(manifest["executor"]["workers"]) == 2
    assert [s["service"] for s in manifest["services"]] == ["demo-api", "demo-api-eu"]
    page = (dask_dir / "index.html").read_text()
    workers = set()
    for s in manifest["services"]:
        run_dir = (dask_dir / s["run"]).resolve()
        run_manifest = json.loads((run_dir / "manifest.json").read_text())
        assert run_manifest["status"] == "complete" and run_manifest["service"] == s["service"]
        assert [nb["status"] for nb in run_manifest["notebooks"]] == ["ok"] * 3
        for nb in run_manifest["notebooks"]:
            assert nb["worker"].startswith("tcp://127.0.0.1:"), nb["worker"]
            workers.add(nb["worker"].split()[0])
            assert (run_dir / nb["html"]).is_file()
            assert f"{s['run']}/{nb['html']}" in page           # the grid links into the service's pages
        assert f"{s['run']}/index.html" in page
    assert workers <= set(manifest["executor"]["workers"])

    # The same findings, service by service, as on the local executor.
    want, got = _verdicts(local_dir), _verdicts(dask_dir)
    assert set(got) == {"demo-api", "demo-api-eu"}
    assert got == want, {s: (sorted(got[s] - want.get(s, set())), sorted(want.get(s, set()) - got[s])) for s in got}
    # ... and they are the incident's: the database faults, found on both services.
    for service in got:
        codes = {(v[0], v[1]) for v in got[service] if len(v) == 4 and v[3] in ("warning", "critical")}
        assert ("database", "db.missing_index") in codes and ("database", "db.bloat") in codes, codes


# --------------------------------------------------------------------------- a worker dies mid-run

@pytest.fixture
def slow_notebooks(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    # Each writes a marker (who is running), then takes a while, then says a finding.
    body = ("import os, time, json\n"
            "open(os.path.join(os.environ['PB_FLEET_MARKERS'], '{{}}-{{}}'.format({name!r}, os.getpid())), 'w').close()\n"
            "time.sleep(8)\n"
            "print('done')")
    for name in ("alpha", "beta"):
        tiny_notebook(d / f"{name}.ipynb", body.format(name=name))
    return d


def _notebook_processes(marker_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("perfbook.execute" in part or "ipykernel" in part for part in (p.info["cmdline"] or [])) and \
                    any(str(marker_dir) in part for part in p.environ().values()):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def test_a_worker_killed_mid_run_never_hangs_the_batch(slow_notebooks, tmp_path, monkeypatch):
    from perfbook.executors import DaskBackend, ExecutorSpec
    from perfbook.params import load
    from perfbook.runner import Batch, drive

    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("PB_FLEET_MARKERS", str(markers))   # before the workers start: they inherit it
    params = tmp_path / "p.yaml"
    params.write_text("service: killed-worker\nenvironment: test\nwindow: {since: -5m, until: now}\n")
    backend = DaskBackend(ExecutorSpec("dask-local", workers=2), jobs=2)
    try:
        pids = backend.worker_pids()
        assert len(pids) == 2
        batch = Batch(params, load(params), ["alpha", "beta"], outputs=tmp_path / "out", nb_dir=slow_notebooks,
                      timeout=120)
        killed: dict[str, int] = {}

        def kill_one() -> None:
            # When both notebooks run (two markers), kill the worker process running alpha.
            wait_for(lambda: len(list(markers.iterdir())) >= 2, 90, "both notebooks to start")
            alpha = next(p for p in markers.iterdir() if p.name.startswith("alpha-"))
            kernel_pid = int(alpha.name.split("-")[1])
            for addr, pid in pids.items():
                if kernel_pid in {c.pid for c in psutil.Process(pid).children(recursive=True)}:
                    killed[addr] = pid
                    os.kill(pid, signal.SIGKILL)
                    return

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        t0 = time.monotonic()
        result = drive([batch], backend)[0]
        wall = time.monotonic() - t0
        killer.join(5)
    finally:
        backend.close()
    assert killed, "the test did not find the worker running alpha"
    assert wall < 150, f"the batch took {wall:.0f} s after a worker died"
    by = {r.section: r for r in result.results}
    assert by["beta"].status == "ok"
    # alpha: run again on a worker (Dask reschedules the task of a dead worker), or reported.
    assert by["alpha"].status == "ok" or ("died" in by["alpha"].error or "lost" in by["alpha"].error), by["alpha"]
    if by["alpha"].status == "ok":
        assert len([p for p in markers.iterdir() if p.name.startswith("alpha-")]) == 2   # it ran twice
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and all((result.run_dir / nb["html"]).is_file()
                                                   for nb in manifest["notebooks"])
    # The dead worker's notebook process (a session of its own) noticed and stopped, kernel and all.
    wait_for(lambda: not _notebook_processes(markers), 20, "the orphaned notebook process to stop")


# --------------------------------------------------------------------------- a secret missing on the workers

def test_a_variable_missing_on_the_workers_is_a_clear_finding(incident_run, tmp_path, monkeypatch):
    from perfbook.executors import DaskBackend, ExecutorSpec
    from perfbook.params import load
    from perfbook.runner import Batch, drive

    params = incident_run.params_path
    var = load(params).targets.database_env
    assert var and incident_run.env.get(var)
    for k, v in incident_run.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(var)   # the workers start without it ...
    backend = DaskBackend(ExecutorSpec("dask-local", workers=2), jobs=2)
    try:
        monkeypatch.setenv(var, incident_run.env[var])   # ... the client has it (and redacts with it)
        batch = Batch(params, load(params), ["database"], outputs=tmp_path / "out", timeout=300)
        result = drive([batch], backend)[0]
    finally:
        backend.close()
    r = result.results[0]
    assert r.status == "ok", r.error            # a finding, not a traceback
    assert r.missing_env == [var] and r.worker.startswith("tcp://127.0.0.1:")
    unreachable = [f for f in r.findings if f.code == "source.unreachable" and f.subject == "postgres"]
    assert unreachable, [f.to_dict() for f in r.findings]
    assert any(var in json.dumps(f.to_dict()) for f in unreachable), [f.to_dict() for f in unreachable]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["notebooks"][0]["missing_env"] == [var]
    assert incident_run.env[var] not in (result.run_dir / "database.html").read_text()


# --------------------------------------------------------------------------- Ctrl-C stops every worker's notebook

def _ours(marker_dir: Path) -> list[psutil.Process]:
    """Every process started with ``marker_dir`` in its environment: the Dask scheduler's
    workers and nannies, the notebook processes, their kernels."""
    found = []
    for p in psutil.process_iter():
        try:
            if any(str(marker_dir) in v for v in p.environ().values()):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def test_ctrl_c_stops_a_dask_fleet_and_every_notebook_on_its_workers(tmp_path):
    nbs, markers = tmp_path / "notebooks", tmp_path / "markers"
    nbs.mkdir()
    markers.mkdir()
    tiny_notebook(nbs / "sleepy.ipynb", "import os, time\n"
                  "open(os.path.join(os.environ['PB_FLEET_MARKERS'], str(os.getpid())), 'w').close()\n"
                  "time.sleep(300)")
    files = []
    for name in ("alpha", "beta"):
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"service: {name}\nenvironment: test\nwindow: {{since: -5m, until: now}}\n")
        files += ["-p", str(p)]
    env = dict(os.environ, PERFBOOK_NOTEBOOKS=str(nbs), PB_FLEET_MARKERS=str(markers))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "perfbook.cli", "batch", *files, "--executor", "dask-local:2",
                             "--outputs", str(out), "--incident", "ctrl-c"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(list(markers.iterdir())) >= 2 or proc.poll() is not None, 120,
                 "both sleepy notebooks to run on the workers")
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stopped_in < 60, f"the fleet took {stopped_in:.0f} s to stop"
    fleet_dir = report_dir(stdout)
    manifest = json.loads((fleet_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["exit_code"] == 130
    for s in manifest["services"]:
        run_dir = (fleet_dir / s["run"]).resolve()
        run_manifest = json.loads((run_dir / "manifest.json").read_text())
        assert run_manifest["status"] == "interrupted"
        assert [nb["status"] for nb in run_manifest["notebooks"]] == ["interrupted"]
        assert (run_dir / "sleepy.html").read_text().rstrip().endswith("</html>")
    # Nothing of the fleet runs on: no worker, no notebook process, no kernel.
    wait_for(lambda: not _ours(markers), 30, "every process of the fleet to stop")


# --------------------------------------------------------------------------- a cluster that is already running

def test_a_running_cluster_is_used_through_its_scheduler_address(tmp_path):
    """--executor dask --scheduler ADDRESS: the path to a cluster perfbook did not start (here a
    LocalCluster of this test, as a regional worker pool would be), which it leaves running."""
    from distributed import Client, LocalCluster

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    tiny_notebook(nbs / "fast.ipynb", "print('fast done')")
    files = []
    for name in ("alpha", "beta"):
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"service: {name}\nenvironment: test\nwindow: {{since: -5m, until: now}}\n")
        files += ["-p", str(p)]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", *files, "--executor", "dask",
                              "--scheduler", address, "--outputs", str(tmp_path / "out")],
                             cwd=ROOT, env=dict(os.environ, PERFBOOK_NOTEBOOKS=str(nbs)), capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        with Client(cluster) as client:   # still up: perfbook closed its client, not the cluster
            workers = set(client.scheduler_info()["workers"])
    manifest = json.loads((report_dir(res.stdout) / "manifest.json").read_text())
    assert manifest["executor"]["executor"] == f"dask ({address})"
    assert manifest["executor"]["slots"] == 2 and set(manifest["executor"]["workers"]) == workers
    assert {nb["worker"].split()[0] for s in manifest["services"] for nb in s["notebooks"]} <= workers
