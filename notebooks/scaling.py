# %% [markdown]
# # Horizontal scaling — scale out, scale in, or leave it, and to how many
#
# The runbook's *Issue 4: Horizontal Scaling*. It says to scale out when **CPU is above 70 % on all
# instances**, when **response times are consistently above target**, and when **traffic is increasing
# steadily**. This page evaluates those rules over the window, projects how many instances the traffic
# needs at the 70 % target utilization, and writes the scaling procedure out as commands. It also says
# when the fleet is clearly over-provisioned.

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
from pathlib import Path

from IPython.display import display

from perfbook import notebook as pb
from perfbook.checks import balance, scaling
from perfbook.plots import capacity as plots
from perfbook.sources import flytoml
from perfbook.sources.window_metrics import WindowMetrics, rate_window

ctx = pb.start("scaling", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
wm = WindowMetrics.from_context(ctx)
settings = ctx.params.settings.scaling
series = summary = fly = info = None

# %% [markdown]
# ## 1. Current capacity
#
# The runbook's first step, `flyctl status`: how many instances, how busy each one is (CPU as % of one
# core), and what they serve.

# %%
with pb.check(ctx, "current capacity"):
    series = pb.instance_series(wm, ctx.params.metrics)
    summary = balance.instance_summary(series, ctx.params.targets.memory_limit_bytes())
    pb.table(summary, f"Per instance over the window — {wm.basis}")
    display(plots.cpu_vs_target(series, settings.target_cpu_percent))
    pb.details("PromQL", wm.promql_text())

# %%
with pb.check(ctx, "fly.toml"):
    fly = flytoml.read_optional(ctx.params.targets.fly_toml, Path(ctx.params_file).parent)
    pb.note(flytoml.describe(fly))

# %% [markdown]
# ## 2. When to scale horizontally: the runbook's rules
#
# Each rule over the window. CPU: each instance's median (busy most of the time, not a spike). Response
# times: each endpoint's p95, median over the window, against its target. Traffic: the total request
# rate's trend (Mann–Kendall test and Theil–Sen slope, on points one `rate()` range apart). Projection:
# requests per second one instance carries at the target CPU, and the instances the window's peak needs.

# %%
with pb.check(ctx, "scaling rules"):
    rules, info = scaling.scaling_rules(series, summary, ctx.params.endpoints, settings,
                                        spacing_s=rate_window(wm.step), fly=fly)
    pb.table(rules, "The runbook's scale-out rules over the window")
    pb.table(info["latency"], "p95 per endpoint over the window (seconds)")
    display(plots.throughput_trend(info["total"], info["trend"], info["fleet_capacity_rps"]))

# %% [markdown]
# ## 3. Decision and procedure
#
# Scale out when the rules say so, to the projected count; the recommendation is the runbook's
# procedure (`flyctl scale count N`, `[scaling] min_machines/max_machines`, then monitor 15 minutes and
# verify). Response times above target *without* CPU pressure are not a capacity problem: the finding
# says so and points to the sections that find where the time goes.

# %%
with pb.check(ctx, "scale out or in"):
    pb.emit(ctx, scaling.scaling_findings(info, service=ctx.params.service))

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
