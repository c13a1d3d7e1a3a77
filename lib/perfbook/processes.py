"""Stopping the processes a batch started (notebook processes, their kernels, what those
started: locust, profilers), whatever session each put itself in."""
from __future__ import annotations

import os
import signal
import subprocess
import time


def kill_tree(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
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
