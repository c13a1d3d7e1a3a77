"""Findings collection, redaction, run-folder naming, no-overwrite, index page."""
import json
import os
from datetime import datetime

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


# --------------------------------------------------------------------------- redaction on structure

from perfbook import report  # noqa: E402
from perfbook.report import CLIP, Redactor as R, SecretLeak, clip, redact_notebook, secret_weakness  # noqa: E402

STRONG = 'q"uo\'te\\Zq9-Sec'  # quote, apostrophe, backslash


def _hostile_findings(secret: str) -> list[Finding]:
    return [Finding("db.slow_query", "critical", f"password={secret} in a label", section="database",
                    subject=f"GET /x?password={secret}",
                    evidence={"label": f"password={secret}", f"k {secret}": 12345, "flag": True, "none": None,
                              "nested": [f"postgresql://app:{secret}@db/shop", {"v": secret}]},
                    recommendation=f"rotate {secret}")]


@pytest.mark.parametrize("secret", [STRONG, 'x"y', "12345", "true", "null", "a\\b"])
def test_findings_and_manifest_json_parse_and_hold_no_secret(secret):
    """Quotes, backslashes, digit-only and JSON-literal secrets: JSON stays valid, numbers and
    literals untouched, every string that held the secret as a secret is masked."""
    r = R([f"postgresql://app:{secret}@db/shop" if len(secret) < 8 else secret])
    text = report.findings_json(_hostile_findings(secret), r)
    data = json.loads(text)
    ev = data[0]["evidence"]
    assert ev["flag"] is True and ev["none"] is None and 12345 in ev.values()
    assert data[0]["subject"] == "GET /x?password=[REDACTED]" and ev["label"] == "password=[REDACTED]"
    assert ev["nested"][0] == "postgresql://app:[REDACTED]@db/shop"
    assert r.leak(text) is None
    manifest = {"status": "complete", "params": {"service": f"svc password={secret}"}, "n": 12345, "ok": True}
    m = json.loads(json.dumps(r.obj(manifest)))
    assert m["n"] == 12345 and m["ok"] is True and m["params"]["service"] == "svc password=[REDACTED]"


def test_a_strong_secret_is_masked_everywhere_in_every_form():
    r = R([STRONG])
    for text in (f"raw {STRONG} end", json.dumps({"a": STRONG}), f"<td>{html_escape(STRONG)}</td>", repr(STRONG)):
        assert "Zq9-Sec" not in r(text), text
    fs = json.loads(report.findings_json(_hostile_findings(STRONG), r))
    assert "Zq9-Sec" not in json.dumps(fs) and "[REDACTED]" in fs[0]["recommendation"]


@pytest.mark.parametrize("cut", range(0, 60))
def test_a_secret_cut_at_any_clip_boundary_is_never_published(cut):
    """Redact, then clip: wherever the boundary falls, not even the secret's start shows."""
    r = R([STRONG, "postgresql://app:Pw9SecretDsn@db:5432/shop"])
    for text in (f"{'a' * 20}{STRONG}{'b' * 20}", f"{'a' * 20}postgresql://app:Pw9SecretDsn@db:5432/shop"):
        out = clip(text, cut, r)
        assert 'q"uo' not in out and "Pw9S" not in out, out
    f = Finding("db.slow_query", "critical", "t" * (CLIP["title"] - cut) + STRONG, section="database",
                subject="s" * (CLIP["subject"] - cut) + STRONG, evidence={"k" * (CLIP["key"] - cut) + STRONG: "v"})
    page = index_html({"status": "complete", "header": {}, "notebooks": []}, [f], r)
    assert 'q&quot;uo' not in page and 'q"uo' not in page


def test_quoted_keyvalue_dsns_and_libpq_fragments_are_masked():
    r = R(["host=db port=5432 dbname=shop user=app password='a b\\'c Zq9'"])
    assert r.values == ["a b'c Zq9"]
    assert r("connect failed: a b'c Zq9") == "connect failed: [REDACTED]"
    assert r("host=db password='other pw' dbname=shop") == "host=db password=[REDACTED] dbname=shop"
    assert r('password="cut short') == "password=[REDACTED]"
    assert r('password=x"y z') == "password=[REDACTED] z"
    msg = 'missing "=" after "b\'c" in connection info string'
    assert r(msg) == 'missing "=" after "[REDACTED]" in connection info string'
    assert r("https://h/health?api_key=abc123&verbose=1") == "https://h/health?api_key=[REDACTED]&verbose=1"


def test_a_common_word_secret_is_masked_only_where_it_is_the_secret():
    r = R(["postgresql://postgres:postgres@db:5432/postgres"])
    assert secret_weakness("postgres") and secret_weakness("abc") and secret_weakness("Zq9xLm!2kP") is None
    assert r("PostgreSQL 15.4 on postgres") == "PostgreSQL 15.4 on postgres"
    assert r("dbname=postgres user=postgres password=postgres") == "dbname=postgres user=postgres password=[REDACTED]"
    assert r("postgresql://postgres:postgres@db:5432/postgres") == "postgresql://postgres:[REDACTED]@db:5432/postgres"
    # a short secret that is no word: masked as a whole token, never inside a longer word or number
    s = R(["x7Q!"])
    assert s("token x7Q! failed; ax7Q!b stays") == "token [REDACTED] failed; ax7Q!b stays"
    d = R(["4242"])
    assert d("latency 4242 ms, 424242 requests") == "latency 4242 ms, 424242 requests"
    assert d("redis://:4242@cache:6379/0") == "redis://:[REDACTED]@cache:6379/0"


def test_the_writer_refuses_a_file_that_still_holds_a_secret(tmp_path):
    r = R([STRONG, "redis://:postgres@h/0"])
    with pytest.raises(SecretLeak) as ei:
        write_new(tmp_path / "findings.json", json.dumps({"a": STRONG}), r)
    assert "Zq9" not in str(ei.value)
    with pytest.raises(SecretLeak):
        write_new(tmp_path / "f.json", json.dumps({"a": "password=postgres"}), r)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file
    write_new(tmp_path / "ok.json", json.dumps({"a": "dbname=postgres, PostgreSQL"}), r)


def test_redact_notebook_covers_sources_outputs_payloads_and_split_lines():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"dsn = 'postgresql://app:{STRONG}@db/x'")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=["pass", f"word={STRONG[:3]}", f"{STRONG[3:]}\n"]),
        nbformat.v4.new_output("display_data", data={
            "text/html": f"<b>{html_escape(STRONG)}</b>", "image/png": "iVBORw0KGgo=",
            MIME_TYPE: _hostile_findings(STRONG)[0].to_dict()}),
        nbformat.v4.new_output("error", ename="OperationalError", evalue=f"password={STRONG}", traceback=[STRONG]),
    ]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"parameters": {"overrides": json.dumps({"x": STRONG})}}
    out = redact_notebook(nb, R([STRONG]))
    text = nbformat.writes(out)
    nbformat.validate(nbformat.reads(text, as_version=4))
    assert "Zq9-Sec" not in text and "uo'te" not in text
    assert out.cells[0].outputs[1]["data"]["image/png"] == "iVBORw0KGgo="
    assert collect(out)[0].subject == "GET /x?password=[REDACTED]"


def html_escape(s: str) -> str:
    import html
    return html.escape(s)


def test_context_masks_in_html_outputs_keep_the_markup_whole():
    """A notebook's text/html output (a pandas table escapes only <, >, &; html.escape also
    quotes): the value is masked, the markup around it is not eaten."""
    r = R([])
    assert r("<td>GET /s password='a b Zq9' x</td>") == "<td>GET /s password=[REDACTED] x</td>"
    assert r(f"<td>{html_escape(chr(39).join(['password=', 'a b Zq9', ' x']))}</td>") == "<td>password=[REDACTED] x</td>"
    assert r('<td title="password=abc">x</td>') == '<td title="password=[REDACTED]">x</td>'
    assert r(html_escape('missing "=" after "Zq9" in connection info string')) == \
        "missing &quot;=&quot; after &quot;[REDACTED]&quot; in connection info string"


def test_write_new_works_without_hard_links_and_still_never_overwrites(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    p = write_new(tmp_path / "f.json", '{"a": 1}')
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(FileExistsError):
        write_new(p, "second")
    assert p.read_text() == '{"a": 1}' and [x.name for x in tmp_path.iterdir()] == ["f.json"]


def test_the_runner_redacts_a_raw_notebook_and_refuses_a_page_that_holds_a_secret(tmp_path, monkeypatch):
    """A notebook process killed before it redacted leaves papermill's raw notebook: the runner
    redacts it on structure; a page that still holds a secret is replaced by an error page."""
    from perfbook.params import load
    from perfbook.runner import Batch, NotebookResult

    monkeypatch.setenv("PB_UNIT_DB", f"postgresql://app:{STRONG}@db/shop")
    p = tmp_path / "p.yaml"
    p.write_text("service: s\ntargets: {database_env: PB_UNIT_DB}\n")
    b = Batch(p, load(p), ["leaky"], outputs=tmp_path / "out")
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={MIME_TYPE: _hostile_findings(STRONG)[0].to_dict()})]
    nb.cells = [cell]
    nbformat.write(nb, str(work / "leaky.raw.ipynb"))
    (work / "leaky.html").write_text(f"<html><body>{html_escape(STRONG)}</body></html>")
    r = NotebookResult("leaky", status="ok")
    b._publish(r, work / "leaky.ipynb", work / "leaky.html")
    published = (b.run_dir / "leaky.ipynb").read_text()
    assert "Zq9-Sec" not in published and r.findings[0].subject == "GET /x?password=[REDACTED]"
    page = (b.run_dir / "leaky.html").read_text()
    assert "Zq9-Sec" not in page and "refusing to write leaky.html" in page
    assert r.status == "failed" and "still contains" in r.error
