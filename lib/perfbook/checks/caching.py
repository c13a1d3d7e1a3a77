"""Issue 5, Caching Optimization: hit rate against the 60 % target, and what to change.

Pure functions. Inputs are tidy frames from :mod:`perfbook.sources.window_metrics`
(label columns + ``value``), Redis ``INFO`` as a dict and a SCAN sample of TTLs from
:mod:`perfbook.sources.redis`. The target is the runbook's "Target: > 60% hit rate"
(``params.thresholds.cache_hit_rate``); the remedies are its "If low: increase TTL,
cache more endpoints, pre-warm cache on startup" and "Invalidate on write", each
offered only when the evidence points at it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..findings import Finding
from ..params import Caching
from ..web import route_key
from . import number

OVERALL = "overall"

#: A key family whose median TTL is under this is "short-lived" (the runbook's shortest is 1 h;
#: 5 min is where a key rarely survives long enough to be hit again on a modest-traffic route).
SHORT_TTL_S = 300

#: Instances younger than this at the end of the window run on a cold cache.
COLD_START_S = 600


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.1f} %"


_num = number


# --------------------------------------------------------------------------- hit rate


def hit_rates(hits: pd.DataFrame, misses: pd.DataFrame, label: str = "cache") -> pd.DataFrame:
    """Per cache (the ``label`` column) and ``overall``: hits, misses, lookups, hit_rate.

    ``hits``/``misses``: increases of cache_hits_total / cache_misses_total over the window,
    one row per cache. A counter without the label counts as cache ``(unlabelled)``.
    ``hit_rate`` = hits / (hits + misses); NaN with no lookups.
    """
    def by_cache(df: pd.DataFrame) -> pd.Series:
        if df is None or df.empty:
            return pd.Series(dtype=float)
        names = df[label].fillna("(unlabelled)") if label in df.columns else pd.Series("(unlabelled)", index=df.index)
        return df["value"].groupby(names.astype(str)).sum()

    h, m = by_cache(hits), by_cache(misses)
    table = pd.concat([h.rename("hits"), m.rename("misses")], axis=1).fillna(0.0)
    table.index.name = "cache"
    table = table.reset_index()
    total = pd.DataFrame([{"cache": OVERALL, "hits": table["hits"].sum(), "misses": table["misses"].sum()}])
    table = pd.concat([table.sort_values("cache"), total], ignore_index=True) if len(table) else total
    table["lookups"] = table["hits"] + table["misses"]
    table["hit_rate"] = (table["hits"] / table["lookups"]).where(table["lookups"] > 0)
    return table[["cache", "hits", "misses", "lookups", "hit_rate"]]


def hit_rate_series(hits: pd.DataFrame | None, misses: pd.DataFrame | None,
                    label: str = "cache") -> pd.DataFrame | None:
    """Hit rate over time per cache and ``overall``, from per-second rates of the two counters.

    Columns: timestamp, cache, lookups_per_s, hit_rate (NaN where there were no lookups).
    """
    if hits is None or misses is None:
        return None
    frames = []
    for df, col in ((hits, "hits"), (misses, "misses")):
        d = df.copy()
        d["cache"] = d[label].fillna("(unlabelled)").astype(str) if label in d.columns else "(unlabelled)"
        frames.append(d.groupby(["timestamp", "cache"])["value"].sum().rename(col))
    both = pd.concat(frames, axis=1).fillna(0.0).reset_index()
    overall = both.groupby("timestamp")[["hits", "misses"]].sum().reset_index().assign(cache=OVERALL)
    both = pd.concat([both, overall], ignore_index=True)
    both["lookups_per_s"] = both["hits"] + both["misses"]
    both["hit_rate"] = (both["hits"] / both["lookups_per_s"]).where(both["lookups_per_s"] > 0)
    return both[["timestamp", "cache", "lookups_per_s", "hit_rate"]].sort_values(["cache", "timestamp"],
                                                                                ignore_index=True)


def hit_rate_trend(series: pd.DataFrame | None, cache: str = OVERALL) -> dict | None:
    """Mean hit rate of the window's first and last quarter for one cache (None with fewer
    than 8 points, e.g. in snapshot mode)."""
    if series is None or series.empty:
        return None
    s = series[(series["cache"] == cache) & series["hit_rate"].notna()].sort_values("timestamp")
    if len(s) < 8:
        return None
    q = len(s) // 4
    return {"early_hit_rate": float(s["hit_rate"].iloc[:q].mean()),
            "late_hit_rate": float(s["hit_rate"].iloc[-q:].mean())}


def warming_up(trend: dict | None, *, rise: float) -> bool:
    """A cold start: the last quarter's hit rate is ``rise`` (settings.caching.warming_rise,
    20 points) above the first's."""
    return bool(trend) and trend["late_hit_rate"] - trend["early_hit_rate"] >= rise


def runbook_ttl(cache: str) -> tuple[int, str]:
    """The runbook's TTL for a cache by what its name says it holds: lists 1 h
    (``products:all``), computed results 24 h (``trends:daily``), single items 2 h."""
    n = cache.lower()
    if "list" in n or n.endswith(":all") or "search" in n:
        return 3600, "lists: 1 h"
    if any(w in n for w in ("analytic", "trend", "summary", "report", "stat", "comput", "aggregate")):
        return 86400, "computed results: 24 h"
    return 7200, "single items: 2 h"


def cache_remedy(name: str, rates: pd.DataFrame, trend: dict | None, *, rise: float) -> str:
    """The first remedy for one cache, from its own evidence.

    Rising through the window (by ``rise``, :func:`warming_up`) → a cold cache: pre-warm on
    start-up. Low all along → its entries expire or are evicted before they are read again:
    raise its TTL toward the runbook's and its size, and invalidate on write. For
    ``overall``: the worst caches.
    """
    if warming_up(trend, rise=rise):
        return (f"Pre-warm '{name}' on start-up: its hit rate rose from {_fmt_pct(trend['early_hit_rate'])} "
                f"to {_fmt_pct(trend['late_hit_rate'])} during the window (a cold cache filling up).")
    if name == OVERALL:
        worst = rates[(rates["cache"] != OVERALL) & rates["hit_rate"].notna()].sort_values("hit_rate").head(3)
        listed = ", ".join(f"'{r['cache']}' {_fmt_pct(r['hit_rate'])} of {r['lookups']:.0f}"
                           for r in worst.to_dict("records"))
        return f"Start with the lowest caches: {listed} (their own findings say what to change)." if listed else \
            "Raise the TTLs of the hottest key families and cache more endpoints."
    ttl, kind = runbook_ttl(name)
    seen = (f" it stays low all through the window (first quarter {_fmt_pct(trend['early_hit_rate'])}, "
            f"last {_fmt_pct(trend['late_hit_rate'])}), so this is not a cold start:" if trend else "")
    return (f"'{name}':{seen} entries expire or are evicted before they are read again. Raise its TTL toward "
            f"the runbook's {ttl} s ({kind}) and its size limit, and delete the key on every write to the "
            f"data behind it (invalidate on write) so the longer TTL stays correct.")


def low_hit_rate(rates: pd.DataFrame | None, *, target: float, settings: Caching,
                 advice: Iterable[str] = (), basis: str = "",
                 series: pd.DataFrame | None = None) -> list[Finding]:
    """``cache.low_hit_rate`` per cache and overall when the hit rate is under ``target``
    (thresholds.cache_hit_rate).

    Warning under the target (runbook: "Target: > 60% hit rate"); critical under
    ``settings.critical_share`` of it (half). A cache with fewer than
    ``settings.min_lookups`` lookups is not judged (info for overall).
    One ``ok`` finding per cache at or above target. The recommendation starts with the
    cache's own remedy (:func:`cache_remedy`, from its trend in ``series``) followed by
    ``advice``, the section-wide remedies the evidence supports (:func:`cache_advice`).
    """
    if rates is None:  # the hit rate could not be measured; that check said why
        return []
    findings = []
    advice = list(advice)
    min_lookups = settings.min_lookups
    for rec in rates.to_dict("records"):
        name, rate, lookups = rec["cache"], _num(rec["hit_rate"]), rec["lookups"]
        ev = {"hit_rate": rate, "target": target, "hits": rec["hits"], "misses": rec["misses"],
              "lookups": lookups, "basis": basis}
        if lookups < min_lookups or rate is None:
            if name == OVERALL:
                findings.append(Finding("cache.low_hit_rate", "info",
                                        f"Too few cache lookups to judge the hit rate ({lookups:.0f} < {min_lookups})",
                                        subject=name, evidence=ev))
            continue
        if rate < target:
            trend = hit_rate_trend(series, name)
            if trend:
                ev.update(trend)
            sev = "critical" if rate < target * settings.critical_share else "warning"
            what = "Overall cache" if name == OVERALL else f"Cache '{name}'"
            remedies = [cache_remedy(name, rates, trend, rise=settings.warming_rise), *advice]
            findings.append(Finding(
                "cache.low_hit_rate", sev,
                f"{what} hit rate {_fmt_pct(rate)} is under the {_fmt_pct(target)} target "
                f"({rec['misses']:.0f} misses of {lookups:.0f} lookups)",
                subject=name, evidence=ev, recommendation="\n".join(f"- {r}" for r in remedies)))
        else:
            findings.append(Finding("cache.low_hit_rate", "ok",
                                    f"{'Overall cache' if name == OVERALL else repr(name)} hit rate "
                                    f"{_fmt_pct(rate)} meets the {_fmt_pct(target)} target",
                                    subject=name, evidence=ev))
    return findings


# --------------------------------------------------------------------------- Redis


def redis_facts(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The numbers of Redis ``INFO`` that matter for caching, with derived shares.

    keyspace hit rate = keyspace_hits / (hits + misses) since the server started (or since
    ``CONFIG RESETSTAT``); memory share = used_memory / maxmemory (None when maxmemory is 0,
    i.e. unlimited). None in, None out (no Redis configured).
    """
    if info is None:
        return None
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    maxmem, used = int(info.get("maxmemory", 0) or 0), int(info.get("used_memory", 0) or 0)
    keys = expires = 0
    for k, v in info.items():
        if isinstance(k, str) and k.startswith("db") and k[2:].isdigit() and isinstance(v, dict):
            keys += int(v.get("keys", 0))
            expires += int(v.get("expires", 0))
    return {
        "keyspace_hits": hits, "keyspace_misses": misses,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "evicted_keys": int(info.get("evicted_keys", 0)), "expired_keys": int(info.get("expired_keys", 0)),
        "used_memory": used, "maxmemory": maxmem, "memory_share": used / maxmem if maxmem else None,
        "maxmemory_policy": info.get("maxmemory_policy", ""), "keys": keys, "keys_with_expiry": expires,
        "uptime_s": int(info.get("uptime_in_seconds", 0)), "redis_version": str(info.get("redis_version", "")),
    }


def redis_table(facts: dict[str, Any] | None) -> pd.DataFrame:
    """``facts`` as a two-column table with what each number means (no rows without Redis)."""
    if facts is None:
        return pd.DataFrame(columns=["metric", "value", "meaning"])
    meaning = {
        "keyspace_hits": "GETs that found their key (since server start)",
        "keyspace_misses": "GETs that did not",
        "hit_rate": "hits / (hits + misses)",
        "evicted_keys": "keys dropped to stay under maxmemory",
        "expired_keys": "keys dropped because their TTL ran out",
        "used_memory": "bytes in use",
        "maxmemory": "limit in bytes (0 = none)",
        "memory_share": "used / maxmemory",
        "maxmemory_policy": "what Redis drops at the limit",
        "keys": "keys in all databases",
        "keys_with_expiry": "of which with a TTL",
        "uptime_s": "seconds since the server started",
        "redis_version": "",
    }
    return pd.DataFrame([{"metric": k, "value": facts.get(k), "meaning": meaning[k]} for k in meaning])


def redis_hit_rate(facts: dict[str, Any] | None, *, target: float, settings: Caching,
                   advice: Iterable[str] = ()) -> list[Finding]:
    """``cache.low_hit_rate`` for Redis as a whole (subject ``redis``) from INFO's keyspace
    counters (since the server started): warning under ``target``, critical under
    ``settings.critical_share`` of it, ``ok`` otherwise, info with fewer than
    ``settings.min_lookups`` lookups. ``advice``: the
    remedies the evidence supports (:func:`cache_advice`, e.g. TTLs per key family)."""
    if facts is None:
        return []
    hits, misses, rate = facts["keyspace_hits"], facts["keyspace_misses"], facts["hit_rate"]
    lookups, min_lookups = hits + misses, settings.min_lookups
    ev = {"hit_rate": rate, "target": target, "keyspace_hits": hits, "keyspace_misses": misses,
          "evicted_keys": facts["evicted_keys"], "expired_keys": facts["expired_keys"],
          "memory_share": facts["memory_share"], "basis": f"Redis INFO since server start ({facts['uptime_s']} s ago)"}
    if lookups < min_lookups or rate is None:
        return [Finding("cache.low_hit_rate", "info", f"Too few Redis lookups to judge the keyspace hit rate "
                                                      f"({lookups} < {min_lookups})", subject="redis", evidence=ev)]
    if rate >= target:
        return [Finding("cache.low_hit_rate", "ok", f"Redis keyspace hit rate {_fmt_pct(rate)} meets the "
                                                    f"{_fmt_pct(target)} target", subject="redis", evidence=ev)]
    remedies = list(advice) or [
        "Increase TTL of the hottest key families (runbook: 1 h lists, 2 h single items, 24 h computed results) "
        "and delete keys on write; cache more endpoints; pre-warm the cache on start-up."]
    return [Finding("cache.low_hit_rate", "critical" if rate < target * settings.critical_share else "warning",
                    f"Redis keyspace hit rate {_fmt_pct(rate)} is under the {_fmt_pct(target)} target "
                    f"({misses} misses of {lookups} lookups since Redis started)",
                    subject="redis", evidence=ev, recommendation="\n".join(f"- {r}" for r in remedies))]


def key_prefix(key: str, sep: str = ":") -> str:
    """A key's family: the text before the first ``sep`` (``product:42`` → ``product``);
    ``(no prefix)`` for a key without one."""
    head, found, _ = str(key).partition(sep)
    return head if found and head else "(no prefix)"


def ttl_by_prefix(sample: pd.DataFrame, sep: str = ":") -> pd.DataFrame:
    """Per key family of a SCAN sample: keys, without expiry, TTL min / median / max (s)."""
    cols = ["prefix", "keys", "no_expiry", "ttl_min_s", "ttl_p50_s", "ttl_max_s"]
    if sample is None or sample.empty:
        return pd.DataFrame(columns=cols)
    d = sample.assign(prefix=sample["key"].map(lambda k: key_prefix(k, sep)))
    g = d.groupby("prefix")["ttl_s"]
    out = pd.DataFrame({"keys": g.size(), "no_expiry": g.apply(lambda s: int(s.isna().sum())),
                        "ttl_min_s": g.min(), "ttl_p50_s": g.median(), "ttl_max_s": g.max()}).reset_index()
    return out.sort_values("keys", ascending=False, ignore_index=True)[cols]


def sample_note(sample: pd.DataFrame | None) -> str:
    """One line on a SCAN sample: size, whether it covered the keyspace, what it added to INFO."""
    if sample is None:
        return "no Redis configured (targets.redis_env): skipped"
    a = sample.attrs
    return (f"SCAN sample of {a.get('scanned', len(sample))} keys"
            f"{' (the whole keyspace)' if a.get('complete') else ''} in {a.get('seconds', 0):.1f} s; "
            f"its TTL lookups added {a.get('added_keyspace_hits', 0)} hits and {a.get('added_keyspace_misses', 0)} "
            f"misses to Redis's keyspace counters")


# --------------------------------------------------------------------------- cached routes


def cached_route_latency(quantiles: pd.DataFrame, endpoints: Iterable[Any], method_label: str = "method",
                         route_label: str = "route") -> pd.DataFrame:
    """Per route: requests, p50/p95/p99 (s), whether the params mark it ``cached``, its p95 target.

    ``quantiles``: :func:`perfbook.checks.quantile.quantiles_by` output by method and route.
    Routes the params do not list are kept (``cached`` False, no target). ``/x/:id`` in the
    params matches ``/x/{id}`` in the metrics.
    """
    eps = {(e.method, route_key(e.route)): e for e in endpoints}
    rows = []
    for rec in quantiles.to_dict("records"):
        method, route = rec.get(method_label), rec.get(route_label)
        if not isinstance(route, str):
            continue
        e = eps.get((method, route_key(route)))
        rows.append({"endpoint": f"{method} {route}", "cached": bool(e and e.cached),
                     "requests": rec.get("count"), "p50_s": rec.get("p50"), "p95_s": rec.get("p95"),
                     "p99_s": rec.get("p99"), "target_p95_s": e.targets.p95 if e else None})
    cols = ["endpoint", "cached", "requests", "p50_s", "p95_s", "p99_s", "target_p95_s"]
    return pd.DataFrame(rows, columns=cols).sort_values(["cached", "endpoint"], ascending=[False, True],
                                                        ignore_index=True)


def cached_vs_rest(latency: pd.DataFrame) -> pd.DataFrame:
    """Request-weighted mean of p50/p95 for cached routes and for the rest (a summary row each)."""
    rows = []
    for flag, g in latency.groupby("cached"):
        g = g[g["requests"].fillna(0) > 0]
        w = g["requests"].fillna(0)
        if w.sum() == 0:
            continue
        rows.append({"routes": "cached" if flag else "not cached", "endpoints": len(g), "requests": w.sum(),
                     "p50_s": float((g["p50_s"].fillna(0) * w).sum() / w.sum()),
                     "p95_s": float((g["p95_s"].fillna(0) * w).sum() / w.sum())})
    return pd.DataFrame(rows, columns=["routes", "endpoints", "requests", "p50_s", "p95_s"])


def uncached_candidates(latency: pd.DataFrame | None, *, min_requests: int) -> list[dict[str, Any]]:
    """GET routes not cached, with traffic (``min_requests``: settings.diagnostics.min_requests,
    as latency is judged), whose p95 is over their target or over the slowest cached route's
    p95: the runbook's "cache more endpoints", with the numbers. Health checks are never
    candidates."""
    if latency is None or latency.empty:
        return []
    cached = latency[latency["cached"]]
    bar = float(cached["p95_s"].max()) if len(cached) and cached["p95_s"].notna().any() else None
    out = []
    for rec in latency[~latency["cached"]].to_dict("records"):
        if not rec["endpoint"].startswith("GET ") or "/health" in rec["endpoint"]:
            continue
        if (rec["requests"] or 0) < min_requests or rec["p95_s"] is None or math.isnan(rec["p95_s"]):
            continue
        over_target = rec["target_p95_s"] is not None and rec["p95_s"] > rec["target_p95_s"]
        if over_target or (bar is not None and rec["p95_s"] > bar):
            out.append({"endpoint": rec["endpoint"], "p95_s": rec["p95_s"], "requests": rec["requests"],
                        "over_target": over_target})
    return out


# --------------------------------------------------------------------------- advice


def cache_advice(redis: dict[str, Any] | None = None, ttls: pd.DataFrame | None = None,
                 candidates: Iterable[dict[str, Any]] = (), youngest_uptime_s: float | None = None) -> list[str]:
    """Section-wide remedies of the runbook that the evidence supports, each with its numbers
    (the per-cache remedy comes from :func:`cache_remedy`).

    - Evictions with Redis memory at ≥ 90 % of maxmemory → raise maxmemory (longer TTLs
      would only evict more).
    - Redis key families with a median TTL under 5 min → raise their TTL toward the
      runbook's (1 h lists, 2 h items, 24 h computed) and invalidate on write.
    - Uncached slow GET routes → cache them.
    - Instances younger than 10 min at the window's end (snapshot mode) → pre-warm.
    """
    advice = []
    if redis and redis.get("evicted_keys", 0) > 0 and (redis.get("memory_share") or 0) >= 0.9:
        advice.append(f"Redis evicted {redis['evicted_keys']} keys at {_fmt_pct(redis['memory_share'])} of maxmemory "
                      f"(policy {redis.get('maxmemory_policy') or '?'}): raise maxmemory (or move cold key families "
                      f"out) before raising TTLs, which would only evict more.")
    if ttls is not None and len(ttls):
        short = ttls[ttls["ttl_p50_s"].notna() & (ttls["ttl_p50_s"] < SHORT_TTL_S)]
        for rec in short.to_dict("records"):
            ttl, kind = runbook_ttl(rec["prefix"])
            advice.append(f"Increase TTL of '{rec['prefix']}:*' (median {rec['ttl_p50_s']:.0f} s over "
                          f"{rec['keys']} sampled keys) toward the runbook's {ttl} s ({kind}), and delete the key "
                          f"on every write to it (cache.del('{rec['prefix']}:<id>') and the list keys that contain it).")
    for c in candidates:
        why = "over its p95 target" if c["over_target"] else "slower than the cached routes"
        advice.append(f"Cache {c['endpoint']}: not cached, p95 {c['p95_s'] * 1000:.0f} ms ({why}) over "
                      f"{c['requests']:.0f} requests; cache its result with a TTL and invalidate on write.")
    if youngest_uptime_s is not None and youngest_uptime_s < COLD_START_S:
        advice.append(f"Pre-warm the cache on start-up: an instance started {youngest_uptime_s:.0f} s before the end "
                      f"of the window, so part of its misses are a cold cache.")
    return advice
