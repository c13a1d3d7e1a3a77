"""Run section notebooks headless: one process each, in parallel, with timeouts.

Exit status of ``perfbook run`` / ``perfbook batch`` (for cron and CI):

====  ==============================================================
0     every notebook ran and no finding is critical
1     every notebook ran; a critical finding, or a check that could not run
      (an ``error`` finding such as source.unreachable: never read as healthy)
2     bad input (params file, section name, option): nothing ran
3     a notebook failed or timed out (its HTML is still written)
130   interrupted (SIGINT/SIGTERM): the run folder says what finished
====  ==============================================================
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .findings import Finding, collect
from .params import Params, ParamsError
from .report import (STATUS_TEXT, Redactor, error_html, findings_json, git_revision, index_html,
                     make_run_dir, replace_file, versions, write_new)

EXIT_OK, EXIT_CRITICAL, EXIT_BAD_INPUT, EXIT_NOTEBOOK_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The runbook's order: triage first, then the sections it points to.
SECTION_ORDER = ["quick-diagnostics", "bottlenecks", "database", "load-balancing", "scaling",
                 "caching", "rate-limiting", "external-apis", "load-test", "monitoring"]


def notebooks_dir() -> Path:
    env = os.environ.get("PERFBOOK_NOTEBOOKS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "notebooks"


def available_sections(nb_dir: Path | None = None) -> list[str]:
    nb_dir = nb_dir or notebooks_dir()
    found = {p.stem for p in nb_dir.glob("*.ipynb")}
    ordered = [s for s in SECTION_ORDER if s in found]
    return ordered + sorted(found - set(ordered))


class BadInput(Exception):
    """Bad options or params: one line, exit 2, nothing runs."""


@dataclass
class NotebookResult:
    section: str
    status: str = "pending"  # pending, running, ok, failed, timeout, interrupted
    duration_s: float = 0.0
    error: str = ""
    ipynb: str | None = None
    html: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.severity] = counts.get(f.severity, 0) + 1
        return {"section": self.section, "status": self.status, "duration_s": round(self.duration_s, 2),
                "error": self.error, "ipynb": self.ipynb, "html": self.html, "timings": self.timings,
                "findings": counts}


@dataclass
class BatchResult:
    run_dir: Path
    results: list[NotebookResult]
    exit_code: int

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.findings]

    @property
    def index(self) -> Path:
        return self.run_dir / "index.html"


Progress = Callable[[str, NotebookResult], None]


class Batch:
    """One batch run: a run folder, N notebooks in separate processes, a manifest."""

    def __init__(self, params_file: str | Path, params: Params, sections: list[str], *,
                 incident: str | None = None, since: str | None = None, until: str | None = None,
                 overrides: dict[str, Any] | None = None, jobs: int | None = None,
                 timeout: float = 600.0, outputs: str | Path = "outputs",
                 progress: Progress | None = None, nb_dir: Path | None = None):
        self.params_file = Path(params_file).resolve()
        self.params = params
        self.sections = sections
        self.incident, self.since, self.until = incident, since, until
        self.overrides = overrides or {}
        # Notebooks mostly wait on their sources (probes, PromQL, the load generator), so two per
        # core overlap well: 2.7x faster than the sequential papermill + nbconvert loop on 2 cores.
        self.jobs = max(1, jobs or min(len(sections) or 1, 2 * (os.cpu_count() or 1)))
        self.timeout = timeout
        self.outputs = Path(outputs)
        self.progress = progress or (lambda event, r: None)
        self.nb_dir = nb_dir or notebooks_dir()
        self.redact = Redactor.for_env(params.env_names())
        self.results = [NotebookResult(s) for s in sections]
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._interrupted = False
        self._signal: int | None = None       # the signal that asked us to stop
        self._old_handlers: dict[int, Any] = {}
        self.started = datetime.now(timezone.utc)
        label = incident or self.params_file.stem
        self.run_dir = make_run_dir(self.outputs, label)
        # From its first second the folder says it is incomplete (manifest and index "running").
        self._write_status("running")
        self._work = Path(tempfile.mkdtemp(prefix=".work-", dir=self.run_dir))

    # ---------------------------------------------------------------- manifest

    def header(self) -> dict[str, str]:
        from .params import resolve_time
        w0, w1 = self.params.window.resolve(self.started)
        w0 = resolve_time(self.since, self.started) if self.since else w0
        w1 = resolve_time(self.until, self.started) if self.until else w1
        return {"service": self.params.service, "environment": self.params.environment,
                "window (UTC)": f"{w0:%Y-%m-%d %H:%M:%S} → {w1:%Y-%m-%d %H:%M:%S} "
                                f"({(w1 - w0).total_seconds() / 60:.1f} min)",
                "incident": self.incident or "—",
                "run at": self.started.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
                "perfbook": f"{__version__} ({git_revision()})",
                "params": self.params_file.name}

    def manifest(self, status: str, exit_code: int | None = None) -> dict[str, Any]:
        return {"perfbook": __version__, "status": status, "exit_code": exit_code,
                "started": self.started.isoformat(),
                "finished": datetime.now(timezone.utc).isoformat() if status != "running" else None,
                "header": self.header(), "params_file": str(self.params_file),
                "params": self.params.model_dump(mode="json", by_alias=True),
                "overrides": self.overrides, "incident": self.incident, "versions": versions(),
                "jobs": self.jobs, "timeout_s": self.timeout,
                "notebooks": [r.manifest() for r in self.results]}

    def _write_manifest(self, status: str, exit_code: int | None = None) -> None:
        data = self.redact.obj(self.manifest(status, exit_code))
        replace_file(self.run_dir / "manifest.json", json.dumps(data, indent=2, ensure_ascii=False))

    def _write_status(self, status: str) -> None:
        """While the batch runs: manifest and a provisional index that say so (replaced at the end)."""
        with self._lock:
            findings = [f for r in self.results for f in r.findings]
            replace_file(self.run_dir / "index.html",
                         index_html(self.redact.obj(self.manifest(status)), findings), self.redact)
            self._write_manifest(status)

    # ---------------------------------------------------------------- one notebook

    def _parameters(self) -> dict[str, Any]:
        # Secrets are never parameters: the kernel reads them from its environment.
        return {"params_file": str(self.params_file), "since": self.since, "until": self.until,
                "incident": self.incident, "overrides": json.dumps(self.overrides)}

    def _run_one(self, r: NotebookResult) -> None:
        if self._interrupted:
            r.status = "interrupted"
            return
        nb = self.nb_dir / f"{r.section}.ipynb"
        work_nb, work_html = self._work / f"{r.section}.ipynb", self._work / f"{r.section}.html"
        cmd = [sys.executable, "-m", "perfbook.execute", "--notebook", str(nb), "--output", str(work_nb),
               "--html", str(work_html), "--parameters", json.dumps(self._parameters()),
               "--cwd", str(self.nb_dir)]
        r.status = "running"
        self.progress("start", r)
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env)
        with self._lock:
            # interrupt() sets the flag under this lock: either it sees this process, or we see the flag.
            self._procs[r.section] = proc
            late = self._interrupted
        if late:
            _kill_tree([proc])
        try:
            out, err = proc.communicate(timeout=self.timeout)
            line = (out.strip().splitlines() or ["{}"])[-1]
            try:
                res = json.loads(line)
            except json.JSONDecodeError:
                res = {"status": "failed", "error": (err.strip().splitlines() or ["no result"])[-1]}
            r.status = res.get("status", "failed") if proc.returncode == 0 else "failed"
            r.error = res.get("error", "") or ("" if proc.returncode == 0 else
                                                (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
            r.timings = res.get("timings", {})
        except subprocess.TimeoutExpired:
            _kill_tree([proc])
            proc.communicate()
            r.status, r.error = "timeout", f"stopped after the per-notebook timeout of {self.timeout:.0f} s"
        finally:
            with self._lock:
                self._procs.pop(r.section, None)
        if self._interrupted and r.status != "ok":
            r.status, r.error = "interrupted", "the batch was interrupted"
        r.duration_s = time.monotonic() - t0
        self._publish(r, work_nb, work_html)
        if not self._interrupted:
            self._write_status("running")  # which sections finished, even if we are killed next
        self.progress("done", r)

    def _publish(self, r: NotebookResult, work_nb: Path, work_html: Path) -> None:
        """Redact and link the notebook's files into the run folder; collect its findings."""
        if work_nb.exists():
            text = work_nb.read_text(encoding="utf-8", errors="replace")
            try:
                json.loads(text)  # a process killed mid-write leaves half a notebook: never publish it
                r.findings = collect(work_nb)
            except Exception as exc:  # noqa: BLE001
                r.error = r.error or f"could not read the executed notebook: {str(exc)[:200]}"
            else:
                write_new(self.run_dir / f"{r.section}.ipynb", text, self.redact)
                r.ipynb = f"{r.section}.ipynb"
        page = None
        if work_html.exists() and r.status != "interrupted":
            page = work_html.read_text(encoding="utf-8", errors="replace")
        if page is None:
            what = {"interrupted": "the batch was interrupted (Ctrl-C or SIGTERM) before this section finished; "
                                   "its findings are incomplete or missing",
                    "timeout": r.error}.get(r.status, r.error or "the notebook produced no output")
            page = error_html(f"{r.section}: {STATUS_TEXT.get(r.status, r.status)}", what)
        write_new(self.run_dir / f"{r.section}.html", page, self.redact)
        r.html = f"{r.section}.html"

    # ---------------------------------------------------------------- the batch

    def interrupt(self) -> None:
        """Stop every running notebook (its process, kernel and their children); start no new one."""
        with self._lock:
            self._interrupted = True
            procs = list(self._procs.values())
        _kill_tree(procs)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the main loop stops the notebooks and writes the folder, so a signal can
        # never land in the middle of a file write. A second Ctrl-C changes nothing.
        if self._signal is None:
            self._signal = signum

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):
                pass

    def _restore_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass
        self._old_handlers.clear()

    def expected_seconds(self, section: str) -> float:
        """What a section is known to take at least: the load test runs its stages (and
        the recovery) to the end; the others mostly take a few seconds."""
        lt = self.params.settings.load_test
        if section != "load-test" or lt.mode == "off":
            return 0.0
        if lt.mode == "load":
            return float(lt.duration)
        return float(sum(st.duration for st in lt.stages) + lt.recovery)

    def start_order(self) -> list[NotebookResult]:
        """The notebooks in the order they start: the long load test first (its stages would
        otherwise start last and set the batch's wall time), the rest in runbook order. The
        report keeps the runbook order."""
        return sorted(self.results, key=lambda r: -self.expected_seconds(r.section))

    def run(self) -> BatchResult:
        self._install_handlers()
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        interrupted = False
        try:
            self._write_status("running")
            pending = {pool.submit(self._run_one, r) for r in self.start_order()}
            while pending and self._signal is None:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()
            interrupted = self._signal is not None
        except KeyboardInterrupt:  # a handler we could not replace (not the main thread)
            interrupted = True
        try:
            if interrupted:
                self.interrupt()
                pool.shutdown(wait=True, cancel_futures=True)
                for r in self.results:
                    if r.status in ("pending", "running"):
                        r.status, r.error = "interrupted", r.error or "the batch was interrupted"
            else:
                pool.shutdown(wait=True)
            return self._finish(interrupted=interrupted)
        finally:
            self._restore_handlers()

    def _finish(self, interrupted: bool) -> BatchResult:
        findings = [f for r in self.results for f in r.findings]
        if interrupted:
            code, status = EXIT_INTERRUPTED, "interrupted"
        elif any(r.status != "ok" for r in self.results):
            code, status = EXIT_NOTEBOOK_FAILED, "complete"
        elif any(f.severity in ("critical", "error") for f in findings):
            code, status = EXIT_CRITICAL, "complete"
        else:
            code, status = EXIT_OK, "complete"
        write_new(self.run_dir / "findings.json", findings_json(findings), self.redact)
        manifest = self.manifest(status, code)
        try:
            from .checks.checklist import checklist_index_html  # optional: the monitoring section's summary
            manifest["checklist_html"] = checklist_index_html(findings)
        except ImportError:
            pass
        _rmtree(self._work)
        # index.html and manifest.json are this run's own status files: replaced atomically,
        # the provisional "running" versions by the final ones (nothing of another run is touched).
        replace_file(self.run_dir / "index.html", index_html(self.redact.obj(manifest), findings), self.redact)
        manifest.pop("checklist_html", None)
        self._write_manifest(status, code)
        return BatchResult(self.run_dir, self.results, code)


def _kill_tree(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    """Stop notebook processes with everything they started.

    A notebook process runs in its own process group, but Jupyter starts the kernel in a
    session of its own, so a group signal alone would orphan the kernel: the descendants are
    listed first (psutil), then the group and every descendant get SIGTERM, and whatever is
    left SIGKILL after ``grace`` seconds. The notebook processes themselves are reaped by
    their Popen (never by psutil, which would steal their exit status).
    """
    import psutil

    procs = [p for p in procs if p.poll() is None]
    descendants: list[psutil.Process] = []
    for proc in procs:
        try:
            descendants += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for d in descendants:
        try:
            d.terminate()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    _, alive = psutil.wait_procs(descendants, timeout=max(0.1, deadline - time.monotonic()))
    for d in alive:
        try:
            d.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def validate_sections(requested: list[str] | None, nb_dir: Path | None = None) -> list[str]:
    known = available_sections(nb_dir)
    if not requested:
        return known
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise BadInput(f"--sections: unknown section {unknown[0]!r}; known: {', '.join(known)}")
    return [s for s in known if s in requested]


__all__ = ["Batch", "BatchResult", "NotebookResult", "BadInput", "ParamsError", "SECTION_ORDER",
           "available_sections", "validate_sections", "notebooks_dir", "EXIT_OK", "EXIT_CRITICAL",
           "EXIT_BAD_INPUT", "EXIT_NOTEBOOK_FAILED", "EXIT_INTERRUPTED", "error_html"]
