"""One source for every threshold (issue 18 point 2).

A check that carries its own number in its signature (``slow_queries(mean_ms=20.0)``) has a
second default beside the params' (``settings.database.slow_query_mean: 0.020``): the two
drift apart, and ``-P`` reaches only one of them. So the public functions of the modules
in :data:`CHECKED` take the settings model, or keyword-only bars without defaults; only
display knobs (:data:`DISPLAY_ONLY`) keep a number. Then: a ``-P settings.database.x=...``
override reaches the params and changes a check's verdict on recorded input.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import database as D
from perfbook.params import Database, ParamsError, load, parse_override

LIB = Path(__file__).resolve().parents[2] / "lib" / "perfbook"
RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"

#: Modules whose public functions must take their thresholds from the params (files, or
#: packages: every module under them): every check.
CHECKED = ["checks"]

#: Parameters that only shape what is shown (how many rows, how wide, how much of a
#: snapshot to walk), never a verdict.
DISPLAY_ONLY = {"top_n", "n", "width", "top", "max_nodes"}


def _modules() -> list[Path]:
    out = []
    for rel in CHECKED:
        path = LIB / rel
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


def _numeric_constants(tree: ast.Module) -> set[str]:
    """Module-level UPPER_CASE names bound to a number (``MIN_GAIN = 0.10``), not to a label."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name) and t.id.isupper() and value is not None and _is_number(value, set()):
                names.add(t.id)
    return names


def _is_number(node: ast.expr, constants: set[str]) -> bool:
    """A numeric literal (``20.0``, ``-1``, ``1 << 20``, ``7 * 86400``), or a module constant
    standing for one (``POOL_WAIT_WARNING``; an imported UPPER_CASE name counts too)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand, constants)
    if isinstance(node, ast.BinOp):
        return _is_number(node.left, constants) and _is_number(node.right, constants)
    if isinstance(node, ast.Name):
        return node.id in constants
    return isinstance(node, ast.Attribute) and node.attr.isupper()


def _public_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    """Top-level public functions and the public methods of top-level classes."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            out.append(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            out.extend(m for m in node.body if isinstance(m, ast.FunctionDef) and not m.name.startswith("_"))
    return out


def numeric_defaults(path: Path) -> list[str]:
    """``line function(param=default)`` for every numeric default of a public function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = _numeric_constants(tree)
    found = []
    for fn in _public_functions(tree):
        a = fn.args
        positional = a.posonlyargs + a.args
        pairs = [*zip(positional[len(positional) - len(a.defaults):], a.defaults),
                 *((k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)]
        found += [f"{fn.lineno} {fn.name}({arg.arg}={ast.unparse(d)})"
                  for arg, d in pairs if arg.arg not in DISPLAY_ONLY and _is_number(d, constants)]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(LIB)))
def test_no_threshold_default_in_a_check_signature(path):
    found = numeric_defaults(path)
    assert not found, (f"a threshold in a signature of {path.relative_to(LIB)} is a second default beside the "
                       f"params'; take it from the settings model (or keyword-only, no default), line:\n  "
                       + "\n  ".join(found))


def test_the_scan_sees_numbers_however_written(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("LIMIT = 5\nLABEL = 'overall'\n"
                 "def a(x, bar=0.2, *, top_n=10, flag=True, name='x', none=None, label=LABEL): ...\n"
                 "def b(x, size=1 << 20, neg=-1, limit=LIMIT): ...\n"
                 "def _private(x, bar=0.2): ...\n"
                 "class C:\n    def m(self, k=3): ...\n")
    assert [s.split(" ", 1)[1] for s in numeric_defaults(f)] == [
        "a(bar=0.2)", "b(size=1 << 20)", "b(neg=-1)", "b(limit=LIMIT)", "m(k=3)"]


#: Fields of ``settings.database`` that are not bars a finding is judged by.
NOT_THRESHOLDS = {"statement_timeout", "lock_timeout", "top_n"}


def test_every_database_threshold_says_where_its_number_comes_from():
    bare = [name for name, f in Database.model_fields.items()
            if f.annotation in (int, float) and name not in NOT_THRESHOLDS and not f.description]
    assert not bare, f"settings.database fields without a description (the source of the number): {bare}"


# --------------------------------------------------------------------------- -P reaches the checks


@pytest.fixture
def params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("service: x\n")
    return f


def database_settings(params_file: Path, *overrides: str) -> Database:
    """``settings.database`` as ``perfbook -P <override> ...`` would load it."""
    return load(params_file, dict(parse_override(o) for o in overrides)).settings.database


@pytest.fixture(scope="module")
def incident() -> dict[str, pd.DataFrame]:
    """The pg views recorded from the demo's incident (tests/fixtures/postgres/record.py)."""
    d = json.loads((RECORDED / "incident.json").read_text())
    out = {}
    for k in ("statements", "tables", "pool"):
        out[k] = pd.DataFrame(d[k]["records"], columns=d[k]["columns"])
        out[k].attrs.update(d[k]["attrs"])
    return out


def test_pool_bars_from_P_change_the_verdict(params_file, incident):
    pool = incident["pool"]  # a pool of 2, full, p95 wait 144 ms and 26 ms, waiting 6 % of the window
    [f] = D.pool_saturation(pool, database_settings(params_file))[1]
    assert f.severity == "warning"
    s = database_settings(params_file, "settings.database.pool_wait_p95=200ms", "settings.database.pool_wait_mean=20ms")
    assert (s.pool_wait_p95, s.pool_wait_mean) == (0.2, 0.02)  # seconds in the params, ms in the check
    [f] = D.pool_saturation(pool, s)[1]
    assert f.severity == "ok"
    [f] = D.pool_saturation(pool, database_settings(params_file, "settings.database.pool_wait_p95_critical=0.1"))[1]
    assert f.severity == "critical"


def test_bloat_bars_from_P_change_the_verdict(params_file, incident):
    tables = incident["tables"]  # sessions: 40 % dead of 75,000 rows
    [f] = [f for f in D.bloat(tables, database_settings(params_file))[1] if f.subject == "sessions"]
    assert f.severity == "warning"
    [f] = D.bloat(tables, database_settings(params_file, "settings.database.bloat_critical_share=0.4"))[1]
    assert f.severity == "critical"
    [f] = D.bloat(tables, database_settings(params_file, "settings.database.bloat_min_rows=100000"))[1]
    assert f.severity == "ok"


def test_slow_query_bar_from_P_is_seconds_everywhere(params_file, incident):
    stmts = incident["statements"]
    s = database_settings(params_file, "settings.database.slow_query_mean=1h")
    _, [f] = D.slow_queries(stmts, s)
    assert f.severity == "ok" and f.evidence["threshold_mean_ms"] == 3_600_000


def test_a_warning_bar_above_its_critical_is_refused(params_file):
    with pytest.raises(ParamsError, match=r"pool_waiting_share \(0\.6\) must not be above pool_waiting_share_critical"):
        database_settings(params_file, "settings.database.pool_waiting_share=0.6")
