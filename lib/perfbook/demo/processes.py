"""Process and port helpers for the demo stack: free loopback ports, readiness waits,
starting children in their own process group, and stopping them by PID only.

Every server the demo starts listens on 127.0.0.1; every process it stops is one it
started (checked by PID *and* process start time, so a recycled PID is never signalled).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()


def claim_port(port: int) -> bool:
    """Hand out ``port`` if a server can listen on it on the loopback address now (and this
    process has not handed it out already): the kept demo database keeps its address."""
    if port in _handed_out:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers themselves bind (PostgreSQL, Go, Python's): connections of the last
        # run still in TIME_WAIT on that port do not keep a new listener off it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    _handed_out.add(port)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bound to 0, then released).

    Ports already handed out by this process are skipped, so several servers started
    together never get the same one.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             alive: Callable[[], bool] | None = None, interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; return seconds waited. Raise TimeoutError naming
    ``what``, or RuntimeError at once when ``alive()`` says the process died."""
    t0 = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


@dataclass
class ProcInfo:
    """What is needed to stop a started process later, possibly from another process."""

    name: str
    pid: int
    create_time: float
    group: bool = True          # started as leader of its own process group
    stop_signal: int = int(signal.SIGTERM)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProcInfo:
        return cls(**d)


def describe(name: str, pid: int, group: bool = True, stop_signal: int = signal.SIGTERM) -> ProcInfo:
    return ProcInfo(name=name, pid=pid, create_time=psutil.Process(pid).create_time(),
                    group=group, stop_signal=int(stop_signal))


def is_ours(info: ProcInfo) -> bool:
    """The process is alive and is the very one we started (same PID and start time)."""
    try:
        p = psutil.Process(info.pid)
        return abs(p.create_time() - info.create_time) < 0.05 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def spawn(name: str, argv: Sequence[str], log_path: Path, *, env: dict | None = None,
          cwd: Path | None = None, user: str | None = None,
          stop_signal: int = signal.SIGTERM) -> tuple[subprocess.Popen, ProcInfo]:
    """Start ``argv`` as leader of a new session (own process group), stdout and stderr
    appended to ``log_path``. ``user`` drops privileges (root only)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115  (the child's stdout and stderr)
    kwargs: dict = {}
    if user is not None:
        import pwd
        pw = pwd.getpwnam(user)
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    try:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(cwd) if cwd else None, start_new_session=True, **kwargs)
    finally:
        log.close()
    return proc, describe(name, proc.pid, group=True, stop_signal=stop_signal)


def stop(info: ProcInfo, timeout: float = 10.0, popen: subprocess.Popen | None = None) -> bool:
    """Stop a process we started: its stop signal, then SIGKILL to its process group
    after ``timeout``. Returns True when it is gone. Never signals a PID that is not
    ours (PID reuse is detected through the start time)."""
    if not is_ours(info):
        _reap(popen)
        return True
    try:
        os.kill(info.pid, info.stop_signal)
    except ProcessLookupError:
        _reap(popen)
        return True
    if _wait_gone(info, timeout, popen):
        _kill_group_leftovers(info)
        return True
    # Escalate: the whole group (only if the leader is still ours).
    if is_ours(info):
        try:
            if info.group:
                os.killpg(info.pid, signal.SIGKILL)
            else:
                os.kill(info.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return _wait_gone(info, 5.0, popen)


def _wait_gone(info: ProcInfo, timeout: float, popen: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not is_ours(info):
            return True
        time.sleep(0.05)
    return False


def _kill_group_leftovers(info: ProcInfo) -> None:
    """Children left in the (now leaderless) group of a process we started."""
    if not info.group:
        return
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == info.pid and p.create_time() >= info.create_time - 0.05:
                p.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue


def _reap(popen: subprocess.Popen | None) -> None:
    if popen is not None:
        try:
            popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log file (for error messages)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
