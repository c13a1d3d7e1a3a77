"""ruff finds nothing in lib/, tests/, tools/ and the notebook sources (config: pyproject.toml's [tool.ruff])."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff() -> str:
    beside = Path(sys.executable).parent / "ruff"  # the venv's, a dev dependency
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if not found:
        pytest.fail("ruff is not installed: `make setup` installs the dev dependencies")
    return found


def test_ruff_finds_nothing():
    targets = ["lib", "tests", "tools", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.py"))]
    res = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", *targets],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"ruff check {' '.join(targets)}:\n{res.stdout}{res.stderr}"


def test_ruff_covers_the_notebook_sources_not_the_built_notebooks():
    res = subprocess.run([_ruff(), "check", "--show-files", "notebooks"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    shown = [Path(line.strip()).name for line in res.stdout.splitlines() if line.strip()]
    assert sorted(shown) == sorted(p.name for p in (ROOT / "notebooks").glob("*.py")), res.stdout + res.stderr
