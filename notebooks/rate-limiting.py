# %% [markdown]
# # Rate limiting — who is rejected, and are the expensive routes protected?
#
# The runbook's *Issue 6: API Rate Limiting*: a public limiter on `/api/` and a strict one on expensive
# operations such as `POST /api/content/generate`. This page reads the rejections (HTTP 429) per route over
# the window, names the clients that hit the limits where the metrics label them, checks with a small,
# bounded burst that every expensive route answers 429 at some point, and gives the runbook's
# express-rate-limit settings with `max` derived from the traffic seen.

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
from perfbook.checks import ratelimit
from perfbook.plots import traffic as plots
from perfbook.sources import burst
from perfbook.sources.window_metrics import WindowMetrics

ctx = pb.start("rate-limiting", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
m, s = ctx.params.metrics, ctx.params.settings.rate_limiting
wm = WindowMetrics.from_context(ctx)
rejections = counts = hits = offenders = limits = None

# %% [markdown]
# ## 1. Rejections by route
#
# The runbook's `curl /metrics | grep rate_limit_hits_total`, over the window: the share of each route's
# requests answered 429 (from the HTTP histogram's `status_code`), next to the limiters' own counter.

# %%
with pb.check(ctx, "rate-limit rejections by route"):
    counts = wm.increase(m.http_duration + "_count", [m.method_label, m.route_label, m.status_label])
    hits = wm.increase(m.rate_limit_hits, [m.route_label, "limiter", *s.client_labels])
    rejections = ratelimit.rejections_by_route(counts, hits, "429", m.method_label, m.route_label, m.status_label)
    pb.table(rejections, f"Requests and 429s per route — {wm.basis}")
    pb.emit(ctx, ratelimit.rejection_findings(rejections, wm.basis, warning=s.rejection_share.warning,
                                                 critical=s.rejection_share.critical))

# %%
with pb.check(ctx, "429s over time"):
    series = wm.rate_series(m.http_duration + "_count", [m.method_label, m.route_label], {m.status_label: "429"})
    display(plots.rejections_by_route(series, 8, m.method_label, m.route_label) or plots.rejections_bars(rejections))

# %% [markdown]
# ## 2. Who hits the limits
#
# The runbook greps the logs for "rate limit" to see which IPs are limited. Here: the limiter counter's
# client label (`ip`, `client`, `key`...), when the service exports one.

# %%
with pb.check(ctx, "top offenders"):
    offenders = ratelimit.top_offenders(hits, s.client_labels)
    pb.table(offenders, "Rejections per client" if offenders is not None else
             "Rejections per client: the limiter's metric carries no client label (see the app logs)")

# %% [markdown]
# ## 3. Recommended limits
#
# The runbook's two limiters, `max` recomputed from the traffic of the window: the p99
# (`settings.rate_limiting.peak_quantile`) over time of the requests per limiter window, times `settings.rate_limiting.headroom`, never below the runbook's public
# `/api/` limit.

# %%
with pb.check(ctx, "recommended limits"):
    route_rates = wm.rate_series(m.http_duration + "_count", [m.method_label, m.route_label])
    limits = ratelimit.recommended_limits(route_rates, ctx.params.endpoints, headroom=s.headroom,
                                          peak_quantile=s.peak_quantile, client_label_present=offenders is not None,
                                          average_only_over_s=wm.uptime_seconds(), totals=counts,
                                          method_label=m.method_label, route_label=m.route_label)
    pb.table(limits, "express-rate-limit settings from the observed traffic")
    pb.details("express-rate-limit configuration", ratelimit.express_rate_limit_config(limits), "typescript")

# %% [markdown]
# ## 4. Are the expensive routes limited at all?
#
# For each endpoint the params mark `expensive: true`, a bounded burst: at most
# `settings.rate_limiting.burst_requests` requests (20), a few in flight, each with a timeout, all within a
# time budget, stopping at the first 429 — and only against hosts in `targets.allowed_hosts` (loopback by
# default) or opted in by `burst_opt_in_hosts`. A route that answers the whole burst without a 429 or a
# `RateLimit` header announcing a tight limit has no effective limiter; the code to add uses the numbers
# recommended above.

# %%
with pb.check(ctx, "expensive routes are rate-limited"):
    table, found = ratelimit.expensive_route_limits(ctx.params.endpoints, burst.run_all(ctx.params), rejections,
                                                    limits, max_per_minute=s.expensive_max_per_minute)
    pb.table(table, "Burst against each expensive route")
    pb.emit(ctx, found)

# %%
pb.details("PromQL run by this notebook", wm.promql_text(), "promql")

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
