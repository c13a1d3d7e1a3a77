"""Large inputs: time and peak memory of perfbook's parsing and checks, and report page sizes.

Each case runs in a fresh Python process (so its peak RSS is its own) and prints its figures
against the budgets of the reliability issue — the per-notebook timeout (600 s), 1 GB of memory,
1.5 MB of HTML per page — as ratios (below 1.0 is within budget):

- ``exposition``: a prom-client /metrics of 200,000 samples through
  ``perfbook.sources.prometheus.parse_exposition`` twice (snapshot mode scrapes twice) and
  ``rates`` between the two;
- ``pgss``: a pg_stat_statements frame of 10,000 distinct statements (shaped like the recorded
  demo rows, tests/fixtures/postgres/incident.json) through the database checks (top
  statements, slow queries, N+1, large results) when ``perfbook.checks.database`` exists;
- ``table``: ``notebook.table`` of a 10,000-row DataFrame (long, hostile cells) exported to a
  report page with nbconvert; and the index page of 5,000 findings.

    .venv/bin/python benchmarks/large_inputs.py [--samples 200000] [--statements 10000] [--rows 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600.0
MEMORY_BUDGET = 1 << 30
PAGE_BUDGET = 1_500_000


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# --------------------------------------------------------------------------- cases (child process)


def exposition_text(samples: int, seed: int = 0) -> str:
    """prom-client-shaped text: http histograms over many routes, counters, gauges."""
    les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
    per_series = len(les) + 2 + 1  # buckets, _sum, _count, and one http_requests_total sample
    lines = ["# HELP http_request_duration_seconds Duration of HTTP requests in seconds",
             "# TYPE http_request_duration_seconds histogram"]
    counters = ["# HELP http_requests_total Total HTTP requests", "# TYPE http_requests_total counter"]
    n_series = max(1, (samples - 40) // per_series)
    for i in range(n_series):
        route, method, status = f"/api/r{i // 6}/:id", ("GET", "POST")[i % 2], ("200", "500", "429")[(i // 2) % 3]
        lab = f'method="{method}",route="{route}",status_code="{status}"'
        cum = 0
        for j, le in enumerate(les):
            cum += (i + j + seed) % 7
            lines.append(f'http_request_duration_seconds_bucket{{le="{le}",{lab}}} {cum}')
        lines.append(f"http_request_duration_seconds_sum{{{lab}}} {cum * 0.042:.6f}")
        lines.append(f"http_request_duration_seconds_count{{{lab}}} {cum}")
        counters.append(f"http_requests_total{{{lab}}} {cum + seed}")
    gauges = []
    for name in ("process_resident_memory_bytes", "nodejs_heap_size_used_bytes", "nodejs_eventloop_lag_seconds"):
        gauges += [f"# TYPE {name} gauge"] + [f'{name}{{space="s{k}"}} {k * 1000 + seed}' for k in range(10)]
    return "\n".join(lines + counters + gauges) + "\n"


def case_exposition(samples: int) -> dict:
    from perfbook.sources.prometheus import parse_exposition, rates

    a, b = exposition_text(samples, 0), exposition_text(samples, 5)
    t0 = time.perf_counter()
    before = parse_exposition(a, instance="127.0.0.1:8080")
    t1 = time.perf_counter()
    after = parse_exposition(b, instance="127.0.0.1:8080")
    r = rates(before, after, seconds=5.0)
    t2 = time.perf_counter()
    return {"case": f"/metrics exposition, {len(before):,} samples ({len(a) / 1e6:.1f} MB of text)",
            "seconds": t2 - t0, "parse_one_s": t1 - t0, "rows": len(before), "rate_rows": len(r)}


def pgss_frame(n: int):
    import pandas as pd

    rec = json.loads((ROOT / "tests" / "fixtures" / "postgres" / "incident.json").read_text())["statements"]
    base = rec["records"]
    rows = []
    for i in range(n):
        r = dict(base[i % len(base)])
        # Distinct texts (pg_stat_statements holds distinct normalised statements): vary a column alias.
        r["query"] = r["query"].replace("SELECT ", f"SELECT {i} AS q{i}, ", 1) if r["query"].lstrip().upper().startswith(
            "SELECT") else f"/* s{i} */ " + r["query"]
        r["queryid"] = 10_000_000 + i
        r["calls"] = float(r["calls"]) * (1 + i % 17)
        r["total_ms"] = float(r["total_ms"]) * (1 + i % 13)
        r["mean_ms"] = r["total_ms"] / max(r["calls"], 1)
        rows.append(r)
    df = pd.DataFrame(rows, columns=rec["columns"])
    df.attrs.update(rec["attrs"])
    return df


def case_pgss(n: int) -> dict:
    try:
        from perfbook.checks import database as D
    except ImportError:
        return {"case": "pg_stat_statements", "skipped": "perfbook.checks.database is not there"}
    from perfbook.params import DEFAULT_ENDPOINTS, Endpoint, Params

    stmts = pgss_frame(n)
    endpoints = [Endpoint(**e) for e in DEFAULT_ENDPOINTS]
    s = Params(service="bench").settings.database
    out: dict = {"case": f"pg_stat_statements, {len(stmts):,} statements through the database checks"}
    t0 = time.perf_counter()
    steps = {
        "top_statements": lambda: D.top_statements(stmts),
        "slow_queries": lambda: D.slow_queries(stmts, s),
        # 10,000 statements, 2 shared CPUs: 6.4 s when every lookup was compared with every
        # statement (quadratic), 1.2 s with list queries indexed by key (most of it parsing).
        "n_plus_one": lambda: D.n_plus_one_from_statements(stmts, s, endpoints, None),
        "large_results": lambda: D.large_results(stmts, None, s),
    }
    findings = 0
    for name, fn in steps.items():
        t = time.perf_counter()
        res = fn()
        out[f"{name}_s"] = time.perf_counter() - t
        if isinstance(res, tuple):
            findings += len(res[1])
    out["seconds"] = time.perf_counter() - t0
    out["findings"] = findings
    return out


def case_table(rows: int) -> dict:
    import nbformat
    import pandas as pd

    from perfbook import notebook as pb
    from perfbook.findings import Finding
    from perfbook.report import index_html, notebook_html

    df = pd.DataFrame({"route": [f"/api/r{i}/" + "<b>&amp;</b>" * 40 for i in range(rows)],
                       "query": ["SELECT * FROM t WHERE " + " AND ".join(f"c{j} = ${j}" for j in range(60))] * rows,
                       "calls": range(rows), "mean_ms": [i * 0.37 for i in range(rows)]})
    shown: list[dict] = []
    pb._display = lambda bundle: shown.append(bundle)
    t0 = time.perf_counter()
    pb.table(df, "10,000 statements")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("pb.table(df)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={k: v for k, v in b.items() if k.startswith("text/")})
                    for b in shown]
    nb.cells = [nbformat.v4.new_markdown_cell("# big table"), cell]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"perfbook-bench-{os.getpid()}.ipynb"
    nbformat.write(nb, str(path))
    try:
        page = notebook_html(path)
    finally:
        path.unlink(missing_ok=True)
    t1 = time.perf_counter()
    fs = [Finding("db.slow_query", ("warning", "critical", "error")[i % 3], f"statement {i} " + "x" * 300,
                  section="database", subject=f"SELECT {i} " + "y" * 500, evidence={f"k{j}": "v" * 200 for j in range(10)},
                  recommendation="EXPLAIN " + "z" * 3000) for i in range(5000)]
    index = index_html({"status": "complete", "header": {"service": "bench"},
                        "notebooks": [{"section": "database", "status": "ok", "html": "database.html"}]}, fs)
    t2 = time.perf_counter()
    return {"case": f"notebook.table of {rows:,} rows → report page; index of {len(fs):,} findings",
            "seconds": t2 - t0, "page_bytes": len(page.encode()), "index_bytes": len(index.encode()),
            "export_s": t1 - t0, "index_s": t2 - t1}


CASES = {"exposition": case_exposition, "pgss": case_pgss, "table": case_table}


# --------------------------------------------------------------------------- driver


def child(case: str, size: int) -> None:
    base = peak_rss()
    res = CASES[case](size)
    res["peak_rss"] = peak_rss()
    res["baseline_rss"] = base
    sys.stdout.write(json.dumps(res) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--statements", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]))
        return 0
    sizes = {"exposition": a.samples, "pgss": a.statements, "table": a.rows}
    print(f"perfbook large inputs — budgets: {TIMEOUT_S:.0f} s per notebook, {MEMORY_BUDGET >> 20} MB, "
          f"{PAGE_BUDGET / 1e6:.1f} MB per page (ratio < 1 is within budget)\n")
    worst = 0.0
    for case, size in sizes.items():
        env = dict(os.environ, PYTHONPATH=str(ROOT / "lib") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.run([sys.executable, __file__, "--child", case, str(size)], capture_output=True, text=True,
                           env=env, timeout=TIMEOUT_S)
        if p.returncode != 0:
            print(f"{case}: FAILED\n{p.stderr[-2000:]}")
            return 1
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if "skipped" in r:
            print(f"{r['case']}: skipped ({r['skipped']})\n")
            continue
        t_ratio, m_ratio = r["seconds"] / TIMEOUT_S, r["peak_rss"] / MEMORY_BUDGET
        print(r["case"])
        print(f"  time {r['seconds']:8.2f} s   (x{t_ratio:.4f} of the timeout)")
        print(f"  peak RSS {r['peak_rss'] / 2**20:6.0f} MB  (x{m_ratio:.3f} of 1 GB; bare interpreter "
              f"{r['baseline_rss'] / 2**20:.0f} MB)")
        details = {k: v for k, v in r.items() if k.endswith("_s") and k != "seconds"}
        if details:
            print("  " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in details.items()))
        for k in ("page_bytes", "index_bytes"):
            if k in r:
                ratio = r[k] / PAGE_BUDGET
                worst = max(worst, ratio)
                print(f"  {k.split('_')[0]} page {r[k] / 1e6:6.2f} MB  (x{ratio:.3f} of 1.5 MB)")
        for k in ("rows", "rate_rows", "findings"):
            if k in r:
                print(f"  {k}: {r[k]:,}")
        worst = max(worst, t_ratio, m_ratio)
        print()
    print(f"worst ratio against its budget: {worst:.3f}" + ("  (within budget)" if worst < 1 else "  (OVER BUDGET)"))
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
