"""``perfbook batch --baseline SPEC``: the run a batch is compared with when it has finished.

The baseline is chosen before any kernel starts (a bad SPEC is bad input: one line, exit 2,
nothing runs): a run folder, or ``previous``, the latest earlier complete run of the same
service and environment under the outputs folder. The comparison is then written into the
new run (compare.html / compare.json, linked at the top of its index), as ``perfbook
compare BASELINE RUN`` would write it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .compare import Mismatch, compare, summary_lines
from .report import NotARun, previous_run, read_run, write_comparison

#: What ``--baseline`` accepts, for help texts and errors.
SPEC_HELP = "a run folder, or 'previous' (the latest earlier complete run of this service and environment)"


class BadBaseline(ValueError):
    """``--baseline`` names no usable run (one line)."""


def resolve(spec: str, service: str, environment: str, outputs: str | Path) -> Any:
    """The baseline run (:func:`perfbook.report.read_run`) ``spec`` names, for a run of
    ``service`` in ``environment``; :class:`BadBaseline` saying why not."""
    try:
        if spec == "previous":
            return previous_run(outputs, service, environment)
        if re.fullmatch(r"-\d+(\.\d+)?[smhdw]", spec.strip()):
            raise BadBaseline(f"--baseline {spec}: a time shift is not supported yet; give {SPEC_HELP}")
        run = read_run(spec)
    except NotARun as exc:
        raise BadBaseline(f"--baseline: {exc}") from None
    if run.service != service or run.environment != environment:
        raise BadBaseline(f"--baseline {spec}: a run of {run.service} ({run.environment}), "
                          f"not of {service} ({environment})")
    if run.status != "complete":
        raise BadBaseline(f"--baseline {spec}: that run is {run.status}, not complete")
    return run


def compare_into(run_dir: str | Path, baseline: Any) -> tuple[Path, dict[str, Any]]:
    """Compare the finished run in ``run_dir`` with ``baseline`` and write the comparison
    into it; returns the page's path and the comparison (:class:`BadBaseline` when the two
    cannot be compared after all)."""
    from .plots.compare import comparison_figures  # matplotlib: only when a comparison is drawn

    try:
        result = compare(baseline, read_run(run_dir))
    except (NotARun, Mismatch) as exc:
        raise BadBaseline(str(exc)) from None
    return write_comparison(run_dir, result, figures=comparison_figures), result


def report_lines(page: Path, result: dict[str, Any]) -> list[str]:
    """What the batch prints after its own summary."""
    return [*summary_lines(result), f"Comparison: {page.resolve()}"]
