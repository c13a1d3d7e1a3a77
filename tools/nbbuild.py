"""Build the section notebooks: notebooks/<section>.py (the source) → notebooks/<section>.ipynb.

The sources are jupytext percent-format scripts: ``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell (its lines commented with ``# ``), and the one ``# %% tags=["parameters"]`` cell is the
parameters cell papermill fills in. The built notebook is what the runner, ``perfbook lab`` and Lab
open: its cells in order with stable ids c00, c01, ..., kernelspec python3, no outputs, no execution
counts, and no metadata but the cells' tags, so a rebuild of an unchanged source is byte-identical.

    python tools/nbbuild.py            rebuild every notebooks/*.ipynb from its .py (make notebooks)
    python tools/nbbuild.py --check    exit 1, naming them, if a committed .ipynb is not its build
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources(nb_dir: Path = NOTEBOOKS) -> list[Path]:
    """The notebook sources, notebooks/*.py, sorted."""
    return sorted(nb_dir.glob("*.py"))


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook built from one percent-format source."""
    read = jupytext.read(source, fmt="py:percent")
    nb = new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(read.cells):
        src = cell.source.strip("\n")
        extra = set(cell.metadata) - {"tags"}
        if extra:
            raise ValueError(f"{source.name}: cell {i} has metadata other than tags: {sorted(extra)}")
        if cell.cell_type == "markdown":
            new = new_markdown_cell(src)
        elif cell.cell_type == "code":
            new = new_code_cell(src)
        else:
            raise ValueError(f"{source.name}: cell {i} is a {cell.cell_type} cell (only code and markdown)")
        if cell.metadata.get("tags"):
            new.metadata["tags"] = list(cell.metadata["tags"])
        new.id = f"c{i:02d}"
        nb.cells.append(new)
    return nb


def render(source: Path) -> str:
    """The exact text of the built .ipynb (as nbformat.write writes it)."""
    text = nbformat.writes(build(source))
    return text if text.endswith("\n") else text + "\n"


def target(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def stale(nb_dir: Path = NOTEBOOKS) -> list[str]:
    """Names of the notebooks that differ from their build, or have no source, or no notebook."""
    bad = [target(s).name for s in sources(nb_dir)
           if not target(s).exists() or target(s).read_text(encoding="utf-8") != render(s)]
    bad += [p.name for p in sorted(nb_dir.glob("*.ipynb")) if not p.with_suffix(".py").exists()]
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that every .ipynb is its build")
    a = ap.parse_args(argv)
    if a.check:
        bad = stale()
        for name in bad:
            print(f"nbbuild: notebooks/{name} is not the build of its .py (run `make notebooks`)", file=sys.stderr)
        return 1 if bad else 0
    for s in sources():
        text = render(s)
        t = target(s)
        if not t.exists() or t.read_text(encoding="utf-8") != text:
            t.write_text(text, encoding="utf-8")
            print(f"nbbuild: wrote notebooks/{t.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
