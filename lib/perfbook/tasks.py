"""One (service, section) notebook as a task that runs wherever an executor puts it: a thread
of this process (``--executor local``) or a Dask worker on another machine (``--executor dask``).

A :class:`NotebookTask` carries everything the notebook needs as data, never a path of the
machine that made it and never a secret: the notebook itself, the params as the runner
resolved them (secrets are the *names* of environment variables), the papermill parameters
and, for ``--since-run``, the earlier run's snapshot. :func:`run_notebook_task` writes them
into a private folder of the machine it runs on, runs ``python -m perfbook.execute`` there
(which reads the secrets from *that* machine's environment and redacts with them), and
returns a :class:`TaskOutcome`: status, the redacted notebook and its page, timings and which
worker ran it. Only the client writes under outputs/.

Stopping: the task stops its notebook process when the task's own timeout passes, and when
the batch's cancel flag is set (Ctrl-C, SIGTERM, a failure of the runner): a
``threading.Event`` for threads of this process, a ``distributed.Event`` of the same name on a
Dask worker.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .processes import kill_tree

#: How often a running task looks at its cancel flag (seconds): in this process, and on a Dask
#: worker (each look there is a round trip to the scheduler).
POLL_LOCAL_S = 0.1
POLL_DASK_S = 0.5
RESOLVED_PARAMS = "params.resolved.json"   # in the task's folder: the params its notebook loads
SNAPSHOT_FILE = "database.json"


@dataclass(frozen=True)
class NotebookTask:
    """One notebook to run: plain data, pickled to a Dask worker as it is."""
    key: str                      # "service (environment) / section": for logs and the manifest
    section: str
    notebook: str                 # the .ipynb, as JSON text
    parameters: dict[str, Any]    # papermill parameters (the params file's path only names it)
    resolved_params: str          # the params as the runner validated them (perfbook.params.dump_resolved)
    redact_env: tuple[str, ...]   # the variables the params name: read and redacted where the task runs
    timeout_s: float
    cancel: str                   # the batch's cancel flag
    since_snapshot: str | None = None          # an earlier run's snapshot (JSON text), for --since-run
    since_run: str = "run"                     # ... and the name of that run's folder (findings name it)
    extra_env: dict[str, str] = field(default_factory=dict)   # e.g. the time shift of a baseline run
    perfbook: str = __version__   # the client's: a worker running another perfbook refuses the task


@dataclass
class TaskOutcome:
    """What a task hands back to the client, which publishes it."""
    status: str                   # ok, failed, timeout, interrupted
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    ipynb: str | None = None      # the executed notebook, redacted where it ran
    html: str | None = None       # its page
    worker: str = "local"         # where it ran: "local" or the Dask worker's address
    host: str = ""
    missing_env: list[str] = field(default_factory=list)   # variables the params name, unset there

    @classmethod
    def lost(cls, status: str, error: str, worker: str = "") -> TaskOutcome:
        """A task that never handed anything back (its worker died, the client gave up on it)."""
        return cls(status=status, error=error, worker=worker)


# --------------------------------------------------------------------------- cancel flags

_LOCAL_FLAGS: dict[str, threading.Event] = {}
_FLAGS_LOCK = threading.Lock()


def _in_dask_worker() -> Any:
    """The Dask worker this task runs on, else None (and Dask is never imported for it)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):
        return None


def local_flag(name: str) -> threading.Event:
    with _FLAGS_LOCK:
        return _LOCAL_FLAGS.setdefault(name, threading.Event())


def drop_local_flag(name: str) -> None:
    with _FLAGS_LOCK:
        _LOCAL_FLAGS.pop(name, None)


def _cancelled(name: str, worker: Any) -> tuple[Any, float]:
    """A function telling whether the batch asked its tasks to stop, and how often to ask."""
    if worker is None:
        flag = local_flag(name)
        return flag.is_set, POLL_LOCAL_S
    from distributed import Event

    event = Event(name)

    def is_set() -> bool:
        try:
            return bool(event.is_set())
        except Exception:  # noqa: BLE001 - the scheduler is gone: the client is too; stop
            return True
    return is_set, POLL_DASK_S


# --------------------------------------------------------------------------- the task

def materialize(task: NotebookTask, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Write the task's notebook, params and snapshot into ``folder``; return the notebook's
    path and the papermill parameters that point at them."""
    nb = folder / f"{task.section}.source.ipynb"
    nb.write_text(task.notebook, encoding="utf-8")
    (folder / RESOLVED_PARAMS).write_text(task.resolved_params, encoding="utf-8")
    parameters = dict(task.parameters, resolved_params=str(folder / RESOLVED_PARAMS))
    if task.since_snapshot is not None:
        # <run>/snapshots/database.json, as in the run folder: the findings name the run from the path
        snap = folder / "since" / (Path(task.since_run).name or "run") / "snapshots" / SNAPSHOT_FILE
        snap.parent.mkdir(parents=True)
        snap.write_text(task.since_snapshot, encoding="utf-8")
        parameters["since_snapshot"] = str(snap)
    return nb, parameters


def where(worker: Any) -> tuple[str, str]:
    host = socket.gethostname()
    return (f"{worker.address}" if worker is not None else "local"), f"{host} pid {os.getpid()}"


def run_notebook_task(task: NotebookTask) -> TaskOutcome:
    """Run ``task`` here (a thread of the runner or a Dask worker). Never raises for what the
    notebook does: a failure, a timeout or a stop is the outcome's status."""
    worker = _in_dask_worker()
    name, host = where(worker)
    cancelled, poll = _cancelled(task.cancel, worker)
    missing = [n for n in task.redact_env if not os.environ.get(n)]
    if task.perfbook != __version__:   # the notebook is the client's; the library it imports is this one
        return TaskOutcome(status="failed", worker=name, host=host, missing_env=missing,
                           error=f"this worker runs perfbook {__version__}, the batch perfbook {task.perfbook}: "
                                 "install the same perfbook on the workers")
    if cancelled():
        return TaskOutcome(status="interrupted", error="the batch was interrupted", worker=name, host=host,
                           missing_env=missing)
    folder = Path(tempfile.mkdtemp(prefix="perfbook-task-"))
    t0 = time.monotonic()
    try:
        nb, parameters = materialize(task, folder)
        out_nb, out_html = folder / f"{task.section}.ipynb", folder / f"{task.section}.html"
        cmd = [sys.executable, "-m", "perfbook.execute", "--notebook", str(nb), "--output", str(out_nb),
               "--html", str(out_html), "--parameters", json.dumps(parameters), "--cwd", str(folder)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
                   PERFBOOK_REDACT_ENV=",".join(task.redact_env), **task.extra_env)  # clip() redacts in the kernel
        outcome = TaskOutcome(status="failed", worker=name, host=host, missing_env=missing)
        _supervise(cmd, env, task, cancelled, poll, outcome)
        outcome.duration_s = time.monotonic() - t0
        _collect(task, out_nb, out_html, outcome)
        return outcome
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(cmd: list[str], env: dict[str, str], task: NotebookTask, cancelled: Any, poll: float,
               outcome: TaskOutcome) -> None:
    """Run the notebook process to its end, its timeout or the batch's cancel flag."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True, env=env)
        deadline = time.monotonic() + task.timeout_s
        stopped = ""
        while proc.poll() is None:
            if cancelled():
                stopped = "interrupted"
            elif time.monotonic() > deadline:
                stopped = "timeout"
            if stopped:
                kill_tree([proc])
                proc.wait()
                break
            try:
                proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                pass
        if stopped == "timeout":
            outcome.status, outcome.error = "timeout", f"stopped after the per-notebook timeout of {task.timeout_s:.0f} s"
            return
        if stopped == "interrupted":
            outcome.status, outcome.error = "interrupted", "the batch was interrupted"
            return
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    last_err = (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    try:
        res = json.loads((stdout.strip().splitlines() or ["{}"])[-1])
    except json.JSONDecodeError:
        res = {"status": "failed", "error": last_err}
    outcome.status = res.get("status", "failed") if proc.returncode == 0 else "failed"
    outcome.error = res.get("error", "") or ("" if proc.returncode == 0 else last_err)
    outcome.timings = res.get("timings", {})


def _collect(task: NotebookTask, out_nb: Path, out_html: Path, outcome: TaskOutcome) -> None:
    """The notebook and page the process left, redacted here, with this machine's secrets.

    The notebook process redacted its notebook and exported the page from it; a process
    stopped before that left papermill's raw notebook only, redacted on structure here (the
    client redacts and checks everything again with its own secrets)."""
    raw = out_nb.with_name(out_nb.stem + ".raw.ipynb")
    if out_nb.exists():
        outcome.ipynb = out_nb.read_text(encoding="utf-8", errors="replace")
    elif raw.exists():
        import nbformat

        from .report import Redactor, redact_notebook
        try:
            nb = nbformat.reads(raw.read_text(encoding="utf-8", errors="replace"), as_version=4)
            outcome.ipynb = nbformat.writes(redact_notebook(nb, Redactor.for_env(list(task.redact_env))))
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # half a notebook (killed mid-write): never handed on
    if out_html.exists() and outcome.status != "interrupted":
        outcome.html = out_html.read_text(encoding="utf-8", errors="replace")
