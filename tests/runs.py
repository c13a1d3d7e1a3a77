"""Small helpers the integration tests share for reading what `perfbook run|batch` printed."""
from __future__ import annotations

import time
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


def wait_for(cond, timeout: float, what: str, every: float = 0.1):
    """``cond()``'s first true value, asked every ``every`` seconds; AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def tiny_notebook(path: Path, body: str) -> None:
    """A section notebook of one code cell (for PERFBOOK_NOTEBOOKS / ``nb_dir``): a parameters
    cell as papermill wants it, then ``body``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell("params_file = None\nsince = until = incident = None\noverrides = '{}'")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


def assert_event_loop_blocking_found(run, section: str) -> None:
    """The incident's event-loop blocking, as ``section`` of ``run`` reports it (quick
    diagnostics and bottlenecks both do)."""
    found = run.find("eventloop.lag", section=section)
    # ~300 ms blocks: critical where the summary requests come often (the 80 % instance). At the demo's
    # 1 s scrapes the p99 gauge (reset at every scrape, ~100 samples) shows them as well as max does
    assert found and max(f["evidence"]["observed"] for f in found) >= 0.1, found
    assert max(f["evidence"]["max_recurring_s"] for f in found) >= 0.1, found
    assert {f["evidence"]["gauge"] for f in found} <= {"nodejs_eventloop_lag_max_seconds",
                                                       "nodejs_eventloop_lag_p99_seconds"}
