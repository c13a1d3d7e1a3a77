"""Where the time goes (part of :mod:`perfbook.checks.resources`): request time split
between database, external calls and the application, CPU against routes, and the
bottlenecks page's conclusion (:func:`where_time_goes`).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ...findings import Finding, severity_rank
from .levels import _clean_series, _fmt

# --------------------------------------------------------------------------- where the time goes


def time_shares(http_seconds: float | None, db_seconds: float | None = None, external_seconds: float | None = None,
                requests: float | None = None) -> pd.DataFrame:
    """Request-handling time split: in database queries (``pg_query_duration_seconds_sum``),
    in external calls (``external_api_duration_seconds_sum``), and the rest (application
    code, event-loop waits, waiting for a pool connection...), each as seconds, share of
    the HTTP time (``http_request_duration_seconds_sum``) and ms per request.

    Shares are of *summed* request time: concurrent requests each count their own time,
    queries and calls each count theirs. A component can exceed 100 % when its work is not
    inside a request (background jobs) — shown as is, it is a finding in itself.
    """
    cols = ["component", "seconds", "share_of_request_time", "ms_per_request"]
    if http_seconds is None or not http_seconds or http_seconds <= 0:
        return pd.DataFrame(columns=cols)
    rows = []
    known = 0.0
    for name, val in (("database queries", db_seconds), ("external API calls", external_seconds)):
        if val is None or pd.isna(val):
            continue
        known += val
        rows.append({"component": name, "seconds": val})
    rows.append({"component": "application and waits (the rest)", "seconds": max(0.0, http_seconds - known)})
    rows.append({"component": "all request handling", "seconds": http_seconds})
    df = pd.DataFrame(rows)
    df["share_of_request_time"] = df["seconds"] / http_seconds
    df["ms_per_request"] = df["seconds"] / requests * 1000 if requests else np.nan
    return df[cols]


def time_share_summary(shares: pd.DataFrame) -> str:
    """One sentence: where most request time goes, with the numbers."""
    if shares is None or shares.empty:
        return "No request time to split (no HTTP duration histogram in the window)."
    parts = shares[shares["component"] != "all request handling"].sort_values("seconds", ascending=False)
    top = parts.iloc[0]
    rest = ", ".join(f"{r['component']} {r['share_of_request_time']:.0%}" for r in parts.iloc[1:].to_dict("records"))
    return (f"Most request time goes to {top['component']}: {top['share_of_request_time']:.0%} of "
            f"{shares['seconds'].iloc[-1]:.0f} s summed request time" + (f" ({rest})." if rest else "."))


def cpu_route_correlation(cpu: pd.DataFrame | None, busy: pd.DataFrame | None, rate: pd.DataFrame | None,
                          method_label: str = "method", route_label: str = "route", *,
                          min_points: int) -> pd.DataFrame:
    """Which routes move with CPU: Pearson correlation over time between total CPU %
    (summed over instances) and each route's busy time (``rate`` of the duration
    histogram's ``_sum``: seconds of handling per second) and request rate.

    Inputs are range-query series on one step grid (``timestamp`` aligned). Columns:
    ``endpoint``, ``r_busy``, ``r_rate``, ``busy_share`` (the route's share of all busy
    time), ``points``. A correlation needs ``min_points`` (settings.diagnostics.
    correlation_min_points) common timestamps and some
    variation in both series; else NaN. Correlation is a pointer, not proof: a route
    that is busy *because* CPU is saturated (queued behind the blocker) moves with it too;
    read it with the mean durations and a CPU profile.
    """
    cols = ["endpoint", "r_busy", "r_rate", "busy_share", "points"]
    c = _clean_series(cpu)
    if c.empty or busy is None or busy.empty:
        return pd.DataFrame(columns=cols)
    total_cpu = c.groupby("timestamp")["value"].sum()

    def keyed(df: pd.DataFrame | None) -> pd.DataFrame:
        if df is None or df.empty:
            return pd.DataFrame(columns=["timestamp", "endpoint", "value"])
        d = df.copy()
        d["endpoint"] = d[method_label].astype(str) + " " + d[route_label].astype(str)
        return d.pivot_table(index="timestamp", columns="endpoint", values="value", aggfunc="sum")

    b, r = keyed(busy), keyed(rate)
    total_busy = b.sum().sum() if not b.empty else 0.0
    rows = []
    for ep in b.columns:
        row = {"endpoint": ep, "busy_share": b[ep].sum() / total_busy if total_busy else np.nan}
        for name, frame in (("r_busy", b), ("r_rate", r)):
            if ep not in getattr(frame, "columns", []):
                row[name] = np.nan
                continue
            j = pd.concat([total_cpu.rename("cpu"), frame[ep].rename("x")], axis=1, join="inner").dropna()
            row["points"] = len(j)
            ok = len(j) >= min_points and j["cpu"].std() > 0 and j["x"].std() > 0
            row[name] = float(np.corrcoef(j["cpu"], j["x"])[0, 1]) if ok else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["r_busy", "busy_share"], ascending=False, na_position="last").reset_index(drop=True)


def where_time_goes(shares: pd.DataFrame | None, routes: pd.DataFrame | None,
                    findings: Iterable[Finding]) -> list[str]:
    """The bottlenecks page's conclusion, as short sentences with their numbers: which
    routes take the request time, how it splits between DB, external calls and the
    application, and which resource checks point at the application (CPU, event loop,
    memory)."""
    out = []
    if routes is not None and not routes.empty and routes["time_share"].notna().any():
        top = routes.head(3)
        out.append("Request time by route: " + ", ".join(
            f"{r['endpoint']} {r['time_share']:.0%} (mean {_fmt(r['mean_s'], 's')})" for r in top.to_dict("records")) + ".")
    if shares is not None and not shares.empty:
        out.append(time_share_summary(shares))
    bad = [f for f in findings if f.severity in ("warning", "critical")]
    for code, what in (("eventloop.lag", "the event loop is blocked"), ("cpu.saturation", "CPU is saturated"),
                       ("memory.growth", "memory grows steadily (leak suspected)"),
                       ("memory.pressure", "memory is near its limit")):
        hits = [f for f in bad if f.code == code]
        if hits:
            worst = max(hits, key=lambda f: severity_rank(f.severity))
            out.append(f"In the application, {what}: {worst.title}.")
    if not bad:
        out.append("No resource is at its Warning level: if latency is over target, the time is in the database, "
                   "external calls or waiting — see the shares above.")
    return out
