"""The archive index (perfbook.report.archive): every run under outputs/, newest first, by
service; recurring problems; broken folders listed, never fatal; offline and inert."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from perfbook import cli
from perfbook.report import archive


def make_run(outputs: Path, day: str, name: str, *, service="shop", environment="prod", status="complete",
             started=None, incident="", findings=(), time_shift=None, comparisons=()) -> Path:
    d = outputs / day / name
    d.mkdir(parents=True)
    manifest = {"status": status, "service": service, "environment": environment,
                "started": started or f"{day}T{name[:2]}:{name[2:4]}:{name[4:6]}+00:00", "incident": incident,
                "header": {"window (UTC)": f"{day} 10:00:00 → {day} 10:30:00 (30.0 min)"},
                "notebooks": [{"section": "database", "status": "ok"}]}
    if time_shift:
        manifest["time_shift"] = time_shift
    (d / "manifest.json").write_text(json.dumps(manifest))
    for c in comparisons:                                  # as perfbook compare writes them
        (d / c).write_text("<!DOCTYPE html><html><body>compared</body></html>")
        (d / c.replace(".html", ".json")).write_text(json.dumps({"headline": "1 new"}))
    (d / "findings.json").write_text(json.dumps([{"code": c, "severity": s, "subject": subj, "section": "database",
                                                  "title": "t"} for c, s, subj in findings]))
    return d


def test_runs_newest_first_grouped_by_service_with_worst_counts_codes_and_links(tmp_path):
    make_run(tmp_path, "2026-12-01", "100000-a", incident="inc-1",
             findings=[("db.missing_index", "critical", "clicks"), ("db.bloat", "warning", "sessions"),
                       ("db.slow_query", "ok", None)])
    make_run(tmp_path, "2026-12-03", "090000-b", incident="inc-2", comparisons=["compare.html"],
             findings=[("db.missing_index", "warning", "clicks")])
    make_run(tmp_path, "2026-12-02", "080000-c", service="search", findings=[("latency.slo_breach", "ok", "GET /")])
    runs = archive.scan(tmp_path)
    assert [r.path for r in runs] == ["2026-12-03/090000-b", "2026-12-02/080000-c", "2026-12-01/100000-a"]
    a = runs[-1]
    assert a.worst == "critical" and a.counts["critical"] == 1 and a.counts["warning"] == 1
    assert a.problems == [("critical", "db.missing_index", "clicks"), ("warning", "db.bloat", "sessions")]
    page = archive.archive_html(runs)
    assert page.index("shop (prod)") < page.index("search (prod)")          # the newest run's service first
    assert "href='2026-12-03/090000-b/index.html'" in page and "href='2026-12-03/090000-b/compare.html'" in page
    assert "1 critical, 1 warning" in page and "inc-2" in page and "10:00:00 → 2026-12-01 10:30:00" in page
    assert "no problem found" in page                                        # search: only ok findings


def test_a_problem_in_several_of_the_last_runs_is_recurring_with_its_first_sighting(tmp_path):
    for i, day in enumerate(["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]):
        make_run(tmp_path, day, f"1{i}0000-r", incident=f"inc-{i}",
                 findings=[("db.missing_index", "warning" if i else "critical", "clicks"),
                           *([("cache.low_hit_rate", "warning", "products")] if i == 3 else [])])
    make_run(tmp_path, "2026-11-29", "120000-s", time_shift="-7d", findings=[("db.missing_index", "warning", "clicks")])
    rec = archive.recurring(archive.scan(tmp_path))
    assert [(x["code"], x["subject"], x["runs"], x["of"]) for x in rec] == [("db.missing_index", "clicks", 4, 4)]
    assert rec[0]["severity"] == "critical" and rec[0]["first_seen"].startswith("2026-11-01")
    assert rec[0]["incidents"] == ["inc-0", "inc-1", "inc-2", "inc-3"]      # the time-shifted baseline not counted
    page = archive.archive_html(archive.scan(tmp_path))
    assert "Recurring problems" in page and "4 of the last 4 runs" in page and "first seen 2026-11-01" in page
    # only the last RECURRING_LAST runs count
    rec = archive.recurring(archive.scan(tmp_path), last=1)
    assert rec == []


@pytest.mark.parametrize("make, status, note", [
    (lambda d: None, "half-written", "no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("{cut"), "unreadable", "manifest.json"),
    (lambda d: (d / "manifest.json").write_text('{"status": "complete"}'), "unreadable", "not a perfbook run"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"status": "running", "notebooks": []})), "running",
     "no findings.json yet"),
    (lambda d: ((d / "manifest.json").write_text(json.dumps({"status": "interrupted", "notebooks": []})),
                (d / "findings.json").write_bytes(b"\xff\xfe")), "interrupted", "findings.json"),
])
def test_broken_and_unfinished_folders_are_listed_as_such_never_fatal(tmp_path, make, status, note):
    d = tmp_path / "2026-12-04" / "101010-x"
    d.mkdir(parents=True)
    make(d)
    (run,) = archive.scan(tmp_path)
    assert run.status == status and note in run.note, run
    page = archive.archive_html([run])
    assert status in page and page.rstrip().endswith("</html>")


def test_the_page_is_inert_offline_and_escapes_what_runs_wrote(tmp_path):
    make_run(tmp_path, "2026-12-04", "101010-x", service="<script>alert(1)</script>", incident="<img src=x onerror=1>",
             findings=[("db.n_plus_one", "warning", "<b>subject</b>")])
    page = archive.archive_html(archive.scan(tmp_path))
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>subject" not in page
    assert "default-src 'none'" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)              # nothing fetched from a network


def test_the_cli_rebuilds_atomically_and_says_where(tmp_path, capsys):
    make_run(tmp_path, "2026-12-04", "101010-x")
    (tmp_path / "index.html").write_text("old")
    assert cli.main(["archive", "--outputs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Archive: {(tmp_path / 'index.html').resolve()} (1 run folder)" in out
    assert "101010-x" in (tmp_path / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-12-04", "index.html"]   # no temp file left
    assert cli.main(["archive", "--outputs", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and len(err.strip().splitlines()) == 1


def test_lab_workspaces_and_other_folders_beside_the_days_are_left_alone(tmp_path):
    make_run(tmp_path, "2026-12-04", "101010-x")
    lab = tmp_path / "2026-12-04" / "111111-lab-inc"
    lab.mkdir()
    (lab / archive.LAB_MARK).write_text("{}")
    found = {r.path: r for r in archive.scan(tmp_path)}
    ws, run = found["2026-12-04/111111-lab-inc"], found["2026-12-04/101010-x"]
    assert ws.status == "lab workspace" and "perfbook report" in ws.note and run.status == "complete"
    lab.rename(tmp_path / "lab-elsewhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "2026-12-04" / ".perfbook-work-1").mkdir()
    assert [r.path for r in archive.scan(tmp_path)] == ["2026-12-04/101010-x"]
    assert archive.scan(tmp_path / "nothing-here") == []
