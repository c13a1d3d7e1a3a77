"""Tables readable in JupyterLab and the HTML report (perfbook.tables)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfbook import tables
from perfbook.tables import BUDGET_PX, render


class Cells(HTMLParser):
    """Tables of a rendered block: [[header...], [cell...], ...] each, with titles and classes seen."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.titles: list[str] = []
        self.classes: list[str] = []
        self.in_details = 0
        self.details_tables: list[int] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class"):
            self.classes.append(a["class"])
        if tag == "details":
            self.in_details += 1
        if tag == "table":
            self.tables.append([])
            if self.in_details:
                self.details_tables.append(len(self.tables) - 1)
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []
            if a.get("title"):
                self.titles.append(a["title"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        if tag == "details":
            self.in_details -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Cells:
    p = Cells()
    p.feed(html)
    return p


SQL = ("INSERT INTO posts (t, k, a, b) VALUES ($1, $4, $2, $3) "
       "RETURNING \"id\", \"title\", \"kind\", \"author_id\", \"created_at\"")


def test_math_never_typeset_and_long_text_clipped_with_full_value_on_hover():
    html, text = render(pd.DataFrame({"query": [SQL, "SELECT ($1, 'blog_post', $2)"], "calls": [3.0, 12.0]}), "Top")
    p = parse(html)
    assert any("tex2jax_ignore" in c and "mathjax_ignore" in c for c in p.classes)
    rows = p.tables[0]
    assert rows[0] == ["query", "calls"]
    shown = rows[1][0]
    assert shown.endswith("…") and len(shown) <= tables.CELL_CHARS and "$1, $4, $2, $3" in shown
    assert SQL in p.titles                       # the whole statement on hover
    assert rows[2][0] == "SELECT ($1, 'blog_post', $2)"  # short: as written, no title
    assert rows[1][1] == "3" and rows[2][1] == "12"     # counts as integers
    assert "<script" not in render(pd.DataFrame({"q": ["<script>alert(1)</script>"]}))[0]
    assert "…" in text and "Top" in text


def test_numbers_durations_timestamps_and_missing_values():
    df = pd.DataFrame({
        "endpoint": ["GET /a", "GET /b"],
        "requests": [249.4, 100000.0],
        "rows": [1e5, 12],
        "mean_ms": [0.42, 1834.0],
        "wait_p95_s": [0.25, 75.0],
        "dead_pct": [12.345, None],
        "total_bytes": [2_500_000, None],
        "last_vacuum": [pd.Timestamp("2026-12-06 03:04:05.123456", tz="UTC"), pd.NaT],
        "at": ["2026-12-06T03:04:05.987654+00:00", None],
        "saturated": [True, False],
        "rows_per_call": [np.float64(2.5), np.nan],
    })
    html, text = render(df, budget_px=10_000)
    rows = parse(html).tables[0]
    head, r1, r2 = rows[0], dict(zip(rows[0], rows[1])), dict(zip(rows[0], rows[2]))
    assert r1["requests"] == "249" and r2["requests"] == "100,000"
    assert r1["rows"] == "100,000"
    assert r1["mean_ms"] == "0.42 ms" and r2["mean_ms"] == "1.83 s"
    assert r1["wait_p95_s"] == "250 ms" and r2["wait_p95_s"] == "75 s"
    assert r1["dead_pct"] == "12.3 %"
    assert r1["total_bytes"] == "2.5 MB"
    assert r1["last_vacuum"] == "2026-12-06 03:04:05" and r1["at"] == "2026-12-06 03:04:05"
    assert r1["saturated"] == "yes" and r2["saturated"] == "no"
    assert r1["rows_per_call"] == "2.5"
    for cell in list(r2.values()) + list(r1.values()):
        assert cell not in ("None", "nan", "NaN", "NaT", "") and "e+" not in cell, (cell, r1, r2)
    assert "None" not in text and "NaN" not in text and "NaT" not in text
    # the evidence leads: the subject first, then the verdict-bearing columns
    assert head[0] == "endpoint" and head.index("saturated") < head.index("requests")
    assert head.index("dead_pct") < head.index("rows")
    assert head[-1] == "last_vacuum"  # bookkeeping last


def test_wide_table_fits_the_budget_secondary_columns_in_details():
    """The issue's 'Dead tuples per table': autovacuum (the evidence) must be in the visible table."""
    cols = ["table", "n_live_tup", "n_dead_tup", "dead_pct", "last_vacuum", "last_autovacuum",
            "last_analyze", "last_autoanalyze", "autovacuum", "total_bytes"]
    t = pd.Timestamp("2026-12-06 03:04:05.123456", tz="UTC")
    df = pd.DataFrame([["public.order_items_archive", 120000, 80000, 40.0, t, t, t, t, "off (table)", 123456789]],
                      columns=cols)
    html, _ = render(df, "Dead tuples per table")
    p = parse(html)
    visible = p.tables[0]
    assert "autovacuum" in visible[0] and "dead_pct" in visible[0] and visible[0][0] == "table"
    assert p.details_tables, "the columns that do not fit go into a details block"
    hidden = [c for i in p.details_tables for c in p.tables[i][0]]
    assert set(cols) <= set(visible[0]) | set(hidden)
    for i, t_ in enumerate(p.tables):  # each table's estimated width is within the budget
        header, *body = t_
        width = sum(tables._width(h, [r[j] for r in body]) for j, h in enumerate(header))
        assert width <= BUDGET_PX or len(header) <= 2, (i, header, width)
    for i in p.details_tables:
        assert p.tables[i][0][0] == "table"  # the subject repeated beside the secondary columns


def test_ids_are_not_numbers_and_never_the_subject():
    df = pd.DataFrame({"queryid": [-5264931305905273856], "query": ["SELECT 1"], "calls": [1200.0], "pid": [4242]})
    head, row = parse(render(df, budget_px=10_000)[0]).tables[0][:2]
    assert head[0] == "query" and head.index("queryid") > head.index("calls")
    assert dict(zip(head, row))["queryid"] == "-5264931305905273856" and dict(zip(head, row))["pid"] == "4242"
    assert dict(zip(head, row))["calls"] == "1,200"


def test_lead_columns_and_empty_and_truncated():
    df = pd.DataFrame({"instance": ["a"], "rps": [1.0], "wait_p95_ms": [30.0], "x": ["y"]})
    head = parse(render(df, lead=["x"])[0]).tables[0][0]
    assert head[:3] == ["instance", "x", "wait_p95_ms"]
    html, text = render(pd.DataFrame(columns=["a"]), "Nothing")
    assert "no rows" in html and text == "Nothing: no rows"
    html, _ = render(pd.DataFrame({"a": range(250)}), max_rows=200)
    assert "50 more rows not shown (of 250)" in html


@pytest.mark.parametrize("v,col,want", [
    (None, "x", "—"), (float("nan"), "x", "—"), (3, "calls", "3"), (1234567, "x", "1,234,567"),
    (0.000012, "x", "<0.001"), (12.3456, "x", "12.3"), (datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=timezone.utc), "t", "2026-01-02 03:04:05"),
    (7200.0, "age_s", "2.0 h"), (95.0, "duration_s", "95 s"), (1e5, "x", "100,000"),
])
def test_value(v, col, want):
    assert tables.value(v, col) == want


def test_notebook_callout_has_no_none_lines_and_header_has_full_params_path(tmp_path, monkeypatch):
    from perfbook import notebook as pb
    from perfbook.findings import Finding

    f = Finding("db.connections", "warning", "Connections at 55", evidence={"normal": None, "current": 55.0,
                                                                              "share": float("nan")})
    html = pb.callout_html(f)
    assert "None" not in html and "nan" not in html.lower().replace("nanoseconds", "")
    assert re.search(r"<code>current</code>: 55\b", html)
    demo = tmp_path / "demo.yaml"
    demo.write_text((Path(__file__).parents[2] / "params" / "demo.yaml").read_text()
                    .replace("../lib/perfbook/demo/fly.toml", str(Path(__file__).parents[2] / "lib/perfbook/demo/fly.toml")))
    monkeypatch.chdir(tmp_path)
    ctx = pb.start("database", "demo.yaml", show_header=False)
    assert f"<td>{demo}</td>" in pb.header_html(ctx)
