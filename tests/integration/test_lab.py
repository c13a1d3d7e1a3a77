"""JupyterLab as an on-call engineer meets it: `perfbook lab`, the real UI in Chromium, Run All.

`perfbook lab -p PARAMS` on a free port against a demo stack (a kept one, `perfbook demo --keep`,
else the session's incident stack of tests/integration/conftest.py); quick-diagnostics and
database are opened in the real JupyterLab UI and run with Run All Cells. Asserted: no error
output, the verdict table and callouts are there, no MathJax/KaTeX element inside an output
table (SQL `$1 … $2` stays text), no table wider than the notebook panel; editing the window in
the parameters cell and running again changes the header; the workspace turns into a report
(`perfbook report FOLDER`); notebooks/ is unchanged afterwards. Screenshots go to the test's
tmp dir (or $PERFBOOK_TEST_ARTEFACTS).

Chromium is the system one (like test_browser.py), never `playwright install`. Loopback requests
are never intercepted (that breaks the kernel's websocket); the kernel is waited for through the
REST API (/api/sessions: idle with a connection), the page reloaded when it does not connect.
Everything polls with generous timeouts: the machine may be busy.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PERFBOOK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"
RUN_TIMEOUT = 480.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebooks_state() -> tuple[str, dict[str, str]]:
    st = subprocess.run(["git", "status", "--porcelain", "--", "notebooks"], cwd=ROOT, capture_output=True,
                        text=True).stdout if (ROOT / ".git").exists() else ""
    return st, {str(p.relative_to(ROOT / "notebooks")): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
                for p in sorted((ROOT / "notebooks").rglob("*"))}


@pytest.fixture(scope="module")
def stack_params(request):
    """(params file, environment) of a running demo stack: a kept one, else the session's."""
    from perfbook.demo.stack import Stack
    try:
        stack = Stack.load_state()
        if all(stack.running().values()) and (stack.state_dir / "params.yaml").exists():
            return stack.state_dir / "params.yaml", stack.env()
    except (FileNotFoundError, ValueError, KeyError):
        pass
    run = request.getfixturevalue("incident_run")
    return run.params_path, run.env


@pytest.fixture(scope="module")
def lab(stack_params, tmp_path_factory):
    params, env = stack_params
    out = tmp_path_factory.mktemp("lab-out")
    port = _free_port()
    before = _notebooks_state()
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfbook.cli", "lab", "-p", str(params), "--port", str(port), "--outputs", str(out),
         "--incident", "INC-lab"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env, "PERFBOOK_LAB_ARGS": "--LabApp.expose_app_in_browser=True"})
    lines: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: [lines.append(ln) for ln in proc.stdout], daemon=True).start()
    threading.Thread(target=lambda: [err.append(ln) for ln in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(ln.startswith("JupyterLab: ") for ln in lines):
        assert proc.poll() is None, f"perfbook lab exited {proc.returncode}:\n{''.join(lines)}{''.join(err)}"
        time.sleep(0.5)
    url = next((ln.split(" ", 1)[1].strip() for ln in lines if ln.startswith("JupyterLab: ")), None)
    assert url, f"perfbook lab printed no URL in 240 s:\n{''.join(err)}"
    m = re.match(r"(http://127\.0\.0\.1:\d+)/lab/tree/quick-diagnostics\.ipynb\?token=(\w+)$", url)
    assert m, url
    ws = Path(re.search(r"workspace: (\S+)", "".join(err)).group(1))
    info = {"base": m.group(1), "token": m.group(2), "ws": ws, "params": params, "before": before, "proc": proc,
            "stderr": err}
    try:
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def browser():
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make test` installs it (tools/bootstrap.sh system)",
                    pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    d = os.environ.get("PERFBOOK_TEST_ARTEFACTS")
    p = Path(d) / "lab" if d else tmp_path_factory.mktemp("lab-screenshots")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _sessions(lab) -> list[dict]:
    r = requests.get(f"{lab['base']}/api/sessions", headers={"Authorization": f"token {lab['token']}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def _kernel(lab, name: str) -> dict | None:
    for s in _sessions(lab):
        if s.get("path", "").endswith(name) and s.get("kernel"):
            return s["kernel"]
    return None


def _poll(what: str, fn, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - keep polling; say what it was at the end
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


ACTIVATE_JS = """(name) => {
  const app = window.jupyterapp;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path.endsWith(name)) { app.shell.activateById(w.id); return w.id; }
  }
  return null;
}"""


def activate(page, name: str) -> str:
    """Make ``name``'s tab the current one; its panel's selector (scoped to the visible panel)."""
    pid = _poll(f"{name}'s tab", lambda: page.evaluate(ACTIVATE_JS, name), timeout=60, interval=0.5)
    sel = f"#{pid}{ACTIVE}"
    page.locator(sel).wait_for(state="visible", timeout=120_000)
    _poll(f"{name} to be the current notebook",
          lambda: page.evaluate("(name) => window.jupyterapp.shell.currentWidget.context.path.endsWith(name)", name),
          timeout=60, interval=0.5)
    return sel


def open_notebook(page, lab, name: str) -> str:
    """Open ``name`` in the UI and wait until its kernel is idle and connected (reload up to 3
    times); returns the selector of its panel."""
    url = f"{lab['base']}/lab/tree/{name}?token={lab['token']}"
    for attempt in range(4):
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        try:
            _poll("JupyterLab's app object", lambda: page.evaluate("() => !!(window.jupyterapp && "
                                                                   "window.jupyterapp.commands)"), timeout=180)
            sel = activate(page, name)
            page.locator(f"{sel} .jp-Notebook-cell").first.wait_for(state="visible", timeout=120_000)
            _poll(f"the kernel of {name} (idle, connected)",
                  lambda: (k := _kernel(lab, name)) and k.get("execution_state") == "idle"
                  and k.get("connections", 0) > 0, timeout=90)
            return sel
        except (AssertionError, PlaywrightTimeout):
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


def run_all(page, lab, name: str, sel: str) -> None:
    """Run All Cells (the command `runmenu:run-all` on the active notebook) and wait until every
    code cell has run and the kernel is idle again."""
    activate(page, name)
    page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")
    n_code = page.locator(f"{sel} .jp-CodeCell").count()
    assert n_code > 3

    def done():
        prompts = page.locator(f"{sel} .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        ran = [p for p in prompts if re.search(r"\[\d+\]", p)]
        k = _kernel(lab, name) or {}
        return len(ran) == n_code and k.get("execution_state") == "idle"

    _poll(f"Run All Cells of {name} to finish", done, timeout=RUN_TIMEOUT, interval=2)


def save(page, lab, name: str) -> dict:
    activate(page, name)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")

    def saved():
        nb = json.loads((lab["ws"] / name).read_text(encoding="utf-8"))
        return nb if any(c.get("outputs") for c in nb["cells"]) else None
    return _poll(f"{name} saved with its outputs", saved, timeout=120)


def check_page(page, sel: str) -> dict:
    """What a notebook's panel shows: errors, callouts, tables against the panel's width, math."""
    return page.evaluate("""(sel) => {
      const p = document.querySelector(sel);
      const nb = p.querySelector('.jp-Notebook');
      const outs = [...p.querySelectorAll('.jp-OutputArea-output')];
      const errors = outs.filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr'
                                      && /Traceback|Error/.test(o.innerText)).map(o => o.innerText.slice(0, 400));
      const tables = [...p.querySelectorAll('.jp-OutputArea-output table')];
      const panel = nb.getBoundingClientRect();
      const wide = tables.filter(t => t.offsetParent !== null && t.getBoundingClientRect().width > panel.width + 1)
                         .map(t => [t.getBoundingClientRect().width, panel.width, t.innerText.slice(0, 80)]);
      const math = p.querySelectorAll('.jp-OutputArea-output table mjx-container, .jp-OutputArea-output table .MathJax,'
                                      + ' .jp-OutputArea-output table .katex, .jp-OutputArea-output table math').length;
      return {errors, wide, math, tables: tables.length,
              callouts: p.querySelectorAll('.perfbook-finding').length,
              failed: [...p.querySelectorAll('.perfbook-finding[data-code="check.failed"]')].map(e => e.innerText.slice(0, 300)),
              verdict: p.querySelectorAll('table.perfbook-verdict').length,
              header: (p.querySelector('.perfbook-header') || {innerText: ''}).innerText,
              figures_as_text: outs.filter(o => /^<Figure size/.test(o.innerText.trim())).length,
              dollar_cells: [...p.querySelectorAll('.jp-OutputArea-output table td')].filter(td => /\\$\\d/.test(td.innerText)).length};
    }""", sel)


PARAMS_CELL_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const i = nb.widgets.findIndex(c => c.model.type === 'code' && c.model.sharedModel.getSource().includes('params_file ='));
  nb.activeCellIndex = i;
  nb.mode = 'edit';
  nb.activeCell.editor.focus();
  return nb.activeCell.model.sharedModel.getSource();
}"""


def set_window(page, name: str, since: str, until: str) -> None:
    """Edit the parameters cell like an engineer, with the keyboard: put the cursor in it (the
    notebook's edit mode), select its text, type the new assignments."""
    want = f"since = {since!r}"
    for attempt in range(3):
        activate(page, name)
        src = page.evaluate(PARAMS_CELL_JS)
        params_file = re.search(r"params_file = (.+)", src).group(1).strip()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(f"params_file = {params_file}\nsince = {since!r}\nuntil = {until!r}\n"
                                  f"incident = 'INC-lab'\noverrides = '{{}}'")
        try:
            _poll("the parameters cell to hold the new window",
                  lambda: want in page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCell"
                                                ".model.sharedModel.getSource()"), timeout=20, interval=0.5)
            page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.mode = 'command'; }")
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_lab_run_all_readable_saved_and_reported(lab, browser, artefacts):
    ws = lab["ws"]
    assert re.match(r"\d{4}-\d\d-\d\d$", ws.parent.name) and re.match(r"\d{6}-lab-INC-lab$", ws.name), ws
    assert ROOT / "notebooks" not in ws.parents
    for name in ("quick-diagnostics.ipynb", "database.ipynb"):
        src = (ws / name).read_text(encoding="utf-8")
        assert json.dumps(str(lab["params"]))[1:-1] in src, "parameters cell filled in with the params' full path"
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    try:
        seen: dict[str, dict] = {}
        for name in ("quick-diagnostics.ipynb", "database.ipynb"):
            sel = open_notebook(page, lab, name)
            run_all(page, lab, name, sel)
            page.screenshot(path=str(artefacts / f"{Path(name).stem}.png"))
            page.locator(f"{sel} .perfbook-table").first.scroll_into_view_if_needed()
            page.screenshot(path=str(artefacts / f"{Path(name).stem}-tables.png"))
            seen[name] = shown = check_page(page, sel)
            assert not shown["errors"], shown["errors"]
            assert not shown["failed"], shown["failed"]
            assert shown["callouts"] > 0, shown
            assert shown["math"] == 0, "a table's text was typeset as math"
            assert shown["figures_as_text"] == 0, "a figure shown as '<Figure size …>' text, not an image"
            assert shown["tables"] > 0 and not shown["wide"], shown["wide"]
            assert str(lab["params"]) in shown["header"], shown["header"]  # the full path, not a basename
            nb = save(page, lab, name)
            assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert seen["quick-diagnostics.ipynb"]["verdict"] == 1
        assert seen["database.ipynb"]["dollar_cells"] > 0, "SQL with $n placeholders shown as text in tables"

        # Edit the window in the parameters cell, run again: the header says so.
        qd = "quick-diagnostics.ipynb"
        sel = activate(page, qd)
        assert "(2.0 min)" not in check_page(page, sel)["header"]
        set_window(page, qd, "-2m", "now")
        run_all(page, lab, qd, sel)
        header = _poll("the header to show the new window",
                       lambda: (h := check_page(page, sel)["header"]) and "(2.0 min)" in h and h, timeout=60)
        assert "INC-lab" in header
        page.screenshot(path=str(artefacts / "quick-diagnostics-2m.png"))
        save(page, lab, "quick-diagnostics.ipynb")
    finally:
        ctx.close()

    # The workspace becomes a report like a batch run's.
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "report", str(ws)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"Report: {ws / 'index.html'}" in res.stdout
    findings = json.loads((ws / "findings.json").read_text())
    assert {f["section"] for f in findings} == {"quick-diagnostics", "database"}
    manifest = json.loads((ws / "manifest.json").read_text())
    assert [n["section"] for n in manifest["notebooks"]] == ["quick-diagnostics", "database"]
    assert "bottlenecks" in manifest["not_run"]
    index = (ws / "index.html").read_text()
    assert "quick-diagnostics.html" in index and "database.html" in index and "INC-lab" in index
    page_html = (ws / "database.html").read_text()
    assert "perfbook-finding" in page_html and "tex2jax_ignore" in page_html
    archive = (ws.parent.parent / "index.html").read_text()   # the archive lists it as a report now
    assert f"{ws.parent.name}/{ws.name}/index.html" in archive and "Archive of every run" in res.stderr

    # Lab exits on Ctrl-C; the tracked notebooks were never touched.
    lab["proc"].send_signal(signal.SIGINT)
    assert lab["proc"].wait(timeout=90) == 0, "".join(lab["stderr"])
    status, files = _notebooks_state()
    before_status, before_files = lab["before"]
    assert sorted(files) == sorted(before_files), "a file appeared in or vanished from notebooks/"
    assert set(status.splitlines()) <= set(before_status.splitlines()), status
    for name in (n for n in files if files[n] != before_files[n]):
        # Only another engineer rebuilding a notebook in a shared checkout (make notebooks) changes
        # one while this test runs; Lab would have left its outputs or filled-in parameters there.
        nb = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
        assert not any(c.get("outputs") or c.get("execution_count") for c in nb["cells"]), f"{name} has outputs"
        assert str(lab["params"]) not in json.dumps(nb) and "INC-lab" not in json.dumps(nb), f"{name} was saved by Lab"
