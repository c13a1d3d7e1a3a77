"""The corpus of malformed params files (tests/fixtures/bad_params/): each gives exactly one line,
`perfbook: FILE: field: problem`, on stderr and exit 2 — the line listed for it in expected.tsv.

These add to the 44 inline cases of test_params.py: bytes that are not UTF-8, YAML that PyYAML
accepts but no params file means (cycles, alias bombs, 20,000 levels of nesting, duplicate keys,
lone surrogates, control characters in keys), non-finite and out-of-range numbers and times,
and wrong values in every section of `settings`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfbook import cli

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "bad_params"


def _expected() -> list[tuple[str, str, str]]:
    rows = []
    for line in (CORPUS / "expected.tsv").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, field, problem = line.split("\t")
            rows.append((name, field, problem))
    return rows


EXPECTED = _expected()


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.glob("*.yaml")}
    listed = {name for name, _, _ in EXPECTED}
    assert files == listed, f"without an expected line: {files - listed}; listed without a file: {listed - files}"
    assert len(files) >= 30


@pytest.mark.parametrize("name,field,problem", EXPECTED, ids=[r[0] for r in EXPECTED])
def test_bad_params_file_gives_its_one_line(capsys, name, field, problem):
    path = CORPUS / name
    assert cli.main(["check-params", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"perfbook: {path}: {field}: {problem}\n"


@pytest.mark.parametrize("name", ["invalid_utf8.yaml", "yaml_recursion_bomb.yaml", "lone_surrogate.yaml",
                                  "line_separator_key.yaml", "billion_laughs.yaml"])
def test_through_a_real_process(tmp_path, name):
    """The same line from the installed command, with nothing written (batch refuses before any kernel)."""
    path = CORPUS / name
    want = next(f"perfbook: {path}: {field}: {problem}" for n, field, problem in EXPECTED if n == name)
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "batch", "-p", str(path), "--outputs",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=dict(os.environ))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [want]
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not (tmp_path / "out").exists()
