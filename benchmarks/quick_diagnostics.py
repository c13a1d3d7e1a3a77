"""Quick-diagnostics timing: the section on a running demo stack, and its snapshot-mode
analysis of a 100k-sample /metrics exposition.

    python benchmarks/quick_diagnostics.py [--scenario incident] [--traffic 30] [--samples 100000]
    python benchmarks/quick_diagnostics.py --skip-stack          # only the exposition part

1. Demo stack (starts PostgreSQL, Prometheus, two demo-service instances and the
   external-API stand-in on 127.0.0.1; stops them at the end). After ``--traffic``
   seconds of traffic it times, side by side:

   cli-run          `perfbook run quick-diagnostics` end to end: kernel start, every check
                    (PromQL, probes, pg_stat_activity), HTML export
   checks-prom      the same checks in-process, Prometheus mode (no papermill, no HTML)
   checks-snapshot  the same checks in-process from the services' /metrics (snapshot mode:
                    two scrapes 5 s apart — the interval is most of it)

   and prints the ratio cli-run / checks-prom: what the notebook machinery costs.

2. Exposition (no services): a prom-client-shaped exposition of ``--samples`` samples
   (benchmarks/snapshot_parse.py builds it; that script compares parsers), parsed twice
   as two scrapes, turned into rates, and judged the way quick-diagnostics judges snapshot
   mode: per-route p50/p95/p99 (histogram_quantile) and 5xx share. Prints each stage and
   the ratio of the whole pipeline to parsing alone.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from snapshot_parse import build_exposition  # noqa: E402

from perfbook.checks import latency, resources  # noqa: E402
from perfbook.params import Params  # noqa: E402
from perfbook.sources import prometheus as prom  # noqa: E402


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- 1. demo stack

PROBE_SECONDS: list[float] = []  # the active probes' share of each in-process run


def checks_in_process(params_file: Path, snapshot: bool = False) -> int:
    """Every check of the quick-diagnostics notebook, in-process (from /metrics instead of
    Prometheus with ``snapshot``); returns the finding count."""
    from perfbook import notebook as pb
    from perfbook.sources import http, postgres
    from perfbook.sources import resources as src

    ctx = pb.start("quick-diagnostics", str(params_file), show_header=False)
    p, m, d = ctx.params, ctx.params.metrics, ctx.params.settings.diagnostics
    wm = src.snapshot_fallback(ctx) if snapshot else src.open_window(ctx)
    found = []
    observed = latency.route_percentiles(latency.served_only(src.latency_buckets(wm, p), m.status_label))
    found += latency.histogram_slo_breaches(observed, p.endpoints, min_requests=d.min_requests,
                                            critical_factor=d.latency_critical_factor, source=wm.basis)[1]
    t0 = time.perf_counter()
    probes = http.probe(http.specs_from_params(p), **ctx.probe_options())
    PROBE_SECONDS.append(time.perf_counter() - t0)
    found += latency.slo_breaches(latency.percentiles_from_probes(probes), p.endpoints,
                                  critical_factor=d.latency_critical_factor)[1]
    found += resources.error_rates(src.requests_by_status(wm, p), p.thresholds.error_rate, settings=d)[1]
    found += resources.cpu_saturation(src.cpu_percent(wm, p), p.thresholds.cpu_percent, settings=d)[1]
    found += resources.memory_pressure(src.gauge(wm, p, m.resident_memory), src.gauge(wm, p, m.heap_used),
                                       src.gauge(wm, p, m.heap_limit), p.thresholds.memory_percent,
                                       p.targets.memory_limit_bytes())[1]
    found += resources.eventloop_lag(src.gauge(wm, p, m.eventloop_lag), src.gauge(wm, p, m.eventloop_lag_p99),
                                     p.thresholds.eventloop_lag_seconds, settings=d)[1]
    with postgres.connect(ctx) as db:
        server, _ = resources.server_connections(postgres.activity(db))
    found += resources.db_connections(src.gauge(wm, p, m.db_pool_open), src.gauge(wm, p, m.db_pool_busy),
                                      src.gauge(wm, p, m.db_pool_wait), p.thresholds.db_connections, server,
                                      wait_warning=p.settings.database.pool_exhausted_share,
                                      wait_critical=p.settings.database.pool_exhausted_share_critical)[1]
    resources.open_next(found, resources.triage_signals(**src.triage_inputs(wm, p)),
                        cache_target=p.thresholds.cache_hit_rate, min_lookups=p.settings.caching.min_lookups)
    return len(found)


def bench_stack(scenario: str, traffic: float) -> None:
    from perfbook.demo.stack import Stack
    from perfbook.demo_cli import write_demo_params

    work = Path(tempfile.mkdtemp(prefix="perfbook-bench-qd-"))
    with Stack(scenario, state_dir=work / "stack") as stack:
        print(f"demo stack ({scenario}) up; {traffic:.0f} s of traffic ...", flush=True)
        stack.drive(traffic)
        params = write_demo_params(stack, work / "params.yaml")
        env = dict(os.environ, **stack.env())
        os.environ.update(stack.env())
        cli_s, res = timed(subprocess.run, [sys.executable, "-m", "perfbook.cli", "run", "quick-diagnostics", "-p",
                                            str(params), "--outputs", str(work / "out")],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        if res.returncode not in (0, 1):
            print(res.stdout, res.stderr)
        prom_s, n_prom = timed(checks_in_process, params)
        snap_s, n_snap = timed(checks_in_process, params, snapshot=True)
    print()
    print(f"{'quick-diagnostics on the demo stack':<44}{'seconds':>10}")
    print(f"{'  cli-run (papermill + HTML)':<44}{cli_s:>10.2f}")
    print(f"{'  checks-prom (in-process, ' + str(n_prom) + ' findings)':<44}{prom_s:>10.2f}")
    print(f"{'    of which active probes':<44}{PROBE_SECONDS[0]:>10.2f}")
    print(f"{'  checks-snapshot (in-process, /metrics)':<44}{snap_s:>10.2f}")
    print(f"{'    of which active probes':<44}{PROBE_SECONDS[1]:>10.2f}")
    print(f"{'  ratio cli-run / checks-prom':<44}{cli_s / prom_s:>10.1f}x")


# --------------------------------------------------------------------------- 2. exposition


def shift(text: str, factor: float) -> str:
    """The same exposition a while later: every counter/bucket value times ``factor``."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#") and not line.startswith("nodejs_"):
            head, _, val = line.rpartition(" ")
            line = f"{head} {float(val) * factor:g}"
        out.append(line)
    return "\n".join(out) + "\n"


def bench_exposition(samples: int, repeat: int) -> None:
    before_text, n = build_exposition(samples)
    after_text = shift(before_text, 1.5)
    params = Params(service="bench")
    t0 = pd.Timestamp("2025-01-01T00:00:00Z")
    best: dict[str, float] = {}
    for _ in range(repeat):
        stages = {}
        stages["parse (x2)"], (before, after) = timed(
            lambda: (prom.parse_exposition(before_text, instance="i:1", scraped_at=t0),
                     prom.parse_exposition(after_text, instance="i:1", scraped_at=t0 + pd.Timedelta(seconds=15))))
        stages["rates"], rates = timed(prom.rates, before, after)
        buckets = rates[rates["metric"] == "http_request_duration_seconds_bucket"]
        stages["p50/p95/p99 by route"], observed = timed(
            lambda: latency.route_percentiles(latency.served_only(buckets)))
        stages["verdict vs targets"], _ = timed(latency.histogram_slo_breaches, observed, params.endpoints, 20)
        req = rates[rates["metric"] == "http_requests_total"]
        stages["5xx share by route"], _ = timed(resources.error_rates, req, params.thresholds.error_rate)
        for k, v in stages.items():
            best[k] = min(best.get(k, float("inf")), v)
    total = sum(best.values())
    print()
    print(f"snapshot-mode analysis of a {n:,}-sample exposition (best of {repeat})")
    for k, v in best.items():
        print(f"  {k:<28}{v:>8.3f} s")
    print(f"  {'total':<28}{total:>8.3f} s   ({n * 2 / total:,.0f} samples/s)")
    print(f"  ratio total / parsing: {total / best['parse (x2)']:.2f}x  (the analysis adds "
          f"{100 * (total - best['parse (x2)']) / total:.0f} % to parsing)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="incident")
    ap.add_argument("--traffic", type=float, default=30.0)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-stack", action="store_true")
    a = ap.parse_args()
    if not a.skip_stack:
        bench_stack(a.scenario, a.traffic)
    bench_exposition(a.samples, a.repeat)


if __name__ == "__main__":
    main()
