"""Fleet runs: several services in one command (``perfbook batch -p a.yaml -p b.yaml`` or
``--fleet FILE``), on one executor (:mod:`perfbook.executors`).

Each service gets its run folder as a batch of its own would (``HHMMSS-<incident>-<service>``),
and the fleet gets ``outputs/YYYY-MM-DD/HHMMSS-fleet-<incident>/``: ``index.html`` (a services
× sections grid of worst severities, linking into each service's report), ``findings.json``
(every finding, with its service, environment and run) and ``manifest.json`` (``kind: fleet``:
the executor, each service's run, status and exit status, and the worker of each notebook).

Everything is checked before anything starts: every params file, every section, no two
services of one name and environment, the executor. One bad file stops the fleet with one line
naming it and the field, and no folder is made.

Exit status over the fleet: the most serious of the services' (:data:`FLEET_EXIT_ORDER`):
130 interrupted, 4 the runner failed, 3 a notebook failed or timed out, 1 a critical finding
or a check that could not run, 0 none of these; 2 bad input, nothing ran.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from . import __version__
from .baseline import BadBaseline, compare_into, report_lines, resolve as resolve_baseline, since_snapshot
from .executors import BadExecutor, ExecutorSpec, start_backend
from .findings import worst
from .params import Params, ParamsError, Strict, load_model
from .report import NotARun, Redactor, make_run_dir, replace_file, write_new
from .report.fleet import fleet_findings, fleet_html
from .runner import (
    EXIT_BAD_INPUT,
    EXIT_CRITICAL,
    EXIT_INTERRUPTED,
    EXIT_NOTEBOOK_FAILED,
    EXIT_OK,
    EXIT_RUNNER_FAILED,
    SINCE_SECTION,
    BadInput,
    Batch,
    BatchResult,
    Printer,
    available_sections,
    drive,
    load_params,
    print_error,
    rebuild_archive,
    validate_sections,
)

#: The fleet's exit status is the first of these any service has.
FLEET_EXIT_ORDER = (EXIT_INTERRUPTED, EXIT_RUNNER_FAILED, EXIT_NOTEBOOK_FAILED, EXIT_CRITICAL, EXIT_OK)
MAX_SERVICES = 500


class FleetEntry(Strict):
    params: str = Field(description="a service's params file (relative to the fleet file)")
    sections: list[str] | None = Field(None, min_length=1, description="its sections (default: --sections, else all)")


class FleetFile(Strict):
    incident: str | None = Field(None, description="incident ID for every run (--incident wins)")
    services: list[FleetEntry] = Field(min_length=1, max_length=MAX_SERVICES)


@dataclass
class Member:
    """One service of the fleet, checked: its params file, params, overrides and sections."""
    params_file: str
    params: Params
    overrides: dict[str, Any]
    sections: list[str]
    since_snapshot: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.params.service} ({self.params.environment})"


def load_fleet_file(path: str) -> tuple[list[tuple[str, list[str] | None]], str | None]:
    """The fleet file's (params file, sections) pairs, paths against its folder, and its incident."""
    fleet: FleetFile = load_model(path, FleetFile, "params/fleet.example.yaml")
    here = Path(path).resolve().parent
    out = []
    for i, e in enumerate(fleet.services):
        p = Path(e.params)
        p = p if p.is_absolute() else here / p
        if e.sections:
            try:
                validate_sections(e.sections)
            except BadInput as exc:
                raise ParamsError(Path(path), f"services[{i}].sections", str(exc).split(": ", 1)[-1]) from None
        out.append((str(p), e.sections))
    return out, fleet.incident


def plan(entries: list[tuple[str, list[str] | None]], sections: list[str] | None, overrides: list[str],
         *, since_run: str | None = None, outputs: str = "outputs") -> list[Member]:
    """Every service of the fleet, checked before anything runs (:class:`ParamsError` naming
    the file and field, or :class:`BadInput`)."""
    members: list[Member] = []
    seen: dict[tuple[str, str], str] = {}
    for path, own in entries:
        params, ov = load_params(path, overrides)
        chosen = validate_sections(own or sections)
        key = (params.service, params.environment)
        if key in seen:
            raise BadInput(f"{path}: service {params.service!r} ({params.environment}) is also {seen[key]}; "
                           "a fleet runs each service and environment once")
        seen[key] = path
        m = Member(path, params, ov, chosen)
        if since_run and SINCE_SECTION in chosen:
            try:
                m.since_snapshot = since_snapshot(since_run, params.service, params.environment, outputs)
            except BadBaseline as exc:
                raise BadInput(f"{m.name}: {exc}") from None
        members.append(m)
    return members


def _check_run_specs(n: int, baseline: str | None, since_run: str | None) -> None:
    for opt, spec in (("--baseline", baseline), ("--since-run", since_run)):
        if spec and n > 1 and spec != "previous":
            raise BadInput(f"{opt} {spec}: a fleet of {n} services takes only 'previous' (each service's latest "
                           "earlier complete run); a run folder names one service's run")


def fleet_exit(codes: list[int]) -> int:
    return next((c for c in FLEET_EXIT_ORDER if c in codes), EXIT_OK)


class Fleet:
    """The fleet folder: written ``running`` first, then finished from the services' results."""

    def __init__(self, members: list[Member], batches: list[Batch], *, incident: str | None, outputs: str,
                 executor: ExecutorSpec):
        self.members, self.batches, self.incident, self.spec = members, batches, incident, executor
        self.started = datetime.now(timezone.utc)
        self.run_dir = make_run_dir(outputs, f"fleet-{incident}" if incident else "fleet")
        names: list[str] = []
        for b in batches:
            names += b.params.env_names()
        self.redact = Redactor.for_env(sorted(set(names)))
        self.executor: dict[str, Any] = {"executor": executor.describe()}
        self.write("running", None, [])

    def manifest(self, status: str, code: int | None, results: list[BatchResult]) -> dict[str, Any]:
        services = []
        for b in self.batches:
            res = next((r for r in results if r.run_dir == b.run_dir), None)
            services.append({
                "service": b.params.service, "environment": b.params.environment, "params_file": str(b.params_file),
                "run": os.path.relpath(b.run_dir, self.run_dir), "status": "running" if res is None else
                ("interrupted" if res.exit_code == EXIT_INTERRUPTED else "failed" if res.exit_code == EXIT_RUNNER_FAILED
                 else "complete"),
                "exit_code": None if res is None else res.exit_code,
                "notebooks": [{"section": r.section, "status": r.status, "duration_s": round(r.duration_s, 2),
                               "worker": r.worker, "html": r.html,
                               "worst": _worst(r), "findings": r.manifest()["findings"]} for r in b.results]})
        return {"kind": "fleet", "perfbook": __version__, "status": status, "exit_code": code,
                "sections": [s for s in available_sections() if any(s in b.sections for b in self.batches)],
                "incident": self.incident, "started": self.started.isoformat(),
                "finished": datetime.now(timezone.utc).isoformat() if status != "running" else None,
                "executor": self.executor, "services": services}

    def write(self, status: str, code: int | None, results: list[BatchResult]) -> None:
        manifest = self.redact.obj(self.manifest(status, code, results))
        replace_file(self.run_dir / "index.html", fleet_html(manifest, self._findings(), self.redact), self.redact)
        replace_file(self.run_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False), self.redact)

    def _findings(self) -> list[dict[str, Any]]:
        return fleet_findings([(b.params.service, b.params.environment, os.path.relpath(b.run_dir, self.run_dir),
                                [f for r in b.results for f in r.findings]) for b in self.batches])

    def finish(self, results: list[BatchResult]) -> int:
        code = fleet_exit([r.exit_code for r in results])
        status = {EXIT_INTERRUPTED: "interrupted", EXIT_RUNNER_FAILED: "failed"}.get(code, "complete")
        write_new(self.run_dir / "findings.json", json.dumps(self.redact.obj(self._findings()), indent=1,
                                                             ensure_ascii=False), self.redact)
        self.write(status, code, results)
        return code


def _worst(r: Any) -> str:
    return worst(f.severity for f in r.findings) if r.findings else "ok"


def run_fleet(entries: list[tuple[str, list[str] | None]], sections: list[str] | None, *, incident=None,
              since=None, until=None, overrides: list[str] | None = None, jobs=None, timeout=None,
              outputs="outputs", quiet=False, baseline: str | None = None, since_run: str | None = None,
              executor: ExecutorSpec | None = None) -> int:
    """Run every service of ``entries`` on one executor; progress on stderr, the fleet page's
    path on stdout (after each service's); returns the fleet's exit status."""
    executor = executor or ExecutorSpec("local")
    if timeout is not None and not timeout > 0:
        raise BadInput(f"--timeout: must be a number of seconds above 0, got {timeout:g}")
    if jobs is not None and jobs < 1:
        raise BadInput(f"--jobs: must be 1 or more, got {jobs}")
    _check_run_specs(len(entries), baseline, since_run)
    members = plan(entries, sections, overrides or [], since_run=since_run, outputs=outputs)
    bases: dict[int, Any] = {}
    if baseline:
        for i, m in enumerate(members):
            try:
                bases[i] = resolve_baseline(baseline, m.params.service, m.params.environment, outputs)
            except BadBaseline as exc:
                raise BadInput(f"{m.name}: {exc}") from None
    total = sum(len(m.sections) for m in members)
    default_jobs = min(total, 2 * (os.cpu_count() or 1))
    try:
        backend = start_backend(executor, jobs, default_jobs)
    except BadExecutor as exc:
        raise BadInput(str(exc)) from None
    with backend:
        printer = Printer(total)
        batches = []
        for m in members:
            label = "-".join(x for x in (incident, m.params.service, m.params.environment) if x)
            who = f"{m.params.service}/"
            batches.append(Batch(m.params_file, m.params, m.sections, incident=incident, since=since, until=until,
                                 overrides=m.overrides, jobs=backend.slots, timeout=timeout, outputs=outputs,
                                 progress=None if quiet else (lambda ev, r, who=who: printer(ev, r, who)),
                                 since_snapshot=m.since_snapshot, label=label))
        fleet = Fleet(members, batches, incident=incident, outputs=outputs, executor=executor)
        fleet.executor = backend.info()
        if not quiet:
            sys.stderr.write(f"perfbook {__version__}: a fleet of {len(members)} services, {total} notebooks on "
                             f"{executor.describe()}, {backend.slots} at a time → {fleet.run_dir}\n")
        results = drive(batches, backend)
    code = fleet.finish(results)
    for b, res in zip(batches, results):
        crit = sum(f.severity == "critical" for f in res.findings)
        errs = sum(f.severity == "error" for f in res.findings)
        failed = [r.section for r in res.results if r.status != "ok"]
        sys.stderr.write(f"{b.params.service} ({b.params.environment}): {crit} critical, {errs} could not run"
                         + (f"; notebooks not ok: {', '.join(failed)}" if failed else "")
                         + f" — {res.index.resolve()}\n")
    for i, (b, res) in enumerate(zip(batches, results)):
        if i in bases and res.exit_code not in (EXIT_INTERRUPTED, EXIT_RUNNER_FAILED):
            try:
                print("\n".join(report_lines(*compare_into(res.run_dir, bases[i]))))
            except (BadBaseline, NotARun, OSError) as exc:
                print_error(f"{b.params.service}: no comparison with the baseline: {exc}")
    archive = rebuild_archive(outputs)
    if archive and not quiet:
        sys.stderr.write(f"Archive of every run: {archive}\n")
    for res in results:
        print(f"Service report: {res.index.resolve()}")
    print(f"Report: {(fleet.run_dir / 'index.html').resolve()}")
    return code


__all__ = ["FleetFile", "Member", "load_fleet_file", "plan", "run_fleet", "fleet_exit", "EXIT_BAD_INPUT"]
