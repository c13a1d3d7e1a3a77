"""Small helpers the integration tests share for reading what `perfbook run|batch` printed."""
from __future__ import annotations

from pathlib import Path


def report_dir(stdout: str) -> Path:
    """The run folder of the last `Report: .../index.html` line a perfbook command printed."""
    lines = [l for l in stdout.splitlines() if l.startswith("Report: ")]
    assert lines, f"no report path printed:\n{stdout}"
    return Path(lines[-1].split("Report: ", 1)[1]).parent
