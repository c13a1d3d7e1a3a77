# %% [markdown]
# # Load and stress testing — maximum sustainable load, breaking point, recovery
#
# The runbook's *Performance Testing*. A **load test** runs fixed users for a fixed time and reads request
# rate, p95/p99 and error rate. A **stress test** raises the load stage by stage (10 → 50 → 100 → 200 → 500
# users in the runbook) until the service breaks, to identify the maximum sustainable load, the
# degradation points, the breaking point and the recovery behaviour.
#
# perfbook's engine is **locust** (`FastHttpUser`), run headless in a subprocess — never imported here —
# sending the request mix of the params file. Before any request: the target host must be on the
# allow-list (loopback by default) or opted in by the params, and users and duration are capped.

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
# This section's knobs (None = settings.load_test in the params file)
mode = None            # "load" (fixed users and duration) or "stress" (stages), "off"
stages = None          # stress stages, e.g. "5,10,20,40" (each stage_duration) or "10x30s,50x30s"
stage_duration = None  # e.g. "5s"
users = None           # load mode
duration = None        # load mode, e.g. "30s"
think_time = None      # mean pause between requests of one user, e.g. "0.2s"; 0 means none
host = None            # None means targets.base_url; it must be an allowed host

# %%
from IPython.display import display

from perfbook import notebook as pb
from perfbook.checks import loadtest
from perfbook.plots import capacity as plots
from perfbook.sources import loadgen

ctx = pb.start("load-test", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
lt = ctx.params.settings.load_test
error_bar = ctx.params.thresholds.error_rate.warning  # a stage whose error rate is over this breaks
plan = run = stages_t = endpoints_t = None

# %% [markdown]
# ## 1. The plan, and the safety checks
#
# The stages, the request mix (each path named after the params endpoint it exercises, so its latency is
# held to that endpoint's targets), and the checks made before anything is sent.

# %%
with pb.check(ctx, "plan and safety checks"):
    plan = loadgen.plan_from_params(ctx.params, mode=mode, stages=stages, stage_duration=stage_duration,
                                    users=users, duration=duration, host=host, think_time=think_time)
    pb.table(plan.table(), f"{plan.mode} test against {plan.host or '(no host)'}: "
                           f"{plan.total_duration:.0f} s of load, at most {plan.peak_users} users")
    pb.table(plan.mix_table(), "Request mix")
    pb.emit(ctx, loadtest.safety_findings(plan))

# %% [markdown]
# ## 2. Run
#
# One locust run per stage (as the runbook's series of `k6 run --vus N`), each bounded by locust's
# `--run-time` and by a hard deadline. Statistics are reset once all users are running, so each stage's
# numbers describe steady load. A stress test stops climbing after the first stage whose p95 or error
# rate breaks (`settings.load_test.stop_on_break`), then runs a short low-user stage to see whether the
# service recovers.

# %%
with pb.check(ctx, "run the load test"):
    run = loadgen.run(plan, stop_when=loadtest.stop_rule(ctx.params.endpoints, settings=lt, error_rate=error_bar))
    pb.note(run.describe())
    display(plots.load_timeline(run.history()))
    pb.details("locust output", run.logs())

# %% [markdown]
# ## 3. Per stage: throughput, latency, errors
#
# Requests per second (all, and served: not rejected with HTTP 429), p50/p95/p99 in milliseconds, the
# failed share (every failure, as k6's `http_req_failed`), errors (failures other than 429), and the
# generator's own CPU (above 90 % of a core the generator, not the service, may be the limit).

# %%
with pb.check(ctx, "per-stage results"):
    stages_t = loadtest.stage_table(run.stats())
    endpoints_t = loadtest.endpoint_table(run.stats(), ctx.params.endpoints, min_requests=lt.min_requests)
    pb.table(stages_t, "Per stage (all requests)")
    pb.table(endpoints_t, "Per stage and endpoint, against each endpoint's p95 target (ms)")

# %% [markdown]
# ## 4. Maximum sustainable load, breaking point, recovery
#
# A stage breaks when an endpoint's p95 exceeds its target, errors exceed `thresholds.error_rate.warning`
# (1 %), or throughput stops growing (less than `settings.load_test.min_gain`, 10 %, more for more users).
# The maximum sustainable load is the last stage before that. How serious a breaking point is depends on
# the headroom over the load the service must hold (`expected_users`, by default the first stage, the
# runbook's baseline; under `headroom_warning`, 2x, a warning).

# %%
with pb.check(ctx, "breaking point and recovery"):
    judged, found = loadtest.breaking_point_findings(stages_t, endpoints_t, settings=lt, error_rate=error_bar,
                                                     service=ctx.params.service, expected_users=plan.expected_users,
                                                     stopped=run.stopped)
    breaking = loadtest.breaking_stage(stages_t, endpoints_t, settings=lt, error_rate=error_bar)
    display(plots.stress_latency(stages_t, endpoints_t, breaking))
    display(plots.stress_throughput(stages_t, breaking))
    pb.table(judged, "Verdict per stage")
    pb.emit(ctx, found)

# %% [markdown]
# ## 5. Thresholds
#
# The params' k6-style thresholds (`p(95)<1000` in ms, `failed<0.01`), evaluated at the end: over the run
# for a load test, per stage for a stress test.

# %%
with pb.check(ctx, "k6-style thresholds"):
    verdicts, found = loadtest.threshold_findings(stages_t, lt.thresholds, mode=plan.mode,
                                                  expected_users=plan.expected_users)
    pb.table(verdicts, "Thresholds per stage")
    pb.emit(ctx, found)

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
