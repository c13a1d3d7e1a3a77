"""Memory (runbook Issue 1 §3; part of :mod:`perfbook.checks.resources`): memory pressure
(the window's maximum against the limit) and memory growth (leak suspicion, a linear fit).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding
from ...params import Diagnostics
from .coverage import _no_data
from .levels import MB, _clean_series, _per_instance_findings, level_verdict

# --------------------------------------------------------------------------- memory

MEMORY_ADVICE = ("Immediate (runbook Issue 1 §3): restart to clear memory (`flyctl apps restart`) or give it more "
                 "(`flyctl scale vm shared-cpu-2x`). Then check whether memory grows steadily (bottlenecks section, "
                 "memory.growth) and compare two heap snapshots (`node --heapsnapshot-signal=SIGUSR2`, "
                 "`kill -USR2 <pid>`) to find the leaking objects.")


def _max_by_instance(series: pd.DataFrame | None) -> pd.Series:
    df = _clean_series(series)
    return df.groupby("instance")["value"].max() if not df.empty else pd.Series(dtype=float)


def _last_by_instance(series: pd.DataFrame | None) -> pd.Series:
    df = _clean_series(series)
    if df.empty:
        return pd.Series(dtype=float)
    if "timestamp" in df.columns:
        df = df.sort_values("timestamp")
    return df.groupby("instance")["value"].last()


def memory_pressure(rss: pd.DataFrame | None, heap_used: pd.DataFrame | None, heap_limit: pd.DataFrame | None,
                    level: Any, memory_limit_bytes: int | None = None, heap_total: pd.DataFrame | None = None,
                    names: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """``memory.pressure``: each instance's peak memory use over the window as a share of
    its limit, against ``thresholds.memory_percent``.

    Limits, each used where it exists, the higher share judged (either one running out
    ends the process):

    - RSS / ``memory_limit_bytes`` (``targets.memory_limit``: the instance's memory, what
      the OOM killer compares) — heap used / it when RSS is not exported;
    - heap used / the heap-limit gauge (``nodejs_heap_size_limit_bytes``:
      ``--max-old-space-size``; not a prom-client metric, a service may export it from
      ``v8.getHeapStatistics()``).

    Stock prom-client 15 has no heap limit, so without ``targets.memory_limit`` memory is
    not judged (info). The committed heap (``heap_total``: ``nodejs_heap_size_total_bytes``,
    the V8 heap spaces summed) is shown but never used as a limit: V8 grows it on demand,
    and heap used / committed is ~80 % on an idle process. ``names``: the metric names,
    for the evidence (``resident_memory``, ``heap_used``, ``heap_limit``).
    """
    names = {"resident_memory": "process_resident_memory_bytes", "heap_used": "nodejs_heap_size_used_bytes",
             "heap_limit": "nodejs_heap_size_limit_bytes", **(names or {})}
    rss_max, used_max, limit = _max_by_instance(rss), _max_by_instance(heap_used), _max_by_instance(heap_limit)
    committed = _max_by_instance(heap_total)
    rss_last, used_last = _last_by_instance(rss), _last_by_instance(heap_used)
    instances = sorted(set(rss_max.index) | set(used_max.index))
    rows = []
    for inst in instances:
        row = {"instance": inst, "rss_mb": rss_max.get(inst, np.nan) / MB,
               "heap_used_mb": used_max.get(inst, np.nan) / MB, "heap_committed_mb": committed.get(inst, np.nan) / MB,
               "heap_limit_mb": limit.get(inst, np.nan) / MB}
        bases = []   # (pct, last_pct, basis, limit bytes, limit source)
        if memory_limit_bytes and inst in rss_max.index:
            bases.append((100 * rss_max[inst] / memory_limit_bytes,
                          100 * rss_last.get(inst, np.nan) / memory_limit_bytes, "RSS / memory_limit",
                          memory_limit_bytes, f"{names['resident_memory']} / targets.memory_limit"))
        elif memory_limit_bytes and inst in used_max.index:
            bases.append((100 * used_max[inst] / memory_limit_bytes,
                          100 * used_last.get(inst, np.nan) / memory_limit_bytes, "heap used / memory_limit",
                          memory_limit_bytes, f"{names['heap_used']} / targets.memory_limit (no RSS exported)"))
        if inst in used_max.index and limit.get(inst, 0) > 0:
            bases.append((100 * used_max[inst] / limit[inst], 100 * used_last.get(inst, np.nan) / limit[inst],
                          "heap used / heap limit", limit[inst], f"{names['heap_used']} / {names['heap_limit']}"))
        if bases:
            pct, last_pct, basis, lim, source = max(bases, key=lambda b: b[0])
            row.update(basis=basis, limit_mb=lim / MB, pct=pct, last_pct=last_pct, source=source)
        else:
            row.update(basis="no limit known", limit_mb=np.nan, pct=np.nan, last_pct=np.nan, source="")
        row["verdict"] = level_verdict(row["pct"], level)
        rows.append(row)
    cols = ["instance", "basis", "pct", "last_pct", "rss_mb", "heap_used_mb", "heap_committed_mb", "heap_limit_mb",
            "limit_mb", "source", "verdict"]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table, _no_data("memory.pressure", "Memory", f"{names['resident_memory']} / {names['heap_used']}")
    if table["pct"].isna().all():
        def top(col: str) -> float | None:
            return round(float(np.nanmax(table[col])), 1) if table[col].notna().any() else None
        committed_txt = (f", heap used up to {top('heap_used_mb'):.0f} MB of {top('heap_committed_mb'):.0f} MB "
                         f"committed (not a limit: V8 grows the heap on demand)"
                         if top("heap_used_mb") is not None and top("heap_committed_mb") is not None else "")
        return table, [Finding("memory.pressure", "info",
                               f"Memory: no limit to compare with — not judged: set targets.memory_limit (the "
                               f"instance's memory) or export {names['heap_limit']} (stock prom-client has no "
                               f"heap-limit gauge){committed_txt}", subject="metrics",
                               evidence={"rss_mb_max": top("rss_mb"), "heap_used_mb_max": top("heap_used_mb"),
                                         "heap_committed_mb_max": top("heap_committed_mb"),
                                         "missing": names["heap_limit"], "fallback": "none (no targets.memory_limit)"})]
    sources = sorted(set(table.loc[table["pct"].notna(), "source"]))
    bases = sorted(set(table.loc[table["pct"].notna(), "basis"]))
    what = f"Memory ({bases[0]})" if len(bases) == 1 else "Memory"
    found = _per_instance_findings("memory.pressure", what, table, "pct", "%", "max over the window", level,
                                   MEMORY_ADVICE, ["rss_mb", "heap_used_mb", "heap_committed_mb", "limit_mb",
                                                   "last_pct", "basis", "source"])
    for f in found:
        if f.severity == "ok":
            f.evidence["sources"] = sources
        # the verdict table's "statistic": which numbers were divided (a fallback is named)
        f.evidence["statistic"] = "max over the window, " + (f.evidence.get("source") or " or ".join(sources))
    return table, found


# --------------------------------------------------------------------------- memory growth (leak suspicion)


def linear_fit(series: pd.DataFrame) -> dict[str, float]:
    """Least-squares line through ``value`` over time (minutes): ``slope`` (per minute),
    ``r2``, ``start``/``end`` (fitted values at the first/last sample), ``minutes``,
    ``late_slope`` (slope over the second half alone), ``samples``."""
    df = series.sort_values("timestamp")
    t = (df["timestamp"] - df["timestamp"].iloc[0]).dt.total_seconds().to_numpy() / 60.0
    y = df["value"].to_numpy(dtype=float)
    out = {"samples": len(y), "minutes": float(t[-1]) if len(t) else 0.0, "slope": np.nan, "r2": np.nan,
           "start": np.nan, "end": np.nan, "late_slope": np.nan, "last": float(y[-1]) if len(y) else np.nan}
    if len(y) < 5 or t[-1] <= 0:
        return out
    slope, intercept = np.polyfit(t, y, 1)
    fitted = intercept + slope * t
    ss_res = float(((y - fitted) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    half = t >= t[-1] / 2
    late = np.polyfit(t[half], y[half], 1)[0] if half.sum() >= 3 and np.ptp(t[half]) > 0 else np.nan
    out.update(slope=float(slope), r2=1 - ss_res / ss_tot if ss_tot > 0 else 0.0, start=float(fitted[0]),
               end=float(fitted[-1]), late_slope=float(late))
    return out


def _rss_only(rows: pd.DataFrame) -> bool:
    """True when RSS grows while the JS heap, measured over the same window (5 samples or
    more), does not: V8 reserving heap as a young process takes traffic, or native memory.
    A leak of JS objects, what heap snapshots can find, grows heap used."""
    heap = rows[rows["metric"] == "heap used"]
    rss = rows[rows["metric"] == "RSS"]
    return (bool(len(rss)) and bool(rss["grows"].any()) and bool(len(heap))
            and not heap["grows"].any() and int(heap["samples"].max()) >= 5)


def _rss_only_finding(inst: Any, rss: pd.Series) -> Finding:
    return Finding(
        "memory.growth", "info",
        f"RSS on {inst} grows ({rss['start_mb']:.0f} → {rss['end_mb']:.0f} MB in {rss['minutes']:.1f} min, "
        f"{rss['slope_mb_per_min']:.1f} MB/min) while the JS heap used stays flat: V8 reserving memory (a young "
        f"process warming up) or native memory, not a leak of JS objects",
        subject=str(inst),
        evidence={"observed": rss["slope_mb_per_min"], "unit": "MB/min", "metric": "RSS", "heap_used_grows": False,
                  "start_mb": rss["start_mb"], "end_mb": rss["end_mb"], "r2": rss["r2"], "minutes": rss["minutes"],
                  "minutes_to_limit": rss["minutes_to_limit"], "limit_mb": rss["limit_mb"]},
        recommendation="Watch it over a longer window: RSS that keeps growing with a flat heap is native memory "
                       "(Buffers, native addons: nodejs_external_memory_bytes); memory.pressure judges RSS against "
                       "the instance's limit.")


def _time_to_limit(minutes: float, limit_mb: float) -> str:
    """How the growth title says when the limit is reached: never "in 0 min"."""
    if pd.isna(minutes):
        return ""
    if minutes <= 0:
        return f"; it is already at its {limit_mb:.0f} MB limit"
    if minutes < 1:
        return f"; at this rate it reaches its {limit_mb:.0f} MB limit in under a minute"
    return f"; at this rate it reaches its {limit_mb:.0f} MB limit in {minutes:.0f} min"


def memory_growth(heap_used: pd.DataFrame | None, rss: pd.DataFrame | None,
                  heap_limits: dict[str, float] | float | None = None, rss_limit: float | None = None, *,
                  settings: Diagnostics) -> tuple[pd.DataFrame, list[Finding]]:
    """``memory.growth``: memory that grows steadily across the window — leak suspected.

    For each instance and each of heap used and RSS, a straight line is fitted over the
    window (:func:`linear_fit`). It is growth when all three hold (``settings``:
    settings.diagnostics.growth_*): slope at least ``growth_min_mb_per_min`` MB/min, R² at
    least ``growth_min_r2`` (the rise is steady, not one step or GC noise), and the fitted
    rise at least ``growth_min_share`` of the starting level (10 %: more than warm-up
    jitter). Warning; critical when, at that slope, the memory reaches its limit within
    ``growth_critical_horizon`` seconds (heap used: ``heap_limits``, bytes per instance
    or one for all; RSS: ``rss_limit``, the instance's memory limit). One finding per
    instance; ``ok`` if none grows; ``info`` when there is no series to fit (snapshot mode),
    and ``info`` when only RSS grows while the JS heap used, measured, stays flat (a young
    process's V8 reserving memory, or native memory: :func:`_rss_only`).
    """
    min_mb_per_min, min_r2 = settings.growth_min_mb_per_min, settings.growth_min_r2
    min_share, critical_horizon_s = settings.growth_min_share, settings.growth_critical_horizon
    rows = []
    for metric, series, limits in (("heap used", heap_used, heap_limits), ("RSS", rss, rss_limit)):
        df = _clean_series(series)
        for inst, g in df.groupby("instance"):
            fit = linear_fit(g)
            limit = limits.get(inst) if isinstance(limits, dict) else limits
            slope_mb = fit["slope"] / MB
            share = (fit["end"] - fit["start"]) / fit["start"] if fit["start"] and fit["start"] > 0 else np.nan
            to_limit = ((limit - fit["last"]) / fit["slope"] * 60.0
                        if limit and fit["slope"] and fit["slope"] > 0 and limit > fit["last"] else
                        (0.0 if limit and fit["last"] >= limit else np.nan))
            grows = bool(slope_mb >= min_mb_per_min and fit["r2"] >= min_r2 and share >= min_share)
            rows.append({"instance": inst, "metric": metric, "start_mb": fit["start"] / MB, "end_mb": fit["end"] / MB,
                         "slope_mb_per_min": slope_mb, "late_slope_mb_per_min": fit["late_slope"] / MB,
                         "r2": fit["r2"], "growth_share": share, "minutes": fit["minutes"],
                         "limit_mb": (limit / MB) if limit else np.nan, "minutes_to_limit": to_limit / 60.0
                         if not pd.isna(to_limit) else np.nan, "samples": fit["samples"], "grows": grows})
    cols = ["instance", "metric", "start_mb", "end_mb", "slope_mb_per_min", "late_slope_mb_per_min", "r2",
            "growth_share", "minutes", "limit_mb", "minutes_to_limit", "samples", "grows"]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table, _no_data("memory.growth", "Memory growth", "nodejs_heap_size_used_bytes")
    if table["samples"].max() < 5:
        return table, [Finding("memory.growth", "info",
                               "Memory growth not judged: it needs the window's series (a Prometheus server); "
                               f"only {int(table['samples'].max())} sample(s) per instance", subject="metrics",
                               evidence={"samples": int(table["samples"].max())})]
    found = []
    for inst, g in table.groupby("instance"):
        growing = g[g["grows"]]
        if growing.empty:
            continue
        top = growing.sort_values("slope_mb_per_min", ascending=False).iloc[0]
        if _rss_only(g):
            found.append(_rss_only_finding(inst, top))
            continue
        soon = not pd.isna(top["minutes_to_limit"]) and top["minutes_to_limit"] * 60 <= critical_horizon_s
        sev = "critical" if soon else "warning"
        when = _time_to_limit(top["minutes_to_limit"], top["limit_mb"])
        found.append(Finding(
            "memory.growth", sev,
            f"{top['metric'][0].upper() + top['metric'][1:]} on {inst} grows steadily: {top['start_mb']:.0f} → {top['end_mb']:.0f} MB "
            f"in {top['minutes']:.1f} min ({top['slope_mb_per_min']:.1f} MB/min, R² {top['r2']:.2f}){when}",
            subject=str(inst),
            evidence={"observed": top["slope_mb_per_min"], "unit": "MB/min",
                      "statistic": "slope of a straight-line fit over the window", "metric": top["metric"],
                      "start_mb": top["start_mb"], "end_mb": top["end_mb"], "r2": top["r2"],
                      "growth_share": top["growth_share"], "late_slope_mb_per_min": top["late_slope_mb_per_min"],
                      "minutes": top["minutes"], "minutes_to_limit": top["minutes_to_limit"],
                      "limit_mb": top["limit_mb"], "also_growing": [m for m in growing["metric"] if m != top["metric"]],
                      "min_mb_per_min": min_mb_per_min, "min_r2": min_r2, "min_share": min_share,
                      "critical_horizon_s": critical_horizon_s},
            recommendation="Leak suspected (runbook Issue 1 §3, Memory Leaks). Take two heap snapshots a few minutes "
                           "apart (`node --heapsnapshot-signal=SIGUSR2`, `kill -USR2 <pid>`), name them in "
                           "targets.heap_snapshots and re-run this section: it lists the constructors that grew. "
                           "Usual causes: listeners never removed, module-level arrays or maps that only grow, "
                           "caches without TTL/size limit. Immediate relief: `flyctl apps restart`."))
    if not found:
        worst = table.sort_values("slope_mb_per_min", ascending=False).iloc[0]
        # say which of the three conditions the steepest line misses, so the title never reads
        # as "flat" beside a large slope that is only unsteady (a sawtooth of big requests)
        missed = [c for c, ok in ((f"slope under {min_mb_per_min:g} MB/min", worst["slope_mb_per_min"] >= min_mb_per_min),
                                  (f"not steady: R² under {min_r2:g}", worst["r2"] >= min_r2),
                                  (f"rise under {min_share:.0%} of the start", worst["growth_share"] >= min_share))
                  if not ok]
        found.append(Finding(
            "memory.growth", "ok",
            f"No steady memory growth: steepest is {worst['metric']} on {worst['instance']} at "
            f"{worst['slope_mb_per_min']:.2f} MB/min (R² {worst['r2']:.2f}, {worst['growth_share']:+.0%}) — "
            + ", ".join(missed),
            subject="all instances",
            evidence={"observed": worst["slope_mb_per_min"], "unit": "MB/min", "r2": worst["r2"],
                      "growth_share": worst["growth_share"], "instance": worst["instance"], "metric": worst["metric"],
                      "min_mb_per_min": min_mb_per_min, "min_r2": min_r2, "min_share": min_share,
                      "critical_horizon_s": critical_horizon_s, "not_met": missed}))
    return table, found
