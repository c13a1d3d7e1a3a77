"""perfbook bundle: one HTML file of a run (index, sections, comparisons), ids kept apart,
links turned in-page, nothing that runs or fetches; --zip; never overwrites; bad folders
are one line. The real run in Chromium: tests/integration/test_browser.py."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from perfbook import cli
from perfbook.report import bundle

PAGE = ("<!DOCTYPE html><html><head><title>{name}</title><style>.x{{color:red}}</style>"
        "<script>alert(1)</script></head><body class='jp-Notebook'><h2 id='Top'>{name} <a href='#Top'>¶</a></h2>"
        "<p class='perfbook-finding'>{name} finding</p><a href='index.html'>back</a>"
        "<img src='data:image/png;base64,AAAA'></body></html>")


def make_run(tmp_path: Path, status="complete", compare=True) -> Path:
    d = tmp_path / "2026-12-04" / "101010-inc"
    d.mkdir(parents=True)
    sections = ["quick-diagnostics", "database"]
    (d / "manifest.json").write_text(json.dumps({"status": status, "service": "shop", "environment": "prod",
                                                 "notebooks": [{"section": s, "status": "ok", "html": f"{s}.html"}
                                                               for s in sections]}))
    (d / "findings.json").write_text("[]")
    (d / "database.ipynb").write_text("{}")
    (d / "index.html").write_text("<html><head><title>perfbook — shop</title></head><body><h1 id='Top'>report</h1>"
                                  "<a href='database.html'>database</a> <a href='compare.html'>cmp</a> "
                                  "<a href='database.ipynb'>nb</a></body></html>")
    for s in sections:
        (d / f"{s}.html").write_text(PAGE.format(name=s))
    if compare:
        (d / "compare.html").write_text(PAGE.format(name="compare"))
        (d / "compare.json").write_text(json.dumps({"headline": "1 new"}))
    return d


def test_one_file_with_every_page_in_order_ids_apart_and_links_in_page(tmp_path):
    d = make_run(tmp_path)
    page = bundle.bundle_html(d)
    order = [page.index(f"<section id='{a}'") for a in ("index", "p-quick-diagnostics", "p-database", "p-compare")]
    assert order == sorted(order)
    assert "id=\"index--Top\"" in page and "id=\"p-database--Top\"" in page      # the same id, kept apart
    assert "href=\"#p-database--Top\"" in page                                  # a heading's own link
    assert "href=\"#p-database\"" in page and "href=\"#p-compare\"" in page and "href=\"#index\"" in page
    assert "database.ipynb: in the run folder, not in this file" in page
    assert "<script" not in page and "alert(1)" not in page
    assert page.count(".x{color:red}") == 1                                    # one copy of each style
    assert "default-src 'none'" in page and "data:image/png;base64,AAAA" in page
    assert "<title>perfbook — shop (one file)</title>" in page


def test_cli_writes_the_bundle_and_zip_once_and_never_overwrites(tmp_path, capsys):
    d = make_run(tmp_path)
    assert cli.main(["bundle", str(d), "--zip"]) == 0
    out = capsys.readouterr().out
    html_path, zip_path = d / "perfbook-101010-inc.html", d / "perfbook-101010-inc.zip"
    assert f"Bundle: {html_path.resolve()}" in out and f"Bundle: {zip_path.resolve()}" in out
    names = zipfile.ZipFile(zip_path).namelist()
    assert names[0] == "perfbook-101010-inc.html"
    assert {"101010-inc/findings.json", "101010-inc/manifest.json", "101010-inc/compare.json",
            "101010-inc/database.ipynb"} <= set(names)
    before = html_path.read_bytes()
    assert cli.main(["bundle", str(d)]) == 2
    err = capsys.readouterr().err
    assert f"{html_path}: exists; perfbook never overwrites" in err and len(err.strip().splitlines()) == 1
    assert html_path.read_bytes() == before
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    assert cli.main(["bundle", str(d), "-o", str(tmp_path / "pm.html")]) == 0
    assert (tmp_path / "pm.html").stat().st_size > 1000


@pytest.mark.parametrize("make, why", [
    (lambda p: p / "nothing", "no such run folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no manifest.json"),
    (lambda p: make_run(p, status="running"), "still running"),
])
def test_what_cannot_be_bundled_is_one_line(tmp_path, capsys, make, why):
    assert cli.main(["bundle", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert why in err and len(err.strip().splitlines()) == 1
