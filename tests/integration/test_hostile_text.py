"""Hostile text — script payloads, HTML entities, 100,000-character strings, invalid UTF-8 —
is rendered as inert text in every report page and in the index.

The batch test drives the real CLI (`perfbook batch --sections quick-diagnostics`) against a
local server whose /metrics route labels and answers are hostile, with the payload also in
the params (service name, an endpoint's route and URL-encoded probe path) and the incident
ID (see tests/hostile_run.py). The other tests call the notebook API and the index renderer
in-process with findings, check names, exception messages and table cells carrying the payload.
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import hostile_run as H
import pandas as pd
import pytest

from perfbook import notebook as pb
from perfbook.findings import Finding
from perfbook.params import Params
from perfbook.report import index_html

MAX_PAGE_BYTES = 1_500_000
ESCAPED_PAYLOAD = html.escape(H.PAYLOAD)  # &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;


class Tags(HTMLParser):
    """Every element and attribute of a page, as a browser's tokenizer sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(page: str, where: str) -> Tags:
    t = Tags()
    t.feed(page)
    names = [n for n, _ in t.tags]
    assert "script" not in names, f"{where}: a <script> element"
    assert "iframe" not in names and "object" not in names and "embed" not in names, where
    for name, attrs in t.tags:
        for k, v in attrs.items():
            assert not k.startswith("on"), f"{where}: event handler attribute {k}= on <{name}>"
            if k in ("src", "href", "action", "srcset"):
                v = (v or "").strip().lower()
                assert not v.startswith(("javascript:", "http:", "https:", "//")), f"{where}: <{name} {k}={v[:80]}>"
                if name == "img":
                    assert v.startswith("data:image/"), f"{where}: image not embedded: {v[:80]}"
    assert "Content-Security-Policy" in page and "default-src 'none'" in page, f"{where}: no CSP"
    assert H.PAYLOAD not in page and H.IMG not in page, f"{where}: payload unescaped"
    return t


# --------------------------------------------------------------------------- through the real CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return H.hostile_run(tmp_path_factory.mktemp("hostile"))


@pytest.mark.integration
def test_hostile_run_reached_the_findings(run):
    """The payload really went through: findings.json holds it whole (data is not mangled)."""
    assert run.returncode == 1, run.stderr[-3000:]  # critical findings, every notebook ran
    subjects = {f["subject"] for f in run.findings if f["severity"] == "critical"}
    assert f"GET {H.HOSTILE_ROUTE}" in subjects
    assert f"GET {H.LONG_ROUTE}" in subjects
    assert any("\ufffd" in (f["subject"] or "") for f in run.findings), "invalid UTF-8 label did not arrive"
    manifest = json.loads((run.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["params"]["service"] == H.SERVICE and manifest["status"] == "complete"


@pytest.mark.integration
def test_every_page_renders_hostile_text_inert(run):
    pages = run.pages()
    assert {p.name for p in pages} == {"index.html", "quick-diagnostics.html"}
    for p in pages:
        raw = p.read_bytes()
        assert len(raw) < MAX_PAGE_BYTES, f"{p.name}: {len(raw):,} bytes"
        page = raw.decode("utf-8")  # strict: invalid input bytes never reach a page
        t = assert_inert(page, p.name)
        text = "".join(t.text)
        # Shown as text, exactly as it came: the payload, the literal entities, the replacement char.
        assert H.PAYLOAD in text, f"{p.name}: payload not shown as text"
        assert ESCAPED_PAYLOAD in page
        assert H.ENTITIES in text, f"{p.name}: entities not shown literally"
        assert "\ufffd" in text
        # The 100,000-character route is cut, with a note, in tables, callouts and the index.
        assert "more characters not shown" in text


@pytest.mark.integration
def test_index_is_small_and_cuts_long_text(run):
    page = (run.run_dir / "index.html").read_text(encoding="utf-8")
    assert len(page) < 200_000
    assert "L" * 5000 not in page  # subjects cut at 200, titles at 400, recommendations at 4000
    assert "quick-diagnostics.html" in page and "GET /x" in page


# --------------------------------------------------------------------------- in-process: the notebook API


@pytest.fixture
def shown(monkeypatch):
    bundles: list[dict] = []
    monkeypatch.setattr(pb, "_display", lambda b: bundles.append(b))
    return bundles


@pytest.fixture
def ctx():
    now = datetime.now(timezone.utc)
    return pb.Context("hostile", Params(service=H.SERVICE), "p.yaml", now - timedelta(minutes=5), now, H.INCIDENT)


HOSTILE_STRINGS = [H.PAYLOAD, H.IMG, H.ENTITIES, "x" * 100_000, b"\xff\xfe\xc3(".decode("utf-8", "replace"),
                   "\"'><svg onload=alert(3)>", "javascript:alert(4)"]


@pytest.mark.parametrize("bad", HOSTILE_STRINGS, ids=["script", "img", "entities", "long", "badutf8", "svg", "jsurl"])
def test_callouts_tables_notes_and_failed_checks_are_inert(shown, ctx, bad):
    f = Finding("latency.slo_breach", "critical", f"title {bad}", subject=f"GET /{bad}",
                evidence={f"key {bad}": bad, "list": [bad] * 3, **{f"k{i}": i for i in range(40)}},
                recommendation=f"do {bad}")
    pb.emit(ctx, [f])
    pb.table(pd.DataFrame({"route": [bad] * 3, bad[:50]: [1, 2, 3]}), f"caption {bad}")
    pb.details(f"summary {bad}", f"SELECT '{bad}'")
    pb.note(f"note {bad}")
    with pb.check(ctx, f"check named {bad}"):
        raise ValueError(f"parser choked on {bad}")
    pb.summary(ctx)
    page = "".join(b.get("text/html", "") for b in shown)
    assert_inert(f"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'\">{page}", "outputs")
    assert len(page) < 100_000, len(page)
    titles = [f.title for f in ctx.findings]
    assert any(bad[:300] in t for t in titles)  # the record keeps the text; only the page cuts it


def test_index_page_renders_hostile_findings_inert():
    fs = [Finding("external.errors", sev, f"{H.PAYLOAD} fails {H.ENTITIES}", section=f"sec{H.IMG}",
                  subject="y" * 100_000, evidence={H.PAYLOAD: "z" * 100_000}, recommendation=H.IMG * 2000)
          for sev in ("critical", "warning", "error")] * 300
    manifest = {"status": "interrupted", "header": {"service": H.SERVICE, "incident": "i" * 100_000},
                "notebooks": [{"section": f"sec{H.IMG}", "status": "failed", "error": H.PAYLOAD * 100,
                               "html": f"sec{H.IMG}.html", "duration_s": 1.0}]}
    page = index_html(manifest, fs)
    assert_inert(page, "index")
    assert len(page.encode()) < MAX_PAGE_BYTES
    assert "more findings not shown" in page and "more characters not shown" in page


@pytest.mark.integration
def test_every_json_file_parses_and_no_file_holds_a_secret(run):
    """Secrets with quotes, an apostrophe, a backslash and a space (a quoted key=value DSN),
    a digit-only one, an api_key in a query string, libpq's "missing =" fragment, and a
    secret across every clip boundary: every JSON file of the run parses, and no file holds
    a secret or its start, in any escaped form. The text around them arrives, masked in place."""
    from perfbook.report import Redactor

    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".ipynb", ".html"}
    forms = set().union(*(Redactor._escaped(n) for n in H.SECRET_NEEDLES))
    for p in files:
        text = p.read_text(encoding="utf-8")
        if p.suffix in (".json", ".ipynb"):
            json.loads(text)
        hits = sorted(f for f in forms if f in text)
        assert not hits, f"{p.name} holds {hits[:3]}"
        assert f":{H.REDIS_PASSWORD}@" not in text and f"password={H.REDIS_PASSWORD}" not in text, p.name
    subjects = {f["subject"] for f in run.findings}
    for masked in ("GET /s1?password=[REDACTED]", "GET /s2 [REDACTED] raw",
                   "GET /s3 redis://:[REDACTED]@cache:6379/0", "GET /s4 password=[REDACTED]",
                   "GET /s5?api_key=[REDACTED]&x=1", "GET /s6 password=[REDACTED]",
                   'GET /s7 missing "=" after "[REDACTED]" in connection info string'):
        assert masked in subjects, masked
    boundary = [s for s in subjects if s and s.startswith("GET /cc")]
    assert len(boundary) == 35 and all(s.endswith("[REDACTED]/tail") for s in boundary)
    # A digit-only secret masks no number: the metric values and counts are intact.
    manifest = json.loads((run.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["params"]["targets"]["database_env"] == "PB_HOSTILE_DB"
