"""An interrupted batch (SIGINT, SIGTERM) leaves a folder that says so, and nothing half-done.

Runs the real `perfbook batch` on a notebooks directory of tiny notebooks (PERFBOOK_NOTEBOOKS):
`fast` finishes at once, `sleepy` sleeps in its kernel until the batch is signalled. Asserts:
exit 130; manifest.json `interrupted` naming what finished; index.html says incomplete; every
file whole (JSON parses, HTML closes), no `.tmp` or `.work-` leftovers; no orphan kernel or
notebook process; earlier runs of the same day untouched (checksums before and after).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from runs import tiny_notebook, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]


@pytest.fixture(scope="module")
def nbdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("notebooks")
    tiny_notebook(d / "fast.ipynb", "print('fast done')")
    # The marker file tells the test the kernel is inside the long cell.
    tiny_notebook(d / "sleepy.ipynb", "import os, time\nopen(os.environ['PB_TEST_MARKER'], 'w').close()\ntime.sleep(300)")
    return d


def _params(tmp_path: Path) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text("service: interrupt-test\nenvironment: test\nwindow: {since: -5m, until: now}\n")
    return p


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run_files(out: Path) -> dict[str, str]:
    """Checksums of the files in run folders (not the archive index at the top, which every batch rebuilds)."""
    return {k: v for k, v in _checksums(out).items() if "/" in k}


def _run_dirs(out: Path) -> list[Path]:
    return sorted(d for d in out.glob("*/*") if d.is_dir())


def _assert_whole_files(d: Path) -> None:
    leftovers = [p for p in d.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".work-")]
    assert not leftovers, f"half-written or work files left: {leftovers}"
    for p in d.iterdir():
        if p.suffix in (".json", ".ipynb"):
            json.loads(p.read_text(encoding="utf-8"))  # whole
        elif p.suffix == ".html":
            assert p.read_text(encoding="utf-8").rstrip().endswith("</html>"), f"{p.name} is cut short"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One outputs root for both cases: the second finds the first's run in the same day."""
    return tmp_path_factory.mktemp("outputs") / "out"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_batch_leaves_an_honest_folder(tmp_path, nbdir, out, sig):
    params = _params(tmp_path)
    env = dict(os.environ, PERFBOOK_NOTEBOOKS=str(nbdir), PB_TEST_MARKER=str(tmp_path / "sleeping"))

    if not _run_dirs(out):
        # An earlier run of the same day, as a batch leaves it (the second case also finds the first
        # case's real run here): the new run must not touch it.
        from datetime import datetime
        day = out / datetime.now().astimezone().strftime("%Y-%m-%d")
        for name in ("000001-p", "000001-p-2"):
            earlier_run = day / name
            earlier_run.mkdir(parents=True)
            (earlier_run / "manifest.json").write_text('{"status": "complete"}')
            (earlier_run / "index.html").write_text("<!DOCTYPE html><html><body>earlier</body></html>")
            (earlier_run / "findings.json").write_text("[]")
    before = _run_files(out)
    earlier = set(_run_dirs(out))
    assert before and earlier

    proc = subprocess.Popen(PERFBOOK + ["batch", "-p", str(params), "--outputs", str(out), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        run_dir = wait_for(lambda: [d for d in _run_dirs(out) if d not in earlier], 60, "the run folder")[0]

        # While it runs, the folder says it is incomplete.
        manifest = wait_for(lambda: _json(run_dir / "manifest.json"), 30, "a manifest")
        assert manifest["status"] == "running"
        assert "still running" in (run_dir / "index.html").read_text()

        # Wait until `fast` has finished (recorded in the manifest) and `sleepy` sleeps in its kernel.
        wait_for(lambda: (tmp_path / "sleeping").exists(), 90, "the sleepy kernel")
        wait_for(lambda: {n["section"]: n["status"] for n in _json(run_dir / "manifest.json")["notebooks"]}
              .get("fast") == "ok", 60, "fast to finish")
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("ipykernel" in " ".join(c.cmdline()) for c in family), [c.cmdline() for c in family]

        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, stderr
    assert f"Report: {run_dir / 'index.html'}" in stdout

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["exit_code"] == 130
    status = {n["section"]: n["status"] for n in manifest["notebooks"]}
    assert status == {"fast": "ok", "sleepy": "interrupted"}

    index = (run_dir / "index.html").read_text()
    assert "interrupted" in index and "incomplete" in index
    assert "Finished: fast." in index and "Not finished: sleepy." in index
    assert (run_dir / "fast.html").exists() and (run_dir / "fast.ipynb").exists()
    assert "interrupted" in (run_dir / "sleepy.html").read_text()
    _assert_whole_files(run_dir)

    # No orphan: the notebook processes, their kernels and everything under them are gone.
    time.sleep(0.5)
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline() for p in alive]

    # Earlier runs untouched (the day folder may hold runs of the same second: "-2").
    after = _run_files(out)
    assert {k: after.get(k) for k in before} == before
    assert set(_run_dirs(out)) == earlier | {run_dir}
    # The archive index (outputs/index.html, rebuilt by every batch) lists this run as interrupted.
    archive = (out / "index.html").read_text(encoding="utf-8")
    assert archive.rstrip().endswith("</html>") and f"{run_dir.parent.name}/{run_dir.name}/index.html" in archive
    assert "interrupted" in archive


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- the runner itself fails

FAULT_SECRET = 'Fault9"Secret\\Pw-77'


def test_a_runner_failure_stops_everything_and_leaves_nothing_unredacted(tmp_path, monkeypatch, capsys):
    """Disk full while publishing one notebook: the other notebook (its kernel and the child
    process it started, as a load test starts locust) is stopped, manifest.json is `failed`
    with the reason, the exit status is 4, and no unredacted byte is left under outputs/
    (the work files live in a temp folder outside it, removed)."""
    import errno
    import tempfile
    from urllib.parse import quote

    from perfbook import cli, runner
    from perfbook.report import Redactor

    nbd = tmp_path / "notebooks"
    nbd.mkdir()
    # `leaky` shows the secret every way a notebook can; `sleepy` starts a child and sleeps.
    tiny_notebook(nbd / "leaky.ipynb",
              "import os, json\nfrom IPython.display import HTML, display\nv = os.environ['PB_FAULT_DB']\n"
              "print(v)\nprint(json.dumps({'dsn': v}))\ndisplay(HTML('<b>%s</b>' % v))\nv")
    tiny_notebook(nbd / "sleepy.ipynb",
              "import os, subprocess, time\nchild = subprocess.Popen(['sleep', '300'])\n"
              "open(os.environ['PB_TEST_CHILD'], 'w').write(str(child.pid))\ntime.sleep(300)")
    dsn = f"postgresql://app:{quote(FAULT_SECRET, safe='')}@127.0.0.1:1/shop"
    params = tmp_path / "p.yaml"
    params.write_text("service: fault-test\nenvironment: test\nwindow: {since: -5m, until: now}\n"
                      "targets: {database_env: PB_FAULT_DB}\n")
    marker = tmp_path / "child.pid"
    work_root = tmp_path / "tmp"
    work_root.mkdir()
    monkeypatch.setenv("PB_FAULT_DB", dsn)
    monkeypatch.setenv("PB_TEST_CHILD", str(marker))
    monkeypatch.setenv("PERFBOOK_NOTEBOOKS", str(nbd))
    monkeypatch.setattr(tempfile, "tempdir", str(work_root))  # where the runner's work folder goes

    real_write_new = runner.write_new
    seen_work: list[Path] = []

    def disk_full(path, data, verify=None):
        if Path(path).name == "leaky.ipynb":
            wait_for(lambda: marker.exists() and marker.read_text(), 240, "sleepy's child process")
            # Mid-run: the notebooks' work files are in the temp folder, none under outputs/.
            seen_work.extend(work_root.glob("perfbook-work-*/*.ipynb"))
            assert not [w for w in out.rglob("*") if "work" in w.name], list(out.rglob("*"))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write_new(path, data, verify)

    monkeypatch.setattr(runner, "write_new", disk_full)
    out = tmp_path / "out"
    code = cli.main(["batch", "-p", str(params), "--outputs", str(out), "--jobs", "2"])
    captured = capsys.readouterr()
    assert code == runner.EXIT_RUNNER_FAILED == 4, captured.err
    assert "No space left on device" in captured.err

    (run_dir,) = _run_dirs(out)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and manifest["exit_code"] == 4
    assert "OSError" in manifest["error"] and "No space left on device" in manifest["error"]
    status = {n["section"]: n["status"] for n in manifest["notebooks"]}
    assert status["sleepy"] == "interrupted", status
    assert "perfbook itself failed" in (run_dir / "sleepy.html").read_text(encoding="utf-8")
    index = (run_dir / "index.html").read_text(encoding="utf-8")
    assert "perfbook itself failed" in index and "No space left on device" in index
    _assert_whole_files(run_dir)

    # The child the sleepy kernel started (as locust would be) is gone, and so is every kernel.
    pid = int(marker.read_text())
    time.sleep(0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    left = [c for c in psutil.Process().children(recursive=True)
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
            and any(k in " ".join(c.cmdline()) for k in ("perfbook.execute", "ipykernel", "sleep"))]
    assert not left, [c.cmdline() for c in left]

    # No unredacted byte under outputs/, nor a work folder anywhere.
    forms = Redactor([FAULT_SECRET])._escaped(FAULT_SECRET) | {"Fault9"}
    for p in out.rglob("*"):
        if p.is_file():
            data = p.read_text(encoding="utf-8", errors="replace")
            assert not [f for f in forms if f in data], f"secret in {p}"
    assert seen_work, "the work files were not in the temp folder"
    assert not list(work_root.glob("perfbook-work-*")), "work folder left behind"
