"""Load and stress test results: per-stage numbers, breaking point, recovery, k6 thresholds.

Input is locust's statistics per stage, as :class:`perfbook.sources.loadgen.LoadTestRun`
returns them (``run.stats()``: one row per stage and request name plus an ``Aggregated``
row; times in ms). Pure functions, no I/O.

The runbook's *Stress Testing* asks for the maximum sustainable load, the degradation
points, the breaking point and the recovery behaviour. Here a stage **breaks** when, at
steady load (statistics reset once all users run):

- an endpoint's p95 is above its p95 target (params ``endpoints``; the runbook's Response
  Time Targets), with at least ``settings.load_test.min_requests`` (5) requests to judge on; or
- the error rate (failures other than HTTP 429) is above ``thresholds.error_rate.warning``
  (1 %: the usual SLO bar, and the brief's); or
- throughput stops growing: more users than the previous stage but less than
  ``settings.load_test.min_gain`` (10 %) more requests per second — the service is saturated, extra
  users only queue (Little's law: latency grows instead).

The *breaking point* is the first stage where any rule holds; the *maximum sustainable
load* the last stage before it. How bad a breaking point is depends on the load the
service must hold (``settings.load_test.expected_users``, default the first stage — the
runbook's "Baseline"): breaking at or below it is critical, at or below
``settings.load_test.headroom_warning`` times it (2x, the usual capacity-planning margin: the
capacity lies below the breaking stage, so a break at exactly twice the expected users already
means less headroom) a warning, above that information.
Saturation alone, with latency and errors within target, is information.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..findings import Finding
from ..params import LoadTest
from ..web import REJECTED_SUFFIX  # the load generator's name for HTTP 429 rejections

AGGREGATED = "Aggregated"


# --------------------------------------------------------------------------- k6 thresholds

_THRESHOLD = re.compile(r"^\s*(p\((\d+(?:\.\d+)?)\)|avg|min|max|med|failed|rate)\s*(<=|<|>=|>)\s*(\d+(?:\.\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_AVAILABLE_PCT = (50.0, 66.0, 75.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.9, 100.0)


@dataclass(frozen=True)
class Threshold:
    """A k6-style threshold: ``p(95)<1000`` (ms), ``avg<200``, ``failed<0.01`` (a rate)."""
    text: str
    metric: str          # "p95", "avg", "min", "max", "p50" (med), "failed"
    op: str
    value: float

    @property
    def column(self) -> str:
        """The column of a stats row this threshold reads."""
        return "failed_rate" if self.metric == "failed" else f"{self.metric}_ms"

    def holds(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.value)


def parse_threshold(text: str) -> Threshold:
    """Parse a k6 threshold. Percentiles are in ms; ``p(N)`` for an N locust does not
    report is read at the next percentile it does (p(97) → p98: the stricter reading).
    ``failed`` and ``rate`` are the share of failed requests (k6 ``http_req_failed``).
    Raises ValueError for anything else."""
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(f"not a k6-style threshold like 'p(95)<1000' or 'failed<0.01': {text!r}")
    head, pct, op, value = m.group(1), m.group(2), m.group(3), float(m.group(4))
    if pct is not None:
        q = float(pct)
        if q <= 0 or q > 100:
            raise ValueError(f"percentile out of range in {text!r}")
        near = next(p for p in _AVAILABLE_PCT if p >= q)
        metric = f"p{near:g}"
    elif head == "med":
        metric = "p50"
    elif head in ("failed", "rate"):
        metric = "failed"
    else:
        metric = head
    return Threshold(text.strip(), metric, op, value)


# --------------------------------------------------------------------------- per-stage tables


def _rejected_by_stage(stats: pd.DataFrame) -> dict[tuple[str, str], int]:
    """HTTP 429 rejections per (stage, endpoint name) and (stage, "Aggregated"): the
    generator counts them under ``<name> [429]``."""
    out: dict[tuple[str, str], int] = {}
    rej = stats[stats["name"].astype(str).str.endswith(REJECTED_SUFFIX)]
    for rec in rej.to_dict("records"):
        n = int(rec.get("requests") or 0)
        base = str(rec["name"])[: -len(REJECTED_SUFFIX)]
        out[(rec["stage"], base)] = out.get((rec["stage"], base), 0) + n
        out[(rec["stage"], AGGREGATED)] = out.get((rec["stage"], AGGREGATED), 0) + n
    return out


def stage_table(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per stage (its ``Aggregated`` stats): users, requests, req/s (all, and
    served: not rejected with 429), p50/p95/p99 (ms, all requests as k6 counts them),
    failed rate (all failures, as k6's ``http_req_failed``), error rate (failures other
    than HTTP 429), rejected rate (HTTP 429), generator CPU %."""
    cols = ["stage", "kind", "users", "duration_s", "requests", "rps", "served_rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms",
            "max_ms", "failed_rate", "error_rate", "rejected_rate", "generator_cpu_percent"]
    extra = [f"{p}_ms" for p in ("min", "p66", "p75", "p80", "p90", "p98", "p99.9", "p100")]
    if stats is None or stats.empty:
        return pd.DataFrame(columns=cols)
    rejected = _rejected_by_stage(stats)
    rows = []
    for stage, g in stats.groupby("stage", sort=False):
        agg = g[g["name"] == AGGREGATED]
        if agg.empty:
            continue
        a = agg.iloc[0]
        n = float(a["requests"] or 0)
        rej = rejected.get((stage, AGGREGATED), 0)
        fails = float(a["failures"] or 0)
        rows.append({"stage": stage, "kind": a.get("kind", "stage"), "users": int(a["users"]),
                     "duration_s": a.get("duration_s"), "requests": int(n), "rps": float(a["rps"]),
                     "served_rps": float(a["rps"]) * (n - rej) / n if n else 0.0,
                     "p50_ms": a["p50"], "p95_ms": a["p95"], "p99_ms": a["p99"], "avg_ms": a["avg_ms"],
                     "max_ms": a["max_ms"],
                     "failed_rate": fails / n if n else math.nan,
                     "error_rate": (fails - rej) / n if n else math.nan,
                     "rejected_rate": rej / n if n else math.nan,
                     "generator_cpu_percent": a.get("generator_cpu_percent", math.nan),
                     **{f"{p}_ms": a.get(p if p != "min" else "min_ms") for p in
                        ("min", "p66", "p75", "p80", "p90", "p98", "p99.9", "p100")}})
    return pd.DataFrame(rows, columns=cols + extra)


def endpoint_table(stats: pd.DataFrame, endpoints: Iterable[Any], *, min_requests: int) -> pd.DataFrame:
    """One row per stage and request name: requests, req/s, p50/p95/p99 (ms), error rate,
    the endpoint's p95 target (ms; NaN when the name is not a params endpoint) and
    whether p95 is over it (judged on ``min_requests`` requests or more:
    settings.load_test.min_requests)."""
    cols = ["stage", "kind", "users", "endpoint", "requests", "rps", "p50_ms", "p95_ms", "p99_ms",
            "error_rate", "rejected", "target_p95_ms", "over_target"]
    if stats is None or stats.empty:
        return pd.DataFrame(columns=cols)
    targets = {e.name: e.targets.p95 * 1000.0 for e in endpoints}
    rejected = _rejected_by_stage(stats)
    served = stats[(stats["name"] != AGGREGATED) & ~stats["name"].astype(str).str.endswith(REJECTED_SUFFIX)]
    rows = []
    for rec in served.to_dict("records"):
        n = float(rec["requests"] or 0)
        rej = rejected.get((rec["stage"], rec["name"]), 0)
        target = targets.get(rec["name"], math.nan)
        p95 = rec["p95"]
        judged = n >= min_requests and not math.isnan(target) and p95 is not None and not pd.isna(p95)
        rows.append({"stage": rec["stage"], "kind": rec.get("kind", "stage"), "users": int(rec["users"]),
                     "endpoint": rec["name"], "requests": int(n), "rps": rec["rps"], "p50_ms": rec["p50"],
                     "p95_ms": p95, "p99_ms": rec["p99"],
                     "error_rate": float(rec["failures"] or 0) / n if n else math.nan,
                     "rejected": rej, "target_p95_ms": target, "over_target": bool(judged and p95 > target)})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- breaking point


def stage_break_reasons(stage: dict, endpoints: pd.DataFrame, previous: dict | None, *,
                        error_rate: float, min_gain: float) -> dict[str, str]:
    """Why one stage breaks, by rule: ``latency``, ``errors``, ``throughput`` → reason text.
    ``stage`` is a row of :func:`stage_table`, ``endpoints`` its rows of :func:`endpoint_table`,
    ``previous`` the stage before (for the throughput rule). ``error_rate``: the bar
    (thresholds.error_rate.warning); ``min_gain``: settings.load_test.min_gain."""
    reasons: dict[str, str] = {}
    over = endpoints[endpoints["over_target"]] if not endpoints.empty else endpoints
    if len(over):
        worst = over.assign(r=over["p95_ms"] / over["target_p95_ms"]).sort_values("r", ascending=False).iloc[0]
        reasons["latency"] = (f"p95 of {worst['endpoint']} {worst['p95_ms']:.0f} ms > target "
                              f"{worst['target_p95_ms']:.0f} ms" + (f" (+{len(over) - 1} more endpoints)" if len(over) > 1 else ""))
    er = stage.get("error_rate")
    if er is not None and not pd.isna(er) and er > error_rate:
        reasons["errors"] = f"error rate {er:.1%} > {error_rate:.0%}"
    if previous is not None and stage["users"] > previous["users"] and previous["served_rps"] > 0:
        gain = stage["served_rps"] / previous["served_rps"] - 1.0
        if gain < min_gain:
            reasons["throughput"] = (f"throughput stopped growing: {previous['served_rps']:.1f} → "
                                     f"{stage['served_rps']:.1f} req/s served "
                                     f"({gain:+.0%}) for {stage['users'] / previous['users']:.1f}x users")
    return reasons


def stop_rule(endpoints: Iterable[Any], *, settings: LoadTest, error_rate: float) -> Callable[[Any], str | None]:
    """For :func:`perfbook.sources.loadgen.run`: the reason to stop climbing after a
    stage (latency or errors over target; saturation alone does not stop the test)."""
    eps = list(endpoints)

    def rule(result: Any) -> str | None:
        stats = result.stats.assign(stage=result.stage.label, users=result.stage.users, kind=result.stage.kind)
        st = stage_table(stats)
        if st.empty:
            return None
        reasons = stage_break_reasons(st.iloc[0].to_dict(), endpoint_table(stats, eps, min_requests=settings.min_requests),
                                      None, error_rate=error_rate, min_gain=settings.min_gain)
        return "; ".join(reasons.values()) or None
    return rule


def breaking_point(stages: pd.DataFrame, endpoints: pd.DataFrame, *, error_rate: float,
                   min_gain: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Judge each climbing stage (kind ``stage``) in order.

    Returns the stage table with a ``verdict`` (holds / saturated / breaks) and ``reasons``
    column, and a dict: ``breaking`` (first stage where any rule holds, or None),
    ``breaks`` (first stage breaking on latency or errors), ``saturates`` (first stage
    saturating), ``max_sustainable`` (last stage before ``breaking``), with their rows.
    """
    climb = stages[stages["kind"] == "stage"].reset_index(drop=True)
    out = climb.copy()
    out["verdict"], out["reasons"] = "holds", ""
    info: dict[str, Any] = {"breaking": None, "breaks": None, "saturates": None, "max_sustainable": None}
    previous = None
    for i, row in climb.iterrows():
        rec = row.to_dict()
        eps = endpoints[endpoints["stage"] == rec["stage"]] if not endpoints.empty else endpoints
        reasons = stage_break_reasons(rec, eps, previous, error_rate=error_rate, min_gain=min_gain)
        if reasons:
            out.loc[i, "verdict"] = "breaks" if ("latency" in reasons or "errors" in reasons) else "saturated"
            out.loc[i, "reasons"] = "; ".join(reasons.values())
            rec["reasons"] = reasons
            if info["breaking"] is None:
                info["breaking"] = rec
                info["max_sustainable"] = previous
            if info["breaks"] is None and ("latency" in reasons or "errors" in reasons):
                info["breaks"] = rec
            if info["saturates"] is None and "throughput" in reasons:
                info["saturates"] = rec
        previous = rec
    if info["breaking"] is None and len(climb):
        info["max_sustainable"] = climb.iloc[-1].to_dict()
    return out, info


def idle_stages(stages: pd.DataFrame) -> list[str]:
    """The load stages (kind ``stage`` or ``load``) in which the generator sent no request at
    all: nothing was measured there (a starved or failed generator), so no verdict on them."""
    if stages is None or stages.empty or "requests" not in stages:
        return []
    load = stages[stages["kind"].isin(["stage", "load"])]
    sent = pd.to_numeric(load["requests"], errors="coerce").fillna(0)
    return load.loc[sent <= 0, "stage"].astype(str).tolist()


def no_requests_finding(stages: pd.DataFrame, idle: list[str]) -> Finding:
    """``loadtest.no_requests`` (error: the test could not measure anything): stages in which
    the generator sent nothing, with its CPU, instead of a verdict drawn from no data."""
    load = stages[stages["kind"].isin(["stage", "load"])]
    gen = (pd.to_numeric(load["generator_cpu_percent"], errors="coerce").max()
           if "generator_cpu_percent" in load else math.nan)
    return Finding(
        "loadtest.no_requests", "error",
        f"The load generator sent no request in {len(idle)} of {len(load)} stage(s) ({', '.join(idle)}): "
        f"nothing was measured there, so no breaking point or threshold is judged",
        subject="load generator",
        evidence={"idle_stages": idle, "stages": len(load),
                  "generator_cpu_percent_max": None if pd.isna(gen) else float(gen)},
        recommendation="Read the locust output above: the generator could not start its users in time (a "
                       "starved machine: lengthen the stages) or could not reach targets.base_url. Re-run "
                       "the load-test section once it sends requests in every stage.")


def breaking_stage(stages: pd.DataFrame, endpoints: pd.DataFrame, *, settings: LoadTest,
                   error_rate: float) -> dict | None:
    """The breaking stage's row (see :func:`breaking_point`), or None (no stage broke, or no stages)."""
    if stages is None or stages.empty:
        return None
    return breaking_point(stages, endpoints, error_rate=error_rate, min_gain=settings.min_gain)[1]["breaking"]


def recovery(stages: pd.DataFrame, endpoints: pd.DataFrame, *, settings: LoadTest, error_rate: float,
             watch: Iterable[str] = ()) -> dict[str, Any] | None:
    """After the peak, does the service come back? The recovery stage (kind ``recovery``)
    recovers when every endpoint's p95 is within target and the error rate within ``error_rate``.
    ``watch``: endpoints that broke; when one of them has fewer than
    ``settings.min_requests`` served requests in the recovery stage, ``recovered`` is None
    (cannot tell). Returns None when there was no recovery stage."""
    rec_rows = stages[stages["kind"] == "recovery"]
    if rec_rows.empty:
        return None
    rec = rec_rows.iloc[-1].to_dict()
    eps = endpoints[endpoints["stage"] == rec["stage"]] if not endpoints.empty else endpoints
    reasons = stage_break_reasons(rec, eps, None, error_rate=error_rate, min_gain=settings.min_gain)
    first = stages[stages["kind"] == "stage"]
    base_p95 = float(pd.to_numeric(first["p95_ms"], errors="coerce").iloc[0]) if len(first) else math.nan
    served = set(eps.loc[eps["requests"] >= settings.min_requests, "endpoint"]) if not eps.empty else set()
    unseen = [e for e in watch if e not in served]
    recovered: bool | None = not reasons
    if recovered and unseen:
        recovered = None
        reasons = {"unknown": f"too few served requests of {', '.join(unseen)} in the recovery stage to tell"}
    return {"stage": rec["stage"], "recovered": recovered, "reasons": "; ".join(reasons.values()),
            "p95_ms": rec["p95_ms"], "baseline_p95_ms": base_p95, "error_rate": rec["error_rate"],
            "rps": rec["rps"]}


def _severity(users: int, expected: int | None, headroom_warning: float) -> str:
    """From the stage that broke (``users``): at or below the expected load, critical; at or
    below ``headroom_warning`` times it, warning (the capacity is below the breaking stage,
    so less than that headroom); above, info."""
    expected = expected or users
    if users <= expected:
        return "critical"
    if users <= headroom_warning * expected:
        return "warning"
    return "info"


_BUMP = {"ok": "warning", "info": "warning", "warning": "critical", "critical": "critical"}


def breaking_point_findings(stages: pd.DataFrame, endpoints: pd.DataFrame, *, settings: LoadTest,
                            error_rate: float, service: str = "", expected_users: int | None = None,
                            stopped: str | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """The stress test's conclusion: ``loadtest.breaking_point`` (subject: the breaking
    stage, e.g. "100 users"), its severity from the headroom over the expected load
    (``settings.headroom_warning``) and whether the service recovered; ``ok`` when every
    stage held. ``error_rate``: the stage's bar (thresholds.error_rate.warning). A stage in which the
    generator sent nothing gives ``loadtest.no_requests`` instead (:func:`idle_stages`)."""
    idle = idle_stages(stages)
    if idle:
        climb = stages[stages["kind"] == "stage"].reset_index(drop=True).copy()
        climb["verdict"] = ["no requests" if str(st) in idle else "not judged" for st in climb["stage"]]
        climb["reasons"] = ""
        return climb, [no_requests_finding(stages, idle)]
    judged, info = breaking_point(stages, endpoints, error_rate=error_rate, min_gain=settings.min_gain)
    broke = info["breaks"]
    watch = (endpoints.loc[(endpoints["stage"] == broke["stage"]) & endpoints["over_target"], "endpoint"].tolist()
             if broke is not None and not endpoints.empty else [])
    rec = recovery(stages, endpoints, settings=settings, error_rate=error_rate, watch=watch)
    if judged.empty:
        return judged, []
    expected = expected_users or int(judged.iloc[0]["users"])
    ms = info["max_sustainable"]
    sustain = (f"{ms['users']} users ({ms['rps']:.1f} req/s, p95 {ms['p95_ms']:.0f} ms)" if ms else
               f"below {int(judged.iloc[0]['users'])} users (the first stage)")
    evidence: dict[str, Any] = {
        "max_sustainable_users": ms["users"] if ms else None, "max_sustainable_rps": ms["rps"] if ms else None,
        "expected_users": expected, "stages": [
            {"stage": r["stage"], "users": r["users"], "rps": round(r["rps"], 2), "p95_ms": r["p95_ms"],
             "error_rate": None if pd.isna(r["error_rate"]) else round(r["error_rate"], 4), "verdict": r["verdict"]}
            for r in judged.to_dict("records")],
    }
    if rec is not None:
        evidence.update(recovered=rec["recovered"], recovery_p95_ms=rec["p95_ms"],
                        recovery_error_rate=rec["error_rate"])
    if stopped:
        evidence["stopped"] = stopped
    gen_max = judged["generator_cpu_percent"].max() if "generator_cpu_percent" in judged else math.nan
    evidence["generator_cpu_percent_max"] = gen_max
    recovered_txt = ("" if rec is None else " It recovered after the peak." if rec["recovered"] is True
                     else f" Recovery after the peak unknown ({rec['reasons']})." if rec["recovered"] is None
                     else f" It did NOT recover after the peak ({rec['reasons']}).")
    brk = info["breaking"]
    if brk is None:
        sev = "warning" if rec is not None and rec["recovered"] is False else "ok"
        top = judged.iloc[-1]
        title = (f"Held every stage up to {int(top['users'])} users within targets "
                 f"({top['rps']:.1f} req/s, p95 {top['p95_ms']:.0f} ms); no breaking point found." + recovered_txt)
        return judged, [Finding("loadtest.breaking_point", sev, title, subject="none", evidence=evidence,
                                recommendation="" if sev == "ok" else
                                "Latency did not come back after the peak: look for queues that do not drain "
                                "(connection pool, event loop, memory) in the bottlenecks and database sections.")]
    harmful = info["breaks"]
    sev = _severity(int(harmful["users"]), expected, settings.headroom_warning) if harmful is not None else "info"
    if rec is not None and rec["recovered"] is False:
        sev = _BUMP[sev]
    evidence.update(breaking_users=brk["users"], breaking_rps=brk["rps"], breaking_p95_ms=brk["p95_ms"],
                    breaking_error_rate=brk["error_rate"], reasons=list(brk["reasons"].values()),
                    headroom=round(brk["users"] / expected, 2))
    kind = "breaks" if ("latency" in brk["reasons"] or "errors" in brk["reasons"]) else "saturates"
    title = (f"{service + ' ' if service else ''}{kind} at {brk['users']} users: {'; '.join(brk['reasons'].values())}. "
             f"Max sustainable load {sustain}.{recovered_txt}")
    if not math.isnan(gen_max) and gen_max > settings.generator_cpu_limit:
        title += f" (Generator CPU reached {gen_max:.0f} %: the limit may be the generator's; add workers.)"
    recommendation = (
        f"Capacity per instance is about {ms['rps']:.0f} req/s at {ms['users']} users; "
        if ms else "The service does not hold even the first stage; ") + (
        "find what saturates first (connection pool, CPU/event loop, database, external calls) in the "
        "bottlenecks and database sections, fix it, then re-run this stress test. Until then, keep the "
        "expected load below the breaking point: scale out (`flyctl scale count N`) and set "
        "[services.concurrency] soft_limit below the concurrency where it breaks.")
    return judged, [Finding("loadtest.breaking_point", sev, title, subject=str(brk["stage"]),
                            evidence=evidence, recommendation=recommendation)]


# --------------------------------------------------------------------------- thresholds


def threshold_findings(stages: pd.DataFrame, thresholds: Iterable[str], *, mode: str = "stress",
                       expected_users: int | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """Evaluate k6-style thresholds "at the end": in a load test over the whole run, in a
    stress test on each climbing stage. A threshold failing on the load test, or on a
    stress stage at or below the expected load, is a warning (``loadtest.threshold``,
    subject: the threshold); failing only above the expected load is information."""
    parsed = [parse_threshold(t) for t in thresholds]
    idle = set(idle_stages(stages))
    judged = stages[stages["kind"].isin(["stage", "load"]) & ~stages["stage"].astype(str).isin(idle)]
    rows, findings = [], []
    if judged.empty and idle:
        return pd.DataFrame(columns=["threshold", "stage", "users", "observed", "holds"]), [
            Finding("loadtest.threshold", "info", f"Threshold {th.text} not evaluated: the generator sent no "
                    f"request in any stage", subject=th.text, evidence={"threshold": th.text, "stages": 0})
            for th in parsed]
    if judged.empty:
        return pd.DataFrame(columns=["threshold", "stage", "users", "observed", "holds"]), findings
    expected = expected_users or int(judged.iloc[0]["users"])
    for th in parsed:
        failing = []
        for rec in judged.to_dict("records"):
            observed = rec.get(th.column)
            holds = None if observed is None or pd.isna(observed) else th.holds(float(observed))
            rows.append({"threshold": th.text, "stage": rec["stage"], "users": rec["users"],
                         "observed": observed, "holds": holds})
            if holds is False:
                failing.append(rec)
        unit = "" if th.metric == "failed" else " ms"
        if not failing:
            skipped = f" with requests ({len(idle)} without were not judged)" if idle else ""
            findings.append(Finding("loadtest.threshold", "ok", f"Threshold {th.text} holds on every "
                                    f"{'stage' if mode == 'stress' else 'run'}{skipped}", subject=th.text,
                                    evidence={"threshold": th.text, "stages": len(judged)}))
            continue
        first = failing[0]
        obs = first[th.column]
        within = [r for r in failing if r["users"] <= expected]
        sev = "warning" if (mode == "load" or within) else "info"
        where = first["stage"] if mode == "stress" else "the load test"
        shown = f"{obs:.2%}" if th.metric == "failed" else f"{obs:.0f}{unit}"
        title = (f"Threshold {th.text} fails at {where} (observed {shown})"
                 + ("" if sev == "warning" else f"; it holds up to the expected load ({expected} users)"))
        rejected = first.get("rejected_rate")
        if th.metric == "failed" and rejected and not pd.isna(rejected) and rejected > 0:
            title += (f"; {rejected:.0%} of requests were HTTP 429: rate limiting rejected the generator, so "
                      f"this stage measured the limiter, not capacity")
        findings.append(Finding(
            "loadtest.threshold", sev, title, subject=th.text,
            evidence={"threshold": th.text, "observed": obs, "first_failing_stage": first["stage"],
                      "first_failing_users": first["users"], "failing_stages": [r["stage"] for r in failing],
                      "expected_users": expected},
            recommendation="Treat as a failed release gate (k6 exits non-zero on it): find the bottleneck "
                           "(bottlenecks / database sections) before accepting this load."))
    return pd.DataFrame(rows), findings


def safety_findings(plan: Any) -> list[Finding]:
    """What the safety checks decided before any request: ``loadtest.refused``, an
    ``error`` (the test did not run, so nothing is known of the service's capacity), when
    the plan was refused. ``mode: off`` is no finding (the run's note says so)."""
    if plan.refused and plan.mode != "off":
        return [Finding("loadtest.refused", "error", f"Load test refused before any request: {plan.refused}",
                        subject=plan.host or "(no host)",
                        evidence={"host": plan.host, "reason": plan.refused, "peak_users": plan.peak_users,
                                  "total_duration_s": plan.total_duration},
                        recommendation="Nothing was sent. Point targets.base_url at a host in "
                                       "targets.allowed_hosts, or opt this host in explicitly with "
                                       "settings.load_test.allow_hosts, within max_users/max_duration.")]
    return []
