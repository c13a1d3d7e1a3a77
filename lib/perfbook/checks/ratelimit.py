"""Issue 6, API Rate Limiting: who is rejected, and whether expensive routes are limited.

Pure functions. Inputs: increases of ``http_request_duration_seconds_count`` by method,
route and status code and of ``rate_limit_hits_total`` by route and limiter (from
:mod:`perfbook.sources.window_metrics`), the answers of a bounded burst
(:mod:`perfbook.sources.burst`), and per-second request rates over time. The remedies
are the runbook's two express-rate-limit limiters — ``/api/`` at 100 per 15 min per IP,
and 5 per minute on expensive operations — with ``max`` recomputed from the traffic seen.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..findings import Finding
from ..web import route_key
from . import number

#: The runbook's limiters (Issue 6, Implementing Rate Limits).
RUNBOOK_API_LIMITER = {"windowMs": 15 * 60 * 1000, "max": 100}
RUNBOOK_EXPENSIVE_LIMITER = {"windowMs": 60 * 1000, "max": 5}


_num = number


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


# --------------------------------------------------------------------------- rejections


def rejections_by_route(http_counts: pd.DataFrame, limiter_hits: pd.DataFrame | None = None,
                        status: str = "429", method_label: str = "method", route_label: str = "route",
                        status_label: str = "status_code") -> pd.DataFrame:
    """Per endpoint: requests, 429 answers, their share, and the limiter's own count.

    ``http_counts``: increase of the HTTP histogram's ``_count`` by method, route, status.
    ``limiter_hits``: increase of ``rate_limit_hits_total`` by route (and limiter); it has
    no method, so its count goes to the endpoint of that route with the most 429s (or the
    only one), else to an endpoint named by the route alone.
    Sorted by 429s, most first.
    """
    cols = ["endpoint", "method", "route", "requests", "rejected_429", "share_429", "limiter_hits", "limiters"]
    rows: dict[tuple, dict] = {}
    if http_counts is not None and len(http_counts):
        d = http_counts.copy()
        d[status_label] = d[status_label].astype(str)
        for (method, route), g in d.groupby([method_label, route_label], dropna=True):
            total = float(g["value"].sum())
            rej = float(g.loc[g[status_label] == status, "value"].sum())
            rows[(method, route)] = {"endpoint": f"{method} {route}", "method": method, "route": route,
                                     "requests": total, "rejected_429": rej, "limiter_hits": 0.0, "limiters": ""}
    if limiter_hits is not None and len(limiter_hits) and route_label in limiter_hits.columns:
        for route, g in limiter_hits.groupby(route_label, dropna=True):
            hits = float(g["value"].sum())
            limiters = ", ".join(sorted({str(x) for x in g.get("limiter", pd.Series(dtype=object)).dropna()}))
            same = [k for k in rows if k[1] == route]
            key = max(same, key=lambda k: rows[k]["rejected_429"]) if same else (None, route)
            row = rows.setdefault(key, {"endpoint": route, "method": None, "route": route, "requests": math.nan,
                                        "rejected_429": math.nan, "limiter_hits": 0.0, "limiters": ""})
            row["limiter_hits"] += hits
            row["limiters"] = limiters
    table = pd.DataFrame(list(rows.values()), columns=[c for c in cols if c != "share_429"])
    table["share_429"] = (table["rejected_429"] / table["requests"]).where(table["requests"] > 0)
    table = table[cols]
    return table.sort_values(["rejected_429", "limiter_hits"], ascending=False, na_position="last",
                             ignore_index=True)


def rejection_findings(table: pd.DataFrame, basis: str = "", *, warning: float, critical: float) -> list[Finding]:
    """``ratelimit.rejections`` per endpoint that answered 429 (or whose limiter counted hits).

    Severity by the share of the endpoint's requests rejected (settings.rate_limiting.
    rejection_share): ≥ ``critical`` (10 %) critical, ≥ ``warning`` (1 %) warning, else info — a few 429s are a limiter doing its
    job; a large share means legitimate clients are turned away or one client is abusing
    the route. One ``ok`` finding when nothing was rejected.
    """
    found = []
    for rec in table.to_dict("records"):
        rej = _num(rec["rejected_429"]) or 0.0
        hits = _num(rec["limiter_hits"]) or 0.0
        if rej <= 0 and hits <= 0:
            continue
        share = _num(rec["share_429"])
        sev = "info" if share is None else ("critical" if share >= critical else
                                            "warning" if share >= warning else "info")
        count = rej if rej > 0 else hits
        title = (f"{rec['endpoint']}: {count:.0f} requests rejected with 429"
                 + (f" ({_pct(share)} of {rec['requests']:.0f})" if share is not None else " (limiter count)"))
        found.append(Finding(
            "ratelimit.rejections", sev, title, subject=rec["endpoint"],
            evidence={"rejected_429": rej, "requests": _num(rec["requests"]), "share_429": share,
                      "limiter_hits": hits, "limiters": rec["limiters"], "basis": basis},
            recommendation=(
                f"Find who is rejected (top offenders below, or the app logs' 'rate limit' lines). "
                f"If it is one client: leave the limit, contact or block it. If legitimate traffic is "
                f"rejected: raise that limiter's max to the recommended value below, or cache "
                f"{rec['endpoint']} so each request costs less; clients should honour Retry-After.")))
    if not found:
        found.append(Finding("ratelimit.rejections", "ok", "No request was rejected by a rate limit in the window",
                             evidence={"endpoints": int(len(table)), "basis": basis}))
    return found


def top_offenders(limiter_hits: pd.DataFrame | None, client_labels: Iterable[str], n: int = 10) -> pd.DataFrame | None:
    """Rejections per client when the limiter's metric labels clients (``ip``, ``client``...):
    the runbook's "which IPs are being rate limited". None when no such label exists."""
    if limiter_hits is None or limiter_hits.empty:
        return None
    labels = [c for c in client_labels if c in limiter_hits.columns and limiter_hits[c].notna().any()]
    if not labels:
        return None
    keys = [*labels, *[c for c in ("route", "limiter") if c in limiter_hits.columns]]
    d = limiter_hits.copy()
    for c in keys:
        d[c] = d[c].fillna("")
    out = d.groupby(keys)["value"].sum().rename("rejections").reset_index()
    return out.sort_values("rejections", ascending=False, ignore_index=True).head(n)


# --------------------------------------------------------------------------- the burst


_DRAFT8 = re.compile(r"(?:^|[;,\s])([rt])=(\d+)")
_POLICY_WINDOW = re.compile(r"(?:^|;)\s*w=(\d+)")


def parse_rate_limit_headers(headers: dict[str, str]) -> dict[str, Any]:
    """What a response's rate-limit headers say: ``style`` (draft-7 ``RateLimit-*``,
    draft-8 combined ``RateLimit``, legacy ``X-RateLimit-*``, or None), ``limit``,
    ``remaining``, ``reset_s``, ``window_s`` (from ``RateLimit-Policy: 100;w=900``) and
    ``retry_after_s``. Missing values are None. Header names are case-insensitive."""
    h = {k.lower(): str(v) for k, v in (headers or {}).items()}

    def integer(name: str) -> int | None:
        m = re.match(r"\s*(\d+)", h.get(name, ""))
        return int(m.group(1)) if m else None

    out: dict[str, Any] = {"style": None, "limit": None, "remaining": None, "reset_s": None,
                           "window_s": None, "retry_after_s": integer("retry-after")}
    if "ratelimit-limit" in h or "ratelimit-remaining" in h:
        out.update(style="RateLimit-* (draft-6/7)", limit=integer("ratelimit-limit"),
                   remaining=integer("ratelimit-remaining"), reset_s=integer("ratelimit-reset"))
    elif "ratelimit" in h:
        vals = dict(_DRAFT8.findall(h["ratelimit"]))
        out.update(style="RateLimit (draft-8)", remaining=int(vals["r"]) if "r" in vals else None,
                   reset_s=int(vals["t"]) if "t" in vals else None)
    elif "x-ratelimit-limit" in h or "x-ratelimit-remaining" in h:
        out.update(style="X-RateLimit-* (legacy)", limit=integer("x-ratelimit-limit"),
                   remaining=integer("x-ratelimit-remaining"), reset_s=integer("x-ratelimit-reset"))
    policy = h.get("ratelimit-policy", "")
    if policy:
        m = re.match(r"\s*(\d+)", policy)
        if m and out["limit"] is None:
            out["limit"] = int(m.group(1))
        w = _POLICY_WINDOW.search(policy)
        out["window_s"] = int(w.group(1)) if w else None
        out["style"] = out["style"] or "RateLimit-Policy"
    return out


def burst_summary(burst: pd.DataFrame) -> dict[str, Any]:
    """One burst's answers: sent, answered, 429s, the first 429's position (1-based, in the
    order answers came back), statuses, and the rate-limit headers of the last answer that
    carried any."""
    answered = burst[burst["status"].notna()]
    statuses = answered["status"].astype(int).value_counts().sort_index()
    pos = "order" if "order" in answered.columns else "seq"   # answers in the order they came back
    first = answered.loc[answered["status"] == 429, pos]
    parsed = parse_rate_limit_headers({})
    for h in reversed(list(answered["headers"])):
        p = parse_rate_limit_headers(h)
        if p["style"] or p["retry_after_s"] is not None:
            parsed = p
            break
    return {"sent": int(len(burst)), "answered": int(len(answered)),
            "rejected_429": int((answered["status"] == 429).sum()),
            "first_429_at": (int(first.min()) + (pos == "seq")) if len(first) else None,
            "statuses": {str(k): int(v) for k, v in statuses.items()},
            "timeouts": int(burst["error"].str.startswith("timeout").sum()),
            "headers": parsed, "stopped": burst.attrs.get("stopped"),
            "seconds": burst.attrs.get("seconds")}


#: express-rate-limit's default ``windowMs``: the window assumed when headers do not say it.
DEFAULT_WINDOW_S = 60


def expensive_route_limits(endpoints: Iterable[Any], bursts: dict[str, pd.DataFrame | str],
                           limiter: pd.DataFrame | None = None, limits: pd.DataFrame | None = None, *,
                           max_per_minute: float) -> tuple[pd.DataFrame, list[Finding]]:
    """Is each expensive endpoint (params ``expensive: true``) rate-limited, tightly enough?

    ``bursts``: per endpoint name, the burst's answers, or a string saying why no burst
    was sent (host not allowed, no path, bursts off). ``limiter``: the rejections table of
    :func:`rejections_by_route` (limiter hits per endpoint).

    Limited: a 429 in the burst, or limiter hits on the route in the metrics, or
    rate-limit headers announcing a limit of at most ``max_per_minute`` per minute
    (settings.rate_limiting.expensive_max_per_minute; the
    window from ``RateLimit-Policy``, else express-rate-limit's default 60 s). A burst
    answered without any of these → ``ratelimit.missing`` (warning: an expensive operation
    anyone can call without limit — cost and capacity exposure), also when the only limit
    announced is a loose global one. No burst and no limiter hits → info (not verified).
    ``limits``: :func:`recommended_limits`, whose numbers go into the recommended code
    (the runbook's 5 per minute without it).
    """
    sized = {}
    if limits is not None and len(limits):
        sized = {route_key(r["path"]): r for r in limits.to_dict("records") if r["limiter"] == "expensiveLimiter"}
    hits: dict[str, float] = {}
    if limiter is not None and len(limiter):
        for rec in limiter.to_dict("records"):
            key = f"{rec['method']} {route_key(rec['route'])}" if rec.get("method") else route_key(rec["route"])
            hits[key] = hits.get(key, 0.0) + (_num(rec["limiter_hits"]) or 0.0)
    rows, found = [], []
    for e in endpoints:
        if not e.expensive:
            continue
        name = e.name
        b = bursts.get(name, "no burst target (no probe_path and the route has parameters)")
        metric_hits = hits.get(f"{e.method} {route_key(e.route)}", 0.0) or hits.get(route_key(e.route), 0.0)
        row = {"endpoint": name, "burst": "", "sent": None, "rejected_429": None, "first_429_at": None,
               "headers": "", "limit": None, "window_s": None, "limit_per_min": None,
               "limiter_hits": metric_hits, "limited": None}
        if isinstance(b, pd.DataFrame):
            s = burst_summary(b)
            h = s["headers"]
            window = h["window_s"] or DEFAULT_WINDOW_S
            per = f"per {window} s" if h["window_s"] else f"per window (assumed {window} s)"
            per_min = h["limit"] * 60.0 / window if h["limit"] else None
            tight = per_min is not None and per_min <= max_per_minute
            limited = s["rejected_429"] > 0 or metric_hits > 0 or tight
            row.update(burst=f"{s['sent']} sent, stopped: {s['stopped']}", sent=s["sent"],
                       rejected_429=s["rejected_429"], first_429_at=s["first_429_at"], headers=h["style"] or "",
                       limit=h["limit"], window_s=h["window_s"], limit_per_min=per_min, limited=bool(limited))
            ev = {"sent": s["sent"], "answered": s["answered"], "rejected_429": s["rejected_429"],
                  "first_429_at": s["first_429_at"], "statuses": s["statuses"], "timeouts": s["timeouts"],
                  "rate_limit_headers": h["style"], "announced_limit": h["limit"],
                  "announced_window_s": h["window_s"], "limit_per_minute": per_min,
                  "max_per_minute": max_per_minute, "limiter_hits_in_metrics": metric_hits}
            if limited:
                how = (f"429 after {s['first_429_at']} requests" if s["first_429_at"] else
                       f"{metric_hits:.0f} limiter hits in the metrics" if metric_hits > 0 else
                       f"announces {h['limit']} {per}")
                found.append(Finding("ratelimit.missing", "ok", f"{name} is rate-limited ({how})",
                                     subject=name, evidence=ev))
            elif s["answered"] == 0:
                found.append(Finding("ratelimit.missing", "info",
                                     f"{name}: the burst got no answer ({s['timeouts']} timeouts); limit not verified",
                                     subject=name, evidence=ev))
            else:
                loose = (f"; the only limit announced is {h['limit']} {per} (≈{per_min:.0f}/min, looser "
                         f"than {max_per_minute:g}/min: a global limit, not one for this operation)"
                         if per_min is not None else "; no RateLimit headers")
                found.append(Finding(
                    "ratelimit.missing", "warning",
                    f"{name} has no effective rate limit: {s['answered']} burst requests answered without a 429"
                    + loose,
                    subject=name, evidence=ev, recommendation=expensive_limiter_snippet(e.route, sized.get(route_key(e.route)))))
        else:
            row.update(burst=str(b), limited=True if metric_hits > 0 else None)
            if metric_hits > 0:
                found.append(Finding("ratelimit.missing", "ok", f"{name} is rate-limited (limiter hits in metrics)",
                                     subject=name, evidence={"limiter_hits_in_metrics": metric_hits, "burst": str(b)}))
            else:
                found.append(Finding("ratelimit.missing", "info",
                                     f"{name}: rate limit not verified ({b})", subject=name,
                                     evidence={"burst": str(b), "limiter_hits_in_metrics": metric_hits},
                                     recommendation="Allow a burst against a staging host "
                                                    "(settings.rate_limiting.burst_opt_in_hosts) or check the "
                                                    "app's limiter configuration for this route."))
        rows.append(row)
    return pd.DataFrame(rows, columns=["endpoint", "burst", "sent", "rejected_429", "first_429_at", "headers",
                                       "limit", "window_s", "limit_per_min", "limiter_hits", "limited"]), found


def expensive_limiter_snippet(path: str, sized: dict | None = None) -> str:
    """The runbook's strict limiter for one expensive path, as code to paste: ``max`` and
    ``windowMs`` from a :func:`recommended_limits` row when given, else the runbook's 5 per minute."""
    window_ms = int(sized["windowMs"]) if sized else RUNBOOK_EXPENSIVE_LIMITER["windowMs"]
    max_ = int(sized["max"]) if sized else RUNBOOK_EXPENSIVE_LIMITER["max"]
    basis = (f"// {sized['basis']}; the runbook's strict value is {RUNBOOK_EXPENSIVE_LIMITER['max']}"
             if sized else "// the runbook's strict limiter")
    return (f"Add a strict limiter in front of {path}:\n"
            f"const expensiveLimiter = rateLimit({{\n"
            f"  windowMs: {window_ms}, // {window_ms / 1000:g} s\n"
            f"  max: {max_}, {basis}\n"
            f"  standardHeaders: true,  // RateLimit-* headers, so clients can back off\n"
            f"  message: 'Rate limit exceeded for this operation.'\n"
            f"}});\n"
            f"app.use('{path}', expensiveLimiter);")


# --------------------------------------------------------------------------- recommended limits


def peak_per_window(rates: pd.DataFrame | None, window_s: float, *, q: float) -> float | None:
    """The ``q``-quantile over time of a per-second rate series, as requests per ``window_s``.

    ``rates``: ``timestamp`` + ``value`` (req/s), already summed to what is being limited.
    """
    if rates is None or rates.empty:
        return None
    per_t = rates.groupby("timestamp")["value"].sum()
    return float(per_t.quantile(q)) * window_s if len(per_t) else None


def _nice_ceiling(x: float) -> int:
    """Round up to 1-2-5 × 10^k (a limit people can read: 37 → 50, 240 → 500)."""
    if x <= 1:
        return 1
    mag = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if x <= m * mag:
            return int(m * mag)
    return int(10 * mag)  # pragma: no cover


def recommended_limits(route_rates: pd.DataFrame | None, endpoints: Iterable[Any], *, headroom: float,
                       peak_quantile: float, client_label_present: bool = False,
                       average_only_over_s: float | None = None, totals: pd.DataFrame | None = None,
                       method_label: str = "method", route_label: str = "route") -> pd.DataFrame:
    """The runbook's two limiters with ``max`` from the traffic seen.

    ``route_rates``: per-second request rate over time by method and route (Prometheus);
    ``max`` = the ``peak_quantile`` (p99) over time of the requests per limiter window ×
    ``headroom`` (2×; both settings.rate_limiting), rounded
    up to 1-2-5, and never tighter than the runbook's value for ``/api/`` (100 per 15 min,
    its public default). For expensive routes with no traffic the runbook's 5 per minute
    stands. Without a client label the per-client rate is unknown and the whole route's
    rate is used: an upper bound, said in the ``basis`` column.
    In snapshot mode pass ``totals`` (requests by method/route since start) and
    ``average_only_over_s`` (the uptime): the average rate stands in for the peak.
    """
    eps = list(endpoints)
    who = "per client" if client_label_present else "all clients together (no client label: an upper bound per client)"

    def rate_frame(match) -> pd.DataFrame | None:
        if route_rates is not None and len(route_rates):
            sel = route_rates[route_rates.apply(match, axis=1)]
            return sel[["timestamp", "value"]]
        if totals is not None and average_only_over_s:
            sel = totals[totals.apply(match, axis=1)]
            return pd.DataFrame({"timestamp": [0], "value": [float(sel["value"].sum()) / average_only_over_s]})
        return None

    kind = f"p{peak_quantile * 100:g}" if route_rates is not None and len(route_rates) else "average"
    rows = []
    api = rate_frame(lambda r: str(r[route_label]).startswith("/api/"))
    peak = peak_per_window(api, RUNBOOK_API_LIMITER["windowMs"] / 1000, q=peak_quantile)
    derived = _nice_ceiling(peak * headroom) if peak else None
    rows.append({"limiter": "apiLimiter", "path": "/api/", "windowMs": RUNBOOK_API_LIMITER["windowMs"],
                 "observed": peak, "max": max(RUNBOOK_API_LIMITER["max"], derived or 0),
                 "runbook_max": RUNBOOK_API_LIMITER["max"],
                 "basis": (f"{kind} of requests per 15 min, {who}, × {headroom:g}" if peak else
                           "no /api/ traffic seen: the runbook's value")})
    for e in eps:
        if not e.expensive:
            continue
        r = rate_frame(lambda row, e=e: row.get(method_label) == e.method
                       and route_key(row.get(route_label)) == route_key(e.route))
        peak = peak_per_window(r, RUNBOOK_EXPENSIVE_LIMITER["windowMs"] / 1000, q=peak_quantile)
        derived = _nice_ceiling(peak * headroom) if peak else None
        rows.append({"limiter": "expensiveLimiter", "path": e.route, "windowMs": RUNBOOK_EXPENSIVE_LIMITER["windowMs"],
                     "observed": peak, "max": derived or RUNBOOK_EXPENSIVE_LIMITER["max"],
                     "runbook_max": RUNBOOK_EXPENSIVE_LIMITER["max"],
                     "basis": (f"{kind} of requests per minute, {who}, × {headroom:g}" if peak else
                               "no traffic seen: the runbook's value")})
    return pd.DataFrame(rows, columns=["limiter", "path", "windowMs", "observed", "max", "runbook_max", "basis"])


def express_rate_limit_config(limits: pd.DataFrame) -> str:
    """The runbook's express-rate-limit code with the recommended numbers filled in."""
    parts = ["import rateLimit from 'express-rate-limit';", ""]
    for rec in limits.to_dict("records"):
        var = "apiLimiter" if rec["limiter"] == "apiLimiter" else \
            "limit_" + re.sub(r"[^A-Za-z0-9]+", "_", rec["path"]).strip("_")
        msg = ("Too many requests, please try again later." if rec["limiter"] == "apiLimiter"
               else "Rate limit exceeded for this operation.")
        parts += [f"// {rec['basis']}; runbook: max {rec['runbook_max']}",
                  f"const {var} = rateLimit({{",
                  f"  windowMs: {int(rec['windowMs'])}, // {rec['windowMs'] / 60000:g} min",
                  f"  max: {int(rec['max'])},",
                  "  standardHeaders: true,",
                  "  legacyHeaders: false,",
                  f"  message: '{msg}'",
                  "});",
                  f"app.use('{rec['path']}', {var});", ""]
    return "\n".join(parts).rstrip() + "\n"
