# %% [markdown]
# # Quick diagnostics — one-page triage
#
# The runbook's *Quick Diagnostics* against its *Performance Baselines*: each endpoint's p50/p95/p99 against
# its target, the error rate, CPU, memory, event-loop lag and database connections against the
# Normal / Warning / Critical table — then **which section to open next**. Run it first; the verdict just
# below is the whole story at a glance, the numbered steps are its evidence.
#
# How a window is judged (one spike is not a level): CPU % at its *sustained level*, the level held during at
# least 10 % of the window and at least 20 s (`settings.diagnostics.sustained_quantile`, `sustained_for`; on a
# long window, the 90th percentile of the scrapes); event-loop lag at the levels its delays reach again and again
# (in at least 10 % of the scrapes, recurring over at least 20 s); memory and connections at their maximum,
# latency and error rate over all requests of the window. The source is first asked which of the configured
# metrics it has: a missing one is named (`metrics.missing`) with what stands in for it. Without a Prometheus server (only
# `targets.metrics_urls`), the numbers are since each process started, and rates come from two scrapes a few
# seconds apart.

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
from perfbook.checks import latency, resources
from perfbook.plots import resources as plots
from perfbook.sources import http, postgres, resources as src

ctx = pb.start("quick-diagnostics", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
p, m, d = ctx.params, ctx.params.metrics, ctx.params.settings.diagnostics
wm, observed, endpoint_table, probe_table, signals = None, None, None, None, {}

# %% [markdown]
# ## Verdict at a glance
#
# Every endpoint against its response-time targets and every resource against Normal / Warning / Critical,
# worst first — then the sections to open next. Filled in when every check below has run; the steps below show
# the evidence.

# %%
verdict_box = display(HTML("<p><i>(the verdict appears here once every check below has run)</i></p>"),
                      display_id=True)

# %% [markdown]
# ## 0. Where the numbers come from
#
# The Prometheus server named in the params (over the report's window), or the service's own `/metrics`
# (snapshot mode). A dead Prometheus is reported once here, and the checks fall back to `/metrics` when the
# params list the endpoints (numbers since each process started); a source that is down is never taken for a
# healthy service.

# %%
wm = pb.metrics_window(ctx, "only the response-time probes run.")
have = pb.metrics_present(ctx, wm, src.QUICK_FIELDS)
gauge = have.gauge  # a gauge's samples, or None when the source does not have it (no query for it)

# %% [markdown]
# **Instances up.** The runbook's `flyctl status`, from Prometheus: an instance whose scrapes failed
# (`up == 0`) for at least `settings.diagnostics.down_for` (15 s) in a row was down or unreachable — critical
# when still down at the end, warning when it came back; its own numbers below cover only the time it answered,
# the others carried its traffic. Shorter failures are flaps, not outages. Scrapes that *every* instance missed at
# once are a monitoring gap (the scraper or its machine stalled), not an instance down.

# %%
if wm and wm.mode == "prometheus":
    with pb.check(ctx, "instances up"):
        table, found = resources.instances_down(src.gauge(wm, p, "up"), down_for=d.down_for)
        pb.table(table, "Scrapes per instance in the window (Prometheus up)")
        pb.emit(ctx, found)

# %% [markdown]
# ## 1. Response time per endpoint — from the service's histogram
#
# The runbook's `curl /metrics | grep http_request_duration`, done properly: p50/p95/p99 per route from
# `http_request_duration_seconds` over every served request of the window (`histogram_quantile` over the
# increase of its buckets), each against the *Response Time Targets*. Over target is a warning, over twice the
# target critical. *Served* leaves out 429 rejections and 5xx answers: they come back fast and would hide how
# long real answers take (steps 3 and the rate-limiting section judge them). Routes with fewer than
# `settings.diagnostics.min_requests` requests are listed, not judged.

# %%
if wm:
    with pb.check(ctx, "latency per route (histogram)"):
        buckets = latency.served_only(src.latency_buckets(wm, p), m.status_label)
        observed = latency.route_percentiles(buckets, m.method_label, m.route_label)
        table, found = latency.histogram_slo_breaches(observed, p.endpoints, min_requests=d.min_requests,
                                                      critical_factor=d.latency_critical_factor, source=wm.basis)
        endpoint_table = latency.endpoint_verdicts(table)
        pb.table(endpoint_table, f"Latency per endpoint (seconds) against its targets — {wm.basis}")
        pb.emit(ctx, found)

# %% [markdown]
# ## 2. Response time check — active probes
#
# The runbook's `curl -w "%{time_total}"` against each endpoint the params mark with a `probe_path`, N times so
# that p50/p95/p99 mean something. What a user gets *now*; every request has a timeout and a dead target is
# reported, not hidden.

# %%
with pb.check(ctx, "response time probes"):
    probes = http.probe(http.specs_from_params(p), **ctx.probe_options())
    measured = latency.with_subjects(latency.percentiles_from_probes(probes), latency.subject_aliases(observed, p.endpoints))
    probe_table, found = latency.slo_breaches(measured, p.endpoints, critical_factor=d.latency_critical_factor, source="probes",
                                                source_label="probed now")
    pb.table(probe_table, "Probed latency against the runbook's targets")
    pb.emit(ctx, found)

# %% [markdown]
# ## 3. Error rate
#
# The runbook's step 5 (`grep http_request_errors_total`): the share of 5xx answers per route and overall, from
# `http_requests_total` by status code. Warning at 1 %, critical at 5 % (`thresholds.error_rate`).

# %%
if wm:
    with pb.check(ctx, "error rate (5xx)"):
        counter = m.http_requests if have.exists(m.http_requests) else m.http_duration + "_count"
        table, found = resources.error_rates(src.requests_by_status(wm, p, counter), p.thresholds.error_rate, settings=d,
                                             method_label=m.method_label, route_label=m.route_label,
                                             status_label=m.status_label, basis=wm.basis)
        pb.table(table, "5xx share per route")
        pb.emit(ctx, found)

# %% [markdown]
# ## 4. CPU
#
# The runbook's step 2 (`flyctl metrics`): process CPU per instance, `rate(process_cpu_seconds_total) × 100`
# (100 % = one core, all a Node.js event loop can use), at its sustained level over the window. Normal 30-50 %,
# warning 70 %, critical 85 %.

# %%
if wm:
    with pb.check(ctx, "CPU %"):
        table, found = resources.cpu_saturation(src.cpu_percent(wm, p), p.thresholds.cpu_percent, settings=d)
        pb.table(table, "CPU % per instance")
        pb.emit(ctx, found)
        pb.emit_unreachable(ctx, wm.new_dead())

# %% [markdown]
# ## 5. Memory
#
# Peak memory over the window against the limit: RSS over `targets.memory_limit` (the instance's memory, what
# the OOM killer compares), and V8 heap used over the heap-limit gauge where the service exports one — the
# higher share is judged. Stock prom-client has no heap-limit gauge (`nodejs_heap_size_limit_bytes`), so set
# `targets.memory_limit`; the committed heap is shown but is not a limit (V8 grows it on demand). Normal 40-60 %,
# warning 80 %, critical 90 %.

# %%
if wm:
    with pb.check(ctx, "memory %"):
        table, found = resources.memory_pressure(gauge(m.resident_memory), gauge(m.heap_used), gauge(m.heap_limit),
                                                 p.thresholds.memory_percent, p.targets.memory_limit_bytes(),
                                                 heap_total=gauge(m.heap_total), names=m.model_dump())
        pb.table(table, "Memory per instance (MB, % of the limit)")
        pb.emit(ctx, found)

# %% [markdown]
# ## 6. Event-loop lag
#
# The runbook's step 4 (`grep nodejs_eventloop_lag_seconds`): how late the event loop runs its callbacks.
# prom-client resets its delay histogram at every scrape, so its max and p99 gauges describe the time since the
# previous scrape; at a 15 s scrape interval a loop blocked 300 ms every few seconds reads p99 ≈ 10-14 ms but
# max 300 ms. Two readings, each at the level reached again and again: the typical delay (p99 gauge) against
# warning 50 ms and critical 100 ms, and the stalls (max gauge: the worst delay since the previous scrape) against
# critical 100 ms only — on a busy machine the worst delay of a scrape interval is well above the typical one.
# The finding names the gauge that decided; the instantaneous lag gauge misses blocking between scrapes.

# %%
if wm:
    with pb.check(ctx, "event-loop lag"):
        table, found = resources.eventloop_lag(gauge(m.eventloop_lag), gauge(m.eventloop_lag_p99),
                                               p.thresholds.eventloop_lag_seconds, settings=d,
                                               lag_max=gauge(m.eventloop_lag_max), names=m.model_dump())
        pb.table(table, "Event-loop lag per instance (ms)")
        pb.emit(ctx, found)

# %% [markdown]
# ## 7. Database connections
#
# The runbook's step 3 (`SELECT * FROM pg_stat_activity`) when the params name the database, and the
# application's pool gauges (`prisma_pool_connections_open/_busy`, `prisma_client_queries_wait`). Normal 10-20,
# warning 50, critical 80 connections; queries waiting for a pool connection in 20 % of scrapes or more is pool
# exhaustion (`settings.database.pool_exhausted_share`; critical from `pool_exhausted_share_critical`, 50 %).

# %%
server = None
if p.targets.database_env:
    with pb.check(ctx, "database connections (server)"):
        with postgres.connect(ctx) as db:
            server, by_state = resources.server_connections(postgres.activity(db))
        pb.table(by_state, f"pg_stat_activity: {server} client connections by application and state")
if wm:
    with pb.check(ctx, "DB connections"):
        table, found = resources.db_connections(gauge(m.db_pool_open), gauge(m.db_pool_busy), gauge(m.db_pool_wait),
                                                p.thresholds.db_connections, server,
                                                wait_warning=p.settings.database.pool_exhausted_share,
                                                wait_critical=p.settings.database.pool_exhausted_share_critical)
        pb.table(table, "Connection pool per instance")
        pb.emit(ctx, found)

# %% [markdown]
# ## Open next — and the verdict
#
# What the evidence points to: time in DB queries or pool waits → *database*; a breaker or failing dependency →
# *external-apis*; CPU, event-loop lag, memory, or slowness not explained by DB/external time → *bottlenecks*;
# 429s → *rate-limiting*; uneven requests across instances → *load-balancing*; low cache hit rate → *caching*;
# CPU high everywhere → *scaling*. The verdict table and this list are shown at the top of the page.

# %%
if wm:
    with pb.check(ctx, "signals for the next step"):
        signals = resources.triage_signals(**src.triage_inputs(wm, p))
with pb.check(ctx, "verdict and open next"):
    verdict = resources.verdict_table(ctx.findings, endpoint_table, critical_factor=d.latency_critical_factor)
    next_sections = resources.open_next(ctx.findings, signals, cache_target=p.thresholds.cache_hit_rate,
                                        min_lookups=p.settings.caching.min_lookups)
    verdict_box.update(HTML(plots.verdict_html(verdict, "Endpoints against Response Time Targets, resources against "
                                                        "Normal / Warning / Critical") + plots.open_next_html(next_sections)))
    display(HTML(plots.open_next_html(next_sections)))

# %%
if wm:
    pb.details("PromQL run by this notebook", wm.promql_text(), "promql")

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
