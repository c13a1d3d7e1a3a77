"""`perfbook batch` on the demo stack: every notebook runs, the reports render, the ground truth holds.

Starts (through the shared fixtures): the incident and the healthy demo stacks.
"""
import pytest
from groundtruth import compare

pytestmark = pytest.mark.integration


def test_every_section_runs_on_the_incident_stack(incident_run):
    bad = {n["section"]: (n["status"], n["error"]) for n in incident_run.manifest["notebooks"] if n["status"] != "ok"}
    assert not bad, bad
    for n in incident_run.manifest["notebooks"]:
        assert (incident_run.run_dir / n["html"]).stat().st_size > 2000


def test_every_section_runs_on_the_healthy_stack(healthy_run):
    bad = {n["section"]: (n["status"], n["error"]) for n in healthy_run.manifest["notebooks"] if n["status"] != "ok"}
    assert not bad, bad


def test_healthy_stack_raises_nothing(healthy_run):
    result = compare(healthy_run.run_dir / "findings.json", "healthy")
    assert not result.false_alarms, str(result)
    errors = [f for f in healthy_run.findings if f["severity"] == "error"]
    assert not errors, errors


def test_incident_faults_are_found(incident_run):
    result = compare(incident_run.run_dir / "findings.json", "incident")
    assert not result.misses, str(result)
