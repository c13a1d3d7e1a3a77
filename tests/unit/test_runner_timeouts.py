"""Per-notebook timeouts cover the section's own expected duration; --timeout overrides."""
from pathlib import Path

import pytest

from perfbook.params import load
from perfbook.runner import SECTION_ORDER, Batch, notebook_timeout


def _params(tmp_path: Path, load_test: str):
    p = tmp_path / "p.yaml"
    p.write_text(f"service: s\ntargets: {{base_url: 'http://127.0.0.1:9'}}\nsettings:\n  load_test: {load_test}\n")
    return p, load(p)


@pytest.mark.parametrize("profile", [
    "{mode: load, duration: 1200s, max_duration: 1800s}",
    "{mode: stress, stages: [{users: 10, duration: 600s}, {users: 50, duration: 570s}], recovery: 30s, "
    "max_duration: 1800s}",
])
def test_a_1200_s_load_profile_gets_more_than_1200_s(tmp_path, profile):
    _, params = _params(tmp_path, profile)
    t = notebook_timeout(params, "load-test")
    assert t > 1200 + 300  # the profile, then room for start-up, ramps and the report
    assert notebook_timeout(params, "quick-diagnostics") == 600  # other sections keep the default
    assert notebook_timeout(params, "load-test", override=90) == 90  # --timeout wins


def test_the_manifest_records_each_notebook_timeout(tmp_path):
    path, params = _params(tmp_path, "{mode: load, duration: 1200s, max_duration: 1800s}")
    b = Batch(path, params, list(SECTION_ORDER), outputs=tmp_path / "out")
    by = {n["section"]: n["timeout_s"] for n in b.manifest("running")["notebooks"]}
    assert by["load-test"] > 1200 and by["database"] == 600
    b2 = Batch(path, params, ["load-test"], outputs=tmp_path / "out", timeout=45)
    assert b2.manifest("running")["notebooks"][0]["timeout_s"] == 45
