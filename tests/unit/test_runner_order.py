"""The batch runs a load test alone, after the sections that only read, and reports in runbook order."""
from pathlib import Path

from perfbook.params import load
from perfbook.runner import SECTION_ORDER, Batch


def _batch(tmp_path: Path, load_test: str) -> Batch:
    p = tmp_path / "p.yaml"
    p.write_text(f"service: s\ntargets: {{base_url: 'http://127.0.0.1:9'}}\nsettings:\n  load_test: {load_test}\n")
    return Batch(p, load(p), list(SECTION_ORDER), outputs=tmp_path / "out")


def test_stress_test_runs_alone_after_the_others_report_keeps_runbook_order(tmp_path):
    b = _batch(tmp_path, "{mode: stress, stages: [{users: 5, duration: 5s}, {users: 10, duration: 5s}], recovery: 5s}")
    assert b.expected_seconds("load-test") == 15
    phases = [[r.section for r in group] for group in b.phases()]
    assert phases == [[s for s in SECTION_ORDER if s != "load-test"], ["load-test"]]
    assert [r.section for r in b.start_order()] == phases[0] + phases[1]
    assert [r.section for r in b.results] == list(SECTION_ORDER)


def test_load_test_off_changes_nothing(tmp_path):
    b = _batch(tmp_path, "{mode: 'off'}")
    assert b.expected_seconds("load-test") == 0
    assert [[r.section for r in group] for group in b.phases()] == [list(SECTION_ORDER)]
