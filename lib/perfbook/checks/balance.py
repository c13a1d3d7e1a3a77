"""Issue 3, Load Balancing Adjustments: is the load spread evenly across instances?

The runbook's diagnosis is ``flyctl status``: CPU and memory per machine, side by side
(85 % next to 30 % is its example of "uneven load distribution"). Here the same per
instance, over the whole window, from the service's own metrics: request rate, CPU,
memory, p95 latency, and in-flight requests (``http_connections_active`` when exported,
else Little's law: request rate x mean latency).

Heuristic (a balancer doing its job keeps instances within some 10-20 % of the mean;
the thresholds are ``settings.balance`` and ``thresholds.cpu_percent``, defaults shown):

- **max/mean** of the request rate per instance >= 1.3 (with two instances: a 65/35
  split), or its **coefficient of variation** (population std / mean) >= 0.25;
- or the same for CPU, when the fleet is busy enough for CPU to mean something (mean
  >= 10 % of a core) and the hottest instance is at least at the runbook's "normal" top
  (50 %);
- judged only with at least two instances and 0.5 req/s of traffic.

The hot instance is the one with the highest share; *since when* is the start of its
last unbroken stretch above the threshold (per point of the window's series).

The numbers come from :meth:`perfbook.sources.window_metrics.WindowMetrics.instance_frame`
(one PromQL range query, or one /metrics scrape per instance when no Prometheus is
configured); :func:`series_from` makes them the per-instance series everything here
reads. Pure: no query is built or run here.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..findings import Finding
from ..params import Balance, Level
from .quantile import histogram_quantile

MEASURES = ("rps", "err_rps", "cpu", "memory", "p95", "latency_mean", "connections", "route_p95", "route_rps")


# --------------------------------------------------------------------------- the data


def tidy_series(frame: pd.DataFrame, m: Any) -> pd.DataFrame:
    """The range query's answer as ``instance, measure, method, route, timestamp, value``
    (label columns renamed from the params' label names; NaN values dropped)."""
    cols = ["instance", "measure", "method", "route", "timestamp", "value"]
    if frame is None or frame.empty or "measure" not in frame:
        return pd.DataFrame(columns=cols)
    out = frame.rename(columns={m.instance_label: "instance", m.method_label: "method", m.route_label: "route"})
    for c in cols:
        if c not in out:
            out[c] = np.nan
    out = out[cols]
    out = out[np.isfinite(out["value"].astype(float))]
    return out.reset_index(drop=True)


def series_from_scrape(scrape: pd.DataFrame, m: Any) -> pd.DataFrame:
    """Snapshot mode (one /metrics scrape per instance, no Prometheus): each measure
    averaged since the process started — request rate and CPU are totals divided by
    uptime (``process_start_time_seconds``), p95 comes from the cumulative histogram.
    One point per instance; no "since when"."""
    rows = []
    if scrape is None or scrape.empty:
        return tidy_series(pd.DataFrame(), m)
    for inst, g in scrape.groupby("instance"):
        now = g["timestamp"].max()
        start = g.loc[g["metric"] == "process_start_time_seconds", "value"]
        uptime = (now.timestamp() - float(start.max())) if len(start) else math.nan
        def total(name: str, mask=None) -> float:
            d = g[g["metric"] == name]
            if mask is not None:
                d = d[mask(d)]
            return float(d["value"].sum()) if len(d) else math.nan
        req = total(m.http_requests)
        err = total(m.http_requests, lambda d: d.get(m.status_label, pd.Series("", index=d.index)).astype(str).str.match(r"5\d\d"))
        cpu = total(m.cpu_seconds)
        b = g[g["metric"] == f"{m.http_duration}_bucket"]
        buckets = b.groupby("le")["value"].sum() if len(b) else pd.Series(dtype=float)
        p95 = histogram_quantile(0.95, list(buckets.items())) if len(buckets) else math.nan
        dsum, dcount = total(f"{m.http_duration}_sum"), total(f"{m.http_duration}_count")
        vals = {"rps": req / uptime, "err_rps": err / uptime, "cpu": 100 * cpu / uptime,
                "memory": total(m.resident_memory), "p95": p95,
                "latency_mean": dsum / dcount if dcount else math.nan,
                "connections": total(m.http_connections)}
        for k, v in vals.items():
            rows.append({"instance": inst, "measure": k, "timestamp": now, "value": v})
        if len(b) and m.route_label in b:
            for (meth, route), rb in b.groupby([m.method_label, m.route_label]):
                q = histogram_quantile(0.95, list(rb.groupby("le")["value"].sum().items()))
                n = float(g[(g["metric"] == f"{m.http_duration}_count") & (g[m.route_label] == route)
                            & (g[m.method_label] == meth)]["value"].sum())
                rows.append({"instance": inst, "measure": "route_p95", "method": meth, "route": route,
                             "timestamp": now, "value": q})
                rows.append({"instance": inst, "measure": "route_rps", "method": meth, "route": route,
                             "timestamp": now, "value": n / uptime})
    frame = pd.DataFrame(rows)
    frame = frame.rename(columns={"instance": m.instance_label, "method": m.method_label, "route": m.route_label})
    return tidy_series(frame, m)


def series_from(kind: str, frame: pd.DataFrame, m: Any) -> pd.DataFrame:
    """Per-instance series from what :meth:`perfbook.sources.window_metrics.WindowMetrics.instance_frame`
    returned: ``kind`` ``"prometheus"`` (the range query's answer, :func:`tidy_series`) or
    ``"snapshot"`` (one scrape per instance, :func:`series_from_scrape`)."""
    return tidy_series(frame, m) if kind == "prometheus" else series_from_scrape(frame, m)


# --------------------------------------------------------------------------- per instance


def instance_summary(series: pd.DataFrame, memory_limit_bytes: int | None = None) -> pd.DataFrame:
    """One row per instance over the window: mean req/s and its share, 5xx share, CPU
    (mean, median, max; % of one core), memory (max; % of the limit when known), p95
    (median of the window's p95s, s), in-flight requests (mean and peak) and how they
    were measured."""
    cols = ["instance", "rps", "share", "error_rate", "cpu_mean", "cpu_median", "cpu_max", "memory_max_bytes",
            "memory_percent", "p95_s", "concurrency_mean", "concurrency_peak", "concurrency_from"]
    per = series[series["instance"].notna() & series["measure"].isin(
        ["rps", "err_rps", "cpu", "memory", "p95", "latency_mean", "connections"])]
    if per.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for inst, g in per.groupby("instance"):
        def s(measure: str) -> pd.Series:
            return g.loc[g["measure"] == measure].sort_values("timestamp").set_index("timestamp")["value"]
        rps, err, cpu, mem, p95, lat, conn = (s(x) for x in ("rps", "err_rps", "cpu", "memory", "p95",
                                                             "latency_mean", "connections"))
        if len(conn) and conn.max() > 0:
            conc, source = conn, "http_connections_active"
        else:
            conc, source = (rps * lat).dropna(), "req/s x mean latency (Little's law)"
        mem_max = float(mem.max()) if len(mem) else math.nan
        rows.append({"instance": inst, "rps": float(rps.mean()) if len(rps) else 0.0,
                     "error_rate": float(err.mean() / rps.mean()) if len(err) and len(rps) and rps.mean() > 0 else 0.0,
                     "cpu_mean": float(cpu.mean()) if len(cpu) else math.nan,
                     "cpu_median": float(cpu.median()) if len(cpu) else math.nan,
                     "cpu_max": float(cpu.max()) if len(cpu) else math.nan,
                     "memory_max_bytes": mem_max,
                     "memory_percent": 100 * mem_max / memory_limit_bytes if memory_limit_bytes else math.nan,
                     "p95_s": float(p95.median()) if len(p95) else math.nan,
                     "concurrency_mean": float(conc.mean()) if len(conc) else math.nan,
                     "concurrency_peak": float(conc.max()) if len(conc) else math.nan,
                     "concurrency_from": source if len(conc) else "no data"})
    out = pd.DataFrame(rows)
    total = out["rps"].sum()
    out["share"] = out["rps"] / total if total > 0 else math.nan
    return out[cols].sort_values("rps", ascending=False).reset_index(drop=True)


def imbalance(values: pd.Series) -> tuple[float, float]:
    """(max/mean, coefficient of variation) of per-instance values; NaN when the mean is 0."""
    v = pd.Series(values, dtype=float).dropna()
    if len(v) < 2 or v.mean() <= 0:
        return math.nan, math.nan
    return float(v.max() / v.mean()), float(v.std(ddof=0) / v.mean())


def imbalance_over_time(series: pd.DataFrame, measure: str = "rps") -> pd.DataFrame:
    """Per point of the window: max/mean and CV across instances, and which is hottest."""
    if series is None:
        return pd.DataFrame(columns=["timestamp", "max_over_mean", "cv", "hot", "instances"])
    d = series[(series["measure"] == measure) & series["instance"].notna()]
    if d.empty:
        return pd.DataFrame(columns=["timestamp", "max_over_mean", "cv", "hot", "instances"])
    wide = d.pivot_table(index="timestamp", columns="instance", values="value", aggfunc="mean").sort_index()
    mean = wide.mean(axis=1)
    ok = mean > 0
    return pd.DataFrame({
        "timestamp": wide.index,
        "max_over_mean": (wide.max(axis=1) / mean).where(ok),
        "cv": (wide.std(axis=1, ddof=0) / mean).where(ok),
        "hot": wide.idxmax(axis=1).where(ok),
        "instances": wide.notna().sum(axis=1),
    }).reset_index(drop=True)


def hot_since(series: pd.DataFrame, instance: str, measure: str, *,
              ratio: float) -> tuple[pd.Timestamp | None, float]:
    """When ``instance`` became hot: the start of its last unbroken run of points at or
    above ``ratio`` x the mean across instances (one point below is tolerated), and the
    share of the window's points where it was hot."""
    d = series[(series["measure"] == measure) & series["instance"].notna()]
    if d.empty:
        return None, math.nan
    wide = d.pivot_table(index="timestamp", columns="instance", values="value", aggfunc="mean").sort_index()
    if instance not in wide:
        return None, math.nan
    mean = wide.mean(axis=1)
    hot = (wide[instance] >= ratio * mean) & (mean > 0)
    if not hot.any():
        return None, 0.0
    flags = hot.to_numpy()
    end = len(flags) - 1
    while end >= 0 and not flags[end]:
        end -= 1
    i, gap = end, 0
    start = end
    while i >= 0:
        if flags[i]:
            start, gap = i, 0
        else:
            gap += 1
            if gap > 1:
                break
        i -= 1
    return wide.index[start], float(hot.mean())


# --------------------------------------------------------------------------- findings


def _fmt_ts(ts: pd.Timestamp | None) -> str:
    return "—" if ts is None else pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


def uneven_load(series: pd.DataFrame, summary: pd.DataFrame, *, settings: Balance, cpu: Level,
                target_cpu: float, service: str = "", fly: Any = None) -> tuple[pd.DataFrame, list[Finding]]:
    """Uneven load across instances → ``balance.uneven`` (subject: the hot instance).

    Warning when request rate or CPU is imbalanced past ``settings.max_over_mean`` /
    ``settings.cv`` for at least ``settings.min_hot_share`` of the window; critical when, in
    addition, the hot instance's CPU is at ``cpu.warning`` (the runbook's 70 %) while the
    others are under ``cpu.normal`` (its normal top, 50 %) — "some instances overloaded,
    others idle", the "85 % next to 30 %" of its example. ``ok`` when balanced.
    ``target_cpu``: settings.scaling.target_cpu_percent, for the suggested soft limit.
    Returns the comparison table (per measure: max/mean, CV, hot instance)."""
    if series is None or summary is None:   # the source was unreachable: already reported
        return pd.DataFrame(), []
    table_rows: list[dict] = []
    n = len(summary)
    if n < 2:
        return pd.DataFrame(), [Finding(
            "balance.uneven", "info", f"Only {n} instance{'s' if n != 1 else ''} reported metrics: nothing to balance",
            subject=None if n == 0 else str(summary.iloc[0]["instance"]), evidence={"instances": n},
            recommendation="Run at least two instances for availability (runbook Issue 4: "
                           "`flyctl scale count 2`, [scaling] min_machines = 2).")]
    total = float(summary["rps"].sum())
    max_over_mean, cpu_normal = settings.max_over_mean, cpu.normal
    if total < settings.min_rps:
        return pd.DataFrame(), [Finding(
            "balance.uneven", "ok", f"Too little traffic to judge the balance ({total:.2f} req/s in all)",
            evidence={"instances": n, "total_rps": total})]
    judged = {}
    for measure, col in (("rps", "rps"), ("cpu", "cpu_mean")):
        mom, c = imbalance(summary[col])
        hot = str(summary.loc[summary[col].idxmax(), "instance"]) if summary[col].notna().any() else None
        over = imbalance_over_time(series, measure)
        share = float((over["max_over_mean"] >= max_over_mean).mean()) if len(over) > 1 else (1.0 if mom >= max_over_mean else 0.0)
        busy = measure == "rps" or (summary["cpu_mean"].mean() >= settings.min_cpu_mean
                                    and summary["cpu_mean"].max() >= cpu_normal)
        uneven = busy and (mom >= max_over_mean or c >= settings.cv) and share >= settings.min_hot_share
        judged[measure] = {"max_over_mean": mom, "cv": c, "hot": hot, "uneven": uneven, "share_of_window": share}
        table_rows.append({"measure": {"rps": "request rate", "cpu": "CPU"}[measure], "max/mean": mom, "CV": c,
                           "hot instance": hot, "window share imbalanced": share,
                           "verdict": "uneven" if uneven else ("not judged (idle)" if not busy else "balanced")})
    table = pd.DataFrame(table_rows)
    evidence_common = {
        "instances": n, "total_rps": round(total, 3),
        "rps_by_instance": {r["instance"]: round(r["rps"], 3) for r in summary.to_dict("records")},
        "share_by_instance": {r["instance"]: round(r["share"], 3) for r in summary.to_dict("records")},
        "cpu_by_instance": {r["instance"]: None if pd.isna(r["cpu_mean"]) else round(r["cpu_mean"], 1)
                            for r in summary.to_dict("records")},
        "p95_ms_by_instance": {r["instance"]: None if pd.isna(r["p95_s"]) else round(r["p95_s"] * 1000, 1)
                               for r in summary.to_dict("records")},
        "rps_max_over_mean": judged["rps"]["max_over_mean"], "rps_cv": judged["rps"]["cv"],
        "cpu_max_over_mean": judged["cpu"]["max_over_mean"], "cpu_cv": judged["cpu"]["cv"],
    }
    if not (judged["rps"]["uneven"] or judged["cpu"]["uneven"]):
        return table, [Finding(
            "balance.uneven", "ok",
            f"Load is even across {n} instances (request rate max/mean {judged['rps']['max_over_mean']:.2f}, "
            f"CV {judged['rps']['cv']:.2f})", evidence=evidence_common)]
    measure = "rps" if judged["rps"]["uneven"] else "cpu"
    hot = judged[measure]["hot"]
    row = summary[summary["instance"] == hot].iloc[0]
    others = summary[summary["instance"] != hot]
    since, hot_share = hot_since(series, hot, measure, ratio=max_over_mean)
    # The runbook's symptom, "some instances overloaded, others idle": critical.
    sev = "critical" if (row["cpu_mean"] >= cpu.warning and others["cpu_mean"].mean() < cpu_normal) else "warning"
    mom = judged[measure]["max_over_mean"]
    what = (f"{row['share']:.0%} of requests ({row['rps']:.1f} req/s vs {others['rps'].mean():.1f} on the others)"
            if measure == "rps" else f"CPU {row['cpu_mean']:.0f} % vs {others['cpu_mean'].mean():.0f} % on the others")
    title = (f"Uneven load: {hot} takes {what}; max/mean {mom:.2f}, CV {judged[measure]['cv']:.2f}"
             + (f", hot since {_fmt_ts(since)}" if since is not None else ""))
    evidence = {**evidence_common, "hot_instance": hot, "measure": measure, "max_over_mean": mom,
                "cv": judged[measure]["cv"], "hot_since": None if since is None else pd.Timestamp(since).isoformat(),
                "hot_share_of_window": hot_share, "hot_cpu_percent": row["cpu_mean"],
                "hot_p95_ms": None if pd.isna(row["p95_s"]) else row["p95_s"] * 1000,
                "others_p95_ms": None if others["p95_s"].isna().all() else float(others["p95_s"].median() * 1000)}
    return table, [Finding("balance.uneven", sev, title, subject=hot, evidence=evidence,
                           recommendation=recommendations(summary, target_cpu=target_cpu, service=service, fly=fly))]


def recommendations(summary: pd.DataFrame, *, target_cpu: float, service: str = "", fly: Any = None) -> str:
    """The runbook's three solutions, made concrete with this window's numbers."""
    app = (fly.app if fly is not None and getattr(fly, "app", None) else service) or "<app>"
    n = len(summary)
    lines = []
    svc = fly.concurrency if fly is not None else None
    soft = suggested_soft_limit(summary, target_cpu)
    if svc is not None:
        lines.append(f"1. Fly.io load balancing: [services.concurrency] is type = \"{svc.concurrency_type}\", "
                     f"soft_limit = {svc.soft_limit}, hard_limit = {svc.hard_limit}.")
        if svc.concurrency_type == "connections":
            lines.append("   With type = \"connections\" the proxy balances connections, not requests: a few "
                         "keep-alive clients stay pinned to one machine. Use type = \"requests\".")
    else:
        lines.append("1. Fly.io load balancing: check [[services]] / [services.concurrency] in fly.toml "
                     "(type = \"requests\" balances per request; type = \"connections\" pins keep-alive clients).")
    if soft is not None:
        lines.append(f"   A soft_limit near {soft} in-flight requests per machine (its throughput at {target_cpu:.0f} % "
                     f"CPU x mean latency, Little's law) makes the proxy prefer idle machines before one saturates; "
                     f"hard_limit about 25 % above it.")
    lines.append(f"2. More instances for better distribution: flyctl scale count {max(n + 1, 3)} --app {app}; "
                 f"auto-scaling in fly.toml: [scaling] min_machines = {max(2, n)}, max_machines = {max(10, 2 * n)}.")
    lines.append(f"3. Regional distribution, if the traffic is regional: flyctl regions add <region> --app {app}; "
                 f"flyctl scale count 2 --region <region>.")
    lines.append("If the split is far from even with identical machines, suspect what sits in front: "
                 "sticky sessions, a client reusing one long-lived connection, DNS pinning.")
    return "\n".join(lines)


def suggested_soft_limit(summary: pd.DataFrame, target_cpu: float) -> int | None:
    """In-flight requests one instance carries at ``target_cpu``: its req/s per CPU %
    scaled to the target, times the mean latency (Little's law). None without CPU data."""
    s = summary[(summary["cpu_mean"] > 1) & (summary["rps"] > 0)]
    if s.empty or s["concurrency_mean"].isna().all():
        return None
    rps_at_target = float((s["rps"] / s["cpu_mean"]).median() * target_cpu)
    latency = float((s["concurrency_mean"] / s["rps"]).median())
    if not math.isfinite(rps_at_target * latency):
        return None
    return max(1, int(round(rps_at_target * latency)))


def concurrency_vs_limits(summary: pd.DataFrame, fly: Any) -> tuple[pd.DataFrame, list[Finding]]:
    """Observed in-flight requests per instance against fly.toml's
    ``[services.concurrency]``: at or above the hard limit Fly's proxy sends the machine
    no new work (requests queue at the edge) → ``balance.uneven`` warning for that
    instance; above the soft limit it prefers other machines → information."""
    svc = fly.concurrency if fly is not None else None
    if svc is None or summary is None or summary.empty:
        return pd.DataFrame(), []
    t = summary[["instance", "concurrency_mean", "concurrency_peak", "concurrency_from"]].copy()
    t["soft_limit"], t["hard_limit"], t["limit_type"] = svc.soft_limit, svc.hard_limit, svc.concurrency_type
    t["peak_over_soft"] = t["concurrency_peak"] / svc.soft_limit if svc.soft_limit else math.nan
    t["peak_over_hard"] = t["concurrency_peak"] / svc.hard_limit if svc.hard_limit else math.nan
    findings = []
    for r in t.to_dict("records"):
        peak = r["concurrency_peak"]
        if pd.isna(peak):
            continue
        ev = {"concurrency_mean": r["concurrency_mean"], "concurrency_peak": peak, "measured_as": r["concurrency_from"],
              "soft_limit": svc.soft_limit, "hard_limit": svc.hard_limit, "type": svc.concurrency_type,
              "fly_toml": getattr(fly, "path", "")}
        if svc.hard_limit and peak >= svc.hard_limit:
            findings.append(Finding("balance.uneven", "warning",
                                    f"{r['instance']} reaches fly.toml's hard_limit: {peak:.0f} in flight ≥ {svc.hard_limit}",
                                    subject=r["instance"], evidence=ev,
                                    recommendation="At the hard limit Fly's proxy stops sending this machine new work and "
                                                   "requests queue at the edge: add machines (flyctl scale count N) or, if "
                                                   "the machine has CPU to spare, raise soft/hard limits."))
        elif svc.soft_limit and peak >= svc.soft_limit:
            findings.append(Finding("balance.uneven", "info",
                                    f"{r['instance']} goes above fly.toml's soft_limit: {peak:.0f} in flight ≥ {svc.soft_limit}",
                                    subject=r["instance"], evidence=ev,
                                    recommendation="Above the soft limit Fly's proxy prefers other machines; sustained, it "
                                                   "means the fleet is near capacity (see the scaling section)."))
    return t, findings

