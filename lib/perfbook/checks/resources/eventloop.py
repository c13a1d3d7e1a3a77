"""Event-loop lag (runbook Issue 1 §2, Synchronous Operations; part of
:mod:`perfbook.checks.resources`): recurring levels of prom-client's lag gauges.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding, severity_rank
from ...params import Diagnostics
from .coverage import _no_data
from .levels import (
    _evidence,
    _fmt,
    _recurring_text,
    level_verdict,
    recurring_level,
    window_stats,
)

# --------------------------------------------------------------------------- event loop

LAG_ADVICE = ("Something synchronous blocks the event loop (runbook Issue 1 §2, Synchronous Operations): CPU-heavy "
              "code, JSON.parse/stringify of large objects, regexes on big strings, sync fs/crypto/zlib calls. Find "
              "it with a CPU profile (`node --cpu-prof`; the bottlenecks section reads .cpuprofile files) and make it "
              "asynchronous or move it to a worker thread; every request on the instance waits while it runs.")


def eventloop_lag(lag: pd.DataFrame | None, lag_p99: pd.DataFrame | None, level: Any, *, settings: Diagnostics,
                  lag_max: pd.DataFrame | None = None,
                  names: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``eventloop.lag``: per instance, against ``thresholds.eventloop_lag_seconds``, two
    readings of prom-client's gauges, each at the level it reached again and again over the
    window (:func:`recurring_level`: in at least 1 - ``settings.sustained_quantile`` (10 %) of
    the scrapes, over at least ``settings.sustained_for`` (20 s)):

    - the *typical* delay: the p99 gauge (``nodejs_eventloop_lag_p99_seconds``; else the
      lag gauge) against the Warning and Critical levels;
    - the *stalls*: the max gauge (``nodejs_eventloop_lag_max_seconds``: the worst delay
      since the previous scrape) against the Critical level — a loop that stalls 100 ms or
      more again and again is blocked, whatever its p99 says.

    The worse verdict wins and the finding names the gauge it comes from. Why both:
    prom-client resets its delay histogram at every scrape and samples every 10 ms, so at a
    15 s scrape interval a loop blocked 300 ms every couple of seconds has ~1500 samples per
    scrape of which a handful are long — p99 reads 10-14 ms while max reads 300 ms. And why
    max only against Critical: the worst delay of a whole scrape interval is far above the
    typical one on any busy machine (a healthy stock Node service on a busy 2-core machine
    reads 56-66 ms, recurring), which the Warning level (50 ms) is not about. Without a p99
    or lag gauge, max is judged against both levels. The lag gauge alone (one measurement at
    scrape time) misses blocking between scrapes.
    """
    names = {"eventloop_lag": "nodejs_eventloop_lag_seconds", "eventloop_lag_p99": "nodejs_eventloop_lag_p99_seconds",
             "eventloop_lag_max": "nodejs_eventloop_lag_max_seconds", **(names or {})}
    q, min_hold_s = settings.sustained_quantile, settings.sustained_for
    stats = {key: window_stats(frame, q=q, min_hold_s=min_hold_s, level_fn=recurring_level)
             for key, frame in (("lag", lag), ("p99", lag_p99), ("max", lag_max))}
    fields = {"lag": "eventloop_lag", "p99": "eventloop_lag_p99", "max": "eventloop_lag_max"}
    missing = [names[fields[k]] for k in ("max", "p99", "lag") if stats[k].empty]
    typical = next((k for k in ("p99", "lag") if not stats[k].empty), None)
    if typical is None and stats["max"].empty:
        return stats["lag"], _no_data("eventloop.lag", "Event-loop lag", " / ".join(names[fields[k]]
                                                                                   for k in ("max", "p99", "lag")))
    instances = sorted(set().union(*(set(s["instance"]) for s in stats.values() if not s.empty)))
    rows = []
    for inst in instances:
        row: dict[str, Any] = {"instance": inst}
        for k in ("lag", "p99", "max"):
            s = stats[k].set_index("instance") if not stats[k].empty else None
            has = s is not None and inst in s.index
            row[f"{k}_recurring_ms"] = float(s.loc[inst, "sustained"]) * 1000 if has else np.nan
            row[f"{k}_peak_ms"] = float(s.loc[inst, "max"]) * 1000 if has else np.nan
            row[f"{k}_samples"] = int(s.loc[inst, "samples"]) if has else 0
        t_val = row[f"{typical}_recurring_ms"] / 1000 if typical else np.nan
        s_val = row["max_recurring_ms"] / 1000
        v_t = level_verdict(t_val, level) if typical else "no data"
        if typical is None:   # the max gauge is all there is: judged against both levels
            v_s = level_verdict(s_val, level)
        else:
            v_s = "no data" if pd.isna(s_val) else ("critical" if s_val >= level.critical else "ok")
        stall = v_s != "no data" and (v_t == "no data" or severity_rank(v_s if v_s != "no data" else "ok")
                                     > severity_rank(v_t if v_t != "no data" else "ok"))
        key = "max" if stall else typical
        row.update(judged_s=s_val if stall else t_val, verdict=v_s if stall else v_t, gauge=names[fields[key]],
                   reading="stalls (max gauge)" if key == "max" else f"typical delay ({key} gauge)",
                   samples=row[f"{key}_samples"], peak_s=row[f"{key}_peak_ms"] / 1000,
                   p99_recurring_s=row["p99_recurring_ms"] / 1000, max_recurring_s=s_val)
        rows.append(row)
    table = pd.DataFrame(rows)
    recurring = _recurring_text(q, min_hold_s)

    def statistic(rec: dict) -> str:
        if rec["samples"] <= 1:
            return f"{rec['gauge']} now"
        if rec["gauge"] == names["eventloop_lag_max"]:
            against = "" if typical is None else ", judged against the critical level only"
            return f"max lag gauge (worst delay since the previous scrape), {recurring}{against}"
        return f"{'p99' if typical == 'p99' else 'lag'} lag gauge, {recurring}"

    found = []
    over = table[table["verdict"].isin(["warning", "critical"])]
    for rec in over.to_dict("records"):
        limit = level.critical if rec["verdict"] == "critical" else level.warning
        what = "Event-loop stalls of" if rec["gauge"] == names["eventloop_lag_max"] else "Event-loop lag"
        extra = (f"; the p99 gauge reads {_fmt(rec['p99_recurring_s'], 's')} (reset at every scrape)"
                 if rec["gauge"] == names["eventloop_lag_max"] and not pd.isna(rec["p99_recurring_s"]) else "")
        found.append(Finding(
            "eventloop.lag", rec["verdict"],
            f"{what} {_fmt(rec['judged_s'], 's')} on {rec['instance']} ({statistic(rec)}; {rec['verdict']} at "
            f"{_fmt(limit, 's')}){extra}", subject=str(rec["instance"]),
            evidence=_evidence(rec["judged_s"], "s", statistic(rec), level, instance=rec["instance"],
                               instances=len(table), instances_over=len(over), gauge=rec["gauge"],
                               reading=rec["reading"], max_s=rec["peak_s"], samples=rec["samples"],
                               p99_recurring_s=rec["p99_recurring_s"], max_recurring_s=rec["max_recurring_s"],
                               gauges_missing=missing),
            recommendation=LAG_ADVICE))
    judged = table[table["verdict"] != "no data"]
    if not found and not judged.empty:
        worst_t = judged.sort_values("judged_s", ascending=False).iloc[0]
        stalls = table["max_recurring_s"].dropna()
        stall_txt = (f"; stalls (max gauge) up to {_fmt(float(stalls.max()), 's')}, under the critical level "
                     f"{_fmt(level.critical, 's')}" if typical is not None and len(stalls) else "")
        found.append(Finding(
            "eventloop.lag", "ok",
            f"Event-loop lag {_fmt(worst_t['judged_s'], 's')} at most ({statistic(worst_t.to_dict())}), under the "
            f"warning level {_fmt(level.warning, 's')} on all {len(judged)} instance(s){stall_txt}",
            subject="all instances",
            evidence=_evidence(worst_t["judged_s"], "s", statistic(worst_t.to_dict()), level,
                               instance=worst_t["instance"], instances=len(judged), gauge=worst_t["gauge"],
                               max_recurring_s=float(stalls.max()) if len(stalls) else None,
                               gauges_missing=missing)))
    cols = ["instance", "reading", "gauge", "judged_s", "verdict", "p99_recurring_ms", "p99_peak_ms",
            "max_recurring_ms", "max_peak_ms", "lag_recurring_ms", "lag_peak_ms", "samples"]
    return table[cols], found
