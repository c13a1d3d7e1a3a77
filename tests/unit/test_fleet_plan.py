"""Fleet runs (issue 17) without kernels: the executor spec, the fleet file, checks before
anything runs, the order notebooks start in, exit status over a fleet, the fleet folder and
page, and the archive. Tasks are stood in for (perfbook.executors.run_notebook_task), so the
runner's real path — Batch, drive(), the fleet folder — runs; tests/integration/test_fleet_dask.py
runs real notebooks on a real Dask LocalCluster."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfbook import executors
from perfbook.executors import BadExecutor, ExecutorSpec, parse_executor
from perfbook.findings import Finding
from perfbook.fleet import fleet_exit, load_fleet_file, plan, run_fleet
from perfbook.params import ParamsError, load
from perfbook.report import NotARun, read_run
from perfbook.report.archive import FLEET_GROUP, recurring, scan
from perfbook.runner import BadInput, Batch, run_phases
from perfbook.tasks import TaskOutcome

ROOT = Path(__file__).resolve().parents[2]


def _params(folder: Path, service: str, environment: str = "test", **extra: str) -> Path:
    p = folder / f"{service}-{environment}.yaml"
    p.write_text(f"service: {service}\nenvironment: {environment}\nwindow: {{since: -5m, until: now}}\n"
                 + "".join(f"{k}: {v}\n" for k, v in extra.items()), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- --executor

@pytest.mark.parametrize("spec, scheduler, want", [
    (None, None, ExecutorSpec("local")),
    ("local", None, ExecutorSpec("local")),
    ("dask-local:2", None, ExecutorSpec("dask-local", workers=2)),
    ("dask", "tcp://10.0.0.5:8786", ExecutorSpec("dask", scheduler="tcp://10.0.0.5:8786")),
])
def test_executor_specs(spec, scheduler, want):
    assert parse_executor(spec, scheduler) == want


@pytest.mark.parametrize("spec, scheduler, says", [
    ("dask", None, "--scheduler tcp://HOST:8786"),
    ("dask-local:0", None, "1 to 64"),
    ("dask-local:2", "tcp://h:8786", "not with dask-local"),
    ("local", "tcp://h:8786", "only with --executor dask"),
    ("ray", None, "unknown"),
    ("dask", "http://h:8786", "not a Dask scheduler address"),
])
def test_bad_executor_specs_say_why_in_one_line(spec, scheduler, says):
    with pytest.raises(BadExecutor) as e:
        parse_executor(spec, scheduler)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_dask_local_without_a_count_takes_the_cores():
    assert parse_executor("dask-local").workers >= 1


# --------------------------------------------------------------------------- the fleet file

def test_fleet_file_paths_are_relative_to_it(tmp_path):
    (tmp_path / "svc").mkdir()
    a = _params(tmp_path / "svc", "api")
    f = tmp_path / "fleet.yaml"
    f.write_text(f"incident: INC-7\nservices:\n  - params: svc/{a.name}\n    sections: [database]\n"
                 f"  - params: {a}\n")
    entries, incident = load_fleet_file(str(f))
    assert incident == "INC-7"
    assert entries == [(str(a), ["database"]), (str(a), None)]


@pytest.mark.parametrize("text, field", [
    ("services: []\n", "services"),
    ("services:\n  - sections: [database]\n", "services[0].params"),
    ("services:\n  - params: a.yaml\n    sections: [no-such-section]\n", "services[0].sections"),
    ("services:\n  - params: a.yaml\n    colour: red\n", "services[0].colour"),
])
def test_a_bad_fleet_file_names_the_file_and_field(tmp_path, text, field):
    f = tmp_path / "fleet.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError) as e:
        load_fleet_file(str(f))
    msg = str(e.value)
    assert str(f) in msg and field in msg and "\n" not in msg


def test_the_example_fleet_file_is_valid():
    entries, _ = load_fleet_file(str(ROOT / "params" / "fleet.example.yaml"))
    for path, _sections in entries:
        assert Path(path).is_file(), path


# --------------------------------------------------------------------------- checked before anything runs

def test_one_service_twice_is_refused_naming_both_files(tmp_path):
    a = _params(tmp_path, "api")
    b = tmp_path / "copy.yaml"
    b.write_text(a.read_text())
    with pytest.raises(BadInput) as e:
        plan([(str(a), None), (str(b), None)], None, [])
    assert str(b) in str(e.value) and str(a) in str(e.value)


def test_the_same_service_in_two_environments_is_two_services(tmp_path):
    members = plan([(str(_params(tmp_path, "api", "staging")), None), (str(_params(tmp_path, "api", "prod")), None)],
                   ["monitoring"], [])
    assert [m.name for m in members] == ["api (staging)", "api (prod)"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbook.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("extra, says", [
    (["--baseline", "some/run"], "--baseline some/run: a fleet of 2 services takes only 'previous'"),
    (["--since-run", "some/run"], "--since-run some/run: a fleet of 2 services takes only 'previous'"),
    (["--executor", "dask"], "--executor dask: give the cluster's scheduler"),
    (["--sections", "nope"], "--sections: unknown section 'nope'"),
    (["--jobs", "0"], "--jobs: must be 1 or more"),
])
def test_bad_fleet_options_stop_before_anything_runs(tmp_path, extra, says):
    a, b = _params(tmp_path, "api"), _params(tmp_path, "worker")
    res = _cli("batch", "-p", str(a), "-p", str(b), "--outputs", str(tmp_path / "out"), *extra, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()   # no folder, no kernel


def test_a_bad_params_file_in_a_fleet_names_it_and_nothing_runs(tmp_path):
    a = _params(tmp_path, "api")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: worker\nenvironment: test\nwindow: {since: yesterday}\n")
    res = _cli("batch", "-p", str(a), "-p", str(bad), "--outputs", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2 and str(bad) in res.stderr and "window" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_params_and_fleet_file_together_are_refused(tmp_path):
    a = _params(tmp_path, "api")
    f = tmp_path / "fleet.yaml"
    f.write_text(f"services:\n  - params: {a}\n")
    res = _cli("batch", "-p", str(a), "--fleet", str(f), "--outputs", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2 and "not both" in res.stderr


# --------------------------------------------------------------------------- the order notebooks start in

def test_services_take_turns_and_each_load_test_runs_alone_after_every_read(tmp_path):
    batches = []
    for name in ("api", "worker"):
        p = _params(tmp_path, name)
        batches.append(Batch(p, load(p), ["quick-diagnostics", "database", "load-test"], outputs=tmp_path / "out",
                             label=name))
    groups = [[(b.params.service, r.section) for b, r in g] for g in run_phases(batches)]
    assert groups == [[("api", "quick-diagnostics"), ("worker", "quick-diagnostics"),
                       ("api", "database"), ("worker", "database")],
                      [("api", "load-test")], [("worker", "load-test")]]


# --------------------------------------------------------------------------- exit status over a fleet

@pytest.mark.parametrize("codes, want", [
    ([0, 0], 0), ([0, 1], 1), ([1, 3], 3), ([3, 4], 4), ([4, 130, 0], 130), ([], 0),
])
def test_the_fleet_exits_with_its_most_serious_service(codes, want):
    assert fleet_exit(codes) == want


# --------------------------------------------------------------------------- a fleet end to end, tasks stood in for

def _fake_tasks(monkeypatch, outcomes):
    """Every task returns ``outcomes(task)``: a notebook with one finding, as a worker would."""
    import nbformat

    from perfbook.findings import MIME_TYPE

    def run(task):
        status, severity = outcomes(task)
        f = Finding(code="latency.slo_breach", severity=severity, title=f"{task.key} <b>&", section=task.section,
                    subject="x")
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("")]
        nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
            MIME_TYPE: f.to_dict(), "text/plain": f.title})]
        return TaskOutcome(status=status, ipynb=nbformat.writes(nb), html="<!DOCTYPE html><html><body>page</body></html>",
                           worker="tcp://10.0.0.9:4711", host="w1 pid 7", duration_s=0.5)

    monkeypatch.setattr(executors, "run_notebook_task", run)


def test_a_fleet_writes_each_service_folder_and_the_fleet_folder(tmp_path, monkeypatch, capsys):
    a, b = _params(tmp_path, "api"), _params(tmp_path, "worker")
    _fake_tasks(monkeypatch, lambda t: ("failed", "ok") if t.key.startswith("worker") and t.section == "database"
                else ("ok", "critical" if t.key.startswith("api") else "ok"))
    out = tmp_path / "out"
    code = run_fleet([(str(a), None), (str(b), ["database", "monitoring"])], ["monitoring"], incident="INC 1",
                     outputs=str(out), quiet=True)
    assert code == 3   # a notebook failed (worker/database) outranks a critical finding (api)
    stdout = capsys.readouterr().out
    fleet_dir = Path([ln for ln in stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent
    assert fleet_dir.name.endswith("-fleet-INC-1")
    manifest = json.loads((fleet_dir / "manifest.json").read_text())
    assert manifest["kind"] == "fleet" and manifest["status"] == "complete" and manifest["exit_code"] == 3
    assert manifest["sections"] == ["database", "monitoring"]
    by = {s["service"]: s for s in manifest["services"]}
    assert by["api"]["exit_code"] == 1 and by["worker"]["exit_code"] == 3
    assert [nb["section"] for nb in by["api"]["notebooks"]] == ["monitoring"]   # --sections
    assert [nb["section"] for nb in by["worker"]["notebooks"]] == ["database", "monitoring"]   # its own
    for s in manifest["services"]:
        run = (fleet_dir / s["run"]).resolve()
        assert (run / "index.html").is_file() and (run / "findings.json").is_file()
        run_manifest = json.loads((run / "manifest.json").read_text())
        assert run_manifest["service"] == s["service"]
        assert all(nb["worker"] == "tcp://10.0.0.9:4711 (w1 pid 7)" for nb in run_manifest["notebooks"])
    findings = json.loads((fleet_dir / "findings.json").read_text())
    assert {(f["service"], f["section"], f["severity"]) for f in findings} == {
        ("api", "monitoring", "critical"), ("worker", "database", "ok"), ("worker", "monitoring", "ok")}
    page = (fleet_dir / "index.html").read_text()
    assert "<script" not in page
    assert "api (test) / monitoring &lt;b&gt;&amp;" in page and "monitoring <b>&" not in page  # escaped, once
    assert f"href='../{by['api']['run'].split('/')[-1]}/monitoring.html'" in page
    assert "notebook failed".upper() in page and "CRITICAL" in page
    # the archive lists the fleet apart, and counts each problem once (in its service's runs)
    runs = scan(out)
    fleet_rows = [r for r in runs if (r.service, r.environment) == FLEET_GROUP]
    assert len(fleet_rows) == 1 and fleet_rows[0].counts["critical"] == 1 and "2 services" in fleet_rows[0].note
    assert all(x["service"] != FLEET_GROUP[0] for x in recurring(runs + runs))
    with pytest.raises(NotARun, match="a fleet's folder"):
        read_run(fleet_dir)
    from perfbook.report.bundle import BundleError, write_bundle
    with pytest.raises(BundleError, match="a fleet's folder; bundle each service's run"):
        write_bundle(fleet_dir)


def test_a_worker_with_another_perfbook_refuses_the_task_before_running_anything(tmp_path):
    from dataclasses import replace

    from perfbook.tasks import NotebookTask, run_notebook_task

    task = NotebookTask(key="api (test) / database", section="database", notebook="{}", parameters={},
                        resolved_params="{}", redact_env=("PB_NOT_SET_ANYWHERE",), timeout_s=5, cancel="c")
    out = run_notebook_task(replace(task, perfbook="0.0.1-other"))
    assert out.status == "failed" and "perfbook 0.0.1-other" in out.error and "same perfbook" in out.error
    assert out.missing_env == ["PB_NOT_SET_ANYWHERE"] and out.ipynb is None


def test_the_since_run_snapshot_keeps_its_run_name_where_the_task_runs(tmp_path):
    """--since-run: the database section names the run it counts from by the snapshot's path."""
    from perfbook.checks.database.window import source_name
    from perfbook.tasks import materialize

    run = tmp_path / "out" / "2026-12-06" / "101500-demo-healthy"
    (run / "snapshots").mkdir(parents=True)
    (run / "snapshots" / "database.json").write_text('{"kind": "snapshot"}')
    p = _params(tmp_path, "api")
    batch = Batch(p, load(p), ["database"], outputs=tmp_path / "out2", since_snapshot=run / "snapshots" / "database.json")
    batch.prepare()
    try:
        task = batch.task(batch.results[0], "cancel-flag")
    finally:
        batch.cleanup()
    where = tmp_path / "worker"
    where.mkdir()
    _, parameters = materialize(task, where)
    assert Path(parameters["since_snapshot"]).read_text() == '{"kind": "snapshot"}'
    assert source_name(parameters["since_snapshot"]) == "101500-demo-healthy"
