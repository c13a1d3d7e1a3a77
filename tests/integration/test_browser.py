"""Every report page of a hostile run, opened in a real headless Chromium with the network blocked.

The run is the one of test_hostile_text.py (tests/hostile_run.py: script payloads, entities,
100,000-character strings and invalid UTF-8 in params, route labels and answers). For each
page: no dialog opens (the payload calls alert()), no request leaves the page (every
non-file:// request is aborted and counted), no script error, and the findings are on screen
(the callouts / the index's findings table, with the payload shown as text). A viewport
screenshot of each page is saved under the test's tmp_path (or $PERFBOOK_TEST_ARTEFACTS).

The browser is the system Chromium (Debian package ``chromium``, installed by
``tools/bootstrap.sh system``, which ``make test`` runs), driven by Playwright for Python;
``playwright install`` is never needed. Missing Chromium is a failure, not a skip.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import hostile_run as H
import pytest

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("PERFBOOK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions",
        "--metrics-recording-only", "--disable-domain-reliability"]


@pytest.fixture(scope="module")
def browser():
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make test` installs it (tools/bootstrap.sh system; "
                    f"Debian: apt-get install chromium), or set PERFBOOK_CHROMIUM to a Chromium binary", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make test` installs the dev dependencies (pip install -e '.[dev]')",
                    pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=ARGS, headless=True)
        yield b
        b.close()


class Watch:
    """A blocked-network browser context that records dialogs, requests and script errors."""

    def __init__(self, browser):
        self.ctx = browser.new_context(service_workers="block", viewport={"width": 1280, "height": 900})
        self.dialogs: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.ctx.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, url: str, content: str | None = None):
        page = self.ctx.new_page()
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(("file://", "data:")) or r.url in self.blocked
                else self.blocked.append(r.url))
        if content is None:
            page.goto(url, wait_until="load")
        else:
            page.set_content(content, wait_until="load")
        page.wait_for_timeout(300)  # let any timer- or onerror-driven script fire
        return page

    def assert_inert(self) -> None:
        """Nothing ran, nothing left the page, no script error: on every page opened."""
        assert not self.dialogs, f"a script ran (an attacker's?): {self.dialogs}"
        assert not self.blocked, f"requests tried to leave the page: {self.blocked[:5]}"
        assert not self.errors, f"script errors: {self.errors[:5]}"

    def close(self):
        self.ctx.close()


def test_the_watch_sees_scripts_and_requests(browser):
    """The harness is not blind: a page without escaping and CSP does trip it."""
    w = Watch(browser)
    try:
        w.open("about:blank", "<html><body><script>alert('canary')</script>"
                              "<img src='http://192.0.2.1/x.png'></body></html>")
    finally:
        w.close()
    assert w.dialogs == ["canary"]
    assert any(u.startswith("http://192.0.2.1/") for u in w.blocked)


def test_every_report_page_is_inert_offline_and_shows_its_findings(browser, tmp_path_factory):
    run = H.hostile_run(tmp_path_factory.mktemp("hostile"))
    art = Path(os.environ.get("PERFBOOK_TEST_ARTEFACTS") or tmp_path_factory.mktemp("screenshots"))
    art.mkdir(parents=True, exist_ok=True)
    pages = run.pages()
    assert {p.name for p in pages} == {"index.html", "quick-diagnostics.html"}
    w = Watch(browser)
    try:
        for p in pages:
            page = w.open(p.resolve().as_uri())
            page.screenshot(path=str(art / f"{p.stem}.png"))
            assert (art / f"{p.stem}.png").stat().st_size > 5000
            body = page.locator("body").inner_text()
            if p.name == "index.html":
                assert "perfbook incident report" in body
                rows = page.locator("table tr", has_text="latency.slo_breach")
                assert rows.count() >= 3 and rows.first.is_visible()
                # The payload is on screen as text, in the service name and the route.
                assert H.PAYLOAD in page.locator("table").first.inner_text()
                assert f"GET {H.HOSTILE_ROUTE}" in body
                # Links to the section pages work offline.
                page.click("a[href='quick-diagnostics.html']")
                page.wait_for_load_state("load")
                assert page.url.endswith("/quick-diagnostics.html")
            else:
                callouts = page.locator(".perfbook-finding")
                assert callouts.count() >= 5
                crit = page.locator(".perfbook-finding.sev-critical", has_text="latency.slo_breach").first
                assert crit.is_visible()
                texts = "\n".join(callouts.all_inner_texts())
                assert H.PAYLOAD in texts and "CRITICAL" in texts
                assert "more characters not shown" in body
            page.close()
    finally:
        w.close()
    w.assert_inert()
    print(f"screenshots: {art}")


def _flat(text: str) -> str:
    return " ".join(str(text).split())


def _bundle_shows_every_section_and_finding(browser, run_dir: Path, findings: list[dict], art: Path) -> str:
    from perfbook.report.bundle import write_bundle

    (bundle,) = write_bundle(run_dir, art / f"{run_dir.name}.html")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    w = Watch(browser)
    try:
        page = w.open(bundle.resolve().as_uri())
        page.screenshot(path=str(art / f"{run_dir.name}-bundle.png"))
        assert "perfbook incident report" in page.locator("section#index").inner_text()
        for nb in manifest["notebooks"]:
            sec = page.locator(f"section#p-{nb['section']}")
            assert sec.count() == 1, nb["section"]
            text = _flat(sec.inner_text())
            for f in findings:
                if f["section"] == nb["section"]:
                    assert _flat(f["title"])[:60] in text, (nb["section"], f["code"], f["title"][:60])
        # the navigation reaches a section inside the file, offline
        page.click(f"nav a[href='#p-{manifest['notebooks'][0]['section']}']")
        assert page.url.endswith(f"#p-{manifest['notebooks'][0]['section']}")
        body = page.locator("body").inner_text()
        page.close()
    finally:
        w.close()
    w.assert_inert()
    return body


def test_the_bundle_of_a_hostile_run_is_one_inert_file_with_its_findings(browser, tmp_path_factory):
    run = H.hostile_run(tmp_path_factory.mktemp("hostile"))
    art = tmp_path_factory.mktemp("bundle")
    body = _bundle_shows_every_section_and_finding(browser, run.run_dir, run.findings, art)
    assert H.PAYLOAD in body                                     # shown as text, never run


def test_the_demo_incident_bundle_is_under_10_mb_and_shows_every_section_and_finding(browser, incident_run,
                                                                                    tmp_path_factory):
    art = tmp_path_factory.mktemp("bundle-demo")
    _bundle_shows_every_section_and_finding(browser, incident_run.run_dir, incident_run.findings, art)
    size = (art / f"{incident_run.run_dir.name}.html").stat().st_size
    assert size < 10e6, f"{size / 1e6:.1f} MB"
