"""Where a batch's notebooks run: ``--executor local`` (threads of this process, each one
notebook process: the default) or Dask (``--executor dask-local:N``, a LocalCluster of N
worker processes on this machine; ``--executor dask --scheduler tcp://HOST:8786``, a running
cluster). One code path for all: each is a ``concurrent.futures.Executor`` (Dask's through
``Client.get_executor()``) that runs :func:`perfbook.tasks.run_notebook_task`, and the runner
submits at most :attr:`Backend.slots` tasks at a time, so a task starts when it is submitted
and its timeout runs from there.

perfbook grows no scheduler of its own (papermill has no fan-out: nteract/papermill#2): it
hands the tasks to an engine that already knows how to place them, notice a dead worker and
run its task again elsewhere.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .tasks import NotebookTask, drop_local_flag, local_flag, run_notebook_task

EXECUTOR_HELP = ("local (default: this machine, --jobs at a time), dask-local:N (a Dask LocalCluster of N "
                 "worker processes here), or dask (a running Dask cluster: --scheduler tcp://HOST:8786)")
_DASK_LOCAL = re.compile(r"dask-local(?::(\d+))?")
#: How long the client waits for a Dask cluster's first worker before it gives up (seconds).
DASK_CONNECT_S = 30.0


class BadExecutor(ValueError):
    """An --executor / --scheduler that cannot be used: one line, nothing ran."""


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str                      # local, dask-local, dask
    workers: int = 0               # dask-local: worker processes
    scheduler: str | None = None   # dask: the scheduler's address

    def describe(self) -> str:
        if self.kind == "dask-local":
            return f"dask-local:{self.workers}"
        if self.kind == "dask":
            return f"dask ({self.scheduler})"
        return "local"


def parse_executor(spec: str | None, scheduler: str | None = None) -> ExecutorSpec:
    """``--executor`` and ``--scheduler`` as an :class:`ExecutorSpec`; :class:`BadExecutor` says why not."""
    spec = (spec or "local").strip()
    if spec == "local":
        if scheduler:
            raise BadExecutor("--scheduler: only with --executor dask")
        return ExecutorSpec("local")
    if (m := _DASK_LOCAL.fullmatch(spec)):
        n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
        if not 1 <= n <= 64:
            raise BadExecutor(f"--executor {spec}: the number of worker processes must be 1 to 64")
        if scheduler:
            raise BadExecutor("--scheduler: not with dask-local (it starts its own scheduler); use --executor dask")
        return ExecutorSpec("dask-local", workers=n)
    if spec == "dask":
        if not scheduler:
            raise BadExecutor("--executor dask: give the cluster's scheduler, --scheduler tcp://HOST:8786 "
                              "(or --executor dask-local:N for workers on this machine)")
        if not re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", scheduler):
            raise BadExecutor(f"--scheduler {scheduler}: not a Dask scheduler address (tcp://HOST:8786)")
        return ExecutorSpec("dask", scheduler=scheduler)
    raise BadExecutor(f"--executor {spec}: unknown; {EXECUTOR_HELP}")


class Backend:
    """A started executor: ``submit`` a task, at most ``slots`` at a time, ``cancel`` them all."""

    spec: ExecutorSpec
    slots: int

    def __init__(self) -> None:
        self.flag = f"perfbook-cancel-{uuid.uuid4().hex}"

    def submit(self, task: NotebookTask) -> Future:
        raise NotImplementedError

    def cancel(self) -> None:
        """Ask every running task to stop its notebook (they return ``interrupted``)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """For the manifest."""
        return {"executor": self.spec.describe(), "slots": self.slots}

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalBackend(Backend):
    """Threads of this process; each runs one notebook process (what the runner always did)."""

    def __init__(self, jobs: int):
        super().__init__()
        self.spec, self.slots = ExecutorSpec("local"), max(1, jobs)
        self._pool: Executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="perfbook-nb")
        self._flag = local_flag(self.flag)

    def submit(self, task: NotebookTask) -> Future:
        return self._pool.submit(run_notebook_task, task)

    def cancel(self) -> None:
        self._flag.set()

    def close(self) -> None:
        self._flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        drop_local_flag(self.flag)


class DaskBackend(Backend):
    """A Dask cluster through ``Client.get_executor()``: a LocalCluster of ``spec.workers``
    processes on 127.0.0.1, or the scheduler at ``spec.scheduler``."""

    def __init__(self, spec: ExecutorSpec, jobs: int | None):
        super().__init__()
        try:
            from distributed import Client, Event, LocalCluster
        except ImportError:  # pragma: no cover - a dependency of perfbook
            raise BadExecutor(f"--executor {spec.describe()}: the dask.distributed package is not installed "
                              "(pip install 'distributed')") from None
        self.spec, self.cluster = spec, None
        t0 = time.monotonic()
        quiet = logging.ERROR
        if spec.kind == "dask-local":
            threads = max(1, math.ceil((jobs or 2 * (os.cpu_count() or 1)) / spec.workers))
            self.cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=threads, processes=True,
                                        host="127.0.0.1", dashboard_address=None, silence_logs=quiet)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(spec.scheduler, timeout=f"{DASK_CONNECT_S:.0f}s")
            except OSError as exc:
                raise BadExecutor(f"--scheduler {spec.scheduler}: cannot reach the Dask scheduler: {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=DASK_CONNECT_S)
        except TimeoutError:
            self.close()
            raise BadExecutor(f"--executor {spec.describe()}: no Dask worker joined within {DASK_CONNECT_S:.0f} s") from None
        total = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values())
        self.slots = max(1, jobs or total)
        # pure=False: two tasks of equal arguments are two runs, never one cached result.
        self._executor = self.client.get_executor(pure=False)
        self._event = Event(self.flag, client=self.client)
        self.start_s = time.monotonic() - t0   # starting the LocalCluster, or reaching the scheduler

    def submit(self, task: NotebookTask) -> Future:
        return self._executor.submit(run_notebook_task, task)

    def cancel(self) -> None:
        try:
            self._event.set()
        except Exception:  # noqa: BLE001 - the scheduler is gone: its tasks are too
            pass

    def worker_pids(self) -> dict[str, int]:
        """The worker processes' PIDs by address (tests kill one)."""
        return self.client.run(os.getpid)

    def info(self) -> dict[str, Any]:
        workers = self.client.scheduler_info()["workers"]
        return {"executor": self.spec.describe(), "slots": self.slots, "scheduler": self.client.scheduler.address,
                "start_s": round(self.start_s, 2),
                "workers": {addr: {"host": w.get("host"), "threads": w.get("nthreads")} for addr, w in workers.items()}}

    def close(self) -> None:
        for step in (lambda: self._executor.shutdown(wait=False), self.client.close,
                     lambda: self.cluster.close() if self.cluster is not None else None):
            try:
                step()
            except Exception:  # noqa: BLE001 - closing what may already be gone
                pass


def start_backend(spec: ExecutorSpec, jobs: int | None, default_jobs: int) -> Backend:
    """The executor ``spec`` names, started. Raises :class:`BadExecutor`."""
    if spec.kind == "local":
        return LocalBackend(jobs or default_jobs)
    return DaskBackend(spec, jobs)
