"""Small helpers the integration tests share for reading what `perfbook run|batch` printed."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from perfbook.demo.processes import free_port  # noqa: F401 - a free (closed) port on 127.0.0.1, for tests


def hostport(url: str) -> str:
    """``host:port`` of a URL: the ``instance`` label Prometheus gives a scraped target."""
    u = urlsplit(url)
    return f"{u.hostname}:{u.port}"


def report_dir(stdout: str) -> Path:
    """The run folder of the last `Report: .../index.html` line a perfbook command printed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("Report: ")]
    assert lines, f"no report path printed:\n{stdout}"
    return Path(lines[-1].split("Report: ", 1)[1]).parent
