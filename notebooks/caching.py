# %% [markdown]
# # Caching — hit rate against the 60 % target, and what to change
#
# The runbook's *Issue 5: Caching Optimization*. A cache that misses sends its load to the database and
# the slow path; the runbook's target is a hit rate **above 60 %**. This page measures the hit rate per
# cache over the window, looks inside Redis when the params name one, compares the latency of cached
# routes with the rest, and turns the runbook's remedies (increase TTL, cache more endpoints, pre-warm on
# start-up, invalidate on write) into the ones the evidence supports.

# %% tags=["parameters"]
# Parameters (papermill injects these in batch runs).
# since / until set the window (-30m, now, ISO-8601); None keeps the params file's window.
# overrides is the JSON of `-P key.path=value` overrides.
# resolved_params: the runner's validated params, overrides applied (batch); None loads params_file here.
params_file = "../params/demo.yaml"
since = None
until = None
incident = None
overrides = "{}"
resolved_params = None

# %%
from IPython.display import display

from perfbook import notebook as pb
from perfbook.checks import caching, quantile
from perfbook.plots import traffic as plots
from perfbook.sources import redis as redis_source
from perfbook.sources.window_metrics import WindowMetrics

ctx = pb.start("caching", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
m, s, target = ctx.params.metrics, ctx.params.settings.caching, ctx.params.thresholds.cache_hit_rate
wm = WindowMetrics.from_context(ctx)
rates = series = latency = facts = ttls = None

# %% [markdown]
# ## 1. Cache hit rate per cache
#
# The runbook's `curl /metrics | grep cache_hit_rate`, over the whole window: hits and misses from
# `cache_hits_total` / `cache_misses_total` per `cache` label, and their ratio over time.

# %%
with pb.check(ctx, "cache hit rate per cache"):
    by = [s.cache_label]
    rates = caching.hit_rates(wm.increase(m.cache_hits, by), wm.increase(m.cache_misses, by), s.cache_label)
    series = caching.hit_rate_series(wm.rate_series(m.cache_hits, by), wm.rate_series(m.cache_misses, by), s.cache_label)
    pb.table(rates, f"Hit rate per cache — {wm.basis}")
    display(plots.hit_rate_over_time(series, target) or plots.hit_rate_bars(rates, target))

# %% [markdown]
# ## 2. Cached routes against the rest
#
# Where the HTTP histogram allows: p50/p95/p99 of the routes the params mark `cached: true` and of the
# others. A slow read-only route that is not cached is the runbook's "cache more endpoints".

# %%
with pb.check(ctx, "latency of cached routes vs the rest"):
    buckets = wm.increase(m.http_duration + "_bucket", ["le", m.method_label, m.route_label])
    q = quantile.quantiles_by(buckets, [0.5, 0.95, 0.99], by=[m.method_label, m.route_label])
    latency = caching.cached_route_latency(q, ctx.params.endpoints, m.method_label, m.route_label)
    pb.table(caching.cached_vs_rest(latency), "Cached routes vs the rest (request-weighted)")
    pb.table(latency, "Latency per route (seconds)")

# %% [markdown]
# ## 3. Redis: keyspace hits, evictions, memory
#
# When the params name a Redis (`targets.redis_env`, the name of the variable holding its URL): `INFO`'s
# keyspace hits and misses (since the server started), evicted and expired keys, and memory against
# `maxmemory`. Evictions at the memory limit mean longer TTLs would only evict more.

# %%
with pb.check(ctx, "Redis INFO"):
    facts = caching.redis_facts(redis_source.info_for(ctx.params.targets.redis_env))
    pb.table(caching.redis_table(facts), "Redis INFO" if facts else "Redis INFO (no targets.redis_env in the params: skipped)")

# %% [markdown]
# ## 4. Redis: TTLs per key family
#
# A bounded `SCAN` sample (never `KEYS`) and each key's TTL, grouped by prefix (`product:42` → `product`).
# Redis counts each TTL lookup as a keyspace hit, so this runs after `INFO` was read.
# The runbook's TTLs: 1 h for lists (`products:all`), 2 h for single items (`product:<id>`), 24 h for
# computed results (`trends:daily`).

# %%
with pb.check(ctx, "Redis TTL sample"):
    sample = redis_source.sample_for(ctx.params.targets.redis_env, s.scan_sample)
    ttls = caching.ttl_by_prefix(sample, s.key_separator)
    pb.table(ttls, f"TTL (seconds) per key family: {caching.sample_note(sample)}")

# %% [markdown]
# ## 5. Verdict: hit rate against the target, and what to change
#
# Each cache (and all together, and Redis's keyspace) under the target is a `cache.low_hit_rate` finding.
# The recommendation lists only the remedies the evidence above supports, each with its numbers.

# %%
with pb.check(ctx, "hit rate vs the 60 % target"):
    candidates = caching.uncached_candidates(latency, min_requests=ctx.params.settings.diagnostics.min_requests)
    advice = caching.cache_advice(redis=facts, ttls=ttls, candidates=candidates, youngest_uptime_s=wm.uptime_seconds())
    pb.emit(ctx, caching.low_hit_rate(rates, target=target, settings=s, advice=advice, basis=wm.basis, series=series))
    pb.emit(ctx, caching.redis_hit_rate(facts, target=target, settings=s, advice=advice))

# %%
pb.details("PromQL run by this notebook", wm.promql_text(), "promql")

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
