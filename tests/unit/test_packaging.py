"""pyproject.toml and environment.yml list the same dependencies with the same ranges."""
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONDA_NAMES = {"redis": "redis-py", "pyyaml": "pyyaml"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]+\])?\s*(.*)$", req.strip())
    return _norm(m.group(1)), m.group(3).replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in py["dependencies"] + py["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            conda[name] = spec
    for name, spec in wanted.items():
        cname = _norm(CONDA_NAMES.get(name, name))
        assert cname in conda, f"environment.yml lacks {name} (as {cname})"
        assert conda[cname] == spec, f"{name}: pyproject {spec!r} vs environment.yml {conda[cname]!r}"


def test_jupyter_stack_is_pinned_to_compatible_ranges():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = dict(_split(r) for r in py["dependencies"])
    for pkg in ("papermill", "nbclient", "jupyter-client", "ipykernel"):
        assert "<" in specs[pkg] and ">=" in specs[pkg], f"{pkg} needs a compatible range, not {specs[pkg]!r}"


def test_notebooks_are_committed_without_outputs():
    import json
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and not c.get("execution_count"), f"{nb.name} has outputs"
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), f"{nb.name}: no parameters cell"
