"""A batch validates the params file once: the runner writes the params it resolved (``-P``
overrides applied, paths made absolute, secrets only by the name of their environment
variable) into its work folder, and every notebook loads exactly that file; a notebook run
by hand (JupyterLab) still loads the params file with its overrides."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from perfbook import executors, notebook
from perfbook.params import ParamsError, load
from perfbook.params.loading import dump_resolved, load_resolved
from perfbook.runner import RESOLVED_PARAMS, Batch, load_params
from perfbook.tasks import TaskOutcome, materialize

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "params" / "demo.yaml"
SECRET = "postgres://perfbook:Zq8-not-in-any-file-41x@db.internal:5432/app"

PARAMS = """\
service: shop
environment: staging
window: {since: -2h, until: -1h}
targets:
  base_url: http://127.0.0.1:9
  prometheus: {url: "http://127.0.0.1:9090", selector: '{app="shop"}', bearer_token_env: PB_TEST_TOKEN}
  database_env: PB_TEST_DATABASE_URL
  redis_env: PB_TEST_REDIS_URL
  postgres_logs: [logs/postgres.log]
  app_logs: [~/app.log, /var/log/app.log]
  fly_toml: fly.toml
  cpu_profile: profiles/cpu.cpuprofile
  heap_snapshots: [profiles/1.heapsnapshot, profiles/2.heapsnapshot]
  memory_limit: 512MB
settings:
  monitoring:
    alerts:
      - {name: SlowP95, expr: "histogram_quantile(0.95, sum by (le) (rate(${http_duration}_bucket[1m])))",
         threshold: 2, for: 3m, severity: critical, unit: s}
"""

#: Overrides that are applied once or never right: a relative path (resolved against the params
#: file's folder, never against the work folder the resolved file lies in), a list, and the
#: ``metrics_url`` shorthand (on params that already hold ``metrics_urls`` it is refused).
OVERRIDES = ["targets.fly_toml=deploy/fly.production.toml", "targets.metrics_url=http://127.0.0.1:9100/metrics",
             "settings.load_test.stages=[{users: 3, duration: 2s}, {users: 6, duration: 2s}]",
             "settings.monitoring.evaluation_interval=30s"]


@pytest.fixture
def params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A params file in a folder of its own, away from the working directory."""
    for name in ("PB_TEST_TOKEN", "PB_TEST_REDIS_URL"):
        monkeypatch.setenv(name, f"{name.lower()}-value-Kx93")
    monkeypatch.setenv("PB_TEST_DATABASE_URL", SECRET)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "conf" / "shop.yaml"
    path.parent.mkdir()
    path.write_text(PARAMS, encoding="utf-8")
    return path


def test_the_demo_params_round_trip(tmp_path):
    params = load(DEMO)
    assert load_resolved(dump_resolved(params, tmp_path / RESOLVED_PARAMS)) == params


def test_overrides_relative_paths_and_alert_rules_round_trip(params_file, tmp_path):
    params, _ = load_params(str(params_file), OVERRIDES)
    work = tmp_path / "work"
    work.mkdir()
    dumped = dump_resolved(params, work / RESOLVED_PARAMS)
    assert load_resolved(dumped) == params
    data = json.loads(dumped.read_text(encoding="utf-8"))
    t, conf = data["targets"], params_file.parent
    assert t["fly_toml"] == str(conf / "deploy" / "fly.production.toml")
    assert t["postgres_logs"] == [str(conf / "logs" / "postgres.log")]
    assert t["app_logs"] == [str(Path("~/app.log").expanduser()), "/var/log/app.log"]
    assert t["cpu_profile"] == str(conf / "profiles" / "cpu.cpuprofile")
    assert t["heap_snapshots"] == [str(conf / "profiles" / f"{i}.heapsnapshot") for i in (1, 2)]
    assert t["metrics_urls"] == ["http://127.0.0.1:9100/metrics"] and "metrics_url" not in t
    assert data["settings"]["monitoring"]["alerts"][0]["for"] == 180.0  # the alias, as in a params file
    assert [s["users"] for s in data["settings"]["load_test"]["stages"]] == [3, 6]


def test_the_dump_names_secrets_and_holds_no_value_from_the_environment(params_file, tmp_path):
    params, _ = load_params(str(params_file), OVERRIDES)
    text = dump_resolved(params, tmp_path / RESOLVED_PARAMS).read_text(encoding="utf-8")
    for name in ("PB_TEST_TOKEN", "PB_TEST_DATABASE_URL", "PB_TEST_REDIS_URL"):
        assert f'"{name}"' in text
    for value in (SECRET, "Zq8-not-in-any-file-41x", "value-Kx93"):
        assert value not in text


def test_a_batch_notebook_loads_what_the_runner_resolved_overrides_applied_once(params_file, tmp_path, monkeypatch):
    """The real hand-over: each notebook is a task (plain data, pickled as a Dask worker gets
    it); where it runs, :func:`perfbook.tasks.materialize` writes its files and the papermill
    parameters, and :func:`notebook.start` loads exactly the runner's params."""
    params, ov = load_params(str(params_file), OVERRIDES)
    batch = Batch(params_file, params, ["monitoring", "caching"], overrides=ov, outputs=tmp_path / "out")
    seen: dict[str, tuple[dict, notebook.Context, str, bytes]] = {}

    def run_task(task):  # stands in for the notebook process on a worker: the kernel's first cell
        wire = pickle.dumps(task)
        task = pickle.loads(wire)
        folder = tmp_path / "worker" / task.section
        folder.mkdir(parents=True)
        _, parameters = materialize(task, folder)
        ctx = notebook.start(task.section, **parameters, show_header=False)
        seen[task.section] = parameters, ctx, Path(parameters["resolved_params"]).read_text(encoding="utf-8"), wire
        return TaskOutcome(status="ok")

    monkeypatch.setattr(executors, "run_notebook_task", run_task)
    assert batch.run().exit_code == 0
    assert set(seen) == {"monitoring", "caching"}
    for parameters, ctx, text, wire in seen.values():
        assert "overrides" not in parameters  # applied in the runner, never sent again
        assert ctx.params == params and ctx.params is not params
        assert ctx.params_file == str(params_file)  # headers and provenance name the user's file
        assert ctx.params.targets.fly_toml == str(params_file.parent / "deploy" / "fly.production.toml")
        assert ctx.params.targets.metrics_urls == ["http://127.0.0.1:9100/metrics"]
        assert SECRET not in text and SECRET not in json.dumps(parameters)
        assert SECRET.encode() not in wire  # a secret never travels in a task
    assert batch._work is not None and not batch._work.exists()  # the work folder goes with the run
    manifest = json.loads((batch.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["overrides"]["targets.fly_toml"] == "deploy/fly.production.toml"  # provenance
    assert manifest["executor"]["executor"] == "local"


def test_overrides_on_top_of_resolved_params_are_refused(params_file, tmp_path):
    params, ov = load_params(str(params_file), OVERRIDES)
    resolved = dump_resolved(params, tmp_path / RESOLVED_PARAMS)
    with pytest.raises(ValueError, match="already applied"):
        notebook.start("monitoring", str(params_file), overrides=json.dumps(ov), resolved_params=str(resolved),
                       show_header=False)
    ctx = notebook.start("monitoring", str(params_file), overrides="{}", resolved_params=str(resolved),
                         show_header=False)
    assert ctx.params == params


def test_by_hand_a_notebook_still_loads_the_params_file_with_its_overrides(params_file):
    params, ov = load_params(str(params_file), OVERRIDES)
    ctx = notebook.start("monitoring", str(params_file), overrides=json.dumps(ov), show_header=False)
    assert ctx.params == params and ctx.params_file == str(params_file)


def test_a_resolved_file_that_is_missing_or_not_resolved_params_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match=r"no-such\.json: \(file\)"):
        load_resolved(tmp_path / "no-such.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"service": "s", "targets": {"database_env": "postgres://u:p@h/db"}}', encoding="utf-8")
    with pytest.raises(ParamsError, match=r"targets\.database_env"):
        load_resolved(bad)
    bad.write_text("service: s\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="not resolved params"):
        load_resolved(bad)


def test_a_level_overridden_in_part_keeps_the_defaults_other_bounds(tmp_path):
    from perfbook.params import ParamsError
    from perfbook.params.loading import load, parse_override

    f = tmp_path / "p.yaml"
    f.write_text("service: s\nthresholds:\n  memory_percent: {critical: 95}\n")
    p = load(f, dict([parse_override("thresholds.cpu_percent.warning=60")]))
    assert (p.thresholds.cpu_percent.normal, p.thresholds.cpu_percent.warning, p.thresholds.cpu_percent.critical) == (50, 60, 85)
    assert (p.thresholds.memory_percent.warning, p.thresholds.memory_percent.critical) == (80, 95)
    with pytest.raises(ParamsError, match=r"thresholds.cpu_percent: warning must not be above critical"):
        load(f, dict([parse_override("thresholds.cpu_percent.warning=90")]))
