"""Latency against the runbook's Response Time Targets (p50 / p95 / p99 per endpoint).

Two sources of the same three numbers:

- active probes (:func:`percentiles_from_probes`): the runbook's ``curl -w time_total``,
  N times per endpoint, now;
- the service's own ``http_request_duration_seconds`` histogram over the window
  (:func:`route_percentiles`): what every user got, by route, computed as PromQL's
  ``histogram_quantile(q, sum by (le, method, route) (increase(..._bucket[window])))``
  (bucket interpolation: a percentile is only as precise as the buckets around it).

:func:`slo_breaches` judges either against each endpoint's targets. Params name routes
as the metrics label them; ``/api/products/:id`` (Express) and ``/api/products/{id}``
(Starlette, FastAPI) are the same route (:func:`match_endpoint`), and a findings'
``subject`` is ``METHOD route`` as the *metrics* spell it, so it can be pasted into a
PromQL matcher.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from ..findings import Finding
from ..web import route_key
from . import ms
from .quantile import quantiles_by

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))




def _no_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])) if "@" in parts.netloc else url


def percentiles_from_probes(probes: pd.DataFrame) -> pd.DataFrame:
    """Per endpoint: answered requests, errors, p50/p95/p99 seconds (linear interpolation).

    Requests that got no answer at all (``error`` without ``seconds``: connection refused or
    reset, e.g. a target that died mid-probe) are listed in ``attrs["unreachable"]``:
    endpoint → ``answered``, ``unanswered``, the first ``reason`` and the ``url`` (without
    credentials); :func:`slo_breaches` turns them into ``source.unreachable`` findings."""
    rows, dead_by_endpoint = [], {}
    for name, g in probes.groupby("endpoint", sort=False):
        ok = g[g["seconds"].notna()]
        row = {"endpoint": name, "requests": len(g), "failed": int((g["error"] != "").sum()),
               "status_5xx": int((g["status"].fillna(0) >= 500).sum())}
        for label, q in PERCENTILES:
            row[label] = float(ok["seconds"].quantile(q)) if len(ok) else float("nan")
        rows.append(row)
        dead = g[g["seconds"].isna() & (g["error"] != "")]
        if len(dead):
            dead_by_endpoint[name] = {"answered": len(ok), "unanswered": len(dead), "reason": str(dead["error"].iloc[0]),
                                      "url": _no_userinfo(str(dead["url"].iloc[0])) if "url" in dead else ""}
    out = pd.DataFrame(rows, columns=["endpoint", "requests", "failed", "status_5xx", "p50", "p95", "p99"])
    out.attrs["unreachable"] = dead_by_endpoint
    return out


def slo_breaches(observed: pd.DataFrame, endpoints, *, critical_factor: float, source: str = "probes",
                 source_label: str = "") -> tuple[pd.DataFrame, list[Finding]]:
    """Compare observed p50/p95/p99 (seconds, one row per ``endpoint``) with each endpoint's targets:
    over a target is a warning, over ``critical_factor`` times it critical
    (settings.diagnostics.latency_critical_factor).

    Returns the comparison table (observed, target, ratio, verdict per percentile) and one
    ``latency.slo_breach`` finding per endpoint and percentile over target, plus one ``ok``
    finding per endpoint within all its targets.

    An optional ``subject`` column names the endpoint in the table and the findings (the
    route as the metrics spell it); ``endpoint`` still selects the targets. Without it the
    subject is the endpoint's params name. ``source_label`` (e.g. "probed", "all requests in the
    window") is added to each finding's title, so two sources of one endpoint read apart.
    """
    tag = f" — {source_label}" if source_label else ""
    targets = {e.name: e.targets for e in endpoints}
    unreachable = observed.attrs.get("unreachable") or {}  # from percentiles_from_probes
    rows, findings = [], []
    for rec in observed.to_dict("records"):
        t = targets.get(rec["endpoint"])
        if t is None:
            continue
        subject = rec.get("subject")
        name = subject if isinstance(subject, str) and subject else rec["endpoint"]
        breached = []
        for label, _ in PERCENTILES:
            value, target = rec.get(label), getattr(t, label)
            if value is None or pd.isna(value):
                verdict = "no data"
            elif value > target * critical_factor:
                verdict = "critical"
            elif value > target:
                verdict = "warning"
            else:
                verdict = "ok"
            rows.append({"endpoint": name, "percentile": label, "observed_s": value, "target_s": target,
                         "ratio": (value / target) if value is not None and not pd.isna(value) else None,
                         "verdict": verdict})
            if verdict in ("warning", "critical"):
                breached.append(label)
                findings.append(Finding(
                    "latency.slo_breach", verdict,
                    f"{name} {label} is {ms(value)}, target {ms(target)} "
                    f"({value / target:.1f}x){tag}",
                    subject=name,
                    evidence={"percentile": label, "observed_ms": round(value * 1000, 1),
                              "target_ms": round(target * 1000, 1), "ratio": round(value / target, 2),
                              "source": source, "requests": rec.get("requests")},
                    recommendation=f"Open the bottlenecks notebook for {name}: find where the time goes "
                                   f"(database, external calls, CPU/event loop) before scaling. "
                                   f"If CPU is saturated on all instances: `flyctl scale count N`."))
        dead = unreachable.get(rec["endpoint"])
        if dead:
            # Requests that got no answer (the target died mid-probe): the percentiles of the
            # few answers before are no verdict on the endpoint; never report it "ok".
            findings.append(Finding(
                "source.unreachable", "error",
                f"{name}: target stopped answering while probed ({dead['answered']} answered, then "
                f"{dead['reason']}){tag}",
                subject=name,
                evidence={"source": "http", "target": dead["url"], "reason": dead["reason"],
                          "answered": dead["answered"], "unanswered": dead["unanswered"]},
                recommendation=f"Check that the service at {dead['url'] or 'the probed URL'} is up and "
                               f"reachable from here; then re-run this section."))
            continue
        if not breached and not all(pd.isna(rec.get(lbl)) for lbl, _ in PERCENTILES):
            findings.append(Finding(
                "latency.slo_breach", "ok",
                f"{name} within target (p95 {ms(rec['p95'])} ≤ {ms(t.p95)}){tag}",
                subject=name, evidence={"p50_ms": round(rec["p50"] * 1000, 1), "p95_ms": round(rec["p95"] * 1000, 1),
                                        "p99_ms": round(rec["p99"] * 1000, 1), "source": source}))
    return pd.DataFrame(rows), findings


# --------------------------------------------------------------------------- from the HTTP histogram


def match_endpoint(method: Any, route: Any, endpoints: Iterable[Any]) -> Any | None:
    """The params endpoint a metrics (method, route) pair belongs to, or None.

    Same method, and the same route once parameters are made anonymous (``:id`` and
    ``{id}`` are equal, :func:`perfbook.web.route_key`); a params route with
    ``*`` is a glob (``/api/analytics/*``, as the runbook's table writes it). An exact
    match wins over a glob.
    """
    if not isinstance(route, str):
        return None
    key = route_key(route)
    globbed = None
    for e in endpoints:
        if e.method != method:
            continue
        if route_key(e.route) == key:
            return e
        if globbed is None and "*" in e.route and fnmatch.fnmatchcase(route, e.route):
            globbed = e
    return globbed


#: Answers left out of latency percentiles: rate-limit rejections and server errors come back
#: fast (or at a timeout) and would hide how long *served* requests take; they are judged
#: by the error-rate and rate-limiting checks instead.
def is_served(status: Any) -> bool:
    """A status code whose latency counts: not 429, not 5xx (absent status: counted)."""
    text = str(status) if status is not None and not (isinstance(status, float) and math.isnan(status)) else ""
    return not (text == "429" or text.startswith("5"))


def served_only(buckets: pd.DataFrame | None, status_label: str = "status_code") -> pd.DataFrame | None:
    """Histogram rows of served requests only (see :func:`is_served`); frames without a
    status label pass through unchanged."""
    if buckets is None or buckets.empty or status_label not in buckets.columns:
        return buckets
    return buckets[buckets[status_label].map(is_served)]


def route_percentiles(buckets: pd.DataFrame, method_label: str = "method", route_label: str = "route",
                      by_time: bool = False) -> pd.DataFrame:
    """p50/p95/p99 per route from histogram buckets (increases over the window, or rates).

    ``buckets``: label columns incl. ``le``, method and route, and ``value`` (e.g.
    ``WindowMetrics.increase("http_request_duration_seconds_bucket", ["le", "method",
    "route"])``, or a ``rate_series`` of it with ``by_time``). Returns ``endpoint``
    (``METHOD route`` as the metrics spell it), ``method``, ``route``, ``requests`` (the
    ``+Inf`` bucket: observations in the window, or per second for rates), ``p50``,
    ``p95``, ``p99`` (seconds) — plus ``timestamp`` first with ``by_time``.
    """
    by = (["timestamp"] if by_time else []) + [method_label, route_label]
    cols = [*(["timestamp"] if by_time else []), "endpoint", "method", "route", "requests", "p50", "p95", "p99"]
    if buckets is None or buckets.empty:
        return pd.DataFrame(columns=cols)
    df = buckets
    for c in by:
        if c not in df.columns:
            return pd.DataFrame(columns=cols)
    q = quantiles_by(df, [0.5, 0.95, 0.99], by=by)
    q = q[q[route_label].notna()]
    out = pd.DataFrame({
        **({"timestamp": q["timestamp"]} if by_time else {}),
        "endpoint": q[method_label].astype(str) + " " + q[route_label].astype(str),
        "method": q[method_label].astype(str), "route": q[route_label].astype(str),
        "requests": q["count"].astype(float) if by_time else q["count"].astype(float).round(0),
        "p50": q["p50"], "p95": q["p95"], "p99": q["p99"]})
    return out[cols].reset_index(drop=True)


def histogram_slo_breaches(observed: pd.DataFrame, endpoints: list[Any], *, min_requests: int,
                           critical_factor: float, source: str = "histogram", source_label: str | None = None
                           ) -> tuple[pd.DataFrame, list[Finding]]:
    """:func:`slo_breaches` for :func:`route_percentiles` output (the histogram over the window).

    Each observed route is matched to its params endpoint (:func:`match_endpoint`); the
    finding's subject is the route as the metrics spell it (``GET /api/products/{id}``).
    Routes with fewer than ``min_requests`` observations are listed with verdict
    ``too few requests`` and not judged (three slow requests are an anecdote, not a p95);
    routes the params have no target for get ``no target``; params endpoints that got no
    request in the window get ``no requests``.
    """
    judged, extra = [], []
    seen: set[str] = set()
    for rec in observed.to_dict("records"):
        e = match_endpoint(rec["method"], rec["route"], endpoints)
        if e is None:
            extra.append({"endpoint": rec["endpoint"], "percentile": "p95", "observed_s": rec["p95"],
                          "target_s": None, "ratio": None, "verdict": "no target", "requests": rec["requests"]})
            continue
        seen.add(e.name)
        if not (rec["requests"] >= min_requests):
            extra.extend({"endpoint": rec["endpoint"], "percentile": lbl, "observed_s": rec[lbl],
                          "target_s": getattr(e.targets, lbl), "ratio": None, "verdict": "too few requests",
                          "requests": rec["requests"]} for lbl, _ in PERCENTILES)
            continue
        judged.append({**rec, "endpoint": e.name, "subject": rec["endpoint"]})
    cols = ["endpoint", "method", "route", "requests", "p50", "p95", "p99", "subject"]
    if source_label is None:
        source_label = ("served requests since each process started" if source.startswith("/metrics")
                        else "served requests in the window")
    table, findings = slo_breaches(pd.DataFrame(judged, columns=cols), endpoints, critical_factor=critical_factor,
                                   source=source, source_label=source_label)
    requests = {r["subject"]: r["requests"] for r in judged}
    if not table.empty:
        table["requests"] = table["endpoint"].map(requests)
    for e in endpoints:
        if e.name not in seen:
            extra.extend({"endpoint": e.name, "percentile": lbl, "observed_s": None,
                          "target_s": getattr(e.targets, lbl), "ratio": None, "verdict": "no requests",
                          "requests": 0} for lbl, _ in PERCENTILES)
    for f in findings:
        n = requests.get(f.subject)
        f.evidence["requests"] = None if n is None or pd.isna(n) else round(float(n), 1)
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True) if extra else table
    return table, findings


def subject_aliases(observed: pd.DataFrame, endpoints: list[Any]) -> dict[str, str]:
    """Params endpoint name → the route as the metrics spell it (``GET /api/products/:id`` →
    ``GET /api/products/{id}``), for the routes seen in :func:`route_percentiles` output.
    Used to give probe findings the same subject as histogram ones."""
    out: dict[str, str] = {}
    for rec in observed.to_dict("records") if observed is not None else []:
        e = match_endpoint(rec["method"], rec["route"], endpoints)
        if e is not None and "*" not in e.route:
            out.setdefault(e.name, rec["endpoint"])
    return out


def with_subjects(observed: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    """``observed`` (one row per params endpoint, e.g. from probes) with a ``subject``
    column from :func:`subject_aliases` (the params name where no alias is known)."""
    out = observed.copy()
    out["subject"] = [aliases.get(n, n) for n in out["endpoint"]]
    return out


def endpoint_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per endpoint from a :func:`slo_breaches` / :func:`histogram_slo_breaches`
    table: ``endpoint``, ``p50``/``p95``/``p99`` observed (s), their targets, the worst
    ``verdict`` (critical > warning > ok > too few requests / no requests / no target)."""
    order = {"critical": 5, "warning": 4, "ok": 3, "too few requests": 2, "no requests": 1, "no data": 1,
             "no target": 0}
    rows = []
    for name, g in table.groupby("endpoint", sort=False):
        row: dict[str, Any] = {"endpoint": name, "requests": g["requests"].max() if "requests" in g else None}
        for label, _ in PERCENTILES:
            hit = g[g["percentile"] == label]
            row[label] = hit["observed_s"].iloc[0] if len(hit) else None
            row[f"{label}_target"] = hit["target_s"].iloc[0] if len(hit) else None
        row["verdict"] = max(g["verdict"], key=lambda v: order.get(v, 0))
        rows.append(row)
    cols = ["endpoint", "requests", "p50", "p50_target", "p95", "p95_target", "p99", "p99_target", "verdict"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- where the time goes, by route


def route_time_shares(duration_sum: pd.DataFrame, duration_count: pd.DataFrame, endpoints: list[Any],
                      method_label: str = "method", route_label: str = "route",
                      window_s: float | None = None) -> pd.DataFrame:
    """Per route: requests, mean duration and share of all request-handling time in the
    window (``..._sum`` increase over the total) — the runbook's "which endpoints are
    slow", weighted by how much time they take. Columns: ``endpoint``, ``requests``,
    ``req_per_s`` (with ``window_s``), ``mean_s``, ``busy_s`` (summed duration),
    ``time_share``, ``p95_target_s`` (when the params have one). Sorted by busy time.
    """
    cols = ["endpoint", "requests", "req_per_s", "mean_s", "busy_s", "time_share", "p95_target_s"]
    if duration_sum is None or duration_sum.empty:
        return pd.DataFrame(columns=cols)
    key = [method_label, route_label]
    s = duration_sum.groupby(key, dropna=True)["value"].sum().rename("busy_s")
    c = duration_count.groupby(key, dropna=True)["value"].sum().rename("requests") if duration_count is not None \
        and not duration_count.empty else pd.Series(dtype=float, name="requests")
    df = pd.concat([s, c], axis=1).reset_index()
    df = df[df["busy_s"].notna()]
    total = df["busy_s"].sum()
    df["endpoint"] = df[method_label].astype(str) + " " + df[route_label].astype(str)
    df["mean_s"] = df["busy_s"] / df["requests"].where(df["requests"] > 0)
    df["req_per_s"] = df["requests"] / window_s if window_s else np.nan
    df["time_share"] = df["busy_s"] / total if total > 0 else np.nan
    df["p95_target_s"] = [getattr(match_endpoint(m, r, endpoints), "targets", None) for m, r in
                          zip(df[method_label], df[route_label])]
    df["p95_target_s"] = df["p95_target_s"].map(lambda t: t.p95 if t is not None else None)
    df["requests"] = df["requests"].round(0)
    return df.sort_values("busy_s", ascending=False)[cols].reset_index(drop=True)


def percentile_series_for_plot(series: pd.DataFrame, endpoints: list[Any], top: int = 6) -> pd.DataFrame:
    """The routes worth plotting over time, from :func:`route_percentiles` with
    ``by_time``: points with requests, routes with a params target first, worst p95/target
    ratio first, at most ``top``; adds ``p95_target`` (s) and ``ratio`` (max p95 over its target)."""
    if series is None or series.empty:
        return pd.DataFrame(columns=["timestamp", "endpoint", "p50", "p95", "p99", "p95_target"])
    df = series.copy()
    targets = {}
    for m, r, name in df[["method", "route", "endpoint"]].drop_duplicates().itertuples(index=False):
        e = match_endpoint(m, r, endpoints)
        targets[name] = e.targets.p95 if e is not None else math.nan
    df["p95_target"] = df["endpoint"].map(targets)
    df = df[df["requests"].fillna(0) > 0]
    worst = (df.groupby("endpoint")["p95"].max() / df.groupby("endpoint")["p95_target"].first())
    order = worst.fillna(-1).sort_values(ascending=False).index[:top]
    return df[df["endpoint"].isin(order)].assign(
        ratio=lambda d: d["endpoint"].map(worst)).sort_values(["endpoint", "timestamp"]).reset_index(drop=True)
