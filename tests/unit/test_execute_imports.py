"""The notebook process (``python -m perfbook.execute``) imports jsonschema without
building rfc3987_syntax's grammar (~1 s per notebook), and nbformat still validates.

Each test runs in a fresh interpreter: this one has jsonschema loaded already.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"


def python(code: str, *, path: list[Path] = ()) -> subprocess.CompletedProcess:
    env_path = ":".join(str(p) for p in [*path, LIB])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})


def test_notebooks_validate_without_the_iri_grammar():
    res = python("""
        import os, sys
        from perfbook.execute import _import_jsonschema_without_iri_grammar
        _import_jsonschema_without_iri_grammar()
        import nbformat, papermill, nbconvert  # noqa: F401 - what run() imports next
        assert "jsonschema" in sys.modules
        assert "rfc3987_syntax" not in sys.modules and "lark" not in sys.modules, "grammar built"
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
        for validator in ("jsonschema", "fastjsonschema"):  # nbformat's two, by NBFORMAT_VALIDATOR
            os.environ["NBFORMAT_VALIDATOR"] = validator
            nbformat.validate(nb)
            bad = nbformat.from_dict(nb)
            bad.cells[0]["cell_type"] = "no such type"
            try:
                nbformat.validate(bad)
            except nbformat.ValidationError:
                pass
            else:
                raise AssertionError(f"{validator}: an invalid notebook passed")
        import rfc3987_syntax  # only hidden while jsonschema loaded
        assert rfc3987_syntax.is_valid_syntax("iri", "https://example.org/ä")
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_a_jsonschema_that_needs_the_module_still_gets_it(tmp_path):
    """Should jsonschema ever import rfc3987_syntax unconditionally, it is imported as usual."""
    for name, body in (("jsonschema", "import rfc3987_syntax\nOK = rfc3987_syntax.REAL\n"),
                       ("rfc3987_syntax", "REAL = True\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    res = python("""
        import sys
        from perfbook.execute import _import_jsonschema_without_iri_grammar
        _import_jsonschema_without_iri_grammar()
        assert sys.modules["jsonschema"].OK is True
        assert sys.modules["rfc3987_syntax"].REAL is True
        print("ok")
    """, path=[tmp_path])
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


@pytest.mark.parametrize("already", ["jsonschema", "rfc3987_syntax"])
def test_nothing_hidden_once_either_is_loaded(already):
    res = python(f"""
        import sys
        import {already}  # noqa: F401
        from perfbook.execute import _import_jsonschema_without_iri_grammar
        _import_jsonschema_without_iri_grammar()
        import jsonschema, rfc3987_syntax  # noqa: F401
        assert sys.modules["rfc3987_syntax"] is not None
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_a_kernel_that_dies_at_start_is_started_again_other_errors_are_not():
    from perfbook.execute import retry_kernel_start

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")

    assert retry_kernel_start(flaky) == 2 and len(calls) == 3

    def always_dies():
        raise RuntimeError("Kernel died before replying to kernel_info")

    with pytest.raises(RuntimeError, match="kernel_info"):
        retry_kernel_start(always_dies)

    other = []

    def boom():
        other.append(1)
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        retry_kernel_start(boom)
    assert len(other) == 1
