# %% [markdown]
# # Performance monitoring — key metrics, alerts, optimization checklist
#
# The runbook's *Performance Monitoring* (the ten key metrics, the four performance alerts) and its
# *Performance Optimization Checklist*, executable: what the dashboard showed over the window, which alerts
# fired and when (evaluated the way Prometheus evaluates them, and beside what the server itself fired), and
# each checklist item answered with its evidence.

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
from perfbook.checks import alerts, checklist
from perfbook.plots import monitoring as plots
from perfbook.sources import monitoring as source
from perfbook.sources.window_metrics import range_step, rate_window

ctx = pb.start("monitoring", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
step = range_step(ctx.start, ctx.end)
prom, evaluations = None, []

# %% [markdown]
# ## 1. Key metrics to monitor
#
# The runbook's Grafana dashboard, over the window: response time (p50/p95/p99), throughput, error rate, CPU,
# memory used against its limit, event-loop lag, database query time (p95), external API time (p95), cache hit
# rate and active connections. Dashed lines are the runbook's Warning/Critical levels, targets and alert
# thresholds from the params file. The runbook's queries name two metrics stock prom-client does not have:
# CPU is `rate(process_cpu_seconds_total) × 100` (not `nodejs_process_cpu_percent`), memory is RSS over
# `targets.memory_limit` (and heap used over `nodejs_heap_size_limit_bytes` only where a service exports it);
# event-loop lag shows prom-client's max gauge, the worst delay since the previous scrape.

# %%
with pb.check(ctx, "key metrics dashboard"):
    prom = source.prometheus_client(ctx.params, ctx.secret)
    panels = plots.key_metric_panels(ctx.params)
    queries = plots.panel_queries(panels, ctx.params, rate_window(step))
    data, refused = source.fetch_panels(prom.query_range, queries, ctx.start, ctx.end, step)
    display(plots.key_metrics_figure(panels, data, ctx.start, ctx.end, refused))
    pb.details("PromQL of the panels", plots.promql_text(queries))

# %% [markdown]
# ## 2. Performance alerts
#
# The runbook's four alerts (HighResponseTime, HighCPU, HighMemory, EventLoopLag) with the params file's
# expressions, thresholds and `for` durations, written to evaluate on stock prom-client metrics (the table shows
# each rule's PromQL). Each rule is evaluated over the window as Prometheus does it:
# at every evaluation interval; *pending* as soon as the condition holds, *firing* once it has held for `for`,
# back to inactive at the first evaluation where it does not hold (or has no data).

# %%
pb.table(alerts.rules_table(ctx.params), "Alert rules (as exported by `perfbook alerts export`)")
with pb.check(ctx, "alert rules evaluated over the window"):
    evaluations = source.fetch_evaluations(prom.query_range, ctx.params, ctx.start, ctx.end)
    display(plots.alert_values_figure(evaluations))
    pb.emit(ctx, [f for ev in evaluations for f in alerts.alert_findings(ev)])

# %% [markdown]
# ### What the server has configured and fires
#
# When the server exposes its rules API (`/api/v1/rules`, `/api/v1/alerts`), its configured alerting rules
# and the alerts it reports, and its own `ALERTS` series over the window beside perfbook's evaluation. The
# two agree when both fired (or neither) and their first fired-at times are within a few evaluation
# intervals (the server offsets each rule group's evaluations by up to one interval).

# %%
with pb.check(ctx, "the server's rules and alerts"):
    server = source.fetch_server(prom, ctx.params, ctx.start, ctx.end)
    pb.note(server.describe())
    pb.table(alerts.server_rules_table(ctx.params, server.rules, server.alerts), "Configured on the server, and active now")
    pb.table(alerts.compare_with_server(evaluations, server.spans, server.configured), "perfbook's evaluation beside the server's (window)")
    display(plots.alert_timeline_figure(evaluations, server.spans))

# %% [markdown]
# ## 3. Performance optimization checklist
#
# Every item of the runbook's checklist, answered **met**, **unmet** or **unknown**. This notebook measures what
# it can itself: cache hit rate, rate limiting (RateLimit headers, 429s), compression (a request with
# `Accept-Encoding: gzip, br`), pagination (items a list endpoint returns without paging parameters), blocking
# calls (event-loop lag), the connection pool's gauges, instance size, instances running, fly.toml's scaling,
# the server's alert rules, the key metrics, the baselines in the params. The database and load-balancing
# items are answered by those sections: the batch's index page combines their findings with this table.

# %%
with pb.check(ctx, "optimization checklist"):
    evidence = source.gather(prom, ctx.params, ctx.start, ctx.end, step, rate_window(step), ctx.params_file)
    answers = checklist.measured_answers(evidence, ctx.params)
    pb.table(checklist.checklist_table(answers), "Performance Optimization Checklist")
    pb.emit(ctx, checklist.checklist_findings(answers), checklist.source_findings(evidence))

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
