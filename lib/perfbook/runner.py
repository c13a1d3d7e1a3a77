"""Run section notebooks headless: one process each, in parallel, with timeouts.

Exit status of ``perfbook run`` / ``perfbook batch`` (for cron and CI):

====  ==============================================================
0     every notebook ran and no finding is critical
1     every notebook ran; a critical finding, or a check that could not run
      (an ``error`` finding such as source.unreachable: never read as healthy)
2     bad input (params file, section name, option): nothing ran
3     a notebook failed or timed out (its HTML is still written)
4     the runner itself failed (disk full, a filesystem without hard links, ...): the
      other notebooks were stopped, manifest.json is ``failed`` with the reason
130   interrupted (SIGINT/SIGTERM): the run folder says what finished
====  ==============================================================
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .baseline import (
    BadBaseline,
    TimeShift,
    compare_into,
    report_lines,
    resolve as resolve_baseline,
    since_snapshot,
)
from .executors import Backend, BadExecutor, ExecutorSpec, LocalBackend, start_backend
from .findings import Finding, collect, collect_records
from .params import Params, ParamsError, load, parse_override
from .params.loading import dump_resolved
from .report import (
    STATUS_TEXT,
    NotARun,
    Redactor,
    SecretLeak,
    checklist_index_html,
    clip,
    error_html,
    findings_json,
    git_revision,
    index_html,
    make_run_dir,
    read_run,
    redact_notebook,
    replace_file,
    versions,
    write_new,
)
from .sources import HISTORICAL_ENV
from .tasks import NotebookTask, TaskOutcome

EXIT_OK, EXIT_CRITICAL, EXIT_BAD_INPUT, EXIT_NOTEBOOK_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_RUNNER_FAILED = 4
RESOLVED_PARAMS = "params.resolved.json"  # in a batch's work folder: the params its notebooks load
SINCE_SECTION = "database"  # the section --since-run starts the window of (its snapshot: snapshots/database.json)
SNAPSHOT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")  # a record's name, as a file name

#: A notebook's timeout is what its section is expected to take (the load test's stages and
#: recovery) plus this margin, plus :data:`TIMEOUT_SLACK` of the expected time (stage ramps,
#: locust start-up, a busy machine). ``--timeout`` overrides it for every notebook.
TIMEOUT_MARGIN_S = 600.0
TIMEOUT_SLACK = 0.25


def expected_seconds(params: Params, section: str) -> float:
    """What a section is known to take at least: the load test runs its stages (and the
    recovery) to the end; the others mostly take a few seconds."""
    lt = params.settings.load_test
    if section != "load-test" or lt.mode == "off":
        return 0.0
    if lt.mode == "load":
        return float(lt.duration)
    return float(sum(st.duration for st in lt.stages) + lt.recovery)


def notebook_timeout(params: Params, section: str, override: float | None = None) -> float:
    """The per-notebook timeout: ``override`` (``--timeout``) if given, else the section's
    expected duration + 25 % + 600 s (a 1200 s load profile gets 2100 s)."""
    if override is not None:
        return float(override)
    expected = expected_seconds(params, section)
    return expected * (1 + TIMEOUT_SLACK) + TIMEOUT_MARGIN_S

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
    timeout_s: float = 0.0
    error: str = ""
    ipynb: str | None = None
    html: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)  # snapshots/<name>.json it recorded
    worker: str = ""                 # where it ran: "local (host pid N)" or a Dask worker's address
    missing_env: list[str] = field(default_factory=list)  # variables the params name, unset where it ran

    def manifest(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.severity] = counts.get(f.severity, 0) + 1
        return {"section": self.section, "status": self.status, "duration_s": round(self.duration_s, 2),
                "timeout_s": round(self.timeout_s, 1), "error": self.error, "ipynb": self.ipynb, "html": self.html, "timings": self.timings,
                "findings": counts, "snapshots": self.snapshots, "worker": self.worker,
                "missing_env": self.missing_env}


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
                 timeout: float | None = None, outputs: str | Path = "outputs",
                 progress: Progress | None = None, nb_dir: Path | None = None,
                 since_snapshot: str | Path | None = None, time_shift: str | None = None,
                 label: str | None = None):
        self.params_file = Path(params_file).resolve()
        self.params = params
        self.sections = sections
        self.incident, self.since, self.until = incident, since, until
        self.overrides = overrides or {}
        #: the database snapshot of an earlier run (``--since-run``): the database section's window starts there
        self.since_snapshot = Path(since_snapshot).resolve() if since_snapshot else None
        #: "-7d": this run is a time-shifted baseline; sources that read the present refuse (PresentOnly)
        self.time_shift = time_shift
        # Notebooks mostly wait on their sources (probes, PromQL, the load generator), so two per
        # core overlap well: 2.7x faster than the sequential papermill + nbconvert loop on 2 cores.
        self.jobs = max(1, jobs or min(len(sections) or 1, 2 * (os.cpu_count() or 1)))
        self.timeout = timeout  # None: each notebook's own (notebook_timeout)
        self.outputs = Path(outputs)
        self.progress = progress or (lambda event, r: None)
        self.nb_dir = nb_dir or notebooks_dir()
        self.redact = Redactor.for_env(params.env_names())
        self.results = [NotebookResult(s, timeout_s=notebook_timeout(params, s, timeout)) for s in sections]
        self.failure: str | None = None       # why the runner itself failed (exit 4)
        self._lock = threading.Lock()
        self._interrupted = False
        self.executor: dict[str, Any] = {"executor": "local", "slots": self.jobs}   # drive() says which
        self.started = datetime.now(timezone.utc)
        label = label or incident or self.params_file.stem
        self.run_dir = make_run_dir(self.outputs, label)
        # From its first second the folder says it is incomplete (manifest and index "running").
        self._write_status("running")
        self._work: Path | None = None  # made by run()

    # ---------------------------------------------------------------- manifest

    def window(self) -> tuple[datetime, datetime]:
        """The run's window (UTC): the params file's, or --since / --until."""
        from .params import resolve_time
        w0, w1 = self.params.window.resolve(self.started)
        w0 = resolve_time(self.since, self.started) if self.since else w0
        w1 = resolve_time(self.until, self.started) if self.until else w1
        return w0, w1

    def header(self) -> dict[str, str]:
        w0, w1 = self.window()
        return {"service": self.params.service, "environment": self.params.environment,
                "window (UTC)": f"{w0:%Y-%m-%d %H:%M:%S} → {w1:%Y-%m-%d %H:%M:%S} "
                                f"({(w1 - w0).total_seconds() / 60:.1f} min)",
                "incident": self.incident or "—",
                "run at": self.started.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
                "perfbook": f"{__version__} ({git_revision()})",
                "params": str(self.params_file.resolve())}

    def manifest(self, status: str, exit_code: int | None = None) -> dict[str, Any]:
        out = {"perfbook": __version__, "status": status, "exit_code": exit_code,
                # The run's identity for tools (perfbook compare): the header's are for people.
                "service": self.params.service, "environment": self.params.environment,
                "started": self.started.isoformat(),
                "finished": datetime.now(timezone.utc).isoformat() if status != "running" else None,
                "header": self.header(), "params_file": str(self.params_file),
                "params": self.params.model_dump(mode="json", by_alias=True),
                "overrides": self.overrides, "incident": self.incident, "versions": versions(),
                "jobs": self.jobs, "executor": self.executor, "timeout_s": self.timeout if self.timeout is not None else "per section",
                "notebooks": [r.manifest() for r in self.results]}
        if self.time_shift:
            out["time_shift"] = self.time_shift
        if self.failure:
            out["error"] = self.failure
        return out

    def _write_manifest(self, status: str, exit_code: int | None = None) -> None:
        data = self.redact.obj(self.manifest(status, exit_code))
        replace_file(self.run_dir / "manifest.json", json.dumps(data, indent=2, ensure_ascii=False), self.redact)

    def _write_status(self, status: str) -> None:
        """While the batch runs: manifest and a provisional index that say so (replaced at the end)."""
        with self._lock:
            findings = [f for r in self.results for f in r.findings]
            replace_file(self.run_dir / "index.html", index_html(self.manifest(status), findings, self.redact),
                         self.redact)
            self._write_manifest(status)

    # ---------------------------------------------------------------- one notebook

    def _parameters(self) -> dict[str, Any]:
        # The params as run() resolved them (overrides applied there, never sent again) and their file,
        # for headers. Secrets are never parameters: the kernel reads them from its environment.
        return {"params_file": str(self.params_file), "since": self.since, "until": self.until,
                "incident": self.incident, "resolved_params": str(self._work / RESOLVED_PARAMS)}

    def prepare(self) -> None:
        """The private work folder (outside outputs/: notebooks land there before they are
        checked) and the params as resolved once for every notebook of the batch."""
        self._work = Path(tempfile.mkdtemp(prefix="perfbook-work-"))
        self._write_status("running")
        dump_resolved(self.params, self._work / RESOLVED_PARAMS)

    def cleanup(self) -> None:
        if self._work is not None:
            _rmtree(self._work)

    def task(self, r: NotebookResult, cancel: str) -> NotebookTask:
        """Section ``r`` as a task any executor can run (:mod:`perfbook.tasks`): data only."""
        parameters = {k: v for k, v in self._parameters().items() if k != "resolved_params"}
        snapshot, since_run = None, "run"
        if r.section == SINCE_SECTION and self.since_snapshot is not None:
            snapshot = self.since_snapshot.read_text(encoding="utf-8")
            since_run = self.since_snapshot.parent.parent.name   # <run>/snapshots/database.json
        return NotebookTask(
            key=f"{self.params.service} ({self.params.environment}) / {r.section}", section=r.section,
            notebook=(self.nb_dir / f"{r.section}.ipynb").read_text(encoding="utf-8"), parameters=parameters,
            resolved_params=(self._work / RESOLVED_PARAMS).read_text(encoding="utf-8"),
            redact_env=tuple(self.params.env_names()), timeout_s=r.timeout_s, cancel=cancel,
            since_snapshot=snapshot, since_run=since_run, extra_env={HISTORICAL_ENV: self.time_shift} if self.time_shift else {})

    def started_one(self, r: NotebookResult) -> None:
        r.status = "running"
        self.progress("start", r)

    def accept(self, r: NotebookResult, outcome: TaskOutcome, round_trip_s: float | None = None) -> None:
        """A task's outcome (wherever it ran): its files into the work folder, checked and
        published into the run folder; the status files say the section finished.
        ``round_trip_s``: from submitting the task to its outcome here (the executor's
        overhead is that minus ``duration_s``, the time the task took where it ran)."""
        r.status, r.error, r.duration_s = outcome.status, outcome.error, outcome.duration_s
        r.timings = dict(outcome.timings, result_bytes=len((outcome.ipynb or "").encode()) + len((outcome.html or "").encode()))
        if round_trip_s is not None:
            r.timings["round_trip_s"] = round(round_trip_s, 3)
        r.worker = outcome.worker + (f" ({outcome.host})" if outcome.host else "")
        r.missing_env = list(outcome.missing_env)
        if self._interrupted and r.status != "ok":
            r.status, r.error = "interrupted", (f"stopped: {self.failure}" if self.failure
                                                else "the batch was interrupted")
        r.error = clip(r.error, 2000, self.redact)
        work_nb, work_html = self._work / f"{r.section}.ipynb", self._work / f"{r.section}.html"
        for path, text in ((work_nb, outcome.ipynb), (work_html, outcome.html)):
            path.unlink(missing_ok=True)
            if text is not None:
                path.write_text(text, encoding="utf-8")
        self._publish(r, work_nb, work_html)
        if not self._interrupted:
            self._write_status("running")  # which sections finished, even if we are killed next
        self.progress("done", r)

    def _publish(self, r: NotebookResult, work_nb: Path, work_html: Path) -> None:
        """Check the notebook's redacted files and link them into the run folder; collect its findings.

        The notebook process redacted its notebook and exported the page from it; a process
        killed before that left only papermill's raw notebook, redacted here. Either way the
        notebook is redacted on structure again (idempotent) and every file is checked for
        secrets as it is written: a page that still holds one is replaced by an error page.
        """
        import nbformat

        src = next((p for p in (work_nb, work_nb.with_name(work_nb.stem + ".raw.ipynb")) if p.exists()), None)
        if src is not None:
            try:
                # A process killed mid-write leaves half a notebook: never publish it.
                nb = redact_notebook(nbformat.reads(src.read_text(encoding="utf-8", errors="replace"),
                                                    as_version=4), self.redact)
                r.findings = collect(nb)
                records = collect_records(nb)
                text = nbformat.writes(nb)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                r.error = r.error or clip(f"could not read the executed notebook: {exc}", 200, self.redact)
            else:
                try:
                    write_new(self.run_dir / f"{r.section}.ipynb", text, self.redact)
                    r.ipynb = f"{r.section}.ipynb"
                    self._write_snapshots(r, records)
                except SecretLeak as exc:
                    r.status, r.error = "failed", str(exc)
        page = None
        if work_html.exists() and r.status != "interrupted":
            page = work_html.read_text(encoding="utf-8", errors="replace")
            if (leak := self.redact.leak(page)):
                r.status, r.error = "failed", f"refusing to write {r.section}.html: it still contains {leak}"
                page = None
        if page is None:
            what = {"interrupted": (f"perfbook itself failed ({self.failure}); this section was stopped"
                                    if self.failure else
                                    "the batch was interrupted (Ctrl-C or SIGTERM) before this section finished; "
                                    "its findings are incomplete or missing"),
                    "timeout": r.error}.get(r.status, r.error or "the notebook produced no output")
            page = error_html(f"{r.section}: {STATUS_TEXT.get(r.status, r.status)}", clip(what, 20_000, self.redact))
        write_new(self.run_dir / f"{r.section}.html", page, self.redact)
        r.html = f"{r.section}.html"

    def _write_snapshots(self, r: NotebookResult, records: dict[str, Any]) -> None:
        """The notebook's records (already redacted with it), as ``snapshots/<name>.json``."""
        for name, data in records.items():
            if not SNAPSHOT_NAME.fullmatch(name) or data is None:
                continue
            folder = self.run_dir / "snapshots"
            folder.mkdir(exist_ok=True)
            write_new(folder / f"{name}.json", json.dumps(data, indent=1, ensure_ascii=False, default=str),
                      self.redact)
            r.snapshots.append(f"snapshots/{name}.json")

    # ---------------------------------------------------------------- the batch

    def stop(self, failure: str | None = None) -> None:
        """The batch is being stopped (a signal, or the runner failed): from now on a section
        that has not finished well is ``interrupted``."""
        self._interrupted = True
        if failure and not self.failure:
            self.failure = failure

    def expected_seconds(self, section: str) -> float:
        return expected_seconds(self.params, section)

    def phases(self) -> list[list[NotebookResult]]:
        """The notebooks in the groups they run in, one group after the other: first every
        section that only reads (in runbook order, ``jobs`` at a time), then a load test that
        sends load, alone. Side by side, each would measure the other: the stress load slows
        the live probes of the other sections, and their probes (an expensive endpoint that
        blocks the event loop, requests counted against a rate limiter) move the stress
        test's breaking point. The report keeps the runbook order."""
        loads = [r for r in self.results if self.expected_seconds(r.section) > 0]
        reads = [r for r in self.results if r not in loads]
        return [group for group in (reads, loads) if group]

    def start_order(self) -> list[NotebookResult]:
        """The notebooks in the order they start (see :meth:`phases`)."""
        return [r for group in self.phases() for r in group]

    def run(self, backend: Backend | None = None) -> BatchResult:
        """Run every section (on ``backend``, default: this machine's threads, ``jobs`` at a time)."""
        if backend is not None:
            return drive([self], backend)[0]
        with LocalBackend(self.jobs) as local:
            return drive([self], local)[0]

    def finish(self, interrupted: bool) -> BatchResult:
        if self.failure:
            return self._finish_failed()
        try:
            return self._finish(interrupted=interrupted)
        except Exception as exc:  # noqa: BLE001 - writing the report failed: say so, exit 4
            self.failure = clip(f"the runner failed: {type(exc).__name__}: {exc}", 2000, self.redact)
            return self._finish_failed()

    def _finish_failed(self) -> BatchResult:
        """The runner failed: every notebook is stopped; leave a manifest that says ``failed`` and
        why, and an index that says so, as far as the disk allows (each write on its own)."""
        code = EXIT_RUNNER_FAILED
        findings = [f for r in self.results for f in r.findings]
        for write in (lambda: replace_file(self.run_dir / "index.html",
                                           index_html(self.manifest("failed", code), findings, self.redact),
                                           self.redact),
                      lambda: self._write_manifest("failed", code)):
            try:
                write()
            except Exception:  # noqa: BLE001 - the disk may be full; the exit status still says it
                pass
        return BatchResult(self.run_dir, self.results, code)

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
        write_new(self.run_dir / "findings.json", findings_json(findings, self.redact), self.redact)
        manifest = self.manifest(status, code)
        manifest["checklist_html"] = checklist_index_html(findings)  # the monitoring section's summary
        _rmtree(self._work)
        # index.html and manifest.json are this run's own status files: replaced atomically,
        # the provisional "running" versions by the final ones (nothing of another run is touched).
        replace_file(self.run_dir / "index.html", index_html(manifest, findings, self.redact), self.redact)
        manifest.pop("checklist_html", None)
        self._write_manifest(status, code)
        return BatchResult(self.run_dir, self.results, code)


#: After a stop, how long running tasks get to stop their notebooks and hand back what they
#: have (seconds); a task still out after that is reported interrupted without its files.
DRAIN_S = 30.0
#: How long past its own timeout the client waits for a task's answer before it gives up on
#: it (a Dask worker that hangs, or a task run again after its worker died).
ANSWER_GRACE_S = 120.0


def run_phases(batches: list[Batch]) -> list[list[tuple[Batch, NotebookResult]]]:
    """Every batch's notebooks in the groups they run in, one group after the other (see
    :meth:`Batch.phases`): first every section that only reads, of every service, taken in turn
    (each service's first section, then each one's second, ...); then each load test alone,
    service after service: two stress tests at once would each measure the other (in a fleet,
    services often share a database or a load balancer)."""
    def turns(lists: list[list[tuple[Batch, NotebookResult]]]) -> list[tuple[Batch, NotebookResult]]:
        return [x[i] for i in range(max((len(x) for x in lists), default=0)) for x in lists if i < len(x)]

    reads = turns([[(b, r) for r in b.results if b.expected_seconds(r.section) == 0] for b in batches])
    loads = [[(b, r)] for b in batches for r in b.results if b.expected_seconds(r.section) > 0]
    return ([reads] if reads else []) + loads


def _outcome(fut: Future) -> TaskOutcome:
    """A finished future's outcome; a task that raised or was cancelled, said in one line."""
    try:
        return fut.result()
    except CancelledError:
        return TaskOutcome.lost("interrupted", "the batch was interrupted before this section finished")
    except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection, ...
        name = type(exc).__name__
        why = ("the Dask workers running it died, each time it was tried" if name == "KilledWorker"
               else "the executor lost the task")
        return TaskOutcome.lost("failed", f"{why}: {name}: {str(exc)[:300]}")


class _Drive:
    """One pass over ``batches`` on ``backend``: submit at most ``backend.slots`` tasks, publish
    each outcome as it arrives, stop everything on a signal or a failure of the runner."""

    def __init__(self, batches: list[Batch], backend: Backend):
        self.batches, self.backend = batches, backend
        self.running: dict[Future, tuple[Batch, NotebookResult, float]] = {}
        self._signal: int | None = None       # the signal that asked us to stop
        self._old_handlers: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the main loop stops the notebooks and writes the folders, so a signal can
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

    def _submit(self, b: Batch, r: NotebookResult) -> None:
        fut = self.backend.submit(b.task(r, self.backend.flag))
        b.started_one(r)
        self.running[fut] = (b, r, time.monotonic())

    def _collect(self, timeout: float) -> None:
        done, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        for fut in done:
            b, r, t0 = self.running.pop(fut)
            b.accept(r, _outcome(fut), time.monotonic() - t0)
        now = time.monotonic()
        for fut, (b, r, t0) in list(self.running.items()):
            if now - t0 > r.timeout_s + ANSWER_GRACE_S:   # the task's own timeout did not end it
                fut.cancel()
                del self.running[fut]
                b.accept(r, TaskOutcome.lost("timeout", f"no answer from the executor within the per-notebook "
                                                        f"timeout of {r.timeout_s:.0f} s + {ANSWER_GRACE_S:.0f} s"))

    def _drain(self) -> None:
        """After a stop: the tasks still out stop their notebooks; publish what they hand back."""
        self.backend.cancel()
        deadline = time.monotonic() + DRAIN_S
        while self.running and time.monotonic() < deadline:
            try:
                self._collect(0.2)
            except Exception:  # noqa: BLE001 - the runner is failing already; keep stopping
                pass
        for fut, (b, r, _) in list(self.running.items()):
            fut.cancel()
            try:
                b.accept(r, TaskOutcome.lost("interrupted", "stopped with the batch; the notebook did not answer"))
            except Exception:  # noqa: BLE001
                pass
        self.running.clear()

    def run(self) -> list[BatchResult]:
        self._install_handlers()
        interrupted, failure = False, None
        info = self.backend.info()
        try:
            for b in self.batches:
                b.executor = info
            try:
                for b in self.batches:
                    b.prepare()
                for group in run_phases(self.batches):
                    queue = list(group)
                    while (queue or self.running) and self._signal is None:
                        while queue and len(self.running) < self.backend.slots:
                            self._submit(*queue.pop(0))
                        self._collect(0.1)
                    if self._signal is not None:
                        break
                interrupted = self._signal is not None
            except KeyboardInterrupt:  # a handler we could not replace (not the main thread)
                interrupted = True
            except Exception as exc:  # noqa: BLE001 - the runner itself failed (ENOSPC, no hard links, ...)
                failure = f"the runner failed: {type(exc).__name__}: {exc}"
            if interrupted or failure:
                for b in self.batches:
                    b.stop(clip(failure, 2000, b.redact) if failure else None)
                self._drain()
                why = "the batch was interrupted" if interrupted else f"stopped: {failure}"
                for b in self.batches:
                    for r in b.results:
                        if r.status in ("pending", "running"):
                            r.status, r.error = "interrupted", r.error or clip(why, 2000, b.redact)
            return [b.finish(interrupted) for b in self.batches]
        finally:
            for b in self.batches:
                b.cleanup()
            self._restore_handlers()


def drive(batches: list[Batch], backend: Backend) -> list[BatchResult]:
    """Run the notebooks of ``batches`` (one per service) on ``backend``; each batch's folder
    is finished, whatever happens (see :class:`_Drive`)."""
    return _Drive(batches, backend).run()


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
           "EXIT_BAD_INPUT", "EXIT_NOTEBOOK_FAILED", "EXIT_INTERRUPTED", "EXIT_RUNNER_FAILED", "error_html",
           "expected_seconds", "notebook_timeout"]


# --------------------------------------------------------------------------- the batch from a command line

def say(msg: str) -> None:
    """A progress or status line on stderr, flushed (the demo and lab commands)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def print_error(msg: str) -> None:
    sys.stderr.write(f"perfbook: {msg}\n")


class Printer:
    """Progress lines a tired engineer can follow (colour only on a terminal)."""

    COLOURS = {"ok": "32", "failed": "31", "timeout": "31", "interrupted": "33", "critical": "31",  # noqa: RUF012  (read only)
               "warning": "33", "error": "35"}

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()

    def c(self, text: str, key: str) -> str:
        return f"\x1b[{self.COLOURS.get(key, '0')}m{text}\x1b[0m" if self.tty else text

    def __call__(self, event: str, r: NotebookResult, who: str = "") -> None:
        """``who``: the service, in a fleet ("api/")."""
        if event == "start":
            self.stream.write(f"  … {who}{r.section} started\n")
        else:
            self.done += 1
            counts: dict[str, int] = {}
            for f in r.findings:
                counts[f.severity] = counts.get(f.severity, 0) + 1
            summary = ", ".join(self.c(f"{counts[s]} {s}", s) for s in ("critical", "error", "warning")
                                if counts.get(s)) or "nothing above normal"
            status = self.c(r.status, r.status)
            extra = f" — {r.error[:160]}" if r.error and r.status != "ok" else ""
            self.stream.write(f"[{self.done}/{self.total}] {who}{r.section}: {status} in {r.duration_s:.1f}s — "
                              f"{summary}{extra}\n")
        self.stream.flush()


def load_params(path: str, overrides: list[str]) -> tuple[Any, dict[str, Any]]:
    """The params file with ``--set`` overrides applied, and the overrides as a dict."""
    ov = dict(parse_override(o) for o in overrides or [])
    return load(path, ov), ov


def _shifted_baseline(batch: Batch, shift: TimeShift, quiet: bool) -> Any:
    """Run ``batch``'s sections again on its window shifted by ``shift`` (a run folder of its
    own, marked ``time_shift`` in its manifest) and return that run as the baseline."""
    w0, w1 = shift.window(*batch.window())
    label = f"{batch.incident or batch.params_file.stem}-baseline{shift.spec}"
    printer = Printer(len(batch.sections))
    past = Batch(batch.params_file, batch.params, batch.sections, incident=label, since=w0.isoformat(),
                 until=w1.isoformat(), overrides=batch.overrides, jobs=batch.jobs, timeout=batch.timeout,
                 outputs=batch.outputs, progress=None if quiet else printer, time_shift=shift.spec)
    if not quiet:
        sys.stderr.write(f"\nBaseline: the same window {shift.spec} ({w0:%Y-%m-%d %H:%M:%S} → {w1:%H:%M:%S} UTC), "
                         f"from Prometheus; checks that read the present say so → {past.run_dir}\n")
    done = past.run()
    if done.exit_code in (EXIT_INTERRUPTED, EXIT_RUNNER_FAILED):
        raise BadBaseline(f"the time-shifted baseline run did not finish ({past.failure or 'interrupted'})")
    return read_run(done.run_dir)


def run_batch(params_file: str, sections: list[str] | None, *, incident=None, since=None, until=None,
              overrides: list[str] | None = None, jobs=None, timeout=None, outputs="outputs",
              quiet=False, baseline: str | None = None, since_run: str | None = None,
              executor: ExecutorSpec | None = None) -> int:
    """Run ``sections`` (None: all) of ``params_file`` as one batch, with progress lines on
    stderr and the report's path on stdout; returns the exit status (``perfbook run``,
    ``perfbook section``, ``perfbook demo``). ``baseline``: compare the finished run with
    that run (:mod:`perfbook.baseline`), chosen before anything runs."""
    if timeout is not None and not timeout > 0:
        raise BadInput(f"--timeout: must be a number of seconds above 0, got {timeout:g}")
    params, ov = load_params(params_file, overrides or [])
    chosen = validate_sections(sections)
    if not chosen:
        raise BadInput(f"no notebooks found in {notebooks_dir()}")
    if since_run and SINCE_SECTION not in chosen:
        raise BadInput(f"--since-run: only the {SINCE_SECTION} section uses it, and it is not among the sections run")
    try:
        base = resolve_baseline(baseline, params.service, params.environment, outputs) if baseline else None
        snap = since_snapshot(since_run, params.service, params.environment, outputs) if since_run else None
    except BadBaseline as exc:
        raise BadInput(str(exc)) from None
    spec = executor or ExecutorSpec("local")
    try:
        backend = start_backend(spec, jobs, min(len(chosen), 2 * (os.cpu_count() or 1)))
    except BadExecutor as exc:
        raise BadInput(str(exc)) from None
    with backend:
        printer = Printer(len(chosen))
        batch = Batch(params_file, params, chosen, incident=incident, since=since, until=until, overrides=ov,
                      jobs=backend.slots, timeout=timeout, outputs=outputs, progress=None if quiet else printer,
                      since_snapshot=snap)
        if not quiet:
            each = (f"timeout {timeout:.0f}s each" if timeout is not None else "timeout per section: "
                    + ", ".join(f"{r.section} {r.timeout_s:.0f}s" for r in batch.results))
            where = "" if spec.kind == "local" else f" on {spec.describe()}"
            sys.stderr.write(f"perfbook {__version__}: {len(chosen)} section(s), {batch.jobs} at a time{where}, "
                             f"{each} → {batch.run_dir}\n")
        result = batch.run(backend)  # handles SIGINT/SIGTERM/SIGHUP itself
    if batch.failure:
        print_error(batch.failure)
    findings = result.findings
    crit = sum(f.severity == "critical" for f in findings)
    errs = sum(f.severity == "error" for f in findings)
    warn = sum(f.severity == "warning" for f in findings)
    failed = [r.section for r in result.results if r.status != "ok"]
    sys.stderr.write(f"\n{crit} critical, {errs} could not run, {warn} warnings"
                     + (f"; notebooks not ok: {', '.join(failed)}" if failed else "") + "\n")
    if base is not None and not (batch.failure or result.exit_code == EXIT_INTERRUPTED):
        try:
            if isinstance(base, TimeShift):
                base = _shifted_baseline(batch, base, quiet)
            print("\n".join(report_lines(*compare_into(result.run_dir, base))))
        except (BadBaseline, NotARun, OSError) as exc:  # the report stands; the comparison is said missing
            print_error(f"no comparison with the baseline: {exc}")
    archive = rebuild_archive(outputs)
    if archive and not quiet:
        sys.stderr.write(f"Archive of every run: {archive}\n")
    print(f"Report: {result.index.resolve()}")
    return result.exit_code


def rebuild_archive(outputs: str | Path) -> Path | None:
    """Rebuild ``outputs/index.html`` (:mod:`perfbook.report.archive`); a failure is one line
    on stderr and never fails the run whose report is written."""
    from .report.archive import write_archive

    try:
        return write_archive(outputs)[0].resolve()
    except Exception as exc:  # noqa: BLE001 - the run's own report stands whatever the archive does
        print_error(f"{outputs}: the archive index was not rebuilt: {str(exc)[:200]}")
        return None

