"""Property: no params input makes `perfbook check-params` print a traceback.

Whatever the file holds — a valid params dict with random values put at random places, random
YAML-ish text, random bytes, random `-P key=value` overrides — `perfbook check-params` either
accepts it (exit 0, one `FILE: ok — ...` line on stdout) or refuses it with exactly one line
`perfbook: FILE: field: problem` on stderr and exit 2. Called in-process (`perfbook.cli.main`)
for speed; tests/unit/test_params_corpus.py runs some through a real process.

PERFBOOK_HYPOTHESIS_EXAMPLES raises the number of examples (default 100 per property) for a
longer hunt; under CI=true the examples are derandomized so a run is reproducible.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from perfbook import cli
from perfbook.params import Params

EXAMPLES = int(os.environ.get("PERFBOOK_HYPOTHESIS_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORKDIR = Path(tempfile.mkdtemp(prefix="perfbook-params-prop-"))
FILE = WORKDIR / "params.yaml"

# A valid, complete params dict: every field present, so mutations reach every validator.
FULL = Params(service="x").model_dump(mode="json", by_alias=True)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(FULL) if p]
FIELD_NAMES = sorted({str(k) for p in PATHS for k in p if isinstance(k, str)})

EDGE_STRINGS = [
    "", " ", "now", "-30m", "-0m", "-99999999999999d", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00",
    "2025-10-31T15:00:00Z", "yesterday", "200ms", "1e400", "-1s", "9" * 400, "512MB", "0B", "-5GiB", "1.5TiB",
    "http://127.0.0.1:1/", "http://[::1", "http://x:99999", "https://u:pw@h/", "ftp://x", "//x", "/x", "x",
    "default", "DATABASE_URL", "postgres://u:p@h/db", "a=b", "{a=\"b\"}", "p(95)<1000", "p(95) < 1s",
    "${http_duration}", "${nope}", "\ud800", "a\nb", "a\x0bb", "a\u2028b", "\x00", "</script><script>alert(1)</script>",
    "&amp;", "GET", "FETCH", "stress", "load", ".nan", ".inf", "true", "null", "~", "x" * 5000,
]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.sampled_from([0, 1, -1, 2 ** 63, -(2 ** 63), 10 ** 400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(EDGE_STRINGS),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)), inner, max_size=4),
                      max_leaves=12)


@st.composite
def mutated_params(draw) -> dict:
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = data
        try:
            for k in path[:-1]:
                node = node[k]
            if draw(st.integers(0, 9)) == 0 and isinstance(node, dict):
                del node[path[-1]]  # a missing field
            else:
                node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            pass
    if draw(st.booleans()):
        data[draw(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)))] = draw(values)
    return data


YAML_TOKENS = ["service: a", "service:", "targets:", "  base_url: http://127.0.0.1:1", "  metrics_urls: [", "window:",
               "  since: -30m", "endpoints:", "  - route: /x", "    targets: {p50: 1s, p95: 2s, p99: 3s}", "settings:",
               "  probes: {count: 3}", "thresholds: {cpu_percent: {warning: 90, critical: 80}}", "&a ", "*a", "<<: *a",
               "{", "}", "[", "]", ": ", ", ", "- ", "? ", "\n", "\n  ", "\t", "'", '"', "!!str ", "!!binary ",
               "!!python/name:os.system", "---\n", "...\n", "# c\n", "%YAML 1.1\n", "\\u0000", "\ufeff", "|\n  ", ">-\n"]
yamlish = st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6)), max_size=30).map("".join)


def check(argv_extra: list[str] | None = None, path: Path = FILE) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["check-params", str(path), *(argv_extra or [])])
    return rc, out.getvalue(), err.getvalue()


def assert_one_line(rc: int, out: str, err: str, path: Path = FILE, prefix: str | None = None) -> None:
    assert rc in (0, 2), (rc, out, err)
    if rc == 0:
        assert err == "" and out.startswith(f"{path}: ok — ") and out.count("\n") == 1, out
        out.encode("utf-8")  # printable on a UTF-8 terminal
        return
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1, err
    line = err[:-1]
    assert len(line.splitlines()) == 1, line  # no \r, \x0b, \u2028 ... inside the line either
    assert line.startswith(prefix or f"perfbook: {path}: "), line
    rest = line[len(prefix or f"perfbook: {path}: "):]
    field, sep, problem = rest.partition(": ")
    assert sep and field and problem.strip(), line
    assert "Traceback" not in line
    line.encode("utf-8")  # no lone surrogate reaches the terminal


def _write(data) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True, width=200)
    except (yaml.YAMLError, RecursionError):
        assume(False)
    FILE.write_text(text, encoding="utf-8", errors="surrogatepass")


@SETTINGS
@given(mutated_params())
def test_random_values_anywhere_in_a_valid_file(data):
    _write(data)
    assert_one_line(*check())


@SETTINGS
@given(values)
def test_random_yaml_documents(data):
    _write(data)
    assert_one_line(*check())


@SETTINGS
@given(yamlish)
def test_random_yaml_ish_text(text):
    FILE.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_one_line(*check())


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(data):
    FILE.write_bytes(data)
    assert_one_line(*check())


@SETTINGS
@given(st.lists(st.tuples(st.one_of(st.sampled_from(["service", "window.since", "settings.probes.count", "targets",
                                                      "targets.base_url", "endpoints", "settings.load_test.users",
                                                      "thresholds.cpu_percent.warning", "a.b.c", "", ".", "service.x"]),
                                     st.text(max_size=12)),
                           st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=12))), max_size=3))
def test_random_overrides(pairs):
    FILE.write_text("service: a\n", encoding="utf-8")
    extra = []
    for key, value in pairs:
        extra += ["-P", f"{key}={value}" if "=" not in key else key]
    try:
        rc, out, err = check(extra)
    except SystemExit as exc:  # argparse refusing an argument (e.g. one starting with '-'): its usage, exit 2
        assert exc.code == 2
        return
    # A bad override names the override (`-P`), not the file.
    if rc == 2 and err.startswith("perfbook: -P: "):
        assert_one_line(rc, out, err, prefix="perfbook: -P: ")
    else:
        assert_one_line(rc, out, err)


def test_the_strategies_reach_the_validators():
    """Not vacuous: mutations of the valid file do hit refusals of several kinds."""
    _write({**FULL, "window": {"since": "now", "until": "-30m"}})
    rc, _, err = check()
    assert rc == 2 and ": window: " in err
    FILE.write_text(yaml.safe_dump(FULL), encoding="utf-8")
    rc, out, _ = check()
    assert rc == 0 and "ok" in out


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    _write({"service": "a", "thresholds": {"cpu_percent": {"warning": value, "critical": 90}}})
    rc, _, err = check()
    assert rc == 2 and re.search(r"thresholds\.cpu_percent\.warning: .*finite", err), err
