# %% [markdown]
# # Bottlenecks — where the time goes
#
# The runbook's *Issue 1: Identifying Bottlenecks*, step by step: which routes are slow and take the time
# (application performance), CPU and which routes move with it, memory (heap, RSS, steady growth: a leak), the
# event loop, and the share of request time spent in the database and in external calls. With a V8 CPU profile
# (`targets.cpu_profile`) it names the hot paths; with two heap snapshots (`targets.heap_snapshots`) the objects
# that leak.
#
# Levels are judged as in the quick-diagnostics section (CPU at the level held during at least 10 % of the window
# and 20 s, event-loop lag at the level its stalls reach again and again, memory at its maximum; the source is
# first asked which configured metrics it has, and a missing one is named with what stands in for it); growth is a straight-line fit over the window: at least
# `settings.diagnostics.growth_min_mb_per_min` MB/min, R² ≥ `growth_min_r2` and ≥ `growth_min_share` of the
# starting level. Over-time views need a Prometheus server; with only `/metrics` the page shows the current
# values.

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
from IPython.display import HTML, display

from perfbook import notebook as pb
from perfbook.checks import latency, profiles, resources
from perfbook.plots import resources as plots
from perfbook.sources import profiles as profile_files, resources as src

ctx = pb.start("bottlenecks", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
p, m, d, th = ctx.params, ctx.params.metrics, ctx.params.settings.diagnostics, ctx.params.thresholds
by_route = [m.method_label, m.route_label]
wm = routes = shares = None

# %% [markdown]
# ## 0. Where the numbers come from
#
# The Prometheus server named in the params (over the report's window), or the service's own `/metrics`
# (snapshot mode). A dead Prometheus is reported once here, and the checks fall back to `/metrics` when the
# params list the endpoints (numbers since each process started); a source that is down is never taken for a
# healthy service.

# %%
wm = pb.metrics_window(ctx, "only the profile steps can run.")
have = pb.metrics_present(ctx, wm, src.BOTTLENECK_FIELDS)
gauge = have.gauge  # a gauge's samples, or None when the source does not have it (no query for it)

# %% [markdown]
# ## 1. Application performance — which endpoints are slow, and which take the time
#
# The runbook's `grep http_request_duration` and "review p95/p99 latencies": each route's share of all request
# handling time (its summed duration), mean duration and request rate; then p50/p95/p99 of served requests
# (not 429, not 5xx) over the window against the p95 target (dashed; the shaded band is twice the target,
# critical).

# %%
if wm:
    with pb.check(ctx, "slow routes"):
        routes = latency.route_time_shares(wm.increase(m.http_duration + "_sum", by_route),
                                           wm.increase(m.http_duration + "_count", by_route), p.endpoints,
                                           m.method_label, m.route_label, wm.window_s)
        pb.table(routes, f"Request time by route — {wm.basis}")
        over_time = latency.route_percentiles(latency.served_only(src.latency_bucket_rates(wm, p), m.status_label),
                                              m.method_label, m.route_label, by_time=True)
        plots.show(plots.latency_over_time(latency.percentile_series_for_plot(over_time, p.endpoints)),
                   "Latency over time needs a Prometheus server (snapshot mode has one point per route).")

# %% [markdown]
# ## 2. CPU bottleneck — and which routes move with it
#
# `flyctl metrics`' CPU, per instance: `rate(process_cpu_seconds_total) × 100` (100 % = one core: all a Node.js
# event loop can use). The runbook acts above 80 %; its table warns at 70 %, critical at 85 %. To see *what*
# burns it, each route's busy time (seconds of handling per second) is correlated with total CPU over the
# window: the route that rises and falls with CPU is the first suspect for the hot path.

# %%
if wm:
    with pb.check(ctx, "CPU saturation"):
        cpu = src.cpu_percent(wm, p)
        pb.emit_unreachable(ctx, wm.new_dead())
        busy, rate = src.route_series(wm, p)
        correlated = resources.cpu_route_correlation(cpu, busy, rate, m.method_label, m.route_label,
                                                     min_points=d.correlation_min_points)
        table, found = resources.cpu_saturation(cpu, th.cpu_percent, settings=d, correlated=correlated)
        pb.table(table, "CPU % per instance")
        pb.table(correlated, "Which routes move with CPU (Pearson r over the window; busy = seconds of handling per second)")
        plots.show(plots.level_over_time(cpu, th.cpu_percent, "CPU per instance over the window", "CPU (% of one core)"))
        plots.show(plots.cpu_and_routes(cpu, busy, list(correlated["endpoint"].head(2)), th.cpu_percent,
                                        m.method_label, m.route_label))
        pb.emit(ctx, found)

# %% [markdown]
# ## 3. Memory bottleneck — heap, RSS, and steady growth
#
# The runbook's `process.memoryUsage()` over the window: the process's RSS against `targets.memory_limit`, and
# V8 heap used against the heap-limit gauge where the service exports one (stock prom-client does not; its
# committed heap, `nodejs_heap_size_total_bytes`, is not a limit). A straight line is fitted per instance; a steady
# rise (slope, R², total growth above the thresholds) is a leak suspicion, critical when at that slope the
# memory reaches its limit within `settings.diagnostics.growth_critical_horizon`.

# %%
if wm:
    with pb.check(ctx, "memory: heap, RSS, growth"):
        heap_used, rss, heap_limit = (gauge(x) for x in (m.heap_used, m.resident_memory, m.heap_limit))
        table, pressure = resources.memory_pressure(rss, heap_used, heap_limit, th.memory_percent,
                                                    p.targets.memory_limit_bytes(), heap_total=gauge(m.heap_total),
                                                    names=m.model_dump())
        growth, grew = resources.memory_growth(heap_used, rss, resources.limits_by_instance(heap_limit),
                                               p.targets.memory_limit_bytes(), settings=d)
        pb.table(table, "Memory per instance (MB, % of the limit)")
        pb.table(growth, "Straight-line fit per instance over the window (MB, MB/min)")
        plots.show(plots.memory_over_time(heap_used, rss, th.memory_percent,
                                          p.targets.memory_limit_bytes() or resources.limits_by_instance(heap_limit),
                                          growth))
        pb.emit(ctx, pressure, grew)

# %% [markdown]
# ## 4. Event loop — synchronous work
#
# prom-client's event-loop gauges over the window: the worst delay since the previous scrape (max, dashed), the
# p99 delay since the previous scrape (solid) and the lag at each scrape (dotted). prom-client resets its delay
# histogram at every scrape, so a loop blocked now and then shows in max long before p99: the typical delay
# (p99) is judged against warning and critical, the stalls (max) against critical only. Lag means callbacks wait: every request on the instance is delayed while
# something synchronous runs (the runbook's *Synchronous Operations in Event Loop*).

# %%
if wm:
    with pb.check(ctx, "event-loop lag"):
        lag, lag_p99, lag_max = gauge(m.eventloop_lag), gauge(m.eventloop_lag_p99), gauge(m.eventloop_lag_max)
        table, found = resources.eventloop_lag(lag, lag_p99, th.eventloop_lag_seconds, settings=d,
                                               lag_max=lag_max, names=m.model_dump())
        pb.table(table, "Event-loop lag per instance (ms)")
        plots.show(plots.lag_over_time(lag, lag_p99, th.eventloop_lag_seconds, lag_max))
        pb.emit(ctx, found)

# %% [markdown]
# ## 5. Database and external calls — their share of request time
#
# Where the metrics allow: time in queries (`pg_query_duration_seconds_sum`) and in external API calls
# (`external_api_duration_seconds_sum`) against all request handling time (`http_request_duration_seconds_sum`).
# A large database share: open the *database* section (slow queries, N+1, missing indexes — the runbook's
# §4); a large external share: the *external-apis* section. What remains is the application itself and its
# waits (event loop, pool).

# %%
if wm:
    with pb.check(ctx, "time in database and external calls"):
        shares = resources.time_shares(src.total(wm, m.http_duration + "_sum"), src.total(wm, m.db_query_duration + "_sum"),
                                       src.total(wm, m.external_duration + "_sum"), src.total(wm, m.http_duration + "_count"))
        pb.table(shares, f"Request time split — {wm.basis}")
        pb.note(resources.time_share_summary(shares))

# %% [markdown]
# ## 6. CPU profile — hot paths
#
# The runbook's "profile CPU usage … identify hot paths", from a V8 `.cpuprofile` (`node --cpu-prof`, or
# DevTools' Profiler) named in `targets.cpu_profile`. First by self time (DevTools' Bottom-Up: where the CPU
# actually was), then charged to the application function on the stack (what to change: a `JSON.parse`, a
# regex or `crypto` work counts against the app code that called it).

# %%
with pb.check(ctx, "CPU profile: hot paths"):
    if p.targets.cpu_profile:
        profile = profile_files.read_cpuprofile(profile_files.locate(p.targets.cpu_profile, ctx.params_file))
        summary = profiles.profile_summary(profile)
        pb.note(f"Profile: {summary['duration_ms']:.0f} ms, {summary['samples']} samples; busy {summary['busy_ms']:.0f} ms, "
                f"garbage collection {summary['gc_ms']:.0f} ms.")
        pb.table(profiles.hot_functions(profile), "Hot functions by self time (ms; % of busy time)")
        paths = profiles.hot_paths(profile)
        pb.table(paths, "Hot paths in the application code (time charged to the innermost app frame)")
        pb.emit(ctx, profiles.hot_path_findings(paths, summary, source=p.targets.cpu_profile,
                                                hot_share=d.hot_path_share, gc_share=d.gc_share))
    else:
        pb.note("No CPU profile in the params (targets.cpu_profile). To take one: run the service with "
                "`node --cpu-prof --cpu-prof-dir=/tmp/prof dist/main.js` under load, stop it, and name the "
                ".cpuprofile file here.")

# %% [markdown]
# ## 7. Heap snapshots — leaking objects
#
# The runbook's "generate heap snapshot … identify leaking objects": two or more V8 heap snapshots of one
# process, oldest first (`targets.heap_snapshots`; `node --heapsnapshot-signal=SIGUSR2` then `kill -USR2 <pid>`,
# or `v8.writeHeapSnapshot()`). The first and last are compared as DevTools' *Comparison* view does: objects per
# constructor, count and size deltas, retained size from the dominator tree.

# %%
with pb.check(ctx, "heap snapshots: leaking objects"):
    if p.targets.heap_snapshots:
        first, last = (profile_files.locate(x, ctx.params_file) for x in (p.targets.heap_snapshots[0], p.targets.heap_snapshots[-1]))
        growth = profiles.heap_growth(profiles.heap_summary(profile_files.read_heapsnapshot(first)),
                                      profiles.heap_summary(profile_files.read_heapsnapshot(last)))
        pb.table(growth, f"Constructors that grew most: {first.name} → {last.name} (bytes)")
        pb.emit(ctx, profiles.leak_findings(growth, f"{first.name} → {last.name}", min_growth_share=d.growth_min_share))
    else:
        pb.note("No heap snapshots in the params (targets.heap_snapshots). When memory grows (step 3), take two a "
                "few minutes apart and name them here, oldest first.")

# %% [markdown]
# ## Where the time goes

# %%
with pb.check(ctx, "where the time goes"):
    display(HTML(plots.bullets_html("Where the time goes", resources.where_time_goes(shares, routes, ctx.findings))))
if wm:
    pb.details("PromQL run by this notebook", wm.promql_text(), "promql")

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
