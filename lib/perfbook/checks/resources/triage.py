"""Triage (part of :mod:`perfbook.checks.resources`): the one-page verdict table of all
resource findings, the signals the triage reads and where to look next (:func:`open_next`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ...findings import Finding, severity_rank
from .instances import _dur
from .levels import AREAS, _fmt

# --------------------------------------------------------------------------- the one-page verdict


def _threshold_text(ev: dict[str, Any], unit: str) -> tuple[str, str, str]:
    def f(x):
        return _fmt(x, unit) if x is not None else "—"
    if unit == "MB/min":
        return ("flat", f"≥ {ev['min_mb_per_min']:g} MB/min, steady",
                f"reaches limit < {ev['critical_horizon_s'] / 3600:g} h")
    normal = ev.get("normal")
    return (f"< {f(normal)}" if normal is not None else "—", f"≥ {f(ev.get('warning'))}", f"≥ {f(ev.get('critical'))}")


def verdict_table(findings: Iterable[Finding], endpoints: pd.DataFrame | None = None, *,
                  critical_factor: float) -> pd.DataFrame:
    """One table for the whole page: every endpoint against its response-time targets
    (from :func:`perfbook.checks.latency.endpoint_verdicts`; critical over ``critical_factor``
    times them: settings.diagnostics.latency_critical_factor) and every resource finding
    against the Normal/Warning/Critical levels, worst first within each area; checks
    that could not run appear as ``not checked``.

    Columns: ``area``, ``subject``, ``observed``, ``normal``, ``warning``, ``critical``,
    ``statistic``, ``verdict`` (ok / warning / critical / not checked / no data...).
    """
    rows = []
    if endpoints is not None and not endpoints.empty:
        for rec in endpoints.to_dict("records"):
            def s(x):
                return _fmt(x, "s") if x is not None and not pd.isna(x) else "—"
            if rec["verdict"] in ("no target",):
                continue
            observed = " · ".join(f"{p} {s(rec[p])}" for p in ("p50", "p95", "p99")) \
                if rec["verdict"] not in ("no requests",) else "no requests"
            targets = " / ".join(s(rec[f"{p}_target"]) for p in ("p50", "p95", "p99"))
            rows.append({"area": AREAS["latency.slo_breach"], "subject": rec["endpoint"], "observed": observed,
                         "normal": f"≤ {targets}", "warning": "> target", "critical": f"> {critical_factor:g}× target",
                         "statistic": (f"{rec['requests']:.0f} request" + ("" if round(rec["requests"]) == 1 else "s"))
                         if rec.get("requests") else "",
                         "verdict": rec["verdict"]})
    for f in findings:
        if f.code in ("source.unreachable", "check.failed"):
            rows.append({"area": f.check or f.code, "subject": f.subject or "", "observed": "—", "normal": "",
                         "warning": "", "critical": "", "statistic": f.evidence.get("reason") or
                         f.evidence.get("message", ""), "verdict": "not checked"})
            continue
        if f.code not in AREAS or f.code == "latency.slo_breach":
            continue
        if f.code == "instance.down":
            ev = f.evidence
            down_for = ev.get("down_for")
            rows.append({"area": AREAS[f.code], "subject": f.subject or "",
                         "observed": (f"{ev.get('failed_scrapes')} scrapes in a row failed (~{_dur(ev.get('down_s'))})"
                                      if f.severity != "ok" else f"{ev.get('instances')} up"),
                         "normal": "every scrape answered",
                         "warning": f"down ≥ {down_for:g} s, back up" if down_for else "down, back up",
                         "critical": "still down",
                         "statistic": "Prometheus up == 0, consecutive", "verdict": f.severity})
            continue
        if f.code == "monitoring.gap":
            ev = f.evidence
            rows.append({"area": AREAS[f.code], "subject": f.subject or "",
                         "observed": f"{ev.get('episodes')} gap(s) on every instance at once, longest "
                                     f"~{_dur(ev.get('longest_s'))}",
                         "normal": "every scrape answered", "warning": "", "critical": "",
                         "statistic": "the scraper, not an instance", "verdict": f.severity})
            continue
        ev = f.evidence
        unit = ev.get("unit")
        if unit is None:  # info: metric absent, limit unknown, profile findings...
            if f.severity == "info" and f.subject == "metrics":
                rows.append({"area": AREAS[f.code], "subject": "", "observed": "—", "normal": "", "warning": "",
                             "critical": "", "statistic": f.title, "verdict": "no data"})
            continue
        normal, warning, critical = _threshold_text(ev, unit)
        rows.append({"area": AREAS[f.code], "subject": f.subject or "", "observed": _fmt(ev.get("observed"), unit),
                     "normal": normal, "warning": warning, "critical": critical,
                     "statistic": ev.get("statistic", ""), "verdict": f.severity})
    cols = ["area", "subject", "observed", "normal", "warning", "critical", "statistic", "verdict"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    rank = {"critical": 0, "warning": 1, "not checked": 2, "ok": 3, "info": 4}
    area_order = {a: i for i, a in enumerate(AREAS.values())}
    df["_a"] = df["area"].map(lambda a: area_order.get(a, len(area_order)))  # checks that did not run: last
    df["_v"] = df["verdict"].map(lambda v: rank.get(v, 4))
    return df.sort_values(["_a", "_v", "subject"]).drop(columns=["_a", "_v"]).reset_index(drop=True)


# --------------------------------------------------------------------------- where to look next


def triage_signals(requests_by_instance: pd.DataFrame | None = None, status_totals: pd.DataFrame | None = None,
                   http_seconds: float | None = None, db_seconds: float | None = None,
                   external_seconds: float | None = None, breaker_max: pd.DataFrame | None = None,
                   external_outcomes: pd.DataFrame | None = None, cache_hits: float | None = None,
                   cache_misses: float | None = None, instance_label: str = "instance",
                   status_label: str = "status_code", outcome_label: str = "outcome",
                   breaker_label: str = "name") -> dict[str, Any]:
    """The few numbers :func:`open_next` reasons on, from the window's increases.

    ``requests_by_instance``: requests per instance; ``status_totals``: requests per
    status code; ``*_seconds``: increases of the duration histograms' ``_sum``;
    ``breaker_max``: circuit-breaker state samples (any value 1 = open);
    ``external_outcomes``: external calls per outcome; cache hits/misses totals.
    """
    sig: dict[str, Any] = {}
    if requests_by_instance is not None and not requests_by_instance.empty:
        per = requests_by_instance.groupby(instance_label)["value"].sum()
        per = per[per.notna()]
        if len(per) >= 2 and per.sum() > 0:
            sig["instance_shares"] = {str(k): float(v / per.sum()) for k, v in per.items()}
            sig["imbalance"] = float(per.max() / per.min()) if per.min() > 0 else math.inf
    if status_totals is not None and not status_totals.empty:
        st = status_totals.groupby(status_totals[status_label].astype(str))["value"].sum()
        total = float(st.sum())
        if total > 0:
            sig["requests"] = total
            sig["share_429"] = float(st.get("429", 0.0) / total)
            sig["share_5xx"] = float(st[[s.startswith("5") for s in st.index]].sum() / total)
    if http_seconds:
        sig["http_seconds"] = http_seconds
        if db_seconds is not None and not pd.isna(db_seconds):
            sig["db_share"] = db_seconds / http_seconds
        if external_seconds is not None and not pd.isna(external_seconds):
            sig["external_share"] = external_seconds / http_seconds
    if breaker_max is not None and not breaker_max.empty:
        opened = breaker_max[pd.to_numeric(breaker_max["value"], errors="coerce") == 1]
        col = breaker_label if breaker_label in breaker_max.columns else None
        sig["breakers_opened"] = sorted({str(x) for x in opened[col]}) if col else (["(unnamed)"] if len(opened) else [])
    if external_outcomes is not None and not external_outcomes.empty and outcome_label in external_outcomes.columns:
        out = external_outcomes.groupby(outcome_label)["value"].sum()
        total = float(out.sum())
        if total > 0:
            sig["external_calls"] = total
            sig["external_failure_share"] = float(out[[o != "success" for o in out.index]].sum() / total)
    if cache_hits is not None and cache_misses is not None and (cache_hits + cache_misses) > 0:
        sig["cache_lookups"] = cache_hits + cache_misses
        sig["cache_hit_rate"] = cache_hits / (cache_hits + cache_misses)
    return sig


def open_next(findings: Iterable[Finding], signals: dict[str, Any] | None = None, *,
              cache_target: float, min_lookups: int) -> pd.DataFrame:
    """Which section notebooks the evidence points to, each with the reason, most urgent
    first: ``section``, ``why``, ``severity`` (the worst finding behind it; ``info`` for
    a signal that is not itself a finding here).

    Rules (the runbook's issues, in its words):
    latency breaches + much request time in DB queries, DB connection pressure → *database*;
    a breaker that opened, failing or slow external calls → *external-apis*;
    CPU, event-loop lag, memory, or a latency breach not explained by DB/external time → *bottlenecks*;
    429s → *rate-limiting*; one instance with ≥ 1.5x the requests of another, or an instance
    down in the window → *load-balancing*;
    cache hit rate under ``cache_target`` (thresholds.cache_hit_rate) on ``min_lookups`` lookups or
    more (settings.caching.min_lookups) → *caching*; CPU high on every instance → *scaling*.
    """
    sig = signals or {}
    found = [f for f in findings]
    bad = [f for f in found if f.severity in ("warning", "critical")]
    out: dict[str, dict[str, Any]] = {}

    def point(section: str, why: str, severity: str = "info") -> None:
        cur = out.setdefault(section, {"section": section, "why": [], "severity": "info"})
        if why not in cur["why"]:
            cur["why"].append(why)
        if severity_rank(severity) > severity_rank(cur["severity"]):
            cur["severity"] = severity

    def worst(code: str) -> str | None:
        sev = [f.severity for f in bad if f.code == code]
        return max(sev, key=severity_rank) if sev else None

    if (s := worst("instance.down")):
        down = sorted({f.subject for f in bad if f.code == "instance.down"})
        point("load-balancing", f"instance down in the window ({', '.join(down)}): the others carried its traffic", s)
    lat = [f for f in bad if f.code == "latency.slo_breach"]
    db_share, ext_share = sig.get("db_share"), sig.get("external_share")
    lat_sev = worst("latency.slo_breach")
    slow = sorted({f.subject for f in lat if f.subject})
    slow_txt = ", ".join(slow[:3]) + (" …" if len(slow) > 3 else "")
    if lat and db_share is not None and db_share >= 0.3:
        point("database", f"{slow_txt} over target and {db_share:.0%} of request time is in DB queries", lat_sev)
    elif db_share is not None and db_share >= 0.5:
        point("database", f"{db_share:.0%} of request time is in DB queries")
    if (s := worst("db.connections")):
        subjects = sorted({f.subject for f in bad if f.code == "db.connections"})
        point("database", "DB connection pressure / queries waiting for a pool connection ("
              + ", ".join(subjects) + ")", s)
    if sig.get("breakers_opened"):
        point("external-apis", "circuit breaker opened in the window: " + ", ".join(sig["breakers_opened"]), "warning")
    if sig.get("external_failure_share", 0) >= 0.05 and sig.get("external_calls", 0) >= 10:
        point("external-apis", f"{sig['external_failure_share']:.0%} of {sig['external_calls']:.0f} external calls "
                               f"failed, timed out or were rejected", "warning")
    if lat and ext_share is not None and ext_share >= 0.3:
        point("external-apis", f"{ext_share:.0%} of request time is spent waiting on external APIs", lat_sev)
    errs = [f for f in bad if f.code == "errors.high_rate"]
    if errs and any(str(f.evidence.get("top_status", "")) in ("502", "503", "504") for f in errs):
        point("external-apis", "5xx answers are mostly 502/503/504 (a dependency or breaker)", worst("errors.high_rate"))
    for code, what in (("cpu.saturation", "CPU at Warning/Critical"), ("eventloop.lag", "event-loop lag at Warning/Critical"),
                       ("memory.pressure", "memory at Warning/Critical"), ("memory.growth", "memory grows steadily")):
        if (s := worst(code)):
            subjects = sorted({f.subject for f in bad if f.code == code})
            point("bottlenecks", f"{what} ({', '.join(subjects)})", s)
    if lat and not ((db_share or 0) >= 0.3 or (ext_share or 0) >= 0.3):
        point("bottlenecks", f"{slow_txt} over target; the time is not in DB queries or external calls "
                             f"— find where it goes", lat_sev)
    if errs and "bottlenecks" not in out and not any(str(f.evidence.get("top_status", "")) in ("502", "503", "504")
                                                     for f in errs):
        point("bottlenecks", "5xx answers from the application itself (500): read the logs of "
              + ", ".join(sorted({f.subject for f in errs})), worst("errors.high_rate"))
    if sig.get("share_429", 0) >= 0.01:
        point("rate-limiting", f"{sig['share_429']:.1%} of {sig.get('requests', 0):.0f} requests answered 429", "warning")
    if sig.get("imbalance", 1) >= 1.5:
        shares = sig.get("instance_shares", {})
        top = max(shares, key=shares.get) if shares else "?"
        point("load-balancing", f"requests unevenly spread: {top} gets {shares.get(top, 0):.0%} "
                                f"({sig['imbalance']:.1f}x the least loaded instance)", "warning")
    if sig.get("cache_hit_rate") is not None and sig.get("cache_lookups", 0) >= min_lookups and sig["cache_hit_rate"] < cache_target:
        point("caching", f"cache hit rate {sig['cache_hit_rate']:.0%} (target > {cache_target:.0%})", "warning")
    cpu = [f for f in bad if f.code == "cpu.saturation"]
    if cpu and cpu[0].evidence.get("instances_over") == cpu[0].evidence.get("instances") and len(cpu) >= 1:
        point("scaling", "CPU at Warning/Critical on every instance: consider scaling out", worst("cpu.saturation"))
    rows = [{"section": v["section"], "why": "; ".join(v["why"]), "severity": v["severity"]} for v in out.values()]
    df = pd.DataFrame(rows, columns=["section", "why", "severity"])
    if df.empty:
        return df
    df["_r"] = df["severity"].map(severity_rank)
    return df.sort_values("_r", ascending=False, kind="stable").drop(columns="_r").reset_index(drop=True)
