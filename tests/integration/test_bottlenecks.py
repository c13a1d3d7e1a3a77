"""The bottlenecks section (runbook Issue 1) on the demo stack, through the real CLI.

Starts (via the shared session fixtures in conftest.py): the demo stack with every fault
(`incident_run`) and with none (`healthy_run`); extra runs of this section alone read the
committed V8 profiles (tests/fixtures/v8) and point it at a dead Prometheus.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from groundtruth import compare
from runs import assert_event_loop_blocking_found

pytestmark = pytest.mark.integration
SECTION = "bottlenecks"
V8 = Path(__file__).resolve().parents[1] / "fixtures" / "v8"


def test_event_loop_blocking_found(incident_run):
    assert_event_loop_blocking_found(incident_run, SECTION)


def test_memory_growth_found_with_its_slope(incident_run):
    found = incident_run.find("memory.growth", section=SECTION)
    assert found, incident_run.section(SECTION)
    ev = found[0]["evidence"]
    assert ev["observed"] > 1 and ev["r2"] >= 0.8 and ev["growth_share"] >= 0.10


def test_incident_matches_the_ground_truth(incident_run):
    result = compare(incident_run.run_dir / "findings.json", "incident", sections=[SECTION])
    assert result.ok, str(result)


def test_page_says_where_the_time_goes(incident_run):
    html = incident_run.html(SECTION)
    assert "Where the time goes" in html and "Request time by route" in html
    assert "GET /api/products/{id}" in html and "database queries" in html
    assert html.count("<img") >= 4  # latency, CPU, memory, event-loop figures


def test_healthy_stack_raises_nothing(healthy_run):
    assert healthy_run.alarms(SECTION) == []
    assert not [f for f in healthy_run.section(SECTION) if f["severity"] == "error"]
    assert {"cpu.saturation", "memory.growth", "eventloop.lag"} <= {f["code"] for f in healthy_run.section(SECTION)}
    assert compare(healthy_run.run_dir / "findings.json", "healthy", sections=[SECTION]).ok


def test_profiles_name_hot_paths_and_leaking_objects(healthy_run, tmp_path):
    res, run_dir, findings = healthy_run.run_section(
        SECTION, "-P", f"targets.cpu_profile={V8 / 'app.cpuprofile.xz'}",
        "-P", f"targets.heap_snapshots=[{V8 / 'before.heapsnapshot.xz'}, {V8 / 'after.heapsnapshot.xz'}]",
        outputs=tmp_path / "out")
    assert run_dir is not None, res.stderr
    leak = [f for f in findings if f["code"] == "memory.growth" and f["severity"] == "warning"]
    assert [f["subject"] for f in leak] == ["LeakedRequestContext"]
    hot = {f["subject"] for f in findings if f["code"] == "cpu.saturation" and f["severity"] == "info"}
    assert "matchComplexRegex (workload.js:29)" in hot and "parseLargeJson (workload.js:25)" in hot


def test_wrong_prometheus_url_is_reported_and_the_rest_still_renders(healthy_run, tmp_path):
    res, run_dir, findings = healthy_run.run_section(SECTION, "-P", "targets.prometheus.url=http://127.0.0.1:1",
                                                     outputs=tmp_path / "out")
    assert run_dir is not None, res.stderr
    errors = [f for f in findings if f["severity"] == "error"]
    assert [(f["code"], f["subject"]) for f in errors] == [("source.unreachable", "prometheus")]
    assert (run_dir / f"{SECTION}.html").stat().st_size > 5000
