"""Tables an on-call engineer can read in JupyterLab and in the HTML report alike.

:func:`render` turns a DataFrame into escaped HTML that

- leads with the evidence: the subject (first) column, then the columns a check's verdict rests
  on (:data:`EVIDENCE`), then the rest in the check's order; bookkeeping columns
  (:data:`SECONDARY`: query ids, last-vacuum times, ...) come last;
- fits a 1280 px window with JupyterLab's file browser open (:data:`BUDGET_PX`): columns that do
  not fit move into a collapsed ``<details>`` block, the subject column repeated there;
- clips long text at :data:`CELL_CHARS` characters with the whole value (up to
  ``report.CLIP['cell']``) in the cell's ``title`` for hover;
- formats values for people: counts as integers with thousands separators, ``*_ms`` / ``*_s``
  durations in ms or s, bytes in kB/MB/GB, timestamps to the second, booleans as yes/no, and a
  dash for a missing value (never ``None`` / ``NaN``);
- is never typeset as math: the block carries ``tex2jax_ignore mathjax_ignore`` (MathJax skips
  it), so ``VALUES ($1, $2)`` stays as written.
"""
from __future__ import annotations

import html
import json
import math
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .report import CLIP, clip

#: Classes MathJax (JupyterLab's and nbconvert's) skips: nothing inside is typeset.
NO_MATH = "tex2jax_ignore mathjax_ignore"
#: Long text in a cell is cut here; the full value is in the cell's title (hover).
CELL_CHARS = 60
#: What one table may take: JupyterLab at 1280 px with its left sidebar open leaves about 850 px
#: for a notebook's outputs; the estimate below is conservative (7.5 px a character).
BUDGET_PX = 820
CHAR_PX = 7.5
CELL_PAD_PX = 18
MISSING = "—"

#: Columns a check's verdict rests on: shown right after the subject column.
EVIDENCE = ("verdict", "severity", "state", "saturated", "autovacuum", "dead_pct", "lookups_per_request",
            "wait_p95_ms", "wait_mean_ms", "create_index", "mean_ms", "p95_ms", "p99_ms", "p95_s", "p99_s",
            "target_p95_s", "hit_rate", "error_rate", "share", "share_pct", "answer", "holds", "value")
#: Bookkeeping: shown last (usually in the details block).
SECONDARY = ("queryid", "last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze", "reloptions",
             "parent_query", "parent_calls", "endpoint_requests", "stats_reset", "source")

_COUNT = re.compile(r"(^|_)(calls|rows|requests|count|n|tup|scan|scans|connections|keys|lookups|hits|misses|"
                    r"errors|users|instances|sessions|samples|statements|waiting|total|live|dead|idle|active)($|_)")
_NOT_COUNT = re.compile(r"per|rate|ratio|share|pct|mean|avg|median|p\d\d|_ms$|_s$|bytes|seconds")
_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")
_SPACE = re.compile(r"\s+")


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd
        if v is pd.NaT or (not isinstance(v, (list, dict, tuple, str)) and bool(pd.isna(v))):
            return True
    except (ImportError, TypeError, ValueError):
        pass
    return isinstance(v, float) and math.isnan(v)


def number(x: float) -> str:
    """A float for people: thousands separators when large, three significant digits when small."""
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    if a == 0:
        return "0"
    if a < 0.001:
        return "<0.001" if x > 0 else ">-0.001"
    return f"{x:.3g}"


def duration(seconds: float) -> str:
    a = abs(seconds)
    if a < 1:
        return f"{number(seconds * 1000)} ms"
    if a < 600:
        return f"{number(seconds)} s"
    if a < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def size(n: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n:,.0f} B"


def timestamp(t: datetime) -> str:
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def kind(name: Any) -> str:
    """How a column's numbers read, from its name: id, ms, s, bytes, pct, count or number."""
    n = str(name).lower()
    if n == "id" or n.endswith(("_id", "queryid", "pid", "oid")):
        return "id"
    if n.endswith("_ms") or n == "ms":
        return "ms"
    if n.endswith(("_s", "_seconds", "_sec")) or n in ("s", "duration", "age"):
        return "s"
    if n.endswith("bytes"):
        return "bytes"
    if n.endswith(("_pct", "pct", "_percent")):
        return "pct"
    if _COUNT.search(n) and not _NOT_COUNT.search(n):
        return "count"
    return "number"


def value(v: Any, column: Any = "") -> str:
    """One value as a person reads it (no clipping; see :func:`cell`)."""
    if _missing(v):
        return MISSING
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "yes" if v else "no"
    if isinstance(v, datetime):
        return timestamp(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, timedelta):
        return duration(v.total_seconds())
    if type(v).__name__ == "Timedelta":
        return duration(v.total_seconds())
    if isinstance(v, (int, float)) or type(v).__module__ == "numpy":
        try:
            x = float(v)
        except (TypeError, ValueError):
            return str(v)
        k = kind(column)
        if k == "id":
            return str(int(x)) if float(x).is_integer() else str(v)
        if k == "ms":
            return duration(x / 1000)
        if k == "s":
            return duration(x)
        if k == "bytes":
            return size(x)
        if k == "pct":
            return f"{number(x)} %"
        if k == "count" or (float(x).is_integer() and abs(x) < 1e15):
            return f"{round(x):,}"
        return number(x)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str, ensure_ascii=False)
    text = str(v)
    m = _ISO.match(text.strip())
    if m:
        return f"{m.group(1)} {m.group(2)}"
    return text


def cell(v: Any, column: Any = "", limit: int = CELL_CHARS) -> tuple[str, str | None]:
    """(shown text, full text for the title or None): whitespace collapsed, clipped at ``limit``."""
    text = value(v, column)
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat, (None if flat == text.strip() or len(text) <= limit else clip(text, CLIP["cell"]))
    return flat[:limit - 1].rstrip() + "…", clip(text, CLIP["cell"])


def _numeric(col: Any) -> bool:
    import pandas as pd
    return pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)


def order(columns: list[Any], lead: list[Any] | tuple = ()) -> list[Any]:
    """The subject column, then ``lead`` and :data:`EVIDENCE` columns, the rest, :data:`SECONDARY` last."""
    if not columns:
        return []
    # The subject: the first column that is not bookkeeping (a query, not its queryid).
    first = next((c for c in columns if str(c) not in SECONDARY), columns[0])
    rest = [c for c in columns if c != first]
    ev = [c for c in list(lead) + [c for c in EVIDENCE] if c in rest]
    ev = list(dict.fromkeys(ev))
    sec = [c for c in rest if str(c) in SECONDARY and c not in ev]
    mid = [c for c in rest if c not in ev and c not in sec]
    return [first] + ev + mid + sec


def _width(header: str, cells: list[str]) -> float:
    longest = max([len(header)] + [min(len(c), 40) for c in cells])  # long text wraps at ~40 ch
    return longest * CHAR_PX + CELL_PAD_PX


def _html_table(columns: list[str], rows: list[list[tuple[str, str | None]]], numeric: list[bool]) -> str:
    e = html.escape
    head = "".join(f"<th style='text-align:{'right' if n else 'left'}'>{e(c)}</th>" for c, n in zip(columns, numeric))
    body = []
    for row in rows:
        tds = []
        for (text, full), n in zip(row, numeric):
            title = f" title='{e(full, quote=True)}'" if full else ""
            style = "text-align:right;white-space:nowrap" if n else "text-align:left;max-width:32em;overflow-wrap:anywhere"
            tds.append(f"<td style='{style}'{title}>{e(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<table class='perfbook-table dataframe' style='border-collapse:collapse;max-width:100%'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def render(df: Any, caption: str = "", max_rows: int = 200, lead: list[Any] | tuple = (),
           budget_px: float = BUDGET_PX) -> tuple[str, str]:
    """(HTML, plain text) of ``df``: see the module's docstring."""
    import pandas as pd

    e = html.escape
    cap = f"<p><b>{e(clip(caption, CLIP['title']))}</b></p>" if caption else ""
    if df is None or (isinstance(df, pd.DataFrame) and df.empty):
        text = f"{caption}: no rows" if caption else "no rows"
        return f"<div class='{NO_MATH}'><p><i>{e(clip(text, CLIP['title']))}.</i></p></div>", text
    if isinstance(df, pd.Series):
        df = df.to_frame()
    left = max(0, len(df) - max_rows)
    shown = df.head(max_rows)
    if not isinstance(shown.index, pd.RangeIndex):
        shown = shown.reset_index()
    names = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in shown.columns]
    names = [clip(n, 120) for n in names]
    cols = list(range(len(names)))
    cells = {i: [cell(v, names[i]) for v in shown.iloc[:, i].tolist()] for i in cols}
    numeric = {i: _numeric(shown.iloc[:, i]) for i in cols}
    by_name = {n: i for i, n in reversed(list(enumerate(names)))}
    ordered = [by_name.get(n, n) for n in order(names, [str(x) for x in lead])]
    ordered = list(dict.fromkeys(i for i in ordered if isinstance(i, int))) + [i for i in cols if i not in ordered]
    widths = {i: _width(names[i], [t for t, _ in cells[i]]) for i in cols}

    # Greedy: the subject column and then each column in order while the budget lasts.
    main, more, used = [ordered[0]], [], widths[ordered[0]]
    for i in ordered[1:]:
        if not more and used + widths[i] <= budget_px:
            main.append(i)
            used += widths[i]
        else:
            more.append(i)

    def table_of(idx: list[int]) -> str:
        return _html_table([names[i] for i in idx], [[cells[i][r] for i in idx] for r in range(len(shown))],
                           [numeric[i] for i in idx])

    out = cap + table_of(main)
    if more:
        chunks, cur, w = [], [], widths[ordered[0]]
        for i in more:
            if cur and w + widths[i] > budget_px:
                chunks.append(cur)
                cur, w = [], widths[ordered[0]]
            cur.append(i)
            w += widths[i]
        chunks.append(cur)
        inner = "".join(table_of([ordered[0]] + c) for c in chunks)
        out += (f"<details class='perfbook-more-columns'><summary>{len(more)} more column(s): "
                f"{e(clip(', '.join(names[i] for i in more), CLIP['title']))}</summary>{inner}</details>")
    if left:
        out += f"<p><i>{left:,} more rows not shown (of {len(df):,}).</i></p>"
    plain = pd.DataFrame({names[i]: [t for t, _ in cells[i]] for i in ordered}).to_string(index=False)
    return f"<div class='perfbook-table-wrap {NO_MATH}'>{out}</div>", (caption + "\n" if caption else "") + plain
