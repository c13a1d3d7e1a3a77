"""Issue 4, Horizontal Scaling: scale out, scale in, or leave it — and to how many.

The runbook's "Scale out (add instances) when":

1. **CPU > 70 % on all instances** — each instance's *median* CPU over the window above
   ``settings.scaling.target_cpu_percent`` (70, also the runbook's ``[[metrics]] cpu``
   target): busy most of the time, not a spike;
2. **Response times consistently above target** — an endpoint's p95 above its target for
   the median point of the window;
3. **Traffic increasing steadily** — total req/s trends up: Mann–Kendall test significant
   at ``trend_p_value`` (5 %) *and* the Theil–Sen slope adds at least ``trend_min_growth``
   (10 %) over the window. Points are thinned to one per ``rate()`` range first, since
   overlapping rate windows are not independent samples.

Rule 1 alone is the runbook's trigger; with rule 2 it is critical. Rule 2 without CPU
pressure is *not* a reason to scale: the time goes elsewhere (database, external calls),
and the finding says so. Rule 3 counts when the projection says the current fleet will
not carry the trend.

**Projection.** Throughput one instance carries at the target utilization, from the
window: ``req/s per instance / CPU % x 70`` (CPU taken as proportional to throughput;
idle CPU makes this conservative). Instances needed = ``ceil(demand / that)``, demand
being the window's 95th-percentile total req/s, never fewer than
``settings.scaling.min_instances`` (2, the runbook's ``min_machines``) or fly.toml's.

Fewer instances than the minimum is the runbook's fourth reason, "need higher
availability": scale out to the minimum.

**Scale in** only when clearly over-provisioned: every instance's CPU (95th percentile
over the window) under ``scale_in_cpu_percent`` (20 %), every endpoint's p95 under half
its target, traffic not rising, and more instances than the minimum.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..findings import Finding
from ..web import route_key

# --------------------------------------------------------------------------- trend


def mann_kendall(values: Iterable[float]) -> tuple[float, float, float]:
    """Mann–Kendall trend test: (S, z, two-sided p). Ties are ignored in the variance
    (conservative enough for rates). p is 1.0 for fewer than 4 points."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n < 4:
        return 0.0, 0.0, 1.0
    diff = x[None, :] - x[:, None]
    s = float(np.sign(diff[np.triu_indices(n, 1)]).sum())
    var = n * (n - 1) * (2 * n + 5) / 18.0
    z = (s - np.sign(s)) / math.sqrt(var) if s != 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return s, z, p


def theil_sen(t: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Theil–Sen line (slope, intercept): median of pairwise slopes; robust to outliers."""
    t, y = np.asarray(list(t), dtype=float), np.asarray(list(y), dtype=float)
    if len(t) < 2:
        return math.nan, math.nan
    i, j = np.triu_indices(len(t), 1)
    dt = t[j] - t[i]
    ok = dt != 0
    if not ok.any():
        return math.nan, math.nan
    slope = float(np.median((y[j] - y[i])[ok] / dt[ok]))
    return slope, float(np.median(y - slope * t))


def total_throughput(series: pd.DataFrame) -> pd.DataFrame:
    """Total req/s across instances per point of the window (``timestamp``, ``value``),
    leading points before traffic started (under 10 % of the median) dropped."""
    d = series[(series["measure"] == "rps") & series["instance"].notna()]
    if d.empty:
        return pd.DataFrame(columns=["timestamp", "value"])
    tot = d.groupby("timestamp")["value"].sum().sort_index()
    med = tot.median()
    started = tot[tot >= 0.1 * med].index
    if len(started):
        tot = tot[tot.index >= started[0]]
    return tot.reset_index().rename(columns={0: "value"})


def traffic_trend(total: pd.DataFrame, *, spacing_s: float, p_value: float, min_growth: float) -> dict[str, Any]:
    """Is total traffic rising steadily? Thins the series to one point per
    ``spacing_s`` (the rate() range; 0 keeps every point), then Mann–Kendall + Theil–Sen:
    rising when significant at ``p_value`` and grown by ``min_growth`` over the window
    (settings.scaling.trend_p_value, trend_min_growth). Returns ``rising``
    (bool), ``slope_per_s``, ``intercept`` (on the full series' time axis), ``growth``
    (fitted rise over the window / mean), ``p``, ``points``."""
    out = {"rising": False, "slope_per_s": math.nan, "intercept": math.nan, "growth": math.nan,
           "p": 1.0, "z": 0.0, "points": 0}
    if total is None or len(total) < 2:
        return out
    t0 = total["timestamp"].iloc[0]
    secs = (total["timestamp"] - t0).dt.total_seconds().to_numpy()
    vals = total["value"].to_numpy(dtype=float)
    if spacing_s > 0:
        keep, last = [], -math.inf
        for k, s in enumerate(secs):
            if s - last >= spacing_s:
                keep.append(k)
                last = s
        secs_t, vals_t = secs[keep], vals[keep]
    else:
        secs_t, vals_t = secs, vals
    _, z, p = mann_kendall(vals_t)
    slope, intercept = theil_sen(secs_t, vals_t) if len(secs_t) >= 2 else (math.nan, math.nan)
    span = secs[-1] - secs[0]
    mean = float(np.nanmean(vals)) if len(vals) else math.nan
    growth = slope * span / mean if mean and math.isfinite(slope) else math.nan
    out.update(slope_per_s=slope, intercept=intercept, growth=growth, p=p, z=z, points=int(len(vals_t)),
               rising=bool(len(vals_t) >= 4 and p < p_value and z > 0 and growth >= min_growth))
    return out


# --------------------------------------------------------------------------- rules


def route_latency(series: pd.DataFrame, endpoints: Iterable[Any], *, well_within: float) -> pd.DataFrame:
    """Per params endpoint with traffic: median and max over the window of its p95 (all
    instances together), against its p95 target; ``well_within`` when the max stays under
    that share of the target (settings.scaling.scale_in_latency_share)."""
    cols = ["endpoint", "p95_median_s", "p95_max_s", "target_p95_s", "ratio", "above_target", "well_within"]
    d = series[(series["measure"] == "route_p95") & series["route"].notna()]
    if d.empty:
        return pd.DataFrame(columns=cols)
    by_key = {(e.method, route_key(e.route)): e for e in endpoints}
    rows = []
    for (method, route), g in d.groupby(["method", "route"]):
        e = by_key.get((str(method), route_key(route)))
        if e is None:
            continue
        med, mx = float(g["value"].median()), float(g["value"].max())
        t = e.targets.p95
        rows.append({"endpoint": e.name, "p95_median_s": med, "p95_max_s": mx, "target_p95_s": t,
                     "ratio": med / t, "above_target": med > t, "well_within": mx < well_within * t})
    return pd.DataFrame(rows, columns=cols)


def capacity(summary: pd.DataFrame, target_cpu: float) -> float | None:
    """Req/s one instance carries at ``target_cpu`` % (fleet req/s per CPU %, scaled).
    None when CPU is too low to extrapolate from (under 5 % of a core on average)."""
    s = summary[summary["cpu_mean"].notna()]
    if s.empty or s["cpu_mean"].mean() < 5 or s["rps"].sum() <= 0:
        return None
    return float(s["rps"].sum() / s["cpu_mean"].sum() * target_cpu)


def scaling_rules(series: pd.DataFrame, summary: pd.DataFrame, endpoints: Iterable[Any], settings: Any, *,
                  spacing_s: float, fly: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Evaluate the runbook's rules and the projection. Returns the rules table (rule,
    holds, evidence) and a dict with every number the findings need (``instances`` None
    when there was no data: the source was unreachable, already reported)."""
    if series is None or summary is None:
        empty = pd.DataFrame(columns=["timestamp", "value"])
        return pd.DataFrame(columns=["rule", "holds", "evidence"]), {
            "instances": None, "latency": pd.DataFrame(), "total": empty, "trend": None, "fleet_capacity_rps": None}
    target = settings.target_cpu_percent
    n = int(len(summary))
    cpu_p95 = {}
    for inst, g in series[(series["measure"] == "cpu") & series["instance"].notna()].groupby("instance"):
        cpu_p95[inst] = float(g["value"].quantile(0.95))
    cpu_all = bool(n > 0 and summary["cpu_median"].notna().all() and (summary["cpu_median"] > target).all())
    lat = route_latency(series, endpoints, well_within=settings.scale_in_latency_share)
    above = lat[lat["above_target"]] if not lat.empty else lat
    total = total_throughput(series)
    trend = traffic_trend(total, spacing_s=spacing_s, p_value=settings.trend_p_value,
                          min_growth=settings.trend_min_growth)
    cap = capacity(summary, target)
    demand = float(total["value"].quantile(0.95)) if len(total) else 0.0
    minimum = max(settings.min_instances, (fly.min_machines or 0) if fly is not None else 0)
    needed = max(minimum, math.ceil(demand / cap)) if cap else None
    grown = demand * (1 + trend["growth"]) if trend["rising"] and math.isfinite(trend["growth"]) else None
    needed_trend = max(minimum, math.ceil(grown / cap)) if cap and grown else None
    idle = bool(n > 0 and cpu_p95 and all(v < settings.scale_in_cpu_percent for v in cpu_p95.values()))
    fast = bool(not lat.empty and lat["well_within"].all())
    info = {"instances": n, "target_cpu": target, "cpu_all": cpu_all,
            "cpu_median_by_instance": {r["instance"]: round(r["cpu_median"], 1) for r in summary.to_dict("records")
                                       if not pd.isna(r["cpu_median"])},
            "cpu_p95_by_instance": {k: round(v, 1) for k, v in cpu_p95.items()},
            "latency_above": above["endpoint"].tolist() if not above.empty else [],
            "latency": lat, "trend": trend, "total": total, "capacity_per_instance_rps": cap,
            "demand_rps": demand, "fleet_capacity_rps": cap * n if cap else None, "needed": needed, "needed_if_trend_continues": needed_trend,
            "minimum": minimum, "idle": idle, "fast": fast, "fly": fly}
    rows = [
        {"rule": f"CPU > {target:g} % on all instances (median over the window)", "holds": cpu_all,
         "evidence": ", ".join(f"{k}: {v:.0f} %" for k, v in info["cpu_median_by_instance"].items()) or "no CPU data"},
        {"rule": "Response times consistently above target (median p95 > target)", "holds": bool(len(above)),
         "evidence": ", ".join(f"{r['endpoint']} {r['p95_median_s'] * 1000:.0f} ms > {r['target_p95_s'] * 1000:.0f} ms"
                               for r in above.to_dict("records")) or "every endpoint within its p95 target"},
        {"rule": "Traffic increasing steadily (Mann–Kendall p < "
                 f"{settings.trend_p_value:g}, growth ≥ {settings.trend_min_growth:.0%})", "holds": trend["rising"],
         "evidence": (f"{trend['slope_per_s'] * 60:+.2f} req/s per min, growth {trend['growth']:+.0%}, "
                      f"p = {trend['p']:.3f} over {trend['points']} independent points")
         if math.isfinite(trend["slope_per_s"]) else f"too few points ({trend['points']})"},
        {"rule": f"Instances needed at {target:g} % CPU", "holds": bool(needed and needed > n),
         "evidence": (f"{needed} (demand {demand:.1f} req/s ÷ {cap:.1f} req/s per instance; now {n})"
                      if needed else "no CPU data to project from")},
    ]
    return pd.DataFrame(rows), info


def _commands(n: int, app: str, fly: Any, minimum: int) -> str:
    max_m = max(2 * n, (fly.max_machines or 0) if fly is not None else 0, 10)
    return (f"flyctl scale count {n} --app {app}\n"
            f"# fly.toml\n[scaling]\n  min_machines = {max(minimum, n)}\n  max_machines = {max_m}\n"
            f"# then, as the runbook says: monitor for 15 minutes (flyctl metrics), verify the load is "
            f"distributed (flyctl status) and that response times improved.")


def scaling_findings(info: dict[str, Any], *, service: str = "") -> list[Finding]:
    """``scaling.scale_out`` / ``scaling.scale_in`` from :func:`scaling_rules`' numbers;
    ``ok`` findings for the decision not to scale; nothing without data."""
    if info is None or info.get("instances") is None:
        return []
    fly = info["fly"]
    app = (fly.app if fly is not None and fly.app else service) or "<app>"
    n, needed, cap = info["instances"], info["needed"], info["capacity_per_instance_rps"]
    target = info["target_cpu"]
    ev = {"instances": n, "cpu_median_by_instance": info["cpu_median_by_instance"],
          "cpu_p95_by_instance": info["cpu_p95_by_instance"], "target_cpu_percent": target,
          "latency_above_target": info["latency_above"], "traffic_rising": info["trend"]["rising"],
          "traffic_growth": info["trend"]["growth"], "trend_p": info["trend"]["p"],
          "demand_rps": info["demand_rps"], "capacity_per_instance_rps": cap, "projected_instances": needed,
          "projected_if_trend_continues": info["needed_if_trend_continues"], "minimum_instances": info["minimum"]}
    findings: list[Finding] = []
    if n == 0:
        return [Finding("scaling.scale_out", "info", "No instance reported CPU or traffic in the window: nothing to project",
                        evidence=ev)]
    cpus = ", ".join(f"{k} {v:.0f} %" for k, v in info["cpu_median_by_instance"].items())
    out_to = None
    if info["cpu_all"]:
        out_to = max(needed or 0, n + 1)
        sev = "critical" if info["latency_above"] else "warning"
        why = f"CPU above {target:g} % on all {n} instances ({cpus})"
        if info["latency_above"]:
            why += f" and p95 above target on {', '.join(info['latency_above'])}"
    elif needed and needed > n and (info["latency_above"] or info["trend"]["rising"]):
        out_to, sev = needed, "warning"
        why = (f"at {target:g} % CPU the fleet carries {cap * n:.0f} req/s but the window peaked at "
               f"{info['demand_rps']:.0f} req/s" + (f"; p95 above target on {', '.join(info['latency_above'])}"
                                                   if info["latency_above"] else "; traffic rising"))
    elif n < info["minimum"]:
        out_to, sev = info["minimum"], "warning"
        why = (f"{n} instance{'s' if n != 1 else ''} is below the minimum of {info['minimum']} for availability "
               f"(runbook: [scaling] min_machines = 2; \"need higher availability\")")
    elif info["trend"]["rising"] and info["needed_if_trend_continues"] and info["needed_if_trend_continues"] > n:
        out_to, sev = info["needed_if_trend_continues"], "info"
        why = (f"traffic is rising ({info['trend']['growth']:+.0%} over the window); one more window like this "
               f"needs {out_to} instances at {target:g} % CPU")
    if out_to is not None:
        ev["scale_to"] = out_to
        findings.append(Finding(
            "scaling.scale_out", sev, f"Scale out from {n} to {out_to} instances: {why}", subject=app, evidence=ev,
            recommendation=_commands(out_to, app, fly, info["minimum"])
            + (f"\n# projection: {info['demand_rps']:.1f} req/s at peak ÷ {cap:.1f} req/s per instance at "
               f"{target:g} % CPU" if cap else "")))
    elif info["latency_above"]:
        findings.append(Finding(
            "scaling.scale_out", "ok",
            f"No scale-out: p95 above target on {', '.join(info['latency_above'])}, but CPU is not the limit "
            f"({cpus}); more instances would not help", subject=app, evidence=ev,
            recommendation="Find where the time goes (bottlenecks, database and external-apis sections) "
                           "before adding instances."))
    else:
        findings.append(Finding(
            "scaling.scale_out", "ok", f"No scale-out needed: CPU {cpus}, every endpoint within target"
            + (f"; {n} instances carry about {cap * n:.0f} req/s at {target:g} % CPU" if cap else ""),
            subject=app, evidence=ev))

    if (out_to is None and info["idle"] and info["fast"] and not info["trend"]["rising"] and n > info["minimum"]):
        to = max(info["minimum"], needed or info["minimum"])
        if to < n:
            ev_in = {**ev, "scale_to": to}
            findings.append(Finding(
                "scaling.scale_in", "info",
                f"Over-provisioned: {n} instances all under {info['cpu_p95_by_instance'] and max(info['cpu_p95_by_instance'].values()):.0f} % CPU "
                f"(p95) with every endpoint under half its p95 target; {to} would do", subject=app, evidence=ev_in,
                recommendation=_commands(to, app, fly, info["minimum"])
                + "\n# scale in one step at a time and watch p95 for 15 minutes between steps."))
    if not any(f.code == "scaling.scale_in" for f in findings):
        findings.append(Finding(
            "scaling.scale_in", "ok",
            "No scale-in: " + ("at the minimum of " + str(info["minimum"]) + " instances" if n <= info["minimum"]
                               else "instances are not clearly idle"),
            subject=app, evidence={"instances": n, "minimum_instances": info["minimum"],
                                   "cpu_p95_by_instance": info["cpu_p95_by_instance"]}))
    return findings
