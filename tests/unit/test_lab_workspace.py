"""`perfbook lab`'s workspace, save hook and `perfbook report FOLDER`; the pre-commit hook (no Lab started:
tests/integration/test_lab.py drives the real UI)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from perfbook import lab
from perfbook.findings import MIME_TYPE, Finding
from perfbook.runner import EXIT_BAD_INPUT, BadInput

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "params" / "demo.yaml"


def test_workspace_holds_filled_in_copies_and_its_own_lab_config(tmp_path):
    ws = lab.make_workspace(DEMO, tmp_path / "out", incident="INC-7", since="-30m")
    assert ws.parent.parent == tmp_path / "out" and ws.name.endswith("-lab-INC-7")
    names = sorted(p.name for p in ws.glob("*.ipynb"))
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    nb = nbformat.read(str(ws / "database.ipynb"), as_version=4)
    assert lab.read_parameters(nb) == {"params_file": str(DEMO), "since": "-30m", "until": None,
                                       "incident": "INC-7", "overrides": "{}", "resolved_params": None,
                                       "since_snapshot": None}
    src = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert src.startswith("# Parameters")  # the comments stay
    settings = json.loads((ws / ".jupyter" / "labconfig" / "default_setting_overrides.json").read_text())
    assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert settings["@jupyterlab/notebook-extension:tracker"]["autoStartDefaultKernel"] is True
    assert "perfbook.lab.pre_save_hook" in (ws / ".jupyter" / "jupyter_server_config.py").read_text()
    env = lab.lab_env(ws, DEMO, "tok", {"X": "1"})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0] == str(ws / ".jupyter")
    assert Path(env["JUPYTERLAB_WORKSPACES_DIR"]).parent.parent == ws and env["X"] == "1"
    cmd = lab.lab_command(ws, 1234)
    assert f"--ServerApp.root_dir={ws}" in cmd and ("--allow-root" in cmd) == (os.geteuid() == 0)


def test_save_hook_redacts_the_params_secrets_in_every_string(tmp_path, monkeypatch):
    secret = "s3cr3t-Pa55word-xyz"
    monkeypatch.setenv("PERFBOOK_DEMO_DATABASE_URL", f"postgresql://perfbook:{secret}@db.internal:5432/app")
    monkeypatch.setenv(lab.PARAMS_ENV, str(DEMO))
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"dsn = '{secret}'")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=[f"connected with {secret[:8]}", f"{secret[8:]}\n"]),
                    nbformat.v4.new_output("display_data", data={"text/html": f"<b>{secret}</b>", "text/plain": secret})]
    nb.cells.append(cell)
    model = {"type": "notebook", "content": json.loads(json.dumps(nb))}
    lab.pre_save_hook(model=model, path="x.ipynb", contents_manager=None)
    text = nbformat.writes(model["content"])
    assert secret not in text and secret.replace("-", "") not in text
    assert "[REDACTED]" in text
    file_model = {"type": "file", "content": secret}
    lab.pre_save_hook(model=file_model, path="x.txt")
    assert file_model["content"] == secret  # only notebooks are touched


def _ran(nb_path: Path, findings: list[Finding], error: bool = False) -> None:
    nb = nbformat.read(str(nb_path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].execution_count = 1
    code[1].execution_count = 2
    code[1].outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": "<div class='perfbook-header'>h</div>",
        "text/plain": "perfbook x — demo-api (demo) — window 2026-12-06 03:00:00 → 2026-12-06 03:15:00 UTC"})]
    code[1].outputs += [nbformat.v4.new_output("display_data", data={"text/plain": f.title, "text/html": f"<p>{f.title}</p>",
                                                                     MIME_TYPE: f.to_dict()}) for f in findings]
    if error:
        code[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    nbformat.write(nb, str(nb_path))


def test_report_of_a_workspace_like_a_batch(tmp_path, monkeypatch):
    ws = lab.make_workspace(DEMO, tmp_path / "out", incident="INC-8")
    with pytest.raises(BadInput, match="no notebook has been run"):
        lab.report_workspace(ws)
    _ran(ws / "database.ipynb", [Finding("db.slow_query", "critical", "SELECT slow", section="database")])
    _ran(ws / "quick-diagnostics.ipynb", [Finding("latency.slo_breach", "warning", "GET / slow",
                                                  section="quick-diagnostics")], error=True)
    index = lab.report_workspace(ws)
    assert index == ws / "index.html"
    findings = json.loads((ws / "findings.json").read_text())
    assert [f["code"] for f in findings] == ["db.slow_query", "latency.slo_breach"]
    manifest = json.loads((ws / "manifest.json").read_text())
    assert [(n["section"], n["status"]) for n in manifest["notebooks"]] == [("quick-diagnostics", "failed"), ("database", "ok")]
    assert "bottlenecks" in manifest["not_run"] and manifest["header"]["params"] == str(DEMO)
    assert manifest["header"]["window (UTC)"] == "2026-12-06 03:00:00 → 2026-12-06 03:15:00 UTC"
    page = index.read_text()
    assert "database.html" in page and "INC-8" in page and "SELECT slow" in page
    assert "SELECT slow" in (ws / "database.html").read_text()
    lab.report_workspace(ws)  # again, after more investigation: the files are refreshed
    from perfbook.cli import main
    assert main(["report", str(tmp_path / "nope")]) == EXIT_BAD_INPUT


@pytest.mark.skipif(not shutil.which("git"), reason="git is needed for a hook")
def test_pre_commit_hook_refuses_notebooks_with_outputs(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    run = lambda *a: subprocess.run(a, cwd=repo, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("1 + 1"))
    nbformat.write(nb, str(repo / "notebooks" / "a.ipynb"))
    run("git", "add", "notebooks/a.ipynb")
    hook = str(ROOT / "tools" / "pre-commit")
    assert run(hook).returncode == 0
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nbformat.write(nb, str(repo / "notebooks" / "a.ipynb"))
    run("git", "add", "notebooks/a.ipynb")
    res = run(hook)
    assert res.returncode == 1 and "notebooks/a.ipynb" in res.stderr
    (repo / "other.ipynb").write_text((repo / "notebooks" / "a.ipynb").read_text())  # outside notebooks/: fine
    run("git", "reset", "-q", "notebooks/a.ipynb")
    run("git", "add", "other.ipynb")
    assert run(hook).returncode == 0
