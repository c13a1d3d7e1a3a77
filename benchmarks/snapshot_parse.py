"""Snapshot-mode parsing of a 100k-sample /metrics exposition, side by side.

    python benchmarks/snapshot_parse.py [--samples 100000] [--repeat 3]

Builds a prom-client-shaped exposition (http_request_duration_seconds histograms with
method/route/status_code labels, http_requests_total counters, a few gauges) and times:

  perfbook        perfbook.sources.prometheus.parse_exposition -> tidy DataFrame
  user-list       what a user would write: prometheus_client's parser into a list
  user-dataframe  the same list turned into a DataFrame (the fair like-for-like)
  grep-regex      line-by-line regex (fast, but wrong on escaped quotes or exemplars)

Prints the best of --repeat runs in seconds and each one's ratio to perfbook
(> 1 means perfbook is faster). Parsing dominates: prometheus_client's parser is pure
Python, so the figures scale linearly with the number of samples.
"""
from __future__ import annotations

import argparse
import re
import time

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from perfbook.sources.prometheus import parse_exposition

BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
STATUSES = ["200", "201", "400", "404", "500"]


def build_exposition(samples: int) -> tuple[str, int]:
    """A prom-client-like exposition with at least ``samples`` samples; returns (text, count)."""
    hist = ["# HELP http_request_duration_seconds Duration of HTTP requests in seconds",
            "# TYPE http_request_duration_seconds histogram"]
    counter = ["# HELP http_requests_total Total number of HTTP requests",
               "# TYPE http_requests_total counter"]
    gauges = ["# HELP nodejs_eventloop_lag_p99_seconds The 99th percentile of the recorded event loop delays.",
              "# TYPE nodejs_eventloop_lag_p99_seconds gauge", "nodejs_eventloop_lag_p99_seconds 0.0123"]
    n = 1
    i = 0
    while n < samples:
        method, status = METHODS[i % len(METHODS)], STATUSES[(i // len(METHODS)) % len(STATUSES)]
        labels = f'method="{method}",route="/api/r{i // 20}",status_code="{status}"'
        total = 0
        for j, le in enumerate(BUCKETS):
            total += (i * 7 + j * 3) % 11
            hist.append(f'http_request_duration_seconds_bucket{{le="{le}",{labels}}} {total}')
        hist.append(f"http_request_duration_seconds_sum{{{labels}}} {total * 0.042:.6f}")
        hist.append(f"http_request_duration_seconds_count{{{labels}}} {total}")
        counter.append(f"http_requests_total{{{labels}}} {total}")
        n += len(BUCKETS) + 3
        i += 1
    return "\n".join(hist + [""] + counter + [""] + gauges) + "\n", n


def user_list(text: str) -> list:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def user_dataframe(text: str) -> pd.DataFrame:
    return pd.DataFrame([{"metric": name, **labels, "value": value} for name, labels, value in user_list(text)])


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)', re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def grep_regex(text: str) -> list:
    return [(m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3)))
            for m in _LINE.finditer(text)]


def best_of(fn, text: str, repeat: int) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn(text)
        best = min(best, time.perf_counter() - started)
        rows = len(out)
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    text, count = build_exposition(args.samples)
    print(f"exposition: {count:,} samples, {len(text) / 1e6:.1f} MB; best of {args.repeat} runs")
    contenders = [
        ("perfbook", lambda t: parse_exposition(t, instance="bench:9091")),
        ("user-list", user_list),
        ("user-dataframe", user_dataframe),
        ("grep-regex", grep_regex),
    ]
    results = {name: best_of(fn, text, args.repeat) for name, fn in contenders}
    ours = results["perfbook"][0]
    print(f"{'parser':<16}{'seconds':>10}{'rows':>10}{'vs perfbook':>14}")
    for name, (seconds, rows) in results.items():
        print(f"{name:<16}{seconds:>10.3f}{rows:>10,}{seconds / ours:>13.2f}x")
    print(f"ratio user-dataframe / perfbook = {results['user-dataframe'][0] / ours:.2f} "
          f"(> 1: perfbook faster)")


if __name__ == "__main__":
    main()
