"""`perfbook lab`: JupyterLab on a workspace of its own, for one investigation.

    perfbook lab [-p FILE] [--incident ID] [--since -30m] [--port N]
    perfbook report FOLDER

``perfbook lab`` copies the section notebooks into a new folder
``outputs/YYYY-MM-DD/HHMMSS-lab-<incident>/`` with their parameters cell filled in (the params
file's full path, the window, the incident) and starts JupyterLab with that folder as its root:
Lab's autosave keeps the engineer's work there and never touches the tracked ``notebooks/``.
Without ``-p`` it uses the demo stack a ``perfbook demo --keep`` left up, or starts one (and
stops it when Lab exits). Lab runs as root too (``--allow-root`` when the effective uid is 0).

The workspace carries its own Jupyter configuration (``.jupyter/``, put first on
``JUPYTER_CONFIG_PATH``): no news pop-up, the kernel starts with the notebook, Lab's workspace
state under ``.jupyter/workspaces`` (``JUPYTERLAB_WORKSPACES_DIR``), and a ContentsManager
``pre_save_hook`` (:func:`pre_save_hook`) that redacts the params' secrets from every string
of a notebook before Lab writes it.

``perfbook report FOLDER`` turns the workspace into what a batch leaves: per executed notebook
a self-contained HTML page, then ``findings.json``, ``manifest.json`` and ``index.html``
(re-running it after more investigation refreshes those files; the notebooks are untouched).
"""
from __future__ import annotations

import ast
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .report.archive import LAB_MARK
from .runner import say

#: Environment variable naming the params file whose secrets the save hook redacts.
PARAMS_ENV = "PERFBOOK_LAB_PARAMS"
WORKSPACE_MARK = LAB_MARK  # the archive index tells workspaces by it

LAB_SETTINGS = {
    # No "Would you like to receive official Jupyter news?" pop-up, no update check.
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    # Opening a section starts its kernel: Run All works at once. Every cell stays in the page
    # (the sections are short), so find-in-page and printing see all outputs.
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
}

SERVER_CONFIG = '''# Written by `perfbook lab` for this workspace.
c = get_config()  # noqa: F821
c.FileContentsManager.pre_save_hook = "perfbook.lab.pre_save_hook"
'''


# --------------------------------------------------------------------------- the workspace


def _literal(v: Any) -> str:
    return repr(v)


def fill_parameters(nb: Any, values: dict[str, Any]) -> None:
    """Set the parameters cell's assignments (papermill's ``parameters`` tag) to ``values``,
    keeping its comments; a name the cell lacks is added at its end."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            lines, seen = [], set()
            for line in cell.source.splitlines():
                name = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
                if name in values:
                    lines.append(f"{name} = {_literal(values[name])}")
                    seen.add(name)
                else:
                    lines.append(line)
            lines += [f"{k} = {_literal(v)}" for k, v in values.items() if k not in seen]
            cell.source = "\n".join(lines)
            return
    raise ValueError("the notebook has no cell tagged 'parameters'")


def read_parameters(nb: Any) -> dict[str, Any]:
    """The literal assignments of a notebook's parameters cell (as the engineer left them)."""
    out: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return out
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return out


def make_workspace(params_file: str | Path, outputs: str | Path = "outputs", incident: str | None = None,
                   since: str | None = None, until: str | None = None, sections: list[str] | None = None,
                   overrides: dict | None = None, label: str | None = None) -> Path:
    """``outputs/YYYY-MM-DD/HHMMSS-lab-<incident>/`` with the section notebooks, parameters
    filled in, and the workspace's Jupyter configuration."""
    import nbformat

    from .report import make_run_dir
    from .runner import notebooks_dir, validate_sections

    params_file = Path(params_file).resolve()
    ws = make_run_dir(outputs, f"lab-{incident or label or params_file.stem}").resolve()
    values = {"params_file": str(params_file), "since": since, "until": until, "incident": incident,
              "overrides": json.dumps(overrides or {})}
    for section in validate_sections(sections):
        nb = nbformat.read(str(notebooks_dir() / f"{section}.ipynb"), as_version=4)
        fill_parameters(nb, values)
        nbformat.write(nb, str(ws / f"{section}.ipynb"))
    write_config(ws)
    (ws / WORKSPACE_MARK).write_text(json.dumps({
        "params_file": str(params_file), "incident": incident, "since": since, "until": until,
        "overrides": overrides or {}, "created": datetime.now(timezone.utc).isoformat()}, indent=2), encoding="utf-8")
    return ws


def write_config(ws: Path) -> Path:
    cfg = ws / ".jupyter"
    (cfg / "labconfig").mkdir(parents=True, exist_ok=True)
    (cfg / "workspaces").mkdir(exist_ok=True)
    (cfg / "labconfig" / "default_setting_overrides.json").write_text(json.dumps(LAB_SETTINGS, indent=2),
                                                                      encoding="utf-8")
    (cfg / "jupyter_server_config.py").write_text(SERVER_CONFIG, encoding="utf-8")
    return cfg


# --------------------------------------------------------------------------- redaction on save


def _redactor(params_file: str | None = None) -> Any:
    from .params import load
    from .report import Redactor

    names: list[str] = []
    path = params_file or os.environ.get(PARAMS_ENV)
    if path:
        try:
            names = list(load(path).env_names())
        except Exception:  # noqa: BLE001 - a params file edited into invalid YAML: the patterns still apply
            names = []
    return Redactor.for_env(names)


def redact_notebook(nb: Any, redactor: Any) -> Any:
    """Every string of a notebook object, redacted (the report module's own structural
    redaction when it has one)."""
    import nbformat

    from . import report

    node = nbformat.from_dict(nb)
    structural = getattr(report, "redact_notebook", None)
    if structural is not None:
        try:
            return structural(node, redactor)
        except Exception as exc:  # noqa: BLE001 - never save unredacted: the plain structural walk below
            sys.stderr.write(f"perfbook: report.redact_notebook failed ({type(exc).__name__}: {exc}); "
                             f"redacting every string of the notebook instead\n")
    return nbformat.from_dict(redactor.obj(json.loads(json.dumps(node))))


def pre_save_hook(model: dict, path: str = "", contents_manager: Any = None, **kwargs: Any) -> None:
    """jupyter_server's ``FileContentsManager.pre_save_hook``: the params' secrets (and DSN
    passwords, bearer tokens) never reach the workspace's files."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    import nbformat

    model["content"] = nbformat.from_dict(redact_notebook(model["content"], _redactor()))


# --------------------------------------------------------------------------- the params to use


class DemoForLab:
    """The demo stack Lab investigates: a kept one (``perfbook demo --keep``) or one started
    here, with traffic flowing while Lab runs, stopped when Lab exits."""

    def __init__(self, scenario: str = "incident", warmup: float = 40.0):
        self.scenario, self.warmup = scenario, warmup
        self.stack: Any = None
        self.owned = False
        self._stop = threading.Event()
        self._traffic: threading.Thread | None = None

    def kept(self) -> Path | None:
        from .demo.stack import Stack
        from .demo_cli import write_demo_params
        try:
            stack = Stack.load_state()
        except (FileNotFoundError, ValueError, KeyError):
            return None
        if not all(stack.running().values()):
            say(f"perfbook lab: the kept demo stack at {stack.state_dir} is not fully running; starting a new one")
            return None
        self.stack = stack
        params = stack.state_dir / "params.yaml"
        return params if params.exists() else write_demo_params(stack, params)

    def start(self) -> Path:
        import yaml

        from .demo.stack import Stack
        from .demo_cli import arm_alert_rules, demo_params

        stack = Stack(self.scenario, log=lambda m: say(f"  {m}"))
        self.stack, self.owned = stack, True
        say(f"perfbook lab: no demo stack is kept and no -p given: starting one (scenario {self.scenario!r}) "
             f"on 127.0.0.1; it stops when Lab exits")
        stack.start()
        arm_alert_rules(stack)
        say(f"  driving {self.warmup:.0f} s of traffic before Lab opens (it goes on while Lab runs)")
        stack.drive(self.warmup)
        data = demo_params(stack)
        data["window"]["until"] = "now"  # a live investigation: the window ends when a cell runs
        params = stack.state_dir / "params.yaml"
        params.write_text(f"# perfbook params for the demo stack `perfbook lab` started (scenario {self.scenario})\n"
                          + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        self._traffic = threading.Thread(target=self._drive, daemon=True, name="perfbook-lab-traffic")
        self._traffic.start()
        return params

    def _drive(self) -> None:
        while not self._stop.is_set():
            try:
                self.stack.drive(5)
            except Exception:  # noqa: BLE001 - the stack is stopping
                if self._stop.wait(1):
                    return

    def env(self) -> dict[str, str]:
        return self.stack.env() if self.stack is not None else {}

    def stop(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.join(timeout=15)
        if self.owned and self.stack is not None:
            self.stack.stop(remove=True)
            say("perfbook lab: demo stack stopped")


# --------------------------------------------------------------------------- perfbook lab


def lab_command(ws: Path, port: int, open_browser: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "jupyterlab", "--ip", "127.0.0.1", "--port", str(port), "--port-retries", "0",
           f"--ServerApp.root_dir={ws}", f"--ServerApp.open_browser={open_browser}",
           "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    # More `jupyter lab` options, e.g. PERFBOOK_LAB_ARGS="--LabApp.expose_app_in_browser=True".
    import shlex
    return cmd + shlex.split(os.environ.get("PERFBOOK_LAB_ARGS", ""))


def lab_env(ws: Path, params_file: Path, token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, **extra)
    cfg = str(ws / ".jupyter")
    env["JUPYTER_CONFIG_PATH"] = cfg + (os.pathsep + env["JUPYTER_CONFIG_PATH"] if env.get("JUPYTER_CONFIG_PATH") else "")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(ws / ".jupyter" / "workspaces")
    env["JUPYTER_TOKEN"] = token
    env[PARAMS_ENV] = str(params_file)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures as images, whatever the shell set
    # The tracked notebooks (opened by hand) default to the same params: see notebook.start().
    env["PERFBOOK_DEMO_PARAMS"] = str(params_file)
    return env


def wait_ready(url: str, token: str, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}, timeout=3).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def lab_main(a: Any) -> int:
    from .params import load, parse_override
    from .runner import EXIT_BAD_INPUT

    overrides = dict(parse_override(o) for o in (a.set or []))
    demo: DemoForLab | None = None
    proc: subprocess.Popen | None = None
    stopping = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["signal"] = signum
        if proc is not None and proc.poll() is None:
            proc.terminate()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        if a.params:
            params_file = Path(a.params).resolve()
        else:
            demo = DemoForLab(scenario=a.scenario)
            params_file = demo.kept() or demo.start()
            if not demo.owned:
                say(f"perfbook lab: using the demo stack kept at {demo.stack.state_dir}")
        load(str(params_file), overrides)  # a bad params file: say so before anything starts
        ws = make_workspace(params_file, a.outputs, incident=a.incident, since=a.since, until=a.until,
                            overrides=overrides, label="demo" if demo else None)
        if stopping["signal"] is not None:  # Ctrl-C while the stack started: do not open Lab
            say(f"perfbook lab: interrupted; the workspace is {ws}")
            return 130
        from .sources.loadgen import free_port

        port = a.port or free_port()
        token = secrets.token_hex(24)
        url = f"http://127.0.0.1:{port}"
        env = lab_env(ws, params_file, token, demo.env() if demo else {})
        log = open(ws / ".jupyter" / "lab.log", "ab")  # noqa: SIM115  (Lab's stdout and stderr)
        proc = subprocess.Popen(lab_command(ws, port, a.open), env=env, cwd=str(ws), stdout=log, stderr=log,
                                start_new_session=True)
        if stopping["signal"] is None and not wait_ready(url, token, proc):
            say(f"perfbook lab: JupyterLab did not start; its log: {ws / '.jupyter' / 'lab.log'}")
            if proc.poll() is None:
                proc.terminate()
            return 1
        first = "quick-diagnostics.ipynb" if (ws / "quick-diagnostics.ipynb").exists() else ""
        print(f"JupyterLab: {url}/lab/tree/{first}?token={token}", flush=True)
        say(f"  params:    {params_file}\n  workspace: {ws}   (your notebooks are saved here; notebooks/ is untouched)\n"
             f"  Lab log:   {ws / '.jupyter' / 'lab.log'}\n"
             f"  stop with Ctrl-C; then `perfbook report {ws}` for the HTML report")
        while proc.poll() is None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return 0 if stopping["signal"] is not None or proc.returncode in (0, -signal.SIGTERM) else proc.returncode
    except ValueError as exc:
        say(f"perfbook lab: {exc}")
        return EXIT_BAD_INPUT
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if demo is not None:
            demo.stop()
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- perfbook report FOLDER


def _notebook_status(nb: Any) -> tuple[str, str]:
    """ok / failed (an error output) / pending (never run), and the error."""
    ran = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") or cell.get("outputs"):
            ran = True
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return "failed", f"{out.get('ename', '')}: {out.get('evalue', '')}"[:2000]
    return ("ok", "") if ran else ("pending", "")


def report_workspace(folder: str | Path) -> Path:
    """Write the batch report files (per-section HTML, findings.json, manifest.json,
    index.html) for the executed notebooks of a `perfbook lab` workspace; returns index.html."""
    import nbformat

    from . import __version__
    from .findings import collect
    from .params import load
    from .report import Redactor, findings_json, git_revision, index_html, notebook_html, replace_file, versions
    from .runner import SECTION_ORDER, BadInput

    ws = Path(folder).resolve()
    if not ws.is_dir():
        raise BadInput(f"{folder}: not a folder")
    meta = {}
    if (ws / WORKSPACE_MARK).exists():
        meta = json.loads((ws / WORKSPACE_MARK).read_text(encoding="utf-8"))
    found = sorted((p for p in ws.glob("*.ipynb") if not p.name.startswith(".")),
                   key=lambda p: (SECTION_ORDER.index(p.stem) if p.stem in SECTION_ORDER else 99, p.stem))
    if not found:
        raise BadInput(f"{folder}: no notebooks (.ipynb) in this folder")
    first_params = read_parameters(nbformat.read(str(found[0]), as_version=4))
    params_file = meta.get("params_file") or first_params.get("params_file")
    params = None
    if params_file and not os.path.isabs(params_file):
        params_file = str((ws / params_file).resolve())
    try:
        params = load(params_file) if params_file else None
    except Exception as exc:  # noqa: BLE001 - the report still lists what ran
        say(f"perfbook report: cannot read the params file {params_file}: {exc}; secrets of its "
             f"environment variables cannot be redacted by name (patterns still apply)")
    redact = Redactor.for_env(params.env_names() if params else [])
    results, findings, windows = [], [], []
    for path in found:
        nb = nbformat.read(str(path), as_version=4)
        status, error = _notebook_status(nb)
        entry = {"section": path.stem, "status": status, "error": error, "duration_s": 0.0,
                 "ipynb": path.name, "html": None, "timings": {}, "findings": {}}
        if status != "pending":
            fs = collect(path)
            for f in fs:
                entry["findings"][f.severity] = entry["findings"].get(f.severity, 0) + 1
            findings += fs
            replace_file(ws / f"{path.stem}.html", notebook_html(path), redact)
            entry["html"] = f"{path.stem}.html"
            windows += [str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", [])
                        if "perfbook-header" in str(o.get("data", {}).get("text/html", ""))][:1]
        results.append(entry)
    if not any(r["status"] != "pending" for r in results):
        raise BadInput(f"{folder}: no notebook has been run yet (Run All Cells in JupyterLab, then report)")
    window = windows[0].split(" — window ", 1)[1].split(" — ")[0] if windows and " — window " in windows[0] else "—"
    started = datetime.now(timezone.utc)
    header = {"service": params.service if params else "—", "environment": params.environment if params else "—",
              "window (UTC)": window, "incident": meta.get("incident") or first_params.get("incident") or "—",
              "run at": started.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") + " (JupyterLab investigation)",
              "perfbook": f"{__version__} ({git_revision()})", "params": str(params_file or "—")}
    manifest = {"perfbook": __version__, "status": "complete", "exit_code": None,
                "service": params.service if params else None, "environment": params.environment if params else None,
                "started": meta.get("created"),
                "finished": started.isoformat(), "header": header, "params_file": str(params_file),
                "params": params.model_dump(mode="json", by_alias=True) if params else None,
                "overrides": meta.get("overrides", {}), "incident": meta.get("incident"), "versions": versions(),
                "source": "perfbook lab", "notebooks": [r for r in results if r["status"] != "pending"],
                "not_run": [r["section"] for r in results if r["status"] == "pending"]}
    replace_file(ws / "findings.json", findings_json(findings), redact)
    index_manifest = dict(manifest)
    try:
        from .report import checklist_index_html
        index_manifest["checklist_html"] = checklist_index_html(findings)
    except ImportError:
        pass
    replace_file(ws / "index.html", index_html(redact.obj(index_manifest), findings), redact)
    replace_file(ws / "manifest.json", json.dumps(redact.obj(manifest), indent=2, ensure_ascii=False), redact)
    return ws / "index.html"


def report_main(a: Any) -> int:
    index = report_workspace(a.folder)
    ws = index.parent
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", ws.parent.name):   # outputs/<date>/<workspace>: its archive lists it
        from .runner import rebuild_archive
        archive = rebuild_archive(ws.parent.parent)
        if archive:
            say(f"Archive of every run: {archive}")
    print(f"Report: {index}")
    return 0
