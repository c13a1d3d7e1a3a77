"""Layers one way (issue 18): every import inside lib/perfbook, read with ``ast`` (module
level and inside functions alike), must point down this order, and no import cycle may
exist among perfbook's modules:

    entry points (cli, demo_cli, lab, demo/)
      → runner (runner, execute, baseline, processes)
        → notebook API (notebook, plots/)
          → presentation (report, tables)
            → sources/ (I/O)  and  checks/ (pure), which never import each other
              → shared pure helpers (promql, sql)
                → base (the package itself, params, findings)

A module may import modules of a lower layer, and modules of its own layer (its own
package for sources/ and checks/) as long as no cycle forms. ``checks/`` performs no I/O:
no network, database, process or file modules, no ``open()``, no ``Path.read_text()``
and the like.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "lib" / "perfbook"

#: (layer name, rank, module-name prefixes). Higher rank imports lower rank.
LAYERS = [
    ("entry", 6, ("perfbook.cli", "perfbook.demo_cli", "perfbook.lab", "perfbook.listen", "perfbook.demo")),
    ("runner", 5, ("perfbook.runner", "perfbook.execute", "perfbook.baseline", "perfbook.processes",
                "perfbook.tasks", "perfbook.executors", "perfbook.fleet")),
    ("notebook API", 4, ("perfbook.notebook", "perfbook.plots")),
    ("presentation", 3, ("perfbook.report", "perfbook.tables")),
    ("sources", 2, ("perfbook.sources",)),
    ("checks", 2, ("perfbook.checks",)),
    ("shared", 1, ("perfbook.promql", "perfbook.rules", "perfbook.sql", "perfbook.web", "perfbook.compare")),
    ("base", 0, ("perfbook.params", "perfbook.findings")),
]

#: Modules checks/ must not import (network, databases, processes, files).
IO_MODULES = ("socket", "ssl", "requests", "urllib3", "urllib.request", "http.client", "httpx", "aiohttp",
              "psycopg", "psycopg2", "redis", "subprocess", "shutil", "tempfile", "glob", "io",
              "pathlib", "os", "smtplib", "ftplib", "sqlite3", "multiprocessing", "concurrent.futures")
#: Calls checks/ must not make (built-in open and Path's file methods).
IO_CALLS = ("open",)
IO_METHODS = ("read_text", "write_text", "read_bytes", "write_bytes", "open", "unlink", "mkdir", "touch",
              "iterdir", "glob", "rglob")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel / "__init__.py").exists()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute and relative, anywhere in the file): (name, line)."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # ``from perfbook.sources import prometheus`` imports a module
                sub = f"{mod}.{a.name}"
                out.append((sub if mod.startswith("perfbook") and _exists(sub) else mod, node.lineno))
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    """perfbook module → the perfbook modules it imports (with the line), once per line."""
    return {module_name(p): sorted({(m, line) for m, line in imports_of(p)
                                    if (m == "perfbook" or m.startswith("perfbook.")) and m != module_name(p)})
            for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> tuple[str, int] | None:
    if module == "perfbook":
        return ("base", 0)
    for name, rank, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name, rank
    return None


def test_every_module_has_a_layer():
    missing = [m for m in graph() if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_imports_point_down():
    bad = []
    for mod, edges in graph().items():
        here = layer_of(mod)
        for target, line in edges:
            there = layer_of(target)
            if here is None or there is None:
                continue
            if here[0] != there[0] and (there[1] > here[1] or {here[0], there[0]} == {"sources", "checks"}):
                bad.append(f"{mod} (line {line}, layer {here[0]}) imports {target} (layer {there[0]})")
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)


def find_cycles(g: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in g.get(v, []):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    g = graph()
    cycles = find_cycles(g)
    described = []
    for comp in cycles:
        edges = [f"{a} -> {b} (line {line})" for a in comp for b, line in g[a] if b in comp]
        described.append(", ".join(edges))
    assert not cycles, "import cycles among perfbook modules:\n  " + "\n  ".join(described)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "perfbook"
    (pkg / "checks").mkdir(parents=True)
    (pkg / "sources").mkdir()
    for f in ("__init__.py", "checks/__init__.py", "sources/__init__.py", "sources/prometheus.py", "findings.py"):
        (pkg / f).write_text("")
    (pkg / "checks" / "bad.py").write_text("from ..findings import Finding\n"
                                          "def f():\n    from ..sources.prometheus import render\n")
    globals()["ROOT"], saved = pkg, ROOT  # module_name() and _exists() read ROOT
    try:
        assert imports_of(pkg / "checks" / "bad.py") == [("perfbook.findings", 1), ("perfbook.sources.prometheus", 3)]
    finally:
        globals()["ROOT"] = saved


def test_cycle_finder_finds_a_cycle():
    g = {"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}
    assert find_cycles(g) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted((ROOT / "checks").rglob("*.py")),  # packages too (checks/database/)
                         ids=lambda p: str(p.relative_to(ROOT / "checks")))
def test_checks_do_no_io(path):
    bad = []
    for name, line in imports_of(path):
        if any(name == m or name.startswith(m + ".") for m in IO_MODULES):
            bad.append(f"line {line}: imports {name}")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in IO_CALLS:
                bad.append(f"line {node.lineno}: calls {f.id}()")
            elif isinstance(f, ast.Attribute) and f.attr in IO_METHODS:
                bad.append(f"line {node.lineno}: calls .{f.attr}()")
    assert not bad, f"{module_name(path)} does I/O (checks/ is pure):\n  " + "\n  ".join(bad)
