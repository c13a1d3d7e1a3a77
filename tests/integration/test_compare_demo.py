"""perfbook compare on the demo: a healthy run, then an incident run (issue 15, done-when).

Runs the real CLI on the session's two batch folders. The incident folder is copied first,
so the comparison files written into it leave the other tests' view of the run untouched.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perfbook.demo.scenarios import SCENARIOS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _compare(baseline: Path, incident: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbook.cli", "compare", str(baseline), str(incident)],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=300)


def test_compare_incident_with_healthy_lists_the_injected_faults_as_new(incident_run, healthy_run, tmp_path):
    incident = tmp_path / incident_run.run_dir.name
    shutil.copytree(incident_run.run_dir, incident)
    res = _compare(healthy_run.run_dir, incident)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (incident / "compare.html").exists() and (incident / "compare.json").exists()
    assert "compare.html" in (incident / "index.html").read_text(encoding="utf-8")
    assert f"Comparison: {(incident / 'compare.html').resolve()}" in res.stdout
    result = json.loads((incident / "compare.json").read_text(encoding="utf-8"))
    new = [c for c in result["changes"] if c["status"] == "new"]
    # Every injected fault the incident run found is new against the healthy run, with its subject.
    found = [e for e in SCENARIOS["incident"].expects if any(e.matches(f) for f in incident_run.findings)]
    assert found, "the incident run found none of the injected faults"
    for e in found:
        if any(e.matches(f) and f["severity"] in ("warning", "critical", "error") for f in healthy_run.findings):
            continue  # the baseline had it too (a busy machine): not new, and compare is right to say so
        assert any(c["code"] == e.code and (e.subject is None or e.subject.lower() in str(c["subject"]).lower())
                   for c in new), f"{e} is not listed as new:\n{res.stdout}"
        assert any(f"new       {e.code} [" in line for line in res.stdout.splitlines()), res.stdout

    # The healthy run against itself (a copy): nothing new or worse, exit 0.
    healthy = tmp_path / "healthy-copy"
    shutil.copytree(healthy_run.run_dir, healthy)
    res = _compare(healthy_run.run_dir, healthy)
    assert res.returncode == 0, res.stdout + res.stderr
    again = json.loads((healthy / "compare.json").read_text(encoding="utf-8"))
    assert again["counts"]["new"] == 0 and again["counts"]["worse"] == 0


def _batch(run, outputs: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(run.params_path), "--sections",
                           "scaling", "--outputs", str(outputs), *extra], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **run.env), timeout=600)


def test_batch_baseline_previous_compares_with_the_latest_earlier_run(healthy_run, tmp_path):
    out = tmp_path / "outputs"
    # Bad input stops before anything runs: no baseline yet, then a folder that is not a run.
    for spec, why in (("previous", "no earlier complete run of demo-api"), (str(tmp_path), "no manifest.json")):
        res = _batch(healthy_run, out, "--baseline", spec)
        assert res.returncode == 2 and why in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not list(out.glob("*/*/manifest.json")), "a run folder was made for bad input"
    first = _batch(healthy_run, out)
    assert first.returncode in (0, 1), first.stdout + first.stderr
    second = _batch(healthy_run, out, "--baseline", "previous")
    assert second.returncode in (0, 1), second.stdout + second.stderr
    run_dir = Path([ln for ln in second.stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent
    assert f"Comparison: {(run_dir / 'compare.html').resolve()}" in second.stdout
    result = json.loads((run_dir / "compare.json").read_text(encoding="utf-8"))
    first_dir = Path([ln for ln in first.stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent
    assert result["baseline"]["folder"] == first_dir.name
    index = (run_dir / "index.html").read_text(encoding="utf-8")
    assert index.index("Compared with a baseline") < index.index("<h2>Sections</h2>")   # at the top


def test_batch_baseline_time_shift_runs_the_same_window_earlier(healthy_run, tmp_path):
    """--baseline -40s: the same sections on the window 40 s earlier (the demo's Prometheus holds only
    minutes), from Prometheus; the checks that read the present say so, and are never 'new'."""
    out = tmp_path / "outputs"
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(healthy_run.params_path),
                          "--sections", "quick-diagnostics,database,scaling", "--outputs", str(out),
                          "--baseline", "-40s"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **healthy_run.env), timeout=900)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "Baseline: the same window -40s" in res.stderr, res.stderr
    run_dir = Path([ln for ln in res.stdout.splitlines() if ln.startswith("Report: ")][-1][8:]).parent
    result = json.loads((run_dir / "compare.json").read_text(encoding="utf-8"))
    base_dir = Path(result["baseline"]["run_dir"])
    manifest = json.loads((base_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["time_shift"] == "-40s" and manifest["status"] == "complete" and result["baseline"]["time_shift"]
    assert all(nb["status"] == "ok" for nb in manifest["notebooks"]), manifest["notebooks"]
    # The same window, 40 s earlier.
    now = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert now["header"]["window (UTC)"] != manifest["header"]["window (UTC)"]
    assert now["header"]["window (UTC)"].split("(")[1] == manifest["header"]["window (UTC)"].split("(")[1]  # length
    found = json.loads((base_dir / "findings.json").read_text(encoding="utf-8"))
    blind = {f["evidence"]["check"] for f in found if f["code"] == "source.present_only"}
    assert "connect to PostgreSQL (read-only)" in blind and "slow queries (pg_stat_statements)" in blind, blind
    assert not [f for f in found if f["severity"] == "error"], [(f["code"], f["title"]) for f in found
                                                                 if f["severity"] == "error"]
    # The Prometheus checks ran on the earlier window.
    assert any(f["section"] == "scaling" and f["code"] != "source.present_only" for f in found)
    # Nothing a blind check finds now is called new.
    incident = {(f["code"], f["subject"]): f for f in json.loads((run_dir / "findings.json").read_text())}
    for c in result["changes"]:
        if c["status"] == "new":
            f = incident[(c["code"], c["subject"])]
            assert f.get("check") not in blind, c
    assert any("shifted -40s" in n for n in result["notes"])
    assert "Compared with a baseline" in (run_dir / "index.html").read_text(encoding="utf-8")
    # A shifted run is never the 'previous' run.
    from perfbook.report import NotARun, previous_run
    with pytest.raises(NotARun, match="no earlier complete run"):
        previous_run(out, manifest["service"], manifest["environment"], exclude=run_dir)
