"""Issue 18 point 2 (every check but the database ones): one source for every threshold.

A threshold that decides a verdict lives in the params models (settable with
``-P settings.x.y=...``), never as a second default in a check's signature. The AST test
keeps it so; the override tests show a ``-P`` value reaching a check's verdict.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from perfbook.checks import latency as lat, resources
from perfbook.params import load, parse_override
from perfbook.sources import prometheus as prom

CHECKS = Path(__file__).resolve().parents[2] / "lib" / "perfbook" / "checks"
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"

#: Owned by the database thresholds' work (issue 18 point 2, database part), not judged here.
OTHER_OWNER_MODULES = ("database/", "querylog.py", "resources/connections.py")
OTHER_OWNER_FUNCTIONS = {("checklist/answers.py", "answer_pagination"), ("checklist/answers.py", "answer_db_pooling")}

#: Display-only knobs (how many rows, how wide, how much of a snapshot to walk): they decide
#: no verdict, so they may keep a default.
DISPLAY_ONLY = {"top", "top_n", "n", "width", "max_nodes"}


def _scoped_modules() -> list[Path]:
    return sorted(p for p in CHECKS.rglob("*.py")
                  if not str(p.relative_to(CHECKS)).startswith(OTHER_OWNER_MODULES))


def _numeric_constants(tree: ast.Module) -> set[str]:
    """Module-level UPPERCASE names bound to a number (``MIN_GAIN = 0.10``)."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name) and t.id.isupper() and value is not None and _is_number(value, set()):
                names.add(t.id)
    return names


def _is_number(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand, constants)
    if isinstance(node, ast.BinOp):
        return _is_number(node.left, constants) and _is_number(node.right, constants)
    return isinstance(node, ast.Name) and node.id in constants


def _threshold_defaults(source: str, label: str, skip: set[str] = frozenset()) -> list[str]:
    """``label:line function(param=default)`` for each public module-level function (not in
    ``skip``) whose parameter defaults to a number or a numeric UPPERCASE constant."""
    tree = ast.parse(source)
    constants = _numeric_constants(tree)
    found = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_") or fn.name in skip:
            continue
        a = fn.args
        positional = a.posonlyargs + a.args
        pairs = [*zip(positional[len(positional) - len(a.defaults):], a.defaults),
                 *((k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)]
        found += [f"{label}:{fn.lineno} {fn.name}({arg.arg}={ast.unparse(d)})" for arg, d in pairs
                  if arg.arg not in DISPLAY_ONLY and _is_number(d, constants)]
    return found


def test_the_scan_sees_literals_and_numeric_constants_not_labels_or_display_knobs():
    source = ('LIMIT = 0.5\nLABEL = "overall"\n\n'
              'def f(x, q=0.9, *, bar=LIMIT, name=LABEL, top=5):\n    return x\n\n'
              'def _private(q=0.9):\n    return q\n')
    assert _threshold_defaults(source, "m") == ["m:4 f(q=0.9)", "m:4 f(bar=LIMIT)"]


@pytest.mark.parametrize("path", _scoped_modules(), ids=lambda p: str(p.relative_to(CHECKS)))
def test_no_check_carries_a_second_default_for_a_threshold(path):
    rel = str(path.relative_to(CHECKS))
    skip = {name for module, name in OTHER_OWNER_FUNCTIONS if module == rel}
    assert _threshold_defaults(path.read_text(encoding="utf-8"), rel, skip) == [], (
        "a threshold default in a check's signature: make it a params field (settings.py / targets.py, with "
        "its source in description=) and pass it from the caller")


# --------------------------------------------------------------------------- -P reaches the verdict


def _params(tmp_path: Path, *overrides: str):
    """The params file below, loaded with ``-P key=value`` overrides as the CLI parses them."""
    f = tmp_path / "params.yaml"
    f.write_text("service: t\n"
                 "endpoints:\n"
                 "  - {method: GET, route: /api/products, targets: {p50: 20ms, p95: 50ms, p99: 80ms}}\n")
    return load(f, dict(parse_override(o) for o in overrides))


def _recorded_latency(params) -> tuple:
    """The recorded prom-client histogram (two scrapes 10 s apart) against the params'
    endpoints, judged as the quick-diagnostics notebook does: (table, findings)."""
    before = prom.parse_exposition((FIX / "metrics.txt").read_text(), instance="i:1")
    after = prom.parse_exposition((FIX / "metrics.after.txt").read_text(), instance="i:1")
    rates = prom.rates(before, after, seconds=10)
    b = rates[rates["metric"] == "http_request_duration_seconds_bucket"].copy()
    b["value"] = b["increase"]
    d = params.settings.diagnostics
    return lat.histogram_slo_breaches(lat.route_percentiles(lat.served_only(b)), params.endpoints,
                                      min_requests=d.min_requests, critical_factor=d.latency_critical_factor)


def _recorded_latency_findings(params) -> dict[str, str]:
    """Per percentile of GET /api/products, the severity on the recorded histogram."""
    _, found = _recorded_latency(params)
    return {f.evidence["percentile"]: f.severity for f in found if f.subject == "GET /api/products"}


def test_a_p_override_of_the_critical_factor_changes_the_verdict_on_recorded_input(tmp_path):
    default = _recorded_latency_findings(_params(tmp_path))
    assert default["p50"] == "critical"  # ~70 ms against a 20 ms target: over 2x
    loose = _recorded_latency_findings(_params(tmp_path, "settings.diagnostics.latency_critical_factor=10"))
    assert loose["p50"] == "warning"     # still over target, no longer 10x over it


def test_the_verdict_table_states_the_critical_factor_in_force(tmp_path):
    params = _params(tmp_path, "settings.diagnostics.latency_critical_factor=3")
    table, found = _recorded_latency(params)
    verdict = resources.verdict_table(found, lat.endpoint_verdicts(table),
                                      critical_factor=params.settings.diagnostics.latency_critical_factor)
    assert set(verdict.loc[verdict["area"] == "Response time", "critical"]) == {"> 3× target"}


@pytest.mark.parametrize("override,read", [
    ("settings.balance.max_over_mean=1.5", lambda p: p.settings.balance.max_over_mean),
    ("settings.caching.critical_share=0.3", lambda p: p.settings.caching.critical_share),
    ("settings.caching.warming_rise=0.3", lambda p: p.settings.caching.warming_rise),
    ("settings.external.timeout_share=0.1", lambda p: p.settings.external.timeout_share),
    ("settings.load_test.min_gain=0.2", lambda p: p.settings.load_test.min_gain),
    ("settings.load_test.headroom_warning=3", lambda p: p.settings.load_test.headroom_warning),
    ("settings.load_test.min_requests=10", lambda p: p.settings.load_test.min_requests),
    ("settings.load_test.generator_cpu_limit=80", lambda p: p.settings.load_test.generator_cpu_limit),
    ("settings.rate_limiting.peak_quantile=0.95", lambda p: p.settings.rate_limiting.peak_quantile),
    ("settings.diagnostics.min_errors=3", lambda p: p.settings.diagnostics.min_errors),
    ("settings.diagnostics.correlation_min_r=0.7", lambda p: p.settings.diagnostics.correlation_min_r),
    ("settings.diagnostics.correlation_min_points=10", lambda p: p.settings.diagnostics.correlation_min_points),
    ("settings.diagnostics.hot_path_share=0.2", lambda p: p.settings.diagnostics.hot_path_share),
    ("settings.diagnostics.gc_share=0.2", lambda p: p.settings.diagnostics.gc_share),
    ("settings.scaling.scale_in_latency_share=0.4", lambda p: p.settings.scaling.scale_in_latency_share),
])
def test_every_new_threshold_is_settable_with_p(tmp_path, override, read):
    _, value = parse_override(override)
    assert read(_params(tmp_path, override)) == value != read(_params(tmp_path))
