"""`perfbook demo`: bring up the demo stack, drive traffic, run the batch, print the report.

Everything the demo starts is stopped again — on success, on failure and on Ctrl-C —
unless ``--keep`` asks to leave it up for JupyterLab (`make lab`, then `perfbook demo stop`).
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .runner import say


#: Settings that make the runbook's checks meaningful on a one-minute demo window: the
#: alert rules' `for` shrinks from minutes to seconds, the stress test runs short stages.
def _demo_settings() -> dict[str, Any]:
    from .params import DEFAULT_ALERTS
    return {
        "probes": {"count": 10, "timeout": "5s", "retries": 1},
        "external": {"timeouts": {"ai-api": "3s"}},  # the demo service's timeout for its AI API
        # A short stress profile (the runbook's 10 → 500 users × 5 min would take half an hour); 8 s
        # stages, so the slow GET /api/products/:id (weight 3 of 10, ~2 s) is served the 5 requests
        # a stage needs to be judged (settings.load_test.min_requests) even with a rate limiter in the way.
        "load_test": {"mode": "stress", "stages": [{"users": u, "duration": "8s"} for u in (5, 10, 20, 40)],
                      "recovery": "5s", "think_time": "0.2s", "stop_on_break": False},
        # Prometheus evaluates every 1 s on the demo; `for` shrinks from 5-10 min to 10 s so the
        # runbook's alerts can fire inside a one-minute window (40 s of traffic is the minimum).
        "monitoring": {"evaluation_interval": "1s", "alerts": [{**a, "for": "10s"} for a in DEFAULT_ALERTS]},
    }


def demo_params(stack, tsdb: str | None = None) -> dict[str, Any]:
    data = stack.params_dict(tsdb)
    settings = data.setdefault("settings", {})
    for key, value in _demo_settings().items():
        settings.setdefault(key, value)
    data.setdefault("targets", {}).setdefault("memory_limit", "512MB")
    data["targets"].setdefault("fly_toml", str(Path(__file__).parent / "demo" / "fly.toml"))
    return data


def write_demo_params(stack, path: Path, tsdb: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# perfbook params for the demo stack (scenario {stack.scenario.name}); "
              f"secrets come from the environment: {', '.join(stack.env())}\n")
    path.write_text(header + yaml.safe_dump(demo_params(stack, tsdb), sort_keys=False), encoding="utf-8")
    return path


def _service_copy(params: Path, i: int) -> Path:
    """The demo params under the service name ``<service>-<i>``, beside them (a fleet's member)."""
    data = yaml.safe_load(params.read_text(encoding="utf-8"))
    data["service"] = f"{data['service']}-{i}"
    path = params.with_name(f"params-{i}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def arm_alert_rules(stack) -> Path | None:
    """Load the demo params' alert rules into the stack's Prometheus (before traffic), so the
    monitoring section can compare its own evaluation with the alerts Prometheus fires."""
    from .checks.alerts import rules_yaml
    from .params import Params

    if stack.prometheus is None:  # VictoriaMetrics alone keeps no rules (they live in vmalert)
        return None
    path = stack.state_dir / "perfbook-alerts.rules.yml"
    path.write_text(rules_yaml(Params.model_validate(demo_params(stack))), encoding="utf-8")
    if str(path) not in stack.prometheus.rule_files:
        stack.prometheus.rule_files.append(str(path))
    stack.prometheus.reload()
    return path


_last_line: list = [None]


def _bar(done: float, total: float, extra: str = "") -> None:
    if not sys.stderr.isatty():  # logs and CI: a plain line every 10 s, the last one once
        step = "end" if done >= total else int(done // 10)
        if step != _last_line[0]:
            _last_line[0] = step
            sys.stderr.write(f"  traffic {done:4.0f}/{total:.0f} s {extra}\n")
        return
    width = 30
    frac = 0 if total <= 0 else min(1.0, done / total)
    fill = int(frac * width)
    line = f"\r  traffic [{'#' * fill}{'.' * (width - fill)}] {done:4.0f}/{total:.0f} s {extra}"
    sys.stderr.write(line)
    sys.stderr.flush()


def _stats(stats) -> str:
    n = getattr(stats, "requests", None)
    return f"· {n} requests" if n is not None else ""


def _second_backend(stack, params: Path, sections, a) -> int:
    """``--tsdb both``: the same batch, same window, against VictoriaMetrics (fed by Prometheus's
    remote_write, so it holds the same samples), and the time-series verdicts compared."""
    import json

    from .demo.victoriametrics import verdict_differences
    from .runner import run_batch

    window = yaml.safe_load(params.read_text(encoding="utf-8"))["window"]
    vm_params = write_demo_params(stack, stack.state_dir / "params-victoriametrics.yaml", "victoriametrics")
    text = yaml.safe_load(vm_params.read_text(encoding="utf-8"))
    text["window"] = window  # the very same window as the Prometheus batch
    vm_params.write_text(yaml.safe_dump(text, sort_keys=False), encoding="utf-8")
    say("\nThe same batch against VictoriaMetrics (same samples, same window):")
    runs = sorted(Path(a.outputs).glob(f"*/*-demo-{a.scenario}"), key=lambda p: p.stat().st_mtime)
    code = run_batch(str(vm_params), sections, incident=f"demo-{a.scenario}-victoriametrics", jobs=a.jobs,
                     timeout=a.timeout, outputs=a.outputs)
    vm_runs = sorted(Path(a.outputs).glob(f"*/*-demo-{a.scenario}-victoriametrics"), key=lambda p: p.stat().st_mtime)
    if runs and vm_runs:
        load = lambda run: json.loads((run / "findings.json").read_text(encoding="utf-8"))  # noqa: E731
        diff, near = verdict_differences(load(runs[-1]), load(vm_runs[-1]))
        say("Time-series verdicts: " + ("the same on Prometheus and VictoriaMetrics." if not diff else
                                         f"{len(diff)} differ:\n  " + "\n  ".join(diff)))
        if near:
            say("  " + "\n  ".join(near))
    return code


def _kept_db_window(stack, sections: list[str] | None) -> str | None:
    """Say which database the demo runs on; when it goes on from the previous demo run's,
    the run folder whose snapshot starts this run's statistics window (``--since-run``)."""
    from .demo.seed import kept_record
    from .runner import SINCE_SECTION

    if stack.db_home is None:
        return None
    if stack.db_prepared != "kept":
        say(f"  PostgreSQL: a new database from the seed, kept in {stack.db_home} for the next demo run "
            f"(--fresh-db: a throwaway one)")
        return None
    last = kept_record(stack.db_home).get("last_run")
    usable = bool(last) and (Path(last) / "snapshots" / "database.json").is_file() and \
        (sections is None or SINCE_SECTION in sections)
    say(f"  PostgreSQL: the database of the previous demo run, kept in {stack.db_home} "
        + (f"(its statistics go on; the database section counts from that run: --since-run {last})" if usable
           else "(its statistics go on from the previous runs; --fresh-db starts from the seed)"))
    return last if usable else None


def _remember_run(stack, a) -> None:
    """Record this run in the kept database, so the next demo run's window starts at it."""
    from .demo.seed import write_kept_record

    if stack.db_home is None:
        return
    runs = sorted(Path(a.outputs).glob(f"*/*-demo-{a.scenario}"), key=lambda p: p.stat().st_mtime)
    if runs and (runs[-1] / "snapshots" / "database.json").is_file():
        write_kept_record(stack.db_home, last_run=str(runs[-1].resolve()))


def demo_main(a) -> int:
    from .demo import scenarios
    from .demo.postgres import HypopgUnavailable, PostgresNotFound
    from .demo.seed import kept_db_home
    from .demo.stack import Stack
    from .runner import EXIT_BAD_INPUT

    if a.action == "scenarios":
        for name in scenarios.SCENARIOS:
            s = scenarios.get(name)
            print(f"{name:<28} {', '.join(sorted(s.faults)) or 'no faults'}")
        return 0
    if a.action == "stop":
        try:
            stack = Stack.load_state()
        except FileNotFoundError:
            say("perfbook demo stop: no demo stack is recorded as running")
            return 0
        stack.stop(remove=True)
        say(f"stopped the demo stack ({stack.scenario.name}) and removed {stack.state_dir}")
        return 0
    if a.action == "env":
        try:
            stack = Stack.load_state()
        except FileNotFoundError:
            return 1
        for k, v in stack.env().items():
            print(f"export {k}={shlex.quote(v)}")
        print(f"export PERFBOOK_DEMO_PARAMS={shlex.quote(str(stack.state_dir / 'params.yaml'))}")
        return 0

    try:
        scenarios.get(a.scenario)
    except KeyError:
        say(f"perfbook: --scenario: unknown scenario {a.scenario!r}; known: {', '.join(scenarios.SCENARIOS)}")
        return EXIT_BAD_INPUT
    tsdb = getattr(a, "tsdb", "prometheus")
    db_home = None if getattr(a, "fresh_db", False) else Path(a.db_dir) if getattr(a, "db_dir", None) else kept_db_home()
    stack = Stack(a.scenario, keep=a.keep, log=lambda m: say(f"  {m}"), db_role=getattr(a, "db_role", "monitor"),
                  tsdb=tsdb, db_home=db_home)
    say(f"perfbook demo: scenario {a.scenario!r} — starting PostgreSQL, "
         f"{' and '.join(stack.tsdb_names).replace('victoriametrics', 'VictoriaMetrics').replace('prometheus', 'Prometheus')}, "
         f"{stack.n_instances} service instances and the external-API stand-in on 127.0.0.1")
    ok = False
    try:
        timings = stack.start()
        say(f"  stack up in {timings['total']:.1f} s (goal < 30 s): "
             + ", ".join(f"{k} {v}" for k, v in timings.items() if k != "total"))
        say(f"  perfbook connects to PostgreSQL as {stack.monitor_user} (privilege level {stack.db_role}; "
             f"--db-role monitor|read_all|hypopg)")
        sections = [s.strip() for s in a.sections.split(",")] if a.sections else None
        since_run = _kept_db_window(stack, sections)
        arm_alert_rules(stack)
        t0 = time.monotonic()
        driven = stack.drive(a.duration, progress=lambda done, total, stats: _bar(done, total, _stats(stats)))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        say(f"  drove {a.duration:.0f} s of traffic in {time.monotonic() - t0:.0f} s "
            f"({getattr(driven, 'requests', '?')} requests)")
        params = write_demo_params(stack, stack.state_dir / "params.yaml")
        os.environ.update(stack.env())
        from .executors import BadExecutor, parse_executor
        from .runner import run_batch
        try:
            spec = parse_executor(getattr(a, "executor", None))
        except BadExecutor as exc:
            say(f"perfbook: {exc}")
            return EXIT_BAD_INPUT
        services = max(1, getattr(a, "services", 1) or 1)
        if services > 1:   # the demo as a fleet: the one stack under several service names
            from .fleet import run_fleet
            files = [params] + [_service_copy(params, i) for i in range(2, services + 1)]
            if since_run:
                say("  (as a fleet, the database section counts the statistics since their reset, not since the "
                    "previous demo run)")
            code = run_fleet([(str(f), None) for f in files], sections, incident=f"demo-{a.scenario}", jobs=a.jobs,
                             timeout=a.timeout, outputs=a.outputs, executor=spec)
        else:
            code = run_batch(str(params), sections, incident=f"demo-{a.scenario}", jobs=a.jobs, timeout=a.timeout,
                             outputs=a.outputs, since_run=since_run, executor=spec)
        _remember_run(stack, a)
        if tsdb == "both":
            code = max(code, _second_backend(stack, params, sections, a))
        ok = True
        if a.keep:
            say(f"\nThe stack is still up (--keep):\n{stack.describe()}\n"
                 f"params: {params}\nexplore: make lab   ·   stop: perfbook demo stop")
        return code
    except (HypopgUnavailable, PostgresNotFound) as exc:
        say(f"perfbook: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the demo stack")
        return 130
    finally:
        if not (a.keep and ok):
            stack.stop(remove=True)
            say("demo stack stopped")
