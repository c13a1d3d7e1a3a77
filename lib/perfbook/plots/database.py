"""Figures of the database section."""
from __future__ import annotations

import pandas as pd

from ..checks.database import short_query
from . import plain_text


def top_queries_figure(table: pd.DataFrame, title: str = "Top statements by total time"):
    """Horizontal bars: total time (s) per statement, mean time (ms) and calls in the labels."""
    import matplotlib.pyplot as plt

    if table is None or table.empty:
        return None
    t = table.head(10).iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(t) + 1.2))
    ax.barh(range(len(t)), t["total_ms"] / 1000.0, color="#5c7cfa")
    ax.set_yticks(range(len(t)))
    ax.set_yticklabels([short_query(q, 60) for q in t["query"]], fontsize=8)
    for i, (tot, mean, calls) in enumerate(zip(t["total_ms"], t["mean_ms"], t["calls"])):
        ax.text(tot / 1000.0, i, f" {mean:.1f} ms × {int(calls):,}", va="center", fontsize=8)
    ax.set_xlabel("total execution time (s) since pg_stat_statements was reset")
    ax.set_title(title)
    ax.margins(x=0.25)
    plain_text(fig)  # statement text is shown as written, never as mathtext
    fig.tight_layout()
    plt.close(fig)
    return fig
