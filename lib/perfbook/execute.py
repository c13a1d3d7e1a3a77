"""Execute ONE notebook with papermill and export its HTML — in its own process.

The runner starts one ``python -m perfbook.execute`` per notebook: papermill's
in-process parallel runs clash (ZMQ ports, cwd), and a separate process can be killed
cleanly on timeout. Output goes to a private work folder outside outputs/: papermill's
raw notebook (``<name>.raw.ipynb``) is redacted on structure (:func:`perfbook.report.redact_notebook`,
with the secrets named in ``PERFBOOK_REDACT_ENV``) into ``--output`` and removed, and the HTML
page is exported from the redacted notebook; the runner checks both and links them into the
run folder.

Prints one JSON line on stdout: ``{"status": "ok"|"failed", "error": "...", "timings": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def _stop(signum, frame) -> None:
    """SIGTERM/SIGINT from the runner: take the kernel (its own session) and its children down too."""
    try:
        import psutil

        children = psutil.Process().children(recursive=True)
        for c in children:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(children, timeout=3)
    finally:
        os._exit(128 + signum)


def _watch_parent(parent: int, every: float = 0.5) -> None:
    """Stop (kernel and all) when the process that started this one is gone: a runner or a
    Dask worker killed outright (SIGKILL, the OOM killer) cannot stop this process, which
    runs in a session of its own, and a notebook nobody waits for must not run on."""
    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                _stop(signal.SIGTERM, None)
    import threading

    threading.Thread(target=watch, name="perfbook-parent-watch", daemon=True).start()


def _import_jsonschema_without_iri_grammar() -> None:
    """Import jsonschema (nbformat's validator) without building rfc3987_syntax's grammar.

    ``import jsonschema`` imports ``rfc3987_syntax`` when it is installed (jupyterlab's
    jupyter-events brings it), only to register the ``iri`` / ``iri-reference`` format
    checks, and that module compiles an Earley parser at import: about 1 s of every
    notebook process (``python -X importtime -m perfbook.execute ...``: 1.06 s of the
    1.35 s of ``import papermill``). Nothing in this process checks formats — nbformat
    validates with a Draft 4 validator and no format checker, and those formats are draft
    7+ — so the module is hidden while jsonschema loads (``None`` in ``sys.modules`` makes
    its import raise ImportError, which jsonschema takes as "not installed"), then unhidden
    for anyone who imports it later. If a jsonschema ever needs the module, it is imported
    the ordinary way. The kernel is another process and never imports jsonschema.

    ``perfbook run monitoring`` against dead sources, 2 shared CPUs: 3.6 s per notebook
    before, 2.7 s after (``import papermill`` 1.35 s → 0.25 s).
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        import jsonschema
    except ImportError:
        pass
    finally:
        if "rfc3987_syntax" in sys.modules and sys.modules["rfc3987_syntax"] is None:
            del sys.modules["rfc3987_syntax"]
    if "jsonschema" not in sys.modules:
        import jsonschema  # noqa: F401 - slow, but what jsonschema asked for


#: jupyter_client's errors when a kernel dies or stays silent before its first reply: no cell
#: has run yet, so running the notebook again from the start is safe.
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond")


def retry_kernel_start(execute, attempts: int = 3) -> int:
    """Call ``execute`` (one papermill run); when its kernel fails to start, try again, up
    to ``attempts`` times in all. Several kernels started at once can race for the same
    free TCP port (jupyter_client picks ports by binding and releasing them, so two
    processes may pick one port; nteract/papermill#239): the loser dies before its first
    reply. Returns the number of retries; raises the last error."""
    for attempt in range(attempts):
        try:
            execute()
            return attempt
        except RuntimeError as exc:
            if attempt == attempts - 1 or not str(exc).startswith(KERNEL_START_FAILURES):
                raise
            time.sleep(0.2 * (attempt + 1))
    return attempts - 1


def run(notebook: Path, output: Path, html_out: Path, parameters: dict, cwd: Path,
        cell_timeout: int | None) -> dict:
    _import_jsonschema_without_iri_grammar()
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from .report import active_redactor, error_html, notebook_html, redact_notebook

    result: dict = {"status": "ok", "error": "", "timings": {}}
    raw = output.with_name(output.stem + ".raw.ipynb")
    redact = active_redactor()
    t0 = time.monotonic()
    try:
        retries = retry_kernel_start(lambda: pm.execute_notebook(
            str(notebook), str(raw), parameters=parameters, cwd=str(cwd), kernel_name="python3",
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            execution_timeout=cell_timeout))
        if retries:  # shown in manifest.json, next to the timings
            result["timings"]["kernel_start_retries"] = retries
    except PapermillExecutionError as exc:
        result.update(status="failed", error=redact(f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}")[:2000])
    except Exception as exc:  # noqa: BLE001 - kernel died, bad notebook, ...
        result.update(status="failed", error=redact(f"{type(exc).__name__}: {exc}")[:2000])
    result["timings"]["execute_s"] = round(time.monotonic() - t0, 3)

    t1 = time.monotonic()
    if raw.exists():
        import nbformat

        try:
            nb = redact_notebook(nbformat.read(str(raw), as_version=4), redact)
            tmp_nb = output.with_name(f".{output.name}.tmp")
            nbformat.write(nb, str(tmp_nb))
            os.replace(tmp_nb, output)
        except Exception as exc:  # noqa: BLE001 - unreadable output: no notebook, the error says why
            result.update(status="failed", error=result["error"] or
                          redact(f"could not read the executed notebook: {type(exc).__name__}: {exc}")[:2000])
        finally:
            raw.unlink(missing_ok=True)
    try:
        page = notebook_html(output) if output.exists() else error_html(
            f"{notebook.stem}: did not run", result["error"] or "no output notebook")
    except Exception as exc:  # noqa: BLE001
        page = error_html(f"{notebook.stem}: HTML export failed", redact(f"{type(exc).__name__}: {exc}\n\n{result['error']}"))
    tmp = html_out.with_name(f".{html_out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, html_out)  # the runner never sees half a page
    result["timings"]["export_s"] = round(time.monotonic() - t1, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfbook.execute")
    ap.add_argument("--notebook", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--html", type=Path, required=True)
    ap.add_argument("--parameters", default="{}")
    ap.add_argument("--cwd", type=Path, required=True)
    ap.add_argument("--cell-timeout", type=int, default=None)
    a = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    _watch_parent(os.getppid())
    res = run(a.notebook, a.output, a.html, json.loads(a.parameters), a.cwd, a.cell_timeout)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
