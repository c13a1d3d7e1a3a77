"""perfbook's load engine: locust (``FastHttpUser``) run headless in a subprocess.

Locust is never imported here nor in a notebook kernel: importing it monkey-patches the
standard library with gevent, which hangs Jupyter kernels. Each run is
``python -m locust -f perfbook/sources/locustfile.py --headless ...`` in its own process
group, bounded by locust's ``--run-time`` *and* by a hard deadline after which perfbook
kills it.

Two modes, as in the runbook's *Performance Testing*:

- **load**: fixed users for a fixed duration (the runbook's k6 ``vus: 100, duration: 5m``);
- **stress**: one run per stage at rising users (10 → 50 → 100 → 200 → 500 by default) —
  the runbook's series of ``k6 run --vus N`` — then a short low-user *recovery* stage.
  Each stage starts from zero users, spawns them within a quarter of the stage at most,
  and its statistics are reset once all users are running (``--reset-stats``), so each
  stage's numbers describe the steady load at that user count.

**Safety, before any request is sent** (:func:`plan_from_params`): the target's host must
be listed *literally* in ``targets.allowed_hosts`` (loopback by default) or opted in by
``settings.load_test.allow_hosts``; users and total duration are capped by ``max_users`` and
``max_duration``; mix paths must be relative (no absolute URL can lead elsewhere) and the
generator never follows redirects. A refused plan carries the reason and :func:`run` sends
nothing. The plan is built in :mod:`perfbook.sources.loadplan` (re-exported here); this
module runs it.

For load beyond one process, ``settings.load_test.workers = N`` runs one locust master and
N local workers (``--master --expect-workers N`` / ``--worker``); beyond one machine see
docs/load-testing.md.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from perfbook.sources import present_only
from perfbook.sources.http import host_of
from perfbook.sources.loadplan import (
    MixEntry,
    Plan,
    Stage,
    host_allowed,
    parse_mix,
    parse_stages,
    plan_from_params,
    spawn_rate_for,
)

__all__ = ["LOCUSTFILE", "LoadTestRefused", "MixEntry", "Stage", "Plan", "StageResult", "LoadTestRun",
           "host_of", "host_allowed", "parse_mix", "parse_stages", "plan_from_params", "run", "run_stage",
           "locust_command"]

#: The locustfile run by the subprocess.
LOCUSTFILE = str(Path(__file__).with_name("locustfile.py"))

#: Seconds a locust process may run past its planned duration (start-up, shutdown)
#: before it is killed.
GRACE_S = 30.0


class LoadTestRefused(Exception):
    """A load test perfbook will not run (host not allowed, over a cap). Nothing was sent."""




# --------------------------------------------------------------------------- running


@dataclass
class StageResult:
    stage: Stage
    stats: pd.DataFrame                 # one row per request name + "Aggregated"
    errors: pd.DataFrame                # method, name, error, occurrences
    history: pd.DataFrame               # locust's per-second history (aggregated rows)
    started: pd.Timestamp
    ended: pd.Timestamp
    wall_s: float
    cpu_s: float                        # generator CPU seconds (all locust processes)
    exit_code: int | None
    workers: int = 0
    log_tail: str = ""
    source: str = "summary"             # summary (exact, final) | csv (periodic snapshot)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.stats.empty

    @property
    def generator_cpu_percent(self) -> float:
        """Generator CPU as % of one core over the stage (locust warns above 90 %)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


@dataclass
class LoadTestRun:
    plan: Plan
    stages: list[StageResult] = field(default_factory=list)
    refused: str | None = None
    stopped: str | None = None          # why the stress test stopped climbing early
    workdir: str = ""

    def stats(self) -> pd.DataFrame:
        frames = [r.stats.assign(stage=r.stage.label, users=r.stage.users, kind=r.stage.kind,
                                 duration_s=r.stage.duration, generator_cpu_percent=r.generator_cpu_percent,
                                 started=r.started, ended=r.ended)
                  for r in self.stages if not r.stats.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STATS_COLUMNS)

    def errors(self) -> pd.DataFrame:
        frames = [r.errors.assign(stage=r.stage.label, users=r.stage.users) for r in self.stages if not r.errors.empty]
        return (pd.concat(frames, ignore_index=True) if frames
                else pd.DataFrame(columns=["method", "name", "error", "occurrences", "stage", "users"]))

    def describe(self) -> str:
        """One paragraph: what ran, for how long, how it ended."""
        if self.refused:
            return f"Nothing was sent: {self.refused}"
        if not self.stages:
            return "No stage ran."
        wall = sum(r.wall_s for r in self.stages)
        bad = [r.stage.label for r in self.stages if not r.ok]
        text = (f"Ran {len(self.stages)} stage(s) of the {self.plan.mode} test against {self.plan.host} in {wall:.0f} s "
                f"(locust FastHttpUser, {'1 process' if not self.plan.workers else f'1 master + {self.plan.workers} workers'}, "
                f"think time {self.plan.think_time:g} s).")
        if self.stopped:
            text += f" It {self.stopped}."
        if bad:
            text += f" Locust did not finish cleanly in: {', '.join(bad)} (see its log below)."
        return text

    def logs(self) -> str:
        return "\n\n".join(f"--- {r.stage.label} (exit {r.exit_code}) ---\n{r.log_tail.strip() or '(no output)'}"
                           for r in self.stages)

    def history(self) -> pd.DataFrame:
        frames = [r.history.assign(stage=r.stage.label) for r in self.stages if not r.history.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


STATS_COLUMNS = ["method", "name", "requests", "failures", "rps", "fail_rps", "avg_ms", "min_ms", "max_ms",
                 "p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99", "p99.9", "p100"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    # Locust reads LOCUST_* variables as options: none may leak in from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env.pop("PERFBOOK_LOCUST_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def locust_command(plan: Plan, stage: Stage, prefix: str, *, role: str = "local",
                   master_port: int | None = None, workers: int = 0, python: str | None = None,
                   locustfile: str = LOCUSTFILE) -> list[str]:
    """The command line of one locust process for one stage (role: local, master, worker)."""
    py = python or sys.executable
    cmd = [py, "-m", "locust", "-f", locustfile, "--loglevel", "WARNING"]
    if role == "worker":
        # --reset-stats "should be set on both master and workers" (locust's docs)
        return cmd + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port), "--reset-stats"]
    cmd += ["--headless", "--host", plan.host, "-u", str(stage.users),
            "-r", f"{spawn_rate_for(stage, plan.spawn_rate):g}", "-t", f"{max(1, math.ceil(stage.duration))}s",
            "--csv", prefix, "--only-summary", "--reset-stats", "--exit-code-on-error", "0",
            "--stop-timeout", "0", "--perfbook-config", plan.config_json(),
            "--perfbook-summary", prefix + "_summary.json"]
    if role == "master":
        cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                "--expect-workers", str(workers), "--expect-workers-max-wait", "30"]
    return cmd


def _wait_all(procs: list[subprocess.Popen], deadline: float) -> tuple[list[int | None], float]:
    """Wait for every process (reaping it with wait4 to get its CPU time) until
    ``deadline``; kill the rest. Returns exit codes and total CPU seconds."""
    codes: dict[int, int | None] = {p.pid: None for p in procs}
    cpu = 0.0
    pending = {p.pid: p for p in procs}
    try:
        while pending:
            for pid in list(pending):
                try:
                    done, status, usage = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    pending.pop(pid)
                    continue
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
                    pending.pop(pid).returncode = codes[pid]
                    cpu += usage.ru_utime + usage.ru_stime
            if pending and time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for pid, p in pending.items():  # over time, interrupted, or an error: stop them (by PID)
            _kill(p)
            try:
                _, status, usage = os.wait4(pid, 0)
                cpu += usage.ru_utime + usage.ru_stime
                codes[pid] = os.waitstatus_to_exitcode(status)
                p.returncode = codes[pid]
            except ChildProcessError:
                pass
    return [codes[p.pid] for p in procs], cpu


def _kill(p: subprocess.Popen) -> None:
    """SIGTERM the process's group (it runs in its own session), SIGKILL after 3 s.
    Does not reap: the caller does, with wait4."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:
        try:
            if psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE:  # exited, awaiting wait4
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_stage(plan: Plan, stage: Stage, workdir: str | Path, index: int = 0) -> StageResult:
    """Run one stage: one locust process (or a master and ``plan.workers`` workers), wait
    for it within its deadline, read its statistics."""
    if plan.refused:
        raise LoadTestRefused(plan.refused)
    workdir = Path(workdir)
    prefix = str(workdir / f"stage{index:02d}")
    # Locust puts the locustfile's folder on sys.path while importing it: run a copy from the
    # work folder, so perfbook/sources/*.py (http.py, redis.py...) can never shadow a library.
    locustfile = workdir / "perfbook_locustfile.py"
    if not locustfile.exists():
        shutil.copyfile(LOCUSTFILE, locustfile)
    lf = str(locustfile)
    log_path = Path(prefix + ".log")
    env = _child_env()
    procs: list[subprocess.Popen] = []
    started = pd.Timestamp.now(tz="UTC")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            if plan.workers > 0:
                port = free_port()
                procs.append(subprocess.Popen(locust_command(plan, stage, prefix, role="master", master_port=port,
                                                             workers=plan.workers, locustfile=lf),
                                              cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
                for _ in range(plan.workers):
                    procs.append(subprocess.Popen(locust_command(plan, stage, prefix, role="worker", master_port=port,
                                                                 locustfile=lf),
                                                  cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True))
            else:
                procs.append(subprocess.Popen(locust_command(plan, stage, prefix, locustfile=lf), cwd=workdir, env=env,
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
        except BaseException:
            for p in procs:
                _kill(p)
            raise
        codes, cpu = _wait_all(procs, time.monotonic() + stage.duration + GRACE_S + (30 if plan.workers else 0))
    wall = time.monotonic() - t0
    ended = pd.Timestamp.now(tz="UTC")
    stats, errors, source = _read_stats(prefix)
    history = _read_history(prefix + "_stats_history.csv")
    log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:] if log_path.exists() else ""
    # The measured part of the stage is after spawning (stats reset), so CPU% uses the wall time.
    return StageResult(stage, stats, errors, history, started, ended, wall, cpu, codes[0],
                       workers=plan.workers, log_tail=log_tail, source=source)


def _read_stats(prefix: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    path = Path(prefix + "_summary.json")
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = list(data.get("entries", []))
        total = dict(data.get("total", {}))
        total.update(method="", name="Aggregated")
        rows.append(total)
        stats = pd.DataFrame(rows)
        stats = stats.rename(columns={"p100": "p100"})
        for c in STATS_COLUMNS:
            if c not in stats:
                stats[c] = float("nan")
        errors = pd.DataFrame(data.get("errors", []), columns=["method", "name", "error", "occurrences"])
        return stats[STATS_COLUMNS], errors, "summary"
    return _read_stats_csv(prefix) + ("csv",)


_CSV_MAP = {"Type": "method", "Name": "name", "Request Count": "requests", "Failure Count": "failures",
            "Requests/s": "rps", "Failures/s": "fail_rps", "Average Response Time": "avg_ms",
            "Min Response Time": "min_ms", "Max Response Time": "max_ms", "50%": "p50", "66%": "p66",
            "75%": "p75", "80%": "p80", "90%": "p90", "95%": "p95", "98%": "p98", "99%": "p99",
            "99.9%": "p99.9", "100%": "p100"}


def _read_stats_csv(prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Locust's own ``_stats.csv`` / ``_failures.csv`` (a snapshot up to a second old)."""
    stats_path, fail_path = Path(prefix + "_stats.csv"), Path(prefix + "_failures.csv")
    if not stats_path.exists():
        return pd.DataFrame(columns=STATS_COLUMNS), pd.DataFrame(columns=["method", "name", "error", "occurrences"])
    raw = pd.read_csv(stats_path, na_values=["N/A"])
    stats = raw.rename(columns=_CSV_MAP)
    stats["method"] = stats["method"].fillna("")
    for c in STATS_COLUMNS:
        if c not in stats:
            stats[c] = float("nan")
    errors = pd.DataFrame(columns=["method", "name", "error", "occurrences"])
    if fail_path.exists():
        f = pd.read_csv(fail_path)
        if len(f):
            errors = f.rename(columns={"Method": "method", "Name": "name", "Error": "error",
                                       "Occurrences": "occurrences"})[["method", "name", "error", "occurrences"]]
    return stats[STATS_COLUMNS], errors


def _read_history(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        return pd.DataFrame()
    h = pd.read_csv(p, na_values=["N/A"])
    if h.empty:
        return h
    h = h[h["Name"] == "Aggregated"] if "Name" in h else h
    out = pd.DataFrame({
        "timestamp": pd.to_datetime(h["Timestamp"], unit="s", utc=True),
        "users": h["User Count"], "rps": h["Requests/s"], "fail_rps": h["Failures/s"],
        "p50_ms": h.get("50%"), "p95_ms": h.get("95%"), "p99_ms": h.get("99%"),
        "requests_total": h.get("Total Request Count"),
    })
    return out.reset_index(drop=True)


def run(plan: Plan, workdir: str | Path | None = None,
        stop_when: Callable[[StageResult], str | None] | None = None,
        on_stage: Callable[[StageResult], None] | None = None) -> LoadTestRun:
    """Run the plan stage by stage. A refused plan sends nothing and returns a run whose
    ``refused`` says why. ``stop_when(stage_result)`` returning a reason stops a stress
    test from climbing further (when ``plan.stop_on_break``); the recovery stage still
    runs, to see whether the service comes back. ``workdir`` keeps locust's CSV files and
    logs (default: a temporary folder, removed afterwards)."""
    present_only("load test", "the service")
    result = LoadTestRun(plan, refused=plan.refused)
    if plan.refused:
        return result
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="perfbook-loadtest-")) if own else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    result.workdir = str(wd)
    try:
        for i, stage in enumerate(plan.stages):
            if result.stopped and stage.kind != "recovery":
                continue
            res = run_stage(plan, stage, wd, i)
            result.stages.append(res)
            if on_stage:
                on_stage(res)
            if stage.kind == "stage" and stop_when is not None and plan.stop_on_break and not result.stopped:
                why = stop_when(res)
                if why:
                    result.stopped = f"stopped climbing after {stage.label}: {why}"
    finally:
        if own:
            shutil.rmtree(wd, ignore_errors=True)
    return result
