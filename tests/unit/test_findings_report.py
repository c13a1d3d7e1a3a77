"""Findings collection, redaction, run-folder naming, no-overwrite, index page."""
import json
import os
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from perfbook.findings import CODES, MIME_TYPE, Finding, UnknownCode, collect, worst
from perfbook.report import Redactor, findings_json, index_html, make_run_dir, write_new

DESIGN_CODES = """latency.slo_breach errors.high_rate cpu.saturation memory.pressure memory.growth
eventloop.lag db.connections db.slow_query db.n_plus_one db.missing_index db.large_result db.bloat
db.long_running db.lock_waits db.unused_index cache.low_hit_rate ratelimit.rejections ratelimit.missing
external.slow external.errors external.circuit_open balance.uneven scaling.scale_out scaling.scale_in
loadtest.breaking_point loadtest.threshold alert.firing checklist.unmet source.unreachable""".split()


def test_every_design_code_has_meaning_and_runbook_ref():
    for code in DESIGN_CODES:
        assert code in CODES, code
        assert CODES[code].meaning and CODES[code].runbook_ref


def test_unknown_code_is_refused():
    with pytest.raises(UnknownCode):
        Finding("latency.slow", "warning", "x")


def test_evidence_is_made_json_safe():
    import numpy as np
    f = Finding("cpu.saturation", "critical", "t", evidence={"cpu": np.float64(91.23456789), "nan": float("nan")})
    assert f.evidence == {"cpu": 91.234568, "nan": None}
    json.dumps(f.to_dict())


def _notebook_with(findings, tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "t", MIME_TYPE: f.to_dict()})
                    for f in findings]
    cell.outputs.append(nbformat.v4.new_output("stream", text="noise"))
    nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_collect_reads_findings_from_executed_notebook(tmp_path):
    fs = [Finding("db.bloat", "warning", "bloated", subject="clicks", evidence={"dead_share": 0.4}),
          Finding("source.unreachable", "error", "prometheus down", subject="prometheus")]
    got = collect(_notebook_with(fs, tmp_path))
    assert [(f.code, f.subject, f.severity) for f in got] == [("db.bloat", "clicks", "warning"),
                                                              ("source.unreachable", "prometheus", "error")]
    assert got[0].evidence == {"dead_share": 0.4}


def test_worst_ranks_critical_over_error_over_warning():
    assert worst(["ok", "warning", "error"]) == "error"
    assert worst(["error", "critical"]) == "critical"
    assert worst([]) == "ok"


def test_redactor_removes_env_values_dsn_passwords_and_bearer_tokens():
    r = Redactor.for_env(["DB", "TOK"], {"DB": "postgres://app:S3cr3tPw@db:5432/x", "TOK": "tok_ABCDEF123456"})
    text = ("dsn postgres://app:S3cr3tPw@db:5432/x pw S3cr3tPw token tok_ABCDEF123456 "
            "Authorization: Bearer zzzzzzzzzzzz other redis://:anotherpw@h:6379 password=hunter22")
    out = r(text)
    for secret in ("S3cr3tPw", "tok_ABCDEF123456", "zzzzzzzzzzzz", "anotherpw", "hunter22"):
        assert secret not in out
    assert "db:5432/x" in out  # the rest of the DSN stays readable


def test_run_folder_is_dated_and_never_reused(tmp_path):
    now = datetime(2026, 11, 26, 3, 4, 5)
    a = make_run_dir(tmp_path, "INC-42", now)
    b = make_run_dir(tmp_path, "INC-42", now)
    c = make_run_dir(tmp_path, "INC 42/../x", now)
    assert a == tmp_path / "2026-11-26" / "030405-INC-42"
    assert b == tmp_path / "2026-11-26" / "030405-INC-42-2"
    assert c.parent == tmp_path / "2026-11-26" and ".." not in c.name and "/" not in c.name


def test_write_new_never_overwrites(tmp_path):
    p = write_new(tmp_path / "f.txt", "first")
    with pytest.raises(FileExistsError):
        write_new(p, "second")
    assert p.read_text() == "first"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]  # no temp file left


def test_index_sorts_findings_by_severity_and_links_sections():
    fs = [Finding("db.bloat", "warning", "bloated", section="database"),
          Finding("cpu.saturation", "critical", "cpu 95%", section="quick-diagnostics"),
          Finding("latency.slo_breach", "ok", "fine", section="quick-diagnostics")]
    manifest = {"status": "complete", "header": {"service": "svc"},
                "notebooks": [{"section": "quick-diagnostics", "status": "ok", "html": "quick-diagnostics.html", "duration_s": 1},
                              {"section": "database", "status": "failed", "html": "database.html", "duration_s": 2,
                               "error": "cell 3: boom"}]}
    page = index_html(manifest, fs)
    assert page.index("cpu 95%") < page.index("bloated")
    assert "href='database.html'" in page and "notebook failed" in page
    assert "fine" not in page  # ok findings are counted, not listed
    assert "<script" not in page.lower()


def test_index_escapes_hostile_text():
    fs = [Finding("db.slow_query", "critical", "</td><script>alert(1)</script>", section="database",
                  subject="<img src=x onerror=alert(2)>")]
    page = index_html({"status": "complete", "header": {}, "notebooks": []}, fs)
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_findings_json_round_trips():
    fs = [Finding("db.bloat", "warning", "b", section="database", evidence={"x": 1})]
    data = json.loads(findings_json(fs))
    assert data[0]["code"] == "db.bloat" and Finding.from_dict(data[0]).evidence == {"x": 1}


def test_a_section_without_findings_is_not_shown_as_ok():
    manifest = {"status": "complete", "header": {}, "notebooks": [
        {"section": "load-test", "status": "ok", "html": "load-test.html", "duration_s": 1}]}
    page = index_html(manifest, [])
    assert "NOTHING CHECKED" in page and ">OK<" not in page
