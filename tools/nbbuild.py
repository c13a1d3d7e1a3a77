"""Write a section notebook from a compact list of (kind, source) cells.

Used by the authors of notebooks/ to keep them clean (no outputs, stable ids):
    from tools.nbbuild import write
    write("notebooks/x.ipynb", [("md", "# Title"), ("params", "params_file = ..."), ("code", "...")])
"""
from __future__ import annotations

import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


#: The parameters cell every section notebook starts with (papermill's convention).
PARAMS = """# Parameters (papermill injects these in batch runs).
# since / until set the window (-30m, now, ISO-8601); None keeps the params file's window.
# overrides is the JSON of `-P key.path=value` overrides.
params_file = "../params/demo.yaml"
since = None
until = None
incident = None
overrides = "{}"
"""


def write(path: str, cells: list[tuple[str, str]]) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(cells):
        src = src.strip("\n")
        if kind == "md":
            c = new_markdown_cell(src)
        else:
            c = new_code_cell(src)
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
        c.id = f"c{i:02d}"
        nb.cells.append(c)
    nbformat.write(nb, path)


if __name__ == "__main__":
    sys.exit("import write() from this module")
