"""notebooks/<section>.py (jupytext percent format) is the source of notebooks/<section>.ipynb.

The committed .ipynb must be exactly the build of its .py (tools/nbbuild.py, `make notebooks`), carry
no outputs, start its code with the one parameters cell papermill fills in, and every source must
parse, so a syntax error in a cell fails here rather than in a run.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "tools"))
import nbbuild  # noqa: E402  (tools/ is not a package)

SOURCES = sorted(NOTEBOOKS.glob("*.py"))
#: What the runner and `perfbook lab` set in every notebook's parameters cell.
COMMON_PARAMETERS = {"params_file", "since", "until", "incident", "overrides", "resolved_params"}


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert SOURCES, "no notebooks/*.py"
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert nbbuild.stale() == []


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_the_build_of_its_source(src):
    committed = src.with_suffix(".ipynb").read_text(encoding="utf-8")
    assert committed == nbbuild.render(src), f"notebooks/{src.stem}.ipynb is stale: run `make notebooks`"
    # The same, cell by cell, for a readable failure if the text check above ever loosens.
    built, nb = nbbuild.build(src), nbformat.reads(committed, as_version=4)
    assert nb.metadata == built.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert [(c.id, c.cell_type, c.source, c.metadata) for c in nb.cells] == \
           [(c.id, c.cell_type, c.source, c.metadata) for c in built.cells]
    assert [c.id for c in nb.cells] == [f"c{i:02d}" for i in range(len(nb.cells))]
    nbformat.validate(nb)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(src):
    cells = json.loads(src.with_suffix(".ipynb").read_text(encoding="utf-8"))["cells"]
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None, f"{src.stem} cell {i} has outputs"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_one_parameters_cell_first_among_code_cells(src):
    code = [c for c in nbbuild.build(src).cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], f"{src.stem}: parameters cell(s) at code cells {tagged}, want exactly the first"
    names = {t.id for node in ast.parse(code[0].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    assert names >= COMMON_PARAMETERS, f"{src.stem}: parameters cell lacks {COMMON_PARAMETERS - names}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_source_and_each_cell_parse(src):
    ast.parse(src.read_text(encoding="utf-8"), filename=str(src))
    for i, c in enumerate(nbbuild.build(src).cells):
        if c.cell_type == "code":
            ast.parse(c.source, filename=f"{src.name} cell c{i:02d}")


def test_build_follows_the_source(tmp_path):
    """An edit of the .py shows up in the build: cells, tags, ids; other cell metadata is refused."""
    src = tmp_path / "x.py"
    src.write_text('# %% [markdown]\n# # Title\n#\n# Text.\n\n# %% tags=["parameters"]\na = 1\n\n'
                   "# %%\nb = a + 1\n\n\nc = b\n", encoding="utf-8")
    nb = nbbuild.build(src)
    assert [(c.id, c.cell_type, c.source) for c in nb.cells] == [
        ("c00", "markdown", "# Title\n\nText."), ("c01", "code", "a = 1"), ("c02", "code", "b = a + 1\n\n\nc = b")]
    assert nb.cells[1].metadata == {"tags": ["parameters"]} and nb.cells[2].metadata == {}
    assert jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent").cells[2].source == nb.cells[2].source
    src.write_text("# %% some_key=1\nx = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="metadata other than tags"):
        nbbuild.build(src)


@pytest.mark.skipif(not shutil.which("git"), reason="git is needed for a hook")
def test_pre_commit_hook_refuses_a_notebook_not_built_from_its_source(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "nbbuild.py", repo / "tools" / "nbbuild.py")
    (repo / ".venv" / "bin").mkdir(parents=True)
    shim = repo / ".venv" / "bin" / "python"  # the hook's Python: this one, with jupytext
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)

    def run(*a):
        return subprocess.run(a, cwd=repo, capture_output=True, text=True)

    run("git", "init", "-q")
    src = repo / "notebooks" / "a.py"
    src.write_text('# %% tags=["parameters"]\nx = 1\n\n# %%\nx + 1\n', encoding="utf-8")
    (repo / "notebooks" / "a.ipynb").write_text(nbbuild.render(src), encoding="utf-8")
    run("git", "add", "notebooks")
    hook = str(ROOT / "tools" / "pre-commit")
    res = run(hook)
    assert res.returncode == 0 and not res.stderr, res.stderr
    src.write_text('# %% tags=["parameters"]\nx = 2\n\n# %%\nx + 1\n', encoding="utf-8")
    run("git", "add", "notebooks/a.py")  # the .py edited, the .ipynb not rebuilt
    res = run(hook)
    assert res.returncode == 1 and "notebooks/a.ipynb is not the build" in res.stderr, res.stderr
    (repo / "notebooks" / "a.ipynb").write_text(nbbuild.render(src), encoding="utf-8")
    run("git", "add", "notebooks/a.ipynb")
    res = run(hook)
    assert res.returncode == 0, res.stderr
