# %% [markdown]
# # Load balancing — is the load spread evenly across instances?
#
# The runbook's *Issue 3: Load Balancing Adjustments*. Symptoms: some instances overloaded while others
# idle, uneven request distribution, some users seeing slow responses. Its diagnosis is `flyctl status`,
# CPU and memory per machine side by side ("85 % next to 30 %"). This page does the same from the
# service's own metrics, over the whole window and per instance: request rate, CPU, memory, p95 and
# requests in flight; it names the hot instance and since when, and compares the load with the
# `[services.concurrency]` limits of the app's fly.toml.

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
from perfbook.checks import balance
from perfbook.plots import capacity as plots
from perfbook.sources import flytoml

ctx = pb.start("load-balancing", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
wm = series = summary = fly = None

# %% [markdown]
# ## 0. Where the numbers come from
#
# The Prometheus server named in the params (over the report's window), or — when it is down or not
# configured — each instance's own `/metrics` (totals since each process started, the instance named by its
# URL). An instance whose `/metrics` does not answer is named; the others are still compared.

# %%
wm = pb.metrics_window(ctx, "the load cannot be compared across instances.")

# %% [markdown]
# ## 1. Instance load distribution
#
# The runbook's `flyctl status`, from metrics: per instance (the `instance` label in Prometheus, or each
# metrics URL scraped directly), the mean request rate and its share, CPU (% of one core, as Node's
# single thread sees it), peak resident memory, p95 latency, and requests in flight
# (`http_connections_active`, or request rate × mean latency by Little's law).

# %%
if wm:
    with pb.check(ctx, "per-instance load"):
        series = pb.instance_series(wm, ctx.params.metrics)
        summary = balance.instance_summary(series, ctx.params.targets.memory_limit_bytes())
        pb.table(summary, f"Per instance over the window — {wm.basis}")
        display(plots.instances_over_time(series, ("rps", "cpu", "p95")) or plots.instance_bars(summary))
        pb.details("PromQL", wm.promql_text())

# %% [markdown]
# ## 2. The app's load-balancing configuration
#
# The runbook's `cat deploy/fly.production.toml`: `[[services]]` with `[services.concurrency]`
# (`type`, `soft_limit`, `hard_limit`), `[scaling]` and the `[[metrics]]` scaling targets, read from the
# file the params name (`targets.fly_toml`).

# %%
with pb.check(ctx, "fly.toml"):
    fly = flytoml.read_optional(ctx.params.targets.fly_toml, Path(ctx.params_file).parent)
    pb.note(flytoml.describe(fly))

# %% [markdown]
# ## 3. Is the load uneven?
#
# Imbalance as **max/mean** and **coefficient of variation** across instances, for request rate and CPU,
# over the window and point by point. A balancer doing its job keeps instances within some 10–20 % of the
# mean; 1.3× the mean (a 65/35 split between two) for most of the window is uneven (`settings.balance`). The
# hot instance is named, with the time it became hot.

# %%
with pb.check(ctx, "uneven load across instances"):
    verdicts, found = balance.uneven_load(series, summary, settings=ctx.params.settings.balance,
                                          cpu=ctx.params.thresholds.cpu_percent,
                                          target_cpu=ctx.params.settings.scaling.target_cpu_percent,
                                          service=ctx.params.service, fly=fly)
    pb.table(verdicts, "Imbalance across instances")
    pb.table(balance.imbalance_over_time(series, "rps").tail(20), "Request-rate imbalance, last points of the window")
    pb.emit(ctx, found)

# %% [markdown]
# ## 4. Requests in flight against the concurrency limits
#
# Above `soft_limit` Fly's proxy prefers other machines; at `hard_limit` it sends the machine no new work
# and requests queue at the edge. With `type = "connections"` it counts connections, so a few keep-alive
# clients can pin one machine while others idle — the usual cause of uneven load on Fly.io.

# %%
with pb.check(ctx, "concurrency against fly.toml limits"):
    limits, found = balance.concurrency_vs_limits(summary, fly)
    pb.table(limits, "In-flight requests per instance against [services.concurrency]" if fly else
             "In-flight requests against [services.concurrency] (no fly.toml: not compared)")
    pb.emit(ctx, found)

# %% [markdown]
# ## Summary
#
# The solutions the runbook lists — Fly.io's load balancing configuration, more instances, regional
# distribution — are in the finding's *What to do*, with this window's numbers.

# %%
pb.summary(ctx)
