"""Issue 7, External API Performance: slow or failing dependencies, timeouts, the breaker.

Pure functions. Inputs: the service's ``/health/services`` answer; increases of
``external_api_duration_seconds_bucket`` by service and of ``external_api_requests_total``
by service and outcome; raw samples of ``circuit_breaker_state`` (0 closed, 1 open,
2 half-open); active probes of each dependency's health URL. Numbers come from the
runbook: the 10 s request timeout (axios and opossum ``timeout: 10000``), opossum's
``errorThresholdPercentage: 50`` and ``resetTimeout: 30000``, and the retry with
exponential backoff (1 s, 2 s, 4 s).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

import pandas as pd

from ..findings import Finding
from ..params import External
from . import ms, number
from .quantile import quantiles_by

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}

#: Words that mean healthy in /health/services answers.
HEALTHY_WORDS = {"ok", "up", "healthy", "pass", "passing", "green", "available", "true", "closed"}

#: The runbook's opossum options (Issue 7 §1).
RUNBOOK_BREAKER = {"timeout": 10000, "errorThresholdPercentage": 50, "resetTimeout": 30000}

#: Calls in a rolling window before the recommended breaker may trip (do not trip on 1 of 2 calls).
BREAKER_VOLUME_THRESHOLD = 10


_num = number




# --------------------------------------------------------------------------- /health/services


def parse_health_services(body: Any) -> pd.DataFrame:
    """The ``/health/services`` answer as a table: service, status, healthy, detail.

    Accepts the usual shapes: ``{"services": {...}}`` or ``{"checks"|"dependencies": ...}``
    wrapping either ``{name: "up"}``, ``{name: {"status": "up", ...}}`` or
    ``[{"name"|"service": ..., "status": ...}]``. Scalar fields other than the status go
    into ``detail`` (``latency_ms=120, breaker=open``).
    """
    items = body
    if isinstance(body, dict):
        for key in ("services", "checks", "dependencies", "details"):
            if key in body and isinstance(body[key], (dict, list)):
                items = body[key]
                break
    rows = []
    pairs = items.items() if isinstance(items, dict) else \
        [(i.get("name") or i.get("service") or f"#{n}", i) if isinstance(i, dict) else (f"#{n}", i)
         for n, i in enumerate(items if isinstance(items, list) else [])]
    for name, val in pairs:
        if isinstance(val, dict):
            status = val.get("status", val.get("state", val.get("healthy", "")))
            detail = ", ".join(f"{k}={v}" for k, v in val.items()
                               if k not in ("status", "state", "name", "service") and not isinstance(v, (dict, list)))
        else:
            status, detail = val, ""
        text = str(status).strip().lower()
        rows.append({"service": str(name), "status": str(status), "healthy": text in HEALTHY_WORDS, "detail": detail})
    return pd.DataFrame(rows, columns=["service", "status", "healthy", "detail"])


def health_findings(table: pd.DataFrame, http_status: int | None = None) -> list[Finding]:
    """``external.errors`` (warning) per service ``/health/services`` reports unhealthy; one
    ``ok`` per healthy service."""
    found = []
    for rec in table.to_dict("records"):
        if rec["healthy"]:
            found.append(Finding("external.errors", "ok", f"{rec['service']} reports {rec['status']}",
                                 subject=rec["service"], evidence={"status": rec["status"], "detail": rec["detail"],
                                                                   "http_status": http_status}))
        else:
            found.append(Finding(
                "external.errors", "warning",
                f"/health/services reports {rec['service']} as {rec['status'] or 'unknown'}",
                subject=rec["service"],
                evidence={"status": rec["status"], "detail": rec["detail"], "http_status": http_status},
                recommendation=f"See the latency, error and breaker checks below for {rec['service']}; "
                               f"check the provider's status page."))
    return found


# --------------------------------------------------------------------------- latency


def judged_calls(buckets: pd.DataFrame | None, status_label: str | None) -> pd.DataFrame | None:
    """The histogram rows of calls whose duration says how fast the dependency is: answered
    with success (2xx, 3xx) or timed out (``timeout``). A failure answered fast (a 503 in
    20 ms, a refused connection) is an error, counted by :func:`failing_dependencies`, and
    never makes a slow dependency look fast. Rows without ``status_label`` (an
    instrumentation without it): all of them."""
    if buckets is None or not status_label or status_label not in buckets.columns:
        return buckets
    raw = buckets[status_label]
    status = raw.astype(str).str.strip().str.lower()
    code = pd.to_numeric(status, errors="coerce")
    unlabelled = raw.isna() | status.isin(["", "nan", "none"])
    keep = unlabelled | (status == "timeout") | ((code >= 200) & (code < 400))
    out = buckets[keep].drop(columns=[status_label])
    out.attrs = dict(buckets.attrs)
    return out


def dependency_latency(buckets: pd.DataFrame, timeout_for: Callable[[str], float],
                       service_label: str = "service", status_label: str | None = None) -> pd.DataFrame:
    """Per dependency: calls, p50/p95/p99 (s) and its timeout, with p95 and p99 as a share of it.

    ``buckets``: increase of ``external_api_duration_seconds_bucket`` by ``le`` and service
    (and ``status_label``: then only the calls :func:`judged_calls` keeps) over the window.
    Quantiles as PromQL's ``histogram_quantile`` computes them: a p99 in the +Inf bucket
    reads as the highest finite bound.
    """
    cols = ["service", "calls", "p50_s", "p95_s", "p99_s", "timeout_s", "p95_of_timeout", "p99_of_timeout"]
    buckets = judged_calls(buckets, status_label)
    if buckets is None or buckets.empty:
        return pd.DataFrame(columns=cols)
    q = quantiles_by(buckets, [0.5, 0.95, 0.99], by=[service_label]).rename(
        columns={service_label: "service", "count": "calls", "p50": "p50_s", "p95": "p95_s", "p99": "p99_s"})
    q = q[q["service"].notna()].copy()
    q["timeout_s"] = q["service"].map(timeout_for)
    q["p95_of_timeout"] = q["p95_s"] / q["timeout_s"]
    q["p99_of_timeout"] = q["p99_s"] / q["timeout_s"]
    return q[cols].reset_index(drop=True)


def latency_series(bucket_rates: pd.DataFrame | None, service_label: str = "service",
                   status_label: str | None = None) -> pd.DataFrame | None:
    """p50/p95/p99 over time per dependency from bucket rates with a ``timestamp`` column (the
    calls :func:`judged_calls` keeps)."""
    bucket_rates = judged_calls(bucket_rates, status_label)
    if bucket_rates is None or bucket_rates.empty:
        return None
    return quantiles_by(bucket_rates, [0.5, 0.95, 0.99], by=[service_label, "timestamp"]).rename(
        columns={service_label: "service"})


def suggested_timeout_s(p99_s: float | None, current_s: float) -> float:
    """A client timeout to recommend: 1.5 × the observed p99 rounded up to the second,
    within [1 s, current]. When the p99 is at or past the timeout, calls are timing out and
    the observed p99 says nothing about a healthy call: keep the current timeout."""
    if p99_s is None or p99_s >= current_s:
        return current_s
    return float(min(current_s, max(1.0, math.ceil(p99_s * 1.5))))


def slow_dependencies(latency: pd.DataFrame, errors: pd.DataFrame | None = None, *,
                      settings: External) -> list[Finding]:
    """``external.slow`` per dependency, by ``settings`` (settings.external).

    Critical when at least 4 × ``timeout_share`` (20 %) of calls ended in a timeout (counted,
    when the service counts timeouts), or, without that count, when p99 reaches the timeout; warning when p95 ≥
    ``slow_fraction`` (½) of the timeout — half the budget gone in one call, the tail about
    to time out — or when ``timeout_share`` (5 %) of calls timed out. The timeout share
    (``errors``: :func:`dependency_errors`; of the calls made, not those the breaker
    rejected) catches a client whose real timeout is shorter than the one the params know.
    ``ok`` otherwise; fewer than ``min_calls`` calls: not judged.
    """
    slow_fraction, min_calls, timeout_share = settings.slow_fraction, settings.min_calls, settings.timeout_share
    timeouts: dict[str, tuple[float, float]] = {}
    if errors is not None and len(errors):
        # share of the calls actually made (the breaker's rejections never reached the dependency)
        timeouts = {r["service"]: (float(r["timeout"]), float(r["calls"]) - float(r["rejected"]))
                    for r in errors.to_dict("records")}
    found = []
    for rec in latency.to_dict("records"):
        name, calls, timeout = rec["service"], _num(rec["calls"]) or 0, rec["timeout_s"]
        p50, p95, p99 = _num(rec["p50_s"]), _num(rec["p95_s"]), _num(rec["p99_s"])
        n_timeouts, n_calls = timeouts.get(name, (0.0, 0.0))
        t_share = n_timeouts / n_calls if n_calls else None
        ev = {"calls": calls, "p50_ms": p50 and p50 * 1000, "p95_ms": p95 and p95 * 1000,
              "p99_ms": p99 and p99 * 1000, "timeout_ms": timeout * 1000, "timed_out": n_timeouts,
              "timed_out_share": t_share}
        if max(calls, n_calls) < min_calls or (p95 is None and t_share is None):
            continue
        share_note = f", {t_share * 100:.0f} % of calls timed out" if t_share else ""
        # Calls timing out: counted when the service counts its timeouts (``t_share``); only
        # without that count, the p99 read from the histogram past the timeout. A p99 is an
        # interpolation inside a bucket: over a handful of calls it lands either side of the
        # timeout by the TSDB's arithmetic alone (Prometheus 3.5 s, VictoriaMetrics 3.0 s on the
        # same 9 calls, 14 % of them timed out), where the count says what happened.
        timing_out = (t_share >= 4 * timeout_share) if t_share is not None else (p99 is not None and p99 >= timeout)
        if timing_out:
            sev = "critical"
        elif (p95 is not None and p95 >= slow_fraction * timeout) or (t_share or 0) >= timeout_share:
            sev = "warning"
        elif p95 is None:
            continue  # no call succeeded or timed out, and none timed out: its errors say it all
        else:
            found.append(Finding("external.slow", "ok",
                                 f"{name}: p95 {ms(p95)} over {calls:.0f} calls, well under its {timeout:g} s timeout",
                                 subject=name, evidence=ev))
            continue
        found.append(Finding(
            "external.slow", sev,
            f"{name} is slow: p95 {ms(p95)}, p99 {ms(p99)} against a {timeout:g} s timeout "
            f"({calls:.0f} calls{share_note})",
            subject=name, evidence=ev, recommendation=slow_recommendation(name, p99, timeout, t_share)))
    return found


def slow_recommendation(name: str, p99_s: float | None, timeout_s: float, timed_out_share: float | None = None) -> str:
    """The runbook's remedies for a slow dependency with numbers: the timeout (1.5 × p99
    when calls finish well inside it; the current one when calls are already timing out —
    shorter would fail more, longer would hold requests), the opossum options, parallel calls."""
    if timed_out_share:
        t = timeout_s
        first = (f"- {timed_out_share * 100:.0f} % of calls to {name} hit the {t:g} s timeout: {name} is slower than "
                 f"the service allows. Keep the timeout at {t * 1000:.0f} ms (axios `timeout: {t * 1000:.0f}`) and let "
                 f"the breaker fail fast instead of holding requests:\n")
    else:
        t = suggested_timeout_s(p99_s, timeout_s)
        first = (f"- Bound every call to {name} with a timeout of {t * 1000:.0f} ms (axios `timeout: {t * 1000:.0f}`; "
                 f"1.5 × the observed p99), inside a circuit breaker so a slow {name} fails fast:\n")
    return (first
            + f"  new CircuitBreaker(call, {breaker_options(t)})\n"
            f"- Serve a fallback (cached result) while it is slow: breaker.fallback(() => cache.get(key)).\n"
            f"- Where a request calls several dependencies one after the other, call them with Promise.all "
            f"(each with its own timeout).\n"
            f"- Check {name}'s status page; consider caching its responses.")


# --------------------------------------------------------------------------- errors


def dependency_errors(requests: pd.DataFrame, service_label: str = "service",
                      outcome_label: str = "outcome") -> pd.DataFrame:
    """Per dependency: calls by outcome (success, error, timeout, rejected — the breaker
    short-circuiting), and ``failure_rate`` = everything not ``success`` / all calls."""
    cols = ["service", "calls", "success", "error", "timeout", "rejected", "other", "failure_rate"]
    if requests is None or requests.empty:
        return pd.DataFrame(columns=cols)
    d = requests[requests[service_label].notna()]
    wide = d.pivot_table(index=service_label, columns=outcome_label, values="value", aggfunc="sum", fill_value=0.0)
    out = pd.DataFrame(index=wide.index)
    for c in ("success", "error", "timeout", "rejected"):
        out[c] = wide[c] if c in wide.columns else 0.0
    out["other"] = wide[[c for c in wide.columns if c not in ("success", "error", "timeout", "rejected")]].sum(axis=1)
    out["calls"] = wide.sum(axis=1)
    out["failure_rate"] = ((out["calls"] - out["success"]) / out["calls"]).where(out["calls"] > 0)
    out.index.name = "service"
    return out.reset_index()[cols]


def failing_dependencies(errors: pd.DataFrame, *, settings: External) -> list[Finding]:
    """``external.errors`` per dependency whose failure rate is ≥ ``settings.error_rate``'s
    warning (5 %) or critical (20 %), judged on ``settings.min_calls`` calls or more. External
    APIs fail more than a service's own routes, so these sit above the 1 %/5 % of the
    service's error-rate levels. ``ok`` otherwise."""
    warning, critical, min_calls = settings.error_rate.warning, settings.error_rate.critical, settings.min_calls
    found = []
    for rec in errors.to_dict("records"):
        name, calls, rate = rec["service"], float(rec["calls"]), _num(rec["failure_rate"])
        ev = {k: rec[k] for k in ("calls", "success", "error", "timeout", "rejected", "other")}
        ev["failure_rate"] = rate
        if calls < min_calls or rate is None:
            continue
        if rate < warning:
            found.append(Finding("external.errors", "ok", f"{name}: {rate * 100:.1f} % of {calls:.0f} calls failed",
                                 subject=name, evidence=ev))
            continue
        sev = "critical" if rate >= critical else "warning"
        parts = [f"{rec[k]:.0f} {k}" for k in ("error", "timeout", "rejected") if rec[k]]
        timeout = settings.timeout_for(name)
        found.append(Finding(
            "external.errors", sev,
            f"{name} fails {rate * 100:.1f} % of {calls:.0f} calls ({', '.join(parts) or 'other outcomes'})",
            subject=name, evidence=ev,
            recommendation=(
                f"- Retry transient failures with exponential backoff (1 s, 2 s, 4 s; at most 3 attempts), "
                f"never on top of an open breaker.\n"
                f"- Keep the breaker around {name}: {breaker_options(timeout)}; give it a fallback.\n"
                + (f"- {rec['timeout']:.0f} calls timed out: see external.slow for the timeout value.\n"
                   if rec["timeout"] else "")
                + f"- Check {name}'s status page and its rate limits (429s count as errors).")))
    return found


def breaker_options(timeout_s: float) -> str:
    """opossum options for a call with this timeout: the runbook's plus a volume threshold
    (:data:`BREAKER_VOLUME_THRESHOLD`)."""
    return (f"{{ timeout: {timeout_s * 1000:.0f}, errorThresholdPercentage: 50, resetTimeout: 30000, "
            f"volumeThreshold: {BREAKER_VOLUME_THRESHOLD} }}")


# --------------------------------------------------------------------------- circuit breaker


def breaker_transitions(samples: pd.DataFrame, breaker_label: str = "name") -> pd.DataFrame:
    """Per breaker: samples, share of time open / half-open, transitions into open and
    half-open, the state at the window's end and when it first and last opened.

    ``samples``: raw samples of ``circuit_breaker_state`` (label columns incl. ``instance``
    if several, ``timestamp``, ``value``). Transitions are counted per series (each
    instance has its own breaker) and summed; ``state_now`` is the worst over instances
    (open > half-open > closed).
    """
    cols = ["breaker", "instances", "samples", "open_share", "half_open_share", "opens", "half_opens",
            "state_now", "first_open", "last_open"]
    if samples is None or samples.empty:
        return pd.DataFrame(columns=cols)
    d = samples.copy()
    d["breaker"] = d[breaker_label].astype(str) if breaker_label in d.columns else "(unnamed)"
    series_keys = ["breaker"] + (["instance"] if "instance" in d.columns else [])
    if "timestamp" not in d.columns:
        d["timestamp"] = pd.NaT
    rows = []
    for name, g in d.groupby("breaker"):
        opens = half_opens = 0
        now_states = []
        for _, s in g.groupby(series_keys, dropna=False):
            s = s.sort_values("timestamp")
            v = s["value"].round().astype(int).tolist()
            opens += sum(1 for a, b in pairwise(v) if b == OPEN and a != OPEN)
            half_opens += sum(1 for a, b in pairwise(v) if b == HALF_OPEN and a != HALF_OPEN)
            now_states.append(v[-1])
        vals = g["value"].round()
        open_times = g.loc[vals == OPEN, "timestamp"]
        worst = OPEN if OPEN in now_states else HALF_OPEN if HALF_OPEN in now_states else CLOSED
        rows.append({"breaker": name, "instances": g.groupby(series_keys, dropna=False).ngroups,
                     "samples": len(g), "open_share": float((vals == OPEN).mean()),
                     "half_open_share": float((vals == HALF_OPEN).mean()), "opens": opens,
                     "half_opens": half_opens, "state_now": STATE_NAMES.get(worst, str(worst)),
                     "first_open": open_times.min() if len(open_times) else None,
                     "last_open": open_times.max() if len(open_times) else None})
    return pd.DataFrame(rows, columns=cols)


def dependency_of(breaker: str, services: Iterable[str]) -> str:
    """The dependency a breaker guards: its name if that is a known service, else the
    service whose name it contains (``ai-api-breaker`` → ``ai-api``), else the name."""
    known = [s for s in services if isinstance(s, str)]
    if breaker in known:
        return breaker
    for s in sorted(known, key=len, reverse=True):
        if s and s in breaker:
            return s
    return breaker


def open_breakers(transitions: pd.DataFrame, services: Iterable[str] = (), *,
                  timeout_for: Callable[[str], float], snapshot: bool = False) -> list[Finding]:
    """``external.circuit_open`` per breaker: critical when open (or half-open) at the
    window's end, warning when it opened during the window and has closed since, ``ok``
    when it stayed closed. The subject is the dependency it guards (:func:`dependency_of`).
    ``snapshot``: only the current state is known (no Prometheus): transitions unknown."""
    found = []
    services = list(services)
    for rec in transitions.to_dict("records"):
        dep = dependency_of(rec["breaker"], services)
        ev = {"breaker": rec["breaker"], "state_now": rec["state_now"], "opens": rec["opens"],
              "half_opens": rec["half_opens"], "open_share": rec["open_share"],
              "half_open_share": rec["half_open_share"], "instances": rec["instances"],
              "first_open": rec["first_open"], "last_open": rec["last_open"]}
        timeout = timeout_for(dep)
        rec_text = (f"The breaker protects the service from {dep}; while it is open, requests fail fast. "
                    f"Fix {dep} itself (see external.slow / external.errors), keep a fallback for open-breaker "
                    f"time (cached or degraded answer), and keep the runbook's options: {breaker_options(timeout)}. "
                    f"If it flaps (many opens), raise volumeThreshold or resetTimeout rather than the error threshold.")
        if rec["state_now"] in ("open", "half-open"):
            what = "is open" if rec["state_now"] == "open" else "is half-open (trying again after being open)"
            span = "" if snapshot else (f"; opened {rec['opens']} times, open {rec['open_share'] * 100:.0f} % "
                                        f"of the window")
            found.append(Finding("external.circuit_open", "critical",
                                 f"The circuit breaker around {dep} {what}{span}", subject=dep, evidence=ev,
                                 recommendation=rec_text))
        elif rec["opens"] > 0 or rec["open_share"] > 0:
            found.append(Finding("external.circuit_open", "warning",
                                 f"The circuit breaker around {dep} opened {rec['opens']} times in the window "
                                 f"(open {rec['open_share'] * 100:.0f} % of the time); closed now",
                                 subject=dep, evidence=ev, recommendation=rec_text))
        else:
            found.append(Finding("external.circuit_open", "ok",
                                 f"The circuit breaker around {dep} stayed closed" + (" (now)" if snapshot else ""),
                                 subject=dep, evidence=ev))
    return found


def breaker_bands(samples: pd.DataFrame | None, breaker_label: str = "name") -> pd.DataFrame:
    """Intervals where a breaker was not closed, for plotting: breaker, state, start, end.

    Over instances the worst state at each timestamp counts (open > half-open > closed),
    each instance keeping its last sampled state until its next sample.
    """
    cols = ["breaker", "state", "start", "end"]
    if samples is None or samples.empty or "timestamp" not in samples.columns:
        return pd.DataFrame(columns=cols)
    d = samples.copy()
    d["breaker"] = d[breaker_label].astype(str) if breaker_label in d.columns else "(unnamed)"
    d["rank"] = d["value"].round().map({OPEN: 2, HALF_OPEN: 1}).fillna(0)
    d["series"] = d["instance"].astype(str) if "instance" in d.columns else ""
    rows = []
    for name, g in d.groupby("breaker"):
        # Instances are scraped at different moments: carry each one's last state forward
        # onto every timestamp before taking the worst.
        wide = g.pivot_table(index="timestamp", columns="series", values="rank", aggfunc="max").sort_index()
        per_t = wide.ffill().max(axis=1)
        state, start, prev_t = 0, None, None
        for t, r in per_t.items():
            if r != state:
                if state:
                    rows.append({"breaker": name, "state": "open" if state == 2 else "half-open",
                                 "start": start, "end": t})
                state, start = r, t
            prev_t = t
        if state:
            rows.append({"breaker": name, "state": "open" if state == 2 else "half-open", "start": start, "end": prev_t})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- active probes


def probe_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Per dependency: attempts, whether it finally answered well, the final status and
    time, and the backoff slept in total."""
    cols = ["dependency", "url", "attempts", "ok", "final_status", "final_seconds", "backoff_s", "errors"]
    rows = []
    for name, g in probes.groupby("dependency", sort=False):
        g = g.sort_values("attempt")
        last = g.iloc[-1]
        rows.append({"dependency": name, "url": last["url"], "attempts": len(g), "ok": bool(last["ok"]),
                     "final_status": last["status"], "final_seconds": last["seconds"],
                     "backoff_s": float(g["waited_s"].sum()),
                     "errors": "; ".join(e for e in g["error"] if e)})
    return pd.DataFrame(rows, columns=cols)


def probe_findings(summary: pd.DataFrame, *, timeout_for: Callable[[str], float]) -> list[Finding]:
    """``external.errors`` from active probes: critical when a dependency never answered
    well after its retries; info when it did only after a retry (flaky); ``ok`` at once."""
    found = []
    for rec in summary.to_dict("records"):
        name = rec["dependency"]
        ev = {"url": rec["url"], "attempts": rec["attempts"], "final_status": rec["final_status"],
              "final_ms": None if rec["final_seconds"] is None else rec["final_seconds"] * 1000,
              "backoff_s": rec["backoff_s"], "errors": rec["errors"]}
        if not rec["ok"]:
            found.append(Finding(
                "external.errors", "critical",
                f"{name} health check failed after {rec['attempts']} attempts with backoff ({rec['errors']})",
                subject=name, evidence=ev,
                recommendation=f"{name} is down or unreachable from here: check its status page and network path; "
                               f"meanwhile the breaker should be open and a fallback serving "
                               f"({breaker_options(timeout_for(name))})."))
        elif rec["attempts"] > 1:
            found.append(Finding("external.errors", "info",
                                 f"{name} answered only after {rec['attempts']} attempts ({rec['errors']})",
                                 subject=name, evidence=ev))
        else:
            found.append(Finding("external.errors", "ok",
                                 f"{name} health check answered {rec['final_status']:.0f} in "
                                 f"{ms(rec['final_seconds'])}", subject=name, evidence=ev))
    return found


def known_services(*tables: pd.DataFrame | None, extra: Iterable[str] = ()) -> list[str]:
    """Dependency names seen anywhere (the ``service`` column of any table, plus ``extra``
    such as the params' external_health_urls keys), sorted, for naming breakers."""
    names = set(extra)
    for t in tables:
        if t is not None and len(t) and "service" in t.columns:
            names.update(str(s) for s in t["service"].dropna())
    return sorted(names)
