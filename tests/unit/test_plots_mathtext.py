"""Text from outside is never parsed as mathtext in perfbook's figures (issue 14, point 9):
names and statements with ``$`` signs render, and show as written."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.text import Text

from perfbook.plots import capacity, database, escape, plain_text, traffic

HOSTILE = r"$\foo$"          # unknown mathtext symbol: matplotlib raises when it parses it
PRICE = r"cost $5 or \$6 and $7"  # dollars in pairs, and an escaped one


def shown(fig) -> list[str]:
    """Every text the figure displays, after a real render, as the reader sees it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")        # raises ValueError if anything is parsed as bad mathtext
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text():
            continue
        s, ismath = t._preprocess_math(t.get_text())
        assert not ismath, t.get_text()
        out.append(s)
    return out


def test_unescaped_text_does_fail_to_render():
    """The hazard is real: without the helper, matplotlib parses $\\foo$ and fails."""
    fig, ax = plt.subplots()
    ax.set_title(HOSTILE)
    with pytest.raises(ValueError):
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def test_plain_text_on_every_kind_of_text():
    fig, (a1, a2) = plt.subplots(1, 2)
    a1.bar([HOSTILE, PRICE, "plain"], [1, 2, 3])                   # categorical ticks
    a1.plot([0, 1], [1, 2], label=HOSTILE)
    a1.legend()
    a1.set_title(PRICE)
    a1.set_xlabel(HOSTILE)
    a2.barh(range(2), [1, 2])
    a2.set_yticks(range(2))
    a2.set_yticklabels([HOSTILE, PRICE])                           # fixed ticks
    a2.text(0.5, 0.5, HOSTILE)
    fig.suptitle(PRICE)
    plain_text(fig)
    plain_text(fig)                                                # twice is once
    fig.tight_layout()
    texts = shown(fig)
    assert texts.count(HOSTILE) >= 5 and texts.count(PRICE) >= 4   # shown exactly as written
    plt.close(fig)


def test_escape_shows_text_as_written():
    for raw in (HOSTILE, PRICE, "a$b", r"\$x$", "$$", "no dollars"):
        t = Text(text=escape(raw))
        assert t._preprocess_math(t.get_text()) == (raw, False)


def test_library_figures_render_hostile_names():
    t0 = pd.Timestamp("2026-12-06T03:00:00Z")
    ts = [t0 + pd.Timedelta(seconds=15 * i) for i in range(4)]
    series = pd.DataFrame([{"measure": m, "instance": inst, "timestamp": t, "value": 1.0 + i}
                           for m in ("rps", "cpu") for inst in (HOSTILE, "api-2") for i, t in enumerate(ts)])
    figs = [
        capacity.instances_over_time(series, hot=HOSTILE),
        capacity.instance_bars(pd.DataFrame({"instance": [HOSTILE, PRICE], "rps": [1.0, 2.0],
                                             "cpu_mean": [10.0, 20.0]}), hot=HOSTILE),
        capacity.cpu_vs_target(series),
        database.top_queries_figure(pd.DataFrame({"query": [f"SELECT '{HOSTILE}' AS x", f"SELECT '{PRICE}'"],
                                                  "total_ms": [1000.0, 500.0], "mean_ms": [1.0, 2.0],
                                                  "calls": [1000, 250]})),
        traffic.hit_rate_bars(pd.DataFrame({"cache": [HOSTILE, "products"], "hit_rate": [0.2, 0.9]})),
        traffic.rejections_bars(pd.DataFrame({"endpoint": [f"GET /{HOSTILE}"], "rejected_429": [5]})),
        traffic.dependency_latency(pd.DataFrame({"service": HOSTILE, "timestamp": ts, "p50": 0.1, "p95": 0.2,
                                                 "p99": 0.3}), {HOSTILE: 1.0}),
    ]
    for fig in figs:
        assert fig is not None
        texts = shown(fig)
        assert any(HOSTILE in s for s in texts), texts


def test_verdict_table_and_open_next_are_never_typeset_as_math():
    """Lab's MathJax skips an element whose class says so: the verdict table and the open-next
    list carry SQL and money-like text (`$1`, `$5`) that must stay text (issue 19)."""
    import pandas as pd

    from perfbook.plots.resources import open_next_html, verdict_html
    from perfbook.tables import NO_MATH

    table = pd.DataFrame([{"verdict": "critical", "area": "database", "subject": "SELECT … WHERE id = $1 AND x = $2",
                           "observed": "40 ms", "normal": "< 20 ms", "warning": "20 ms", "critical": "50 ms",
                           "statistic": "mean"}])
    nxt = pd.DataFrame([{"section": "database", "severity": "critical", "why": "costs $1 and $2"}])
    for html_text in (verdict_html(table, "Endpoints"), open_next_html(nxt), open_next_html(pd.DataFrame())):
        assert NO_MATH in html_text.split(">", 1)[0], html_text[:200]
    assert "$1" in verdict_html(table)
