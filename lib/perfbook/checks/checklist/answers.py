"""One answer per measurable checklist item (part of :mod:`perfbook.checks.checklist`):
cache hit rate, rate limiting, compression, pagination, event-loop lag, pool gauges,
instance size, instances running, fly.toml scaling, alerting rules, key metrics and
baselines, gathered by :func:`measured_answers`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from perfbook.web import RATELIMIT_HEADERS

from .items import ITEMS, UNKNOWN_REASONS, Answer, _num, _scaled

# ---------------------------------------------------------------------------------
# One answer per measurable item
# ---------------------------------------------------------------------------------

def answer_caching(hits: float | None, misses: float | None, *, target: float, min_lookups: int) -> Answer:
    """Met when the window's overall hit rate (hits / (hits + misses)) is at least the
    runbook's target (Issue 5: "> 60% hit rate", thresholds.cache_hit_rate); unknown with
    fewer than ``min_lookups`` lookups (settings.caching.min_lookups) to judge."""
    if hits is None and misses is None:
        return Answer("caching", "unknown", "No cache hit/miss counters under the params' selector: the hit rate "
                                            "cannot be measured (cache_hits_total / cache_misses_total).")
    hits, misses = hits or 0.0, misses or 0.0
    lookups = hits + misses
    ev = {"hits": hits, "misses": misses, "lookups": lookups, "target": target}
    if lookups < min_lookups:
        return Answer("caching", "unknown", f"Only {lookups:.0f} cache lookups in the window (< {min_lookups}).", ev)
    rate = hits / lookups
    ev["hit_rate"] = rate
    if rate >= target:
        return Answer("caching", "met", f"Hit rate {rate:.0%} over {lookups:.0f} lookups (target {target:.0%}).", ev)
    return Answer("caching", "unmet", f"Hit rate {rate:.0%} over {lookups:.0f} lookups, under the {target:.0%} target.",
                  ev, recommendation="Runbook Issue 5: increase TTLs, cache more endpoints, pre-warm the cache on "
                                     "startup; the caching section shows which cache misses.")




def _has_rl_headers(probe: dict) -> bool:
    return any(h in (probe.get("headers") or {}) for h in RATELIMIT_HEADERS)


def answer_rate_limiting(probes: Sequence[dict], rejections: float | None = None) -> Answer:
    """Met when responses carry RateLimit headers (IETF draft / express-rate-limit's
    ``standardHeaders``) or the service has rejected requests with 429 — and every
    *expensive* route probed has a limit (runbook Issue 6: "stricter limit for expensive
    operations"). Unmet when an expensive route answers without RateLimit headers, or
    nothing shows any limiting."""
    answered = [p for p in probes if p.get("status") is not None]
    if not answered:
        return Answer("rate_limiting", "unknown", "No probe got an answer (targets.base_url unset or unreachable).")
    limited = [p["endpoint"] for p in answered if _has_rl_headers(p) or p.get("status") == 429]
    expensive = [p for p in answered if p.get("expensive")]
    unlimited_expensive = [p["endpoint"] for p in expensive if not (_has_rl_headers(p) or p.get("status") == 429)]
    ev = {"routes_with_limit_headers": limited, "expensive_without_limit": unlimited_expensive,
          "rejections_in_window": rejections, "probed": [p["endpoint"] for p in answered]}
    if unlimited_expensive:
        return Answer("rate_limiting", "unmet",
                      f"Expensive route(s) without a rate limit: {', '.join(unlimited_expensive)} (no RateLimit "
                      f"headers in the answer).", ev,
                      recommendation="Runbook Issue 6: put a stricter limiter on expensive operations, e.g. "
                                     "express-rate-limit with windowMs: 60_000, max: 10 and standardHeaders: true.")
    if limited or (rejections or 0) > 0:
        what = f"RateLimit headers on {', '.join(limited)}" if limited else ""
        rej = f"{rejections:.0f} requests rejected in the window" if (rejections or 0) > 0 else ""
        return Answer("rate_limiting", "met", "; ".join(x for x in (what, rej) if x) + ".", ev)
    return Answer("rate_limiting", "unmet", "No RateLimit headers on any probed route and no 429s in the window.", ev,
                  recommendation="Runbook Issue 6: add rate limiting (express-rate-limit, standardHeaders: true) "
                                 "to /api/, stricter on expensive routes.")


#: Servers commonly skip compressing bodies under ~1 KB (nginx gzip_min_length, express
#: compression's threshold: 1 kb); a smaller uncompressed answer says nothing.
COMPRESSION_MIN_BYTES = 1024


def answer_compression(probes: Sequence[dict]) -> Answer:
    """Met when a response to ``Accept-Encoding: gzip, br`` comes back with
    ``Content-Encoding: gzip`` or ``br``; unmet when a body of at least 1 KB comes back
    uncompressed; unknown when every answer was too small to tell."""
    answered = [p for p in probes if p.get("status") == 200 and p.get("purpose") == "compression"]
    if not answered:
        return Answer("compression", "unknown", "No successful GET to test (targets.base_url unset, or no endpoint "
                                                "with a probe_path answered 200).")
    enc = [p for p in answered if (p.get("headers") or {}).get("content-encoding", "").lower() in ("gzip", "br",
                                                                                                  "deflate", "zstd")]
    if enc:
        best = max(enc, key=lambda p: p.get("body_bytes") or p.get("wire_bytes") or 0)
        e = best["headers"]["content-encoding"]
        ratio = (f", {best['wire_bytes']} bytes on the wire for {best['body_bytes']}"
                 if best.get("body_bytes") else "")
        return Answer("compression", "met", f"{best['endpoint']} answered with Content-Encoding: {e}{ratio}.",
                      {"endpoint": best["endpoint"], "content_encoding": e, "wire_bytes": best.get("wire_bytes"),
                       "body_bytes": best.get("body_bytes")})
    big = [p for p in answered if (p.get("wire_bytes") or 0) >= COMPRESSION_MIN_BYTES]
    if big:
        b = max(big, key=lambda p: p["wire_bytes"])
        return Answer("compression", "unmet",
                      f"{b['endpoint']} sent {b['wire_bytes']} bytes uncompressed although the request accepted "
                      f"gzip and br.", {"endpoint": b["endpoint"], "wire_bytes": b["wire_bytes"]},
                      recommendation="Enable response compression (Node: the `compression` middleware; or at the "
                                     "proxy) for JSON bodies over 1 KB.")
    return Answer("compression", "unknown",
                  f"Every probed answer was under {COMPRESSION_MIN_BYTES} bytes, which servers do not compress.",
                  {"largest_bytes": max((p.get("wire_bytes") or 0) for p in answered)})


def answer_pagination(probes: Sequence[dict], *, max_rows: int) -> Answer:
    """Met when list endpoints, asked without paging parameters, return a bounded page
    (at most ``max_rows`` items, ``settings.database.large_result_rows``); unmet when one
    returns more; unknown when no list endpoint was found."""
    lists = [p for p in probes if p.get("purpose") == "pagination" and p.get("items") is not None]
    if not lists:
        return Answer("pagination", "unknown", "No GET endpoint without path parameters answered with a JSON list.")
    worst = max(lists, key=lambda p: p["items"])
    ev = {"endpoint": worst["endpoint"], "url_path": worst.get("path"), "items": worst["items"],
          "body_bytes": worst.get("body_bytes"), "paging_fields": worst.get("paging") or [], "max_rows": max_rows}
    if worst["items"] > max_rows:
        return Answer("pagination", "unmet",
                      f"{worst['endpoint']} without paging parameters returned {worst['items']} items "
                      f"({worst.get('body_bytes')} bytes).", ev,
                      recommendation="Runbook Issue 2 (Large Result Sets): paginate with take/skip (LIMIT/OFFSET) "
                                     "or a cursor, and a default page size.")
    paging = f"; paging fields {', '.join(worst['paging'])}" if worst.get("paging") else ""
    return Answer("pagination", "met",
                  f"{worst['endpoint']} without paging parameters returned {worst['items']} items{paging}.", ev)


def answer_async(lag_stalls: dict[str, float] | float | None, lag_typical: dict[str, float] | float | None = None,
                 *, warning_s: float, critical_s: float, q: float) -> Answer:
    """Blocking calls show as event-loop lag, read as :func:`perfbook.checks.resources.eventloop_lag`
    reads it. ``lag_typical``: per instance the median over the window of the p99 gauge;
    ``lag_stalls``: the ``q`` quantile over the window of the worst delay per scrape
    (prom-client's max gauge, else its p99 gauge; both reset at every scrape). Unmet when
    the typical delay reaches ``warning_s`` (the runbook's Warning level, 50 ms), or the loop
    stalls at ``critical_s`` (Critical, 100 ms; thresholds.eventloop_lag_seconds) or more in at
    least ``1 - q`` (settings.diagnostics.sustained_quantile) of the scrapes — blocked
    again and again, not once; met otherwise. (The worst delay of a scrape interval is
    judged against Critical only: on a busy machine it is well above the typical delay.)"""
    if lag_stalls is None and lag_typical is None:
        return Answer("async", "unknown", "No event-loop lag metric under the params' selector.")

    def per(v: Any) -> dict[str, float]:
        if v is None:
            return {}
        return {k: x for k, x in (v.items() if isinstance(v, dict) else [("", v)]) if x is not None and x == x}

    stalls, typical = per(lag_stalls), per(lag_typical)
    ev = {"lag_stalls_s": lag_stalls, "lag_typical_s": lag_typical, "quantile": q, "warning_s": warning_s,
          "critical_s": critical_s}
    worst_s = max(stalls.items(), key=lambda kv: kv[1]) if stalls else ("", float("nan"))
    worst_t = max(typical.items(), key=lambda kv: kv[1]) if typical else ("", float("nan"))

    def where(i: str) -> str:
        return f" on {i}" if i else ""
    if worst_s[1] >= critical_s:
        return Answer("async", "unmet",
                      f"The event loop stalled {worst_s[1] * 1000:.0f} ms or more{where(worst_s[0])} in {1 - q:.0%} of "
                      f"the scrapes (worst delay per scrape; Critical {critical_s * 1000:.0f} ms): something blocks "
                      f"the loop.", ev,
                      recommendation="Runbook Issue 1 §2: find the synchronous work (CPU profile), move it to a "
                                     "worker thread or a background job.")
    if worst_t[1] >= warning_s:
        return Answer("async", "unmet",
                      f"Median event-loop lag p99 {worst_t[1] * 1000:.0f} ms{where(worst_t[0])} (Warning "
                      f"{warning_s * 1000:.0f} ms): something blocks the loop.", ev,
                      recommendation="Runbook Issue 1 §2: find the synchronous work (CPU profile), move it to a "
                                     "worker thread or a background job.")
    parts = []
    if typical:
        parts.append(f"median event-loop lag p99 at most {worst_t[1] * 1000:.0f} ms (Warning {warning_s * 1000:.0f} ms)")
    if stalls:
        parts.append(f"worst delay per scrape under {critical_s * 1000:.0f} ms in {q:.0%} of the scrapes (at most "
                     f"{worst_s[1] * 1000:.0f} ms)")
    text = "; ".join(parts)
    return Answer("async", "met", text[0].upper() + text[1:] + ".", ev)


def answer_pool_configured(open_max: dict | float | None) -> Answer:
    """Met when the service exports its pool gauges (prisma_pool_connections_open) with
    open connections: a pool is configured."""
    n = _num(open_max)
    if n is None:
        return Answer("app_pooling", "unknown", "No pool gauges (e.g. prisma_pool_connections_open) are exported, "
                                                "so the pool cannot be seen from outside.")
    return Answer("app_pooling", "met", f"Pool gauges exported; up to {n:.0f} pooled connections open.",
                  {"pool_open_max": open_max})


def answer_db_pooling(open_max: dict | float | None, busy_max: dict | float | None,
                      waiting_share: dict | float | None, waiting_max: dict | float | None,
                      wait_p95_s: dict | float | None = None, *, max_wait_s: float,
                      max_waiting_share: float) -> Answer:
    """Database-level pooling: met when a pool is configured and queries get a connection
    without queueing, by the same bars as the rest of the report, so the checklist never says
    "met" beside a saturated pool. Unmet when the p95 time queries waited for a connection
    (Prisma's ``prisma_client_queries_wait_histogram_ms``) is ``max_wait_s`` or more (the
    database section's ``settings.database.pool_wait_p95``, 20 ms: a healthy pool hands one
    out in well under a millisecond) — the pool is too small or connections are held too
    long (runbook Issue 1 §4). Without that histogram, the waiting gauge decides: unmet when
    queries were waiting in ``max_waiting_share`` of the scrapes or more (quick diagnostics'
    ``pool_exhausted_share``, 20 %)."""
    if _num(open_max) is None:
        return Answer("db_pooling", "unknown", "No pool gauges exported (prisma_pool_connections_*).")
    ev = {"pool_open_max": open_max, "pool_busy_max": busy_max, "waiting_share": waiting_share,
          "waiting_max": waiting_max, "wait_p95_s": wait_p95_s, "max_wait_s": max_wait_s}

    def per(v: Any) -> dict[str, float]:
        if isinstance(v, dict):
            return {k: x for k, x in v.items() if x is not None and not math.isnan(x)}
        return {"": float(v)} if v is not None and not math.isnan(float(v)) else {}

    opened, busy, waiting, share, wait = (per(v) for v in (open_max, busy_max, waiting_max, waiting_share,
                                                             wait_p95_s))
    if wait:
        i = max(wait, key=wait.get)
        slow = wait[i] >= max_wait_s
        basis = f"p95 wait for a connection {wait[i] * 1000:.0f} ms"
    else:
        i = max(share, key=share.get) if share else ""
        slow = share.get(i, 0.0) >= max_waiting_share
        basis = f"queries waiting in {share.get(i, 0.0):.0%} of scrapes"
    where = f" on {i}" if i else ""
    if slow:
        return Answer("db_pooling", "unmet",
                      f"Pool exhausted{where}: {basis} ({busy.get(i, 0):.0f} of {opened.get(i, 0):.0f} connections "
                      f"busy at peak, up to {waiting.get(i, 0):.0f} queries waiting).", ev,
                      recommendation="Runbook Issue 1 §4: raise connection_limit, and never hold a connection "
                                     "across a slow call; the database section shows who holds them.")
    return Answer("db_pooling", "met", f"Pool of up to {_num(open_max):.0f} connections; {basis}{where}.", ev)


def answer_instance_size(cpu_p95: dict | float | None, memory_p95: dict | float | None, *,
                         cpu_warning: float, memory_warning: float, memory_basis: str = "") -> Answer:
    """Met when each instance's p95 over the window of CPU % and of memory used over its
    limit (``memory_basis``: RSS / targets.memory_limit, or heap used / the heap-limit
    gauge) are under the runbook's Warning levels (thresholds.cpu_percent and
    memory_percent: 70 %, 80 %); unmet otherwise. When
    memory has no limit to compare with, the answer says it rests on CPU alone."""
    cpu, mem = _num(cpu_p95), _num(memory_p95)
    if cpu is None and mem is None:
        return Answer("instance_size", "unknown", "No CPU or memory metrics under the params' selector.")
    ev = {"cpu_p95_percent": cpu_p95, "memory_p95_percent": memory_p95, "memory_basis": memory_basis,
          "cpu_warning": cpu_warning, "memory_warning": memory_warning}
    over = []
    if cpu is not None and cpu >= cpu_warning:
        over.append(f"CPU p95 {cpu:.0f} % (Warning {cpu_warning:g} %)")
    if mem is not None and mem >= memory_warning:
        over.append(f"memory p95 {mem:.0f} % of its limit (Warning {memory_warning:g} %)")
    if over:
        return Answer("instance_size", "unmet", "; ".join(over) + ".", ev,
                      recommendation="Runbook Issue 1 §2/§3: scale up (fly scale vm) or out (fly scale count); the "
                                     "scaling section computes how many instances.")
    parts = [f"CPU p95 {cpu:.0f} %" if cpu is not None else "", f"memory p95 {mem:.0f} %" if mem is not None else ""]
    text = ", ".join(p for p in parts if p) + " — under the Warning levels"
    if mem is None:
        text += "; memory not measured (no limit to compare with: set targets.memory_limit)"
    elif cpu is None:
        text += "; CPU not measured"
    return Answer("instance_size", "met", text + ".", ev)


def answer_horizontal_scaling(instances: float | None, fly: Any = None) -> Answer:
    """Met when at least two instances serve (up in the window) or fly.toml keeps at least
    two machines (``[scaling] min_machines`` or ``min_machines_running``); unmet with a
    single instance. ``fly``: a :class:`perfbook.sources.flytoml.FlyConfig`."""
    fly_min = _fly_min_machines(fly)
    ev = {"instances_up": instances, "fly_min_machines": fly_min}
    n = int(instances) if instances is not None else None
    if (n or 0) >= 2 or (fly_min or 0) >= 2:
        src = f"{n} instances up in the window" if (n or 0) >= 2 else f"fly.toml keeps at least {fly_min} machines"
        return Answer("horizontal", "met", src + ".", ev)
    if n == 1 or fly_min == 1:
        return Answer("horizontal", "unmet", "A single instance serves the service: no headroom, no redundancy.", ev,
                      recommendation="Runbook Issue 4: fly scale count 2 (or more), min_machines = 2.")
    return Answer("horizontal", "unknown", "Instances could not be counted (no `up` series under the selector).", ev)


def _fly_min_machines(fly: Any) -> int | None:
    if fly is None:
        return None
    for v in (getattr(fly, "min_machines", None), getattr(fly, "min_machines_running", None)):
        if v is not None:
            return int(v)
    return None


def answer_autoscaling(fly: Any, path: str | None, problem: str | None = None) -> Answer:
    """From fly.toml (a :class:`perfbook.sources.flytoml.FlyConfig`): met with a
    ``[scaling]`` range (max_machines > min_machines, as in the runbook's Auto-scaling
    Configuration) or Fly's machine autostart (``auto_start_machines``, when the config
    reader reports it); unmet when fly.toml has neither; unknown without a fly.toml."""
    if path is None:
        return Answer("autoscaling", "unknown", "No fly.toml in the params (targets.fly_toml): the scaling "
                                                "configuration is not visible from the metrics.")
    if fly is None:
        return Answer("autoscaling", "unknown", f"fly.toml could not be read: {problem or 'unknown reason'}.",
                      {"fly_toml": path})
    lo, hi = getattr(fly, "min_machines", None), getattr(fly, "max_machines", None)
    targets = dict(getattr(fly, "scaling_targets", None) or {})
    ev = {"fly_toml": path, "min_machines": lo, "max_machines": hi,
          "scaling_targets": {k: v for k, v in targets.items()}}
    if lo is not None and hi is not None and int(hi) > int(lo):
        on = f" on {', '.join(f'{k} {v:g}' for k, v in targets.items())}" if targets else ""
        return Answer("autoscaling", "met", f"fly.toml [scaling]: {lo} to {hi} machines{on}.", ev)
    if getattr(fly, "auto_start_machines", None) is True:
        ev["auto_start_machines"] = True
        return Answer("autoscaling", "met", "fly.toml starts machines on demand (auto_start_machines = true).", ev)
    return Answer("autoscaling", "unmet", "fly.toml has no [scaling] range (min_machines < max_machines).", ev,
                  recommendation="Runbook Issue 4 (Auto-scaling Configuration): [scaling] min_machines = 2, "
                                 "max_machines = 10 with cpu/memory/requests targets.")


def answer_dashboard(present: dict[str, bool], fallbacks: dict[str, str] | None = None) -> Answer:
    """Met when all ten key metrics have data under the selector (what the runbook's
    Grafana dashboard graphs; this page draws them), a missing one counting as present
    when ``fallbacks`` names what stands in for it (the heap limit, which stock
    prom-client does not export: RSS over targets.memory_limit); unmet when some are
    missing with nothing in their place — a dashboard cannot show what is not exported.
    Grafana itself is not checked."""
    if not present:
        return Answer("dashboard", "unknown", "The key metrics could not be looked up.")
    fallbacks = {k: v for k, v in (fallbacks or {}).items() if not present.get(k, True)}
    missing = sorted(k for k, v in present.items() if not v and k not in fallbacks)
    ev = {"present": sorted(k for k, v in present.items() if v), "missing": missing, "fallbacks": fallbacks}
    if missing:
        return Answer("dashboard", "unmet", f"{len(missing)} of the key metrics have no data: {', '.join(missing)}"
                                            + (" (stock prom-client has no heap-limit gauge: set targets.memory_limit "
                                               "so memory is RSS over it)" if "heap_limit" in missing else "") + ".",
                      ev, recommendation="Export the missing metrics (prom-client, or set their names in the params' "
                                         "metrics section) so the dashboard can show them.")
    instead = "; ".join(f"{k} as {v}" for k, v in sorted(fallbacks.items()))
    return Answer("dashboard", "met", "All ten key metrics have data in the metrics source, so a dashboard can "
                  "graph them" + (f" ({instead})" if instead else "")
                  + " (whether a Grafana dashboard shows them is not checked).", ev)


def answer_alerts_configured(server_rules: pd.DataFrame | None, wanted: Iterable[Any], problem: str | None = None,
                             metric_names: dict[str, str] | None = None) -> Answer:
    """Met when the Prometheus server (``/api/v1/rules``) has an alerting rule for each of
    the runbook's alerts — same name, or a rule whose query uses the alert's metric;
    unmet when some are missing; unknown when the server has no rules API (e.g.
    VictoriaMetrics without vmalert)."""
    wanted = list(wanted)
    if server_rules is None:
        return Answer("alerts", "unknown", f"The server's rules API could not be read: {problem or 'not asked'}.")
    alerting = server_rules[server_rules["type"] == "alerting"] if not server_rules.empty else server_rules
    names = set(alerting["name"]) if not alerting.empty else set()
    queries = " ".join(alerting["query"].astype(str)) if not alerting.empty else ""
    metric_names = metric_names or {}
    covered, missing = [], []
    for rule in wanted:
        metric = metric_names.get(rule.name)
        if rule.name in names or (metric and metric in queries):
            covered.append(rule.name)
        else:
            missing.append(rule.name)
    ev = {"server_alerting_rules": sorted(names), "covered": covered, "missing": missing}
    if missing:
        return Answer("alerts", "unmet", f"The server has no alert for: {', '.join(missing)} "
                                         f"({len(names)} alerting rules configured).", ev,
                      recommendation="Load the runbook's rules: `perfbook alerts export -p <params> -o perf.rules.yml`, "
                                     "add it to rule_files and reload Prometheus.")
    return Answer("alerts", "met", f"The server has alerts for {', '.join(covered)}.", ev)


def answer_baselines(params: Any) -> Answer:
    """From the params: ``baselines_documented`` (the runbook's baseline tables are the
    params' endpoints and thresholds)."""
    n = len(params.endpoints)
    if params.baselines_documented:
        return Answer("baselines", "met", f"The params file carries the baselines: {n} endpoints with p50/p95/p99 "
                                          f"targets and the resource thresholds.", {"endpoints": n}, source="params")
    return Answer("baselines", "unmet", "The params file says the baselines are not documented "
                                        "(baselines_documented: false).", {"endpoints": n}, source="params",
                  recommendation="Measure a healthy week, write the p50/p95/p99 per endpoint into the runbook's "
                                 "Performance Baselines and the params file.")


def unknown_answers(keys: Iterable[str] | None = None) -> list[Answer]:
    """The items nothing measured here can answer, each with the reason."""
    keys = list(keys) if keys is not None else list(UNKNOWN_REASONS)
    return [Answer(k, "unknown", UNKNOWN_REASONS[k], source="not measurable" if k not in
                   ("load_balancing", "indexes", "no_n_plus_one", "vacuum") else "other sections") for k in keys]


def measured_answers(ev: Any, params: Any) -> list[Answer]:
    """Every checklist item answered from what the monitoring notebook gathered
    (a :class:`perfbook.sources.monitoring.Evidence`), in the runbook's order."""
    th, db = params.thresholds, params.settings.database
    values = ev.values
    rej = [_num(values.get(k)) for k in ("ratelimit_hits", "http_429")]
    rejections = max((r for r in rej if r is not None), default=None)
    present = {k.split(":", 1)[1]: (_num(v) or 0) > 0 for k, v in values.items() if k.startswith("present:")}
    fallbacks = {}
    if params.targets.memory_limit_bytes() and (_num(values.get("fallback:resident_memory")) or 0) > 0:
        fallbacks["heap_limit"] = f"{params.metrics.resident_memory} / targets.memory_limit"
    metric_of = {"HighResponseTime": params.metrics.http_duration, "HighCPU": params.metrics.cpu_seconds,
                 "HighMemory": params.metrics.heap_used, "EventLoopLag": params.metrics.eventloop_lag}
    from perfbook.checks.alerts import memory_ratio_basis
    answers = {
        "async": answer_async(values.get("lag_stalls"), values.get("lag_typical"),
                              warning_s=th.eventloop_lag_seconds.warning, critical_s=th.eventloop_lag_seconds.critical,
                              q=params.settings.diagnostics.sustained_quantile),
        "app_pooling": answer_pool_configured(values.get("pool_open_max")),
        "caching": answer_caching(_num(values.get("cache_hits")), _num(values.get("cache_misses")),
                                  target=th.cache_hit_rate, min_lookups=params.settings.caching.min_lookups),
        "rate_limiting": answer_rate_limiting([p for p in ev.probes if p.get("purpose") == "rate_limit"], rejections),
        "compression": answer_compression(ev.probes),
        "pagination": answer_pagination(ev.probes, max_rows=db.large_result_rows),
        "db_pooling": answer_db_pooling(values.get("pool_open_max"), values.get("pool_busy_max"),
                                        values.get("pool_waiting_share"), values.get("pool_waiting_max"),
                                        _scaled(values.get("pool_wait_p95_ms"), 0.001),
                                        max_wait_s=db.pool_wait_p95, max_waiting_share=db.pool_exhausted_share),
        "instance_size": answer_instance_size(values.get("cpu_p95"), values.get("memory_p95"),
                                              cpu_warning=th.cpu_percent.warning,
                                              memory_warning=th.memory_percent.warning,
                                              memory_basis=memory_ratio_basis(params)),
        "horizontal": answer_horizontal_scaling(_num(values.get("instances_up")), ev.fly),
        "autoscaling": answer_autoscaling(ev.fly, params.targets.fly_toml, ev.fly_problem),
        "dashboard": answer_dashboard(present, fallbacks),
        "alerts": answer_alerts_configured(ev.rules, params.settings.monitoring.alerts, ev.rules_problem, metric_of),
        "baselines": answer_baselines(params),
    }
    answers.update({a.key: a for a in unknown_answers(k for k in UNKNOWN_REASONS if k not in answers)})
    return [answers[i.key] for i in ITEMS]
