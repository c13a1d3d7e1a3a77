"""Error rate (part of :mod:`perfbook.checks.resources`): the 5xx share of responses, per
route and overall, against the usual SLO bars (1 % warning, 5 % critical).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding
from ...params import Diagnostics
from .coverage import _no_data
from .levels import _evidence, _fmt, level_verdict

# --------------------------------------------------------------------------- errors

ERROR_ADVICE = ("Read the 5xx responses' causes in the application log for this route (`flyctl logs | grep "
                "' 50'`); 502/503/504 usually come from a dependency or a breaker (external-apis section), 500 from "
                "the code. The runbook's Quick Diagnostics step 5: http_request_errors_total.")


def error_rates(requests: pd.DataFrame | None, level: Any, *, settings: Diagnostics, method_label: str = "method",
                route_label: str = "route", status_label: str = "status_code",
                basis: str = "") -> tuple[pd.DataFrame, list[Finding]]:
    """``errors.high_rate``: share of 5xx responses per route and overall, against
    ``thresholds.error_rate``. A route is judged when it had at least
    ``settings.min_requests`` requests or at least ``settings.min_errors`` 5xx answers (17
    failures out of 17 calls are not an anecdote); else it is listed as ``too few requests``.

    ``requests``: increases of ``http_requests_total`` by method, route and status code.
    Subjects: ``GET /api/products/{id}`` (as the metrics spell the route) or ``overall``.
    """
    cols = ["endpoint", "requests", "errors_5xx", "error_rate", "top_status", "verdict"]
    if requests is None or requests.empty or status_label not in requests.columns:
        return pd.DataFrame(columns=cols), _no_data("errors.high_rate", "Error rate", "http_requests_total", basis)
    df = requests.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce").fillna(0)
    df["is5xx"] = df[status_label].astype(str).str.startswith("5")
    df["endpoint"] = df.get(method_label, pd.Series("", index=df.index)).astype(str) + " " + \
        df.get(route_label, pd.Series("", index=df.index)).astype(str)
    totals = df.groupby("endpoint")["value"].sum()
    errs = df[df["is5xx"]]
    bad_by = errs.groupby("endpoint")["value"].sum().reindex(totals.index, fill_value=0.0)
    by_status = errs.groupby(["endpoint", errs[status_label].astype(str)])["value"].sum()
    by_status = by_status[by_status > 0]
    top = by_status.groupby(level=0).idxmax().map(lambda k: k[1]) if len(by_status) else pd.Series(dtype=object)
    table = pd.DataFrame({"endpoint": totals.index, "requests": totals.to_numpy(), "errors_5xx": bad_by.to_numpy()})
    table["error_rate"] = np.where(table["requests"] > 0, table["errors_5xx"] / table["requests"].where(
        table["requests"] > 0, 1), np.nan)
    table["top_status"] = [str(top[e]) if e in top.index else "" for e in table["endpoint"]]
    table = table[cols[:-1]]
    total, bad = table["requests"].sum(), table["errors_5xx"].sum()
    min_requests, min_errors = settings.min_requests, settings.min_errors
    table["verdict"] = [level_verdict(r, level) if n >= min_requests or e >= min_errors else "too few requests"
                        for r, n, e in zip(table["error_rate"], table["requests"], table["errors_5xx"])]
    table = table.sort_values(["errors_5xx", "requests"], ascending=False)
    overall = {"endpoint": "overall", "requests": total, "errors_5xx": bad,
               "error_rate": bad / total if total > 0 else np.nan, "top_status": "",
               "verdict": level_verdict(bad / total, level) if total >= min_requests or bad >= min_errors
               else "too few requests"}
    table = pd.concat([pd.DataFrame([overall]), table], ignore_index=True)
    table["requests"] = table["requests"].round(0)
    table["errors_5xx"] = table["errors_5xx"].round(0)
    found = []
    statistic = "5xx share of the window's requests" if not basis.startswith("/metrics") else \
        "5xx share of requests since each process started"
    for rec in table.to_dict("records"):
        if rec["verdict"] not in ("warning", "critical"):
            continue
        found.append(Finding(
            "errors.high_rate", rec["verdict"],
            f"{rec['endpoint']}: {_fmt(rec['error_rate'], 'ratio')} of {rec['requests']:.0f} requests answered 5xx"
            + (f" (mostly {rec['top_status']})" if rec["top_status"] else ""),
            subject=rec["endpoint"],
            evidence=_evidence(rec["error_rate"], "ratio", statistic, level, requests=rec["requests"],
                               errors_5xx=rec["errors_5xx"], top_status=rec["top_status"]),
            recommendation=ERROR_ADVICE))
    if not found and total > 0:
        found.append(Finding("errors.high_rate", "ok",
                             f"5xx share {_fmt(overall['error_rate'], 'ratio')} of {total:.0f} requests; no route "
                             f"at the warning level {_fmt(level.warning, 'ratio')}", subject="overall",
                             evidence=_evidence(overall["error_rate"], "ratio", statistic, level, requests=total,
                                                errors_5xx=bad)))
    return table, found
