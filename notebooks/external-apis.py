# %% [markdown]
# # External APIs — slow or failing dependencies, timeouts, the circuit breaker
#
# The runbook's *Issue 7: External API Performance*. Symptoms: slow responses from external APIs, timeout
# errors, a circuit breaker opening often. This page follows its diagnosis — the service's own view of its
# dependencies (`/health/services`), their latency against the timeout, their error rate, the breaker's state
# over time — then asks each dependency directly, with the runbook's retry and backoff.

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
from perfbook.checks import external
from perfbook.plots import traffic as plots
from perfbook.sources import dependencies
from perfbook.sources.window_metrics import WindowMetrics

ctx = pb.start("external-apis", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
m, s = ctx.params.metrics, ctx.params.settings.external
wm = WindowMetrics.from_context(ctx)
health = latency = errors = samples = None
services = list(ctx.params.targets.external_health_urls)

# %% [markdown]
# ## 1. External service health
#
# The runbook's `curl /health/services`: what the service itself reports about each dependency.

# %%
with pb.check(ctx, "/health/services"):
    status, body = dependencies.health_services(ctx.params.targets.base_url, ctx.params.settings.probes.timeout)
    health = external.parse_health_services(body)
    pb.table(health, f"/health/services (HTTP {status})")
    pb.emit(ctx, external.health_findings(health, status))

# %% [markdown]
# ## 2. Error rate per dependency
#
# Calls by outcome from `external_api_requests_total`: `error`, `timeout`, and `rejected` (the breaker
# short-circuiting) are failures as the service's users feel them.

# %%
with pb.check(ctx, "dependency error rate"):
    errors = external.dependency_errors(wm.increase(m.external_requests, [s.service_label, s.outcome_label]),
                                        s.service_label, s.outcome_label)
    pb.table(errors, f"Calls by outcome — {wm.basis}")
    pb.emit(ctx, external.failing_dependencies(errors, settings=s))

# %% [markdown]
# ## 3. Response times against the timeout
#
# The runbook's `grep external_api_duration_seconds`, as p50/p95/p99 per dependency over the window, against
# each dependency's timeout (`settings.external.timeouts`; the runbook's 10 s by default), over the calls that
# succeeded or timed out (`settings.external.status_label`): a failure answered in 20 ms is an error, counted
# above, and never makes a slow dependency look fast. A p95 at half the timeout is slow; a p99 at the timeout, or
# calls ending in `timeout` above, mean calls are timing out.

# %%
with pb.check(ctx, "dependency latency vs timeout"):
    buckets = wm.increase(m.external_duration + "_bucket", ["le", s.service_label, *filter(None, [s.status_label])])
    latency = external.dependency_latency(buckets, s.timeout_for, s.service_label, s.status_label)
    pb.table(latency, f"Latency per dependency (seconds) — {wm.basis}")
    pb.emit(ctx, external.slow_dependencies(latency, errors, settings=s))

# %% [markdown]
# ## 4. Circuit breaker state
#
# The runbook's `grep circuit_breaker_state` (0 closed, 1 open, 2 half-open), at every scrape of the window:
# how often each breaker opened and went half-open, how long it stayed open, and its state now.

# %%
with pb.check(ctx, "circuit breaker state"):
    samples = wm.samples(m.circuit_breaker_state)
    transitions = external.breaker_transitions(samples, s.breaker_label)
    services = external.known_services(health, latency, errors, extra=ctx.params.targets.external_health_urls)
    pb.table(transitions, "Circuit breakers over the window")
    pb.emit(ctx, external.open_breakers(transitions, services, timeout_for=s.timeout_for, snapshot=wm.mode != "prometheus"))

# %%
with pb.check(ctx, "latency and breaker plot"):
    series = external.latency_series(wm.rate_series(m.external_duration + "_bucket",
                                                    ["le", s.service_label, *filter(None, [s.status_label])]),
                                     s.service_label, s.status_label)
    display(plots.dependency_latency(series, s.timeout_for, external.breaker_bands(samples, s.breaker_label),
                                     lambda b: external.dependency_of(b, services)))

# %% [markdown]
# ## 5. Active probes, with retry and backoff
#
# Each `targets.external_health_urls` asked directly, as the runbook's `callAPIWithRetry`: a timeout per
# attempt, retries after 1 s, 2 s, 4 s on a failure, and a bound on the whole probe.

# %%
with pb.check(ctx, "active probes with backoff"):
    probes = dependencies.probe_all(ctx.params.targets.external_health_urls, s.probe_timeout, s.probe_retries, s.probe_budget)
    summary = external.probe_summary(probes)
    pb.table(summary, "Health URL probes (seconds)")
    pb.emit(ctx, external.probe_findings(summary, timeout_for=s.timeout_for))

# %%
pb.details("PromQL run by this notebook", wm.promql_text(), "promql")

# %% [markdown]
# ## Summary

# %%
pb.summary(ctx)
