"""`perfbook batch --baseline previous`: which earlier run is the baseline (recorded run folders)."""
import json
import shutil
from pathlib import Path

import pytest

from perfbook.compare import service_identity
from perfbook.report import NotARun, previous_run

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "healthy"


def _run(outputs: Path, rel: str, started: str, **change) -> Path:
    d = outputs / rel
    d.mkdir(parents=True)
    shutil.copy(FIX / "findings.json", d / "findings.json")
    m = json.loads((FIX / "manifest.json").read_text())
    m.update(started=started, **change)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    _run(out, "2026-12-01/100000-normal-day", "2026-12-01T10:00:00+00:00")
    _run(out, "2026-12-02/100000-normal-day", "2026-12-02T10:00:00+00:00")
    _run(out, "2026-12-03/100000-other-service", "2026-12-03T10:00:00+00:00", service="billing")
    _run(out, "2026-12-03/110000-staging", "2026-12-03T11:00:00+00:00", environment="staging")
    _run(out, "2026-12-03/120000-interrupted", "2026-12-03T12:00:00+00:00", status="interrupted")
    _run(out, "2026-12-03/130000-still-running", "2026-12-03T13:00:00+00:00", status="running")
    (out / "2026-12-03" / "140000-lab-x").mkdir()          # a lab workspace: no manifest
    return out


def test_previous_is_the_latest_complete_run_of_the_same_service_and_environment(outputs):
    service, env = service_identity(json.loads((FIX / "manifest.json").read_text()))
    run = previous_run(outputs, service, env)
    assert run.folder == "100000-normal-day" and run.started.startswith("2026-12-02")


def test_previous_skips_the_run_being_made_and_later_runs(outputs):
    service, env = service_identity(json.loads((FIX / "manifest.json").read_text()))
    latest = outputs / "2026-12-02" / "100000-normal-day"
    assert previous_run(outputs, service, env, exclude=latest).started.startswith("2026-12-01")
    assert previous_run(outputs, service, env, before="2026-12-02T00:00:00+00:00").started.startswith("2026-12-01")


def test_no_previous_run_is_one_line_naming_the_service(outputs, tmp_path):
    with pytest.raises(NotARun, match=r"no earlier complete run of nobody \(production\)"):
        previous_run(outputs, "nobody", "production")
    with pytest.raises(NotARun, match="no earlier complete run"):
        previous_run(tmp_path / "empty", "nobody", "production")
