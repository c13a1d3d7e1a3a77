"""Query-log analysis memory with very many distinct statements: perfbook against a plain pandas read.

Generates a PostgreSQL statement log (``log_min_duration_statement = 0``, the demo's
``log_line_prefix = '%m [%p] %c %q%u@%d '``) holding N distinct statements (default one
million: each selects a different column list, so each has its own fingerprint), plus a few
statements repeated throughout that carry most of the time. Then, each in its own child
process, side by side in one run:

- perfbook: ``perfbook.checks.querylog.analyze(perfbook.sources.querylog.read([log]))`` with the
  default ``settings.limits`` (10,000 fingerprints kept, the rest folded into "other"), at N/4
  and at N statements, to show that the peak does not grow with N;
- pandas: what one would write without perfbook (pgBadger is not installed here): read the
  log's lines, extract duration and statement text with a regex into a DataFrame, group by
  statement (sum, count, max) and take the top 10.

Each child reports its peak resident memory (``ru_maxrss``) and its resident memory after its
imports; the script prints both, the memory the work itself added, and the ratio
pandas / perfbook. Not a test: nothing is timed or asserted.

    .venv/bin/python benchmarks/querylog_memory.py                  # 1,000,000 distinct statements
    .venv/bin/python benchmarks/querylog_memory.py --statements 200000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["SELECT p.id, p.name FROM products p WHERE p.category_id = $1 ORDER BY p.created_at DESC LIMIT 20",
         "SELECT count(*) FROM clicks WHERE created_at > now() - interval '1 day'"]


def generate(path: Path, n: int) -> int:
    """``n`` distinct statements (and one heavy one every 50), one log record each."""
    records = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            ms = i % 1000
            sec = (i // 1000) % 60
            prefix = f"2026-11-26 22:{(i // 60000) % 60:02d}:{sec:02d}.{ms:03d} UTC [{100 + i % 8}] 6b08b2e9.{i % 8:x} app@shop "
            cols = ", ".join(f"c{(i >> k) & 0xff}_{k}" for k in range(0, 20, 5))
            f.write(f"{prefix}LOG:  duration: 0.{i % 900 + 100} ms  statement: SELECT {cols}, v{i} "
                    f"FROM wide_table_{i % 50} WHERE flag_{i % 13} IS TRUE\n")
            records += 1
            if i % 50 == 0:
                f.write(f"{prefix}LOG:  duration: 12.{i % 900 + 100} ms  statement: {HEAVY[i % 2]}\n")
                records += 1
    return records


PERFBOOK = r"""
import json, resource, sys, time
from perfbook.checks import querylog as Q
from perfbook.sources import querylog as S
from perfbook.params import Params
import pandas  # noqa: F401 - imported by the analysis anyway; counted in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
settings = Params(service="bench").settings
a = Q.analyze(S.read([sys.argv[1]]), settings.database, settings.limits)
top = a.top(11)
top = top[top["fingerprint"] != Q.OTHER]
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0, "statements": a.statements,
                  "kept": int((a.fingerprints["fingerprint"] != Q.OTHER).sum()),
                  "folded": a.folded_fingerprints, "top": top["query"].iloc[0][:60]}))
"""

PANDAS = r"""
import json, re, resource, sys, time
import pandas as pd
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
rx = re.compile(r"duration: ([0-9.]+) ms  statement: (.*)$")
ms, text = [], []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        m = rx.search(line)
        if m:
            ms.append(float(m.group(1)))
            text.append(m.group(2))
df = pd.DataFrame({"ms": ms, "query": text})
del ms, text
g = df.groupby("query")["ms"].agg(["sum", "count", "max"]).nlargest(10, "sum")
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0, "statements": int(len(df)),
                  "kept": int(df["query"].nunique()), "folded": 0, "top": g.index[0][:60]}))
"""


def child(code: str, log: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--statements", type=int, default=1_000_000, help="distinct statements in the log")
    args = ap.parse_args()
    n = args.statements
    with tempfile.TemporaryDirectory(prefix="perfbook-qlmem-") as tmp:
        small, big = Path(tmp) / "quarter.log", Path(tmp) / "full.log"
        t0 = time.perf_counter()
        generate(small, n // 4)
        records = generate(big, n)
        print(f"generated {records:,} log records ({n:,} distinct statements, {big.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.0f} s")
        rows = [("perfbook", n // 4, child(PERFBOOK, small)), ("perfbook", n, child(PERFBOOK, big)),
                ("pandas", n, child(PANDAS, big))]
    print(f"\n{'tool':<9} {'distinct':>10} {'peak RSS':>10} {'after imports':>14} {'added':>9} {'kept':>10} "
          f"{'seconds':>8}  costliest statement")
    for tool, distinct, r in rows:
        added = (r["peak_kb"] - r["base_kb"]) / 1024
        print(f"{tool:<9} {distinct:>10,} {r['peak_kb'] / 1024:>8.0f} MB {r['base_kb'] / 1024:>11.0f} MB "
              f"{added:>6.0f} MB {r['kept']:>10,} {r['seconds']:>8.0f}  {r['top']}")
    q, p, pd_ = rows[0][2], rows[1][2], rows[2][2]
    print(f"\nperfbook peak, {n // 4:,} -> {n:,} distinct statements: {q['peak_kb'] / 1024:.0f} MB -> "
          f"{p['peak_kb'] / 1024:.0f} MB (x{p['peak_kb'] / q['peak_kb']:.2f} for x4 the statements)")
    print(f"ratio pandas / perfbook, peak RSS: {pd_['peak_kb'] / p['peak_kb']:.1f}x; "
          f"memory added by the work: {(pd_['peak_kb'] - pd_['base_kb']) / max(1, p['peak_kb'] - p['base_kb']):.1f}x")


if __name__ == "__main__":
    main()
