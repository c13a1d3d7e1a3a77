"""``perfbook batch --baseline SPEC``: the run a batch is compared with when it has finished.

The baseline is chosen before any kernel starts (a bad SPEC is bad input: one line, exit 2,
nothing runs): a run folder, ``previous``, the latest earlier complete run of the same
service and environment under the outputs folder, or a time shift (``-7d``, ``-1h``): the
same window that much earlier, run as a second batch after the first, reading Prometheus;
its checks that read the present (probes, pg_stat_statements, Redis, the load test) say
``source.present_only`` instead of guessing, and what they find in the incident is
``unknown`` rather than ``new``. The comparison is then written into the new run
(compare.html / compare.json, linked at the top of its index), as ``perfbook compare
BASELINE RUN`` would write it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .compare import Mismatch, summary_lines
from .report import NotARun, compare_runs, previous_run, read_run, write_comparison

#: What ``--baseline`` accepts, for help texts and errors.
SPEC_HELP = ("a run folder, 'previous' (the latest earlier complete run of this service and environment), or a "
             "time shift like -7d or -1h (the same window that much earlier, read from Prometheus)")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class TimeShift:
    """``--baseline -7d``: the same window, ``seconds`` earlier (a run made after the batch,
    reading Prometheus; the checks that read the present say so)."""

    spec: str
    seconds: float

    def window(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        return start - timedelta(seconds=self.seconds), end - timedelta(seconds=self.seconds)


def time_shift(spec: str) -> TimeShift | None:
    """The :class:`TimeShift` ``spec`` names (``-7d``, ``-1h``, ``-90m``, ``-2w``), None when it
    names none; :class:`BadBaseline` for a shift of zero or into the future."""
    m = re.fullmatch(r"([-+]?)(\d+(?:\.\d+)?)([smhdw])", spec.strip())
    if not m:
        return None
    seconds = float(m.group(2)) * _UNITS[m.group(3)]
    if m.group(1) != "-" or seconds <= 0:
        raise BadBaseline(f"--baseline {spec}: a time shift looks back: give it with a minus sign, e.g. -7d or -1h")
    return TimeShift(spec.strip(), seconds)


class BadBaseline(ValueError):
    """``--baseline`` names no usable run (one line)."""


def resolve(spec: str, service: str, environment: str, outputs: str | Path) -> Any:
    """The baseline run (:func:`perfbook.report.read_run`) ``spec`` names, for a run of
    ``service`` in ``environment``, or the :class:`TimeShift` it names; :class:`BadBaseline`
    saying why not."""
    try:
        if spec == "previous":
            return previous_run(outputs, service, environment)
        shift = time_shift(spec)
        if shift is not None:
            return shift
        run = read_run(spec)
    except NotARun as exc:
        raise BadBaseline(f"--baseline: {exc}") from None
    if run.service != service or run.environment != environment:
        raise BadBaseline(f"--baseline {spec}: a run of {run.service} ({run.environment}), "
                          f"not of {service} ({environment})")
    if run.status != "complete":
        raise BadBaseline(f"--baseline {spec}: that run is {run.status}, not complete")
    return run


def since_snapshot(spec: str, service: str, environment: str, outputs: str | Path) -> Path:
    """The database snapshot (``snapshots/database.json``) of the run ``spec`` names, for
    ``--since-run``; :class:`BadBaseline` (one line, naming the folder) when it has none."""
    from .checks.database.window import is_snapshot

    try:
        run = resolve(spec, service, environment, outputs)
    except BadBaseline as exc:
        raise BadBaseline(str(exc).replace("--baseline", "--since-run", 1)) from None
    if isinstance(run, TimeShift):
        raise BadBaseline(f"--since-run {spec}: give a run folder or 'previous': PostgreSQL's statistics cannot "
                          f"be read back in time, only from a run's stored snapshot")
    path = Path(run.run_dir) / "snapshots" / "database.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadBaseline(f"--since-run {spec}: {run.run_dir} has no snapshots/database.json (its database "
                          f"section did not run, or ran before perfbook stored snapshots)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadBaseline(f"--since-run {spec}: {path} cannot be read: {str(exc)[:200]}") from None
    if not is_snapshot(data):
        raise BadBaseline(f"--since-run {spec}: {path} is not a perfbook database snapshot")
    if not data.get("statements_available"):
        raise BadBaseline(f"--since-run {spec}: {path} holds no pg_stat_statements (the extension was not "
                          f"readable in that run)")
    return path


def compare_into(run_dir: str | Path, baseline: Any) -> tuple[Path, dict[str, Any]]:
    """Compare the finished run in ``run_dir`` with ``baseline`` and write the comparison
    into it; returns the page's path and the comparison (:class:`BadBaseline` when the two
    cannot be compared after all)."""
    from .plots.compare import comparison_figures  # matplotlib: only when a comparison is drawn

    try:
        result = compare_runs(baseline, read_run(run_dir))
    except (NotARun, Mismatch) as exc:
        raise BadBaseline(str(exc)) from None
    return write_comparison(run_dir, result, figures=comparison_figures), result


def report_lines(page: Path, result: dict[str, Any]) -> list[str]:
    """What the batch prints after its own summary."""
    return [*summary_lines(result), f"Comparison: {page.resolve()}"]
