from nbbuild import write

write("notebooks/quick-diagnostics.ipynb", [
("md", """# Quick diagnostics — one-page triage

The runbook's *Quick Diagnostics* and *Performance Baselines*: how each endpoint's latency compares with
its p50/p95/p99 target, and which section to open next. Run it first."""),
("params", """# Parameters (papermill injects these in batch runs)
params_file = "../params/demo.yaml"
since = None      # window start: -30m, ISO-8601; None = the params file's window
until = None
incident = None
overrides = "{}"  # JSON of -P key=value overrides"""),
("code", """from perfbook import notebook as pb
from perfbook.sources import http
from perfbook.checks import latency

ctx = pb.start("quick-diagnostics", params_file, since=since, until=until, incident=incident, overrides=overrides)"""),
("md", """## 1. Response time check

The runbook's `curl -w "%{time_total}"` against each endpoint, done N times per endpoint so that
p50/p95/p99 mean something. Each request has a timeout; a dead target is reported, not hidden."""),
("code", """with pb.check(ctx, "response time probes"):
    probes = http.probe(http.specs_from_params(ctx.params), **ctx.probe_options())
    observed = latency.percentiles_from_probes(probes)
    verdicts, found = latency.slo_breaches(observed, ctx.params.endpoints, source="probes")
    pb.table(verdicts, "Probed latency against the runbook's targets")
    pb.emit(ctx, found)"""),
("md", """## Summary"""),
("code", """pb.summary(ctx)"""),
])
