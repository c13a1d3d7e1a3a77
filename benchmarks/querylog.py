"""Query-log analysis: perfbook against pgBadger, side by side, on the same file.

Generates a PostgreSQL statement log in the demo's format (``log_min_duration_statement
= 0``, ``log_line_prefix = '%m [%p] %c %q%u@%d '``, psycopg's extended protocol: parse /
bind / execute with ``DETAIL: parameters`` lines, multi-line statements, simple-protocol
statements, BEGIN/COMMIT, pooled sessions interleaved, N+1 runs of category lookups),
then times

- perfbook: ``perfbook.checks.querylog.analyze(perfbook.sources.querylog.read([log]))``
  and the N+1 findings, in a child process;
- pgBadger: ``pgbadger -f stderr --prefix '%m [%p] %c %q%u@%d ' -j 1 -o <tmp>.html log``

each in its own child, with its peak resident memory (``getrusage`` of that child), and
prints the throughput ratio. Memory is meant not to grow with the log's size: run two
sizes and compare perfbook's peak.

    .venv/bin/python benchmarks/querylog.py                  # 1 GB
    .venv/bin/python benchmarks/querylog.py --size 200MB
    .venv/bin/python benchmarks/querylog.py --size 1GB,4GB --pgbadger-max 1GB
    .venv/bin/python benchmarks/querylog.py --4gb             # same as --size 4GB

Needs ``/usr/bin/pgbadger`` (Debian package ``pgbadger``); without it only perfbook runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

PREFIX = "%m [%p] %c %q%u@%d "
ROOT = Path(__file__).resolve().parents[1]

LIST_SQL = ("SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at, p.category_id\n"
            "\tFROM products p WHERE p.category_id = $1 ORDER BY p.created_at DESC LIMIT $2 OFFSET $3")
LOOKUP_SQL = "SELECT id, name, slug FROM categories WHERE id = $1"
PRODUCT_SQL = ("SELECT p.id, p.name, p.description, p.price, p.rating, p.affiliate_url, p.created_at,\n"
               "\t       c.id AS category_id, c.name AS category_name,\n"
               "\t       (SELECT count(*) FROM clicks k WHERE k.product_id = p.id) AS clicks\n"
               "\tFROM products p JOIN categories c ON c.id = p.category_id WHERE p.id = $1")
STOCK_SQL = "SELECT stock, price FROM products WHERE id = $1"
SUMMARY_SQL = ("SELECT count(*) AS clicks, count(DISTINCT product_id) AS products,\n"
               "\t       count(DISTINCT session_ref) AS sessions\n"
               "\tFROM clicks WHERE created_at > '2026-11-25 22:00:00+00'")


def parse_size(text: str) -> int:
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "KMG" else t) * mult)


def generate(path: Path, size: int, seed: int = 42) -> int:
    """Write ~``size`` bytes of log to ``path``; return the number of executed statements."""
    rng = random.Random(seed)
    t = datetime(2026, 11, 26, 22, 0, 0)
    sessions = [(20000 + i, f"6b08b2e9.{0x5b00 + i:x}") for i in range(40)]
    written = statements = 0
    buf: list[str] = []
    prepared: set[tuple[int, str]] = set()

    def emit(pid: int, sess: str, msg: str) -> None:
        buf.append(f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d} UTC [{pid}] {sess} demo_app@demo {msg}\n")

    def run(pid: int, sess: str, sql: str, params: str, name: str = "_pg3_0") -> None:
        nonlocal statements
        statements += 1
        key = (pid, sql)
        if key in prepared:
            emit(pid, sess, f"LOG:  duration: {rng.uniform(0.005, 0.02):.3f} ms  bind {name}: {sql}")
            emit(pid, sess, f"DETAIL:  parameters: {params}")
            emit(pid, sess, f"LOG:  duration: {rng.uniform(0.008, 0.05):.3f} ms  execute {name}: {sql}")
        else:
            if rng.random() < 0.3:
                prepared.add(key)
            emit(pid, sess, f"LOG:  duration: {rng.uniform(0.05, 0.4):.3f} ms  parse <unnamed>: {sql}")
            emit(pid, sess, f"LOG:  duration: {rng.uniform(0.02, 0.2):.3f} ms  bind <unnamed>: {sql}")
            emit(pid, sess, f"DETAIL:  parameters: {params}")
            emit(pid, sess, f"LOG:  duration: {rng.uniform(0.01, 30.0):.3f} ms  execute <unnamed>: {sql}")

    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        while written < size:
            for _ in range(200):
                pid, sess = sessions[rng.randrange(len(sessions))]
                t += timedelta(microseconds=rng.randrange(200, 3000))
                r = rng.random()
                if r < 0.40:     # GET /api/products with the N+1 loop
                    cat = rng.randrange(1, 51)
                    run(pid, sess, LIST_SQL, f"$1 = '{cat}', $2 = '20', $3 = '0'")
                    for _ in range(20):
                        t += timedelta(microseconds=rng.randrange(100, 600))
                        run(pid, sess, LOOKUP_SQL, f"$1 = '{cat}'")
                elif r < 0.80:   # GET /api/products/{id}
                    pidn = rng.randrange(1, 100000)
                    run(pid, sess, PRODUCT_SQL, f"$1 = '{pidn}'", "_pg3_1")
                    emit(pid, sess, "LOG:  duration: 0.010 ms  statement: BEGIN")
                    run(pid, sess, STOCK_SQL, f"$1 = '{pidn}'", "_pg3_2")
                    emit(pid, sess, "LOG:  duration: 0.012 ms  statement: COMMIT")
                    statements += 2
                else:            # analytics, simple protocol with literals
                    statements += 1
                    emit(pid, sess, f"LOG:  duration: {rng.uniform(5, 40):.3f} ms  statement: {SUMMARY_SQL}")
            chunk = "".join(buf)
            buf.clear()
            f.write(chunk)
            written += len(chunk)
    return statements


PERFBOOK_CHILD = r"""
import json, sys, time
from perfbook.sources import querylog as S
from perfbook.checks import querylog as Q
from perfbook.params import Params
settings = Params(service="bench").settings
t0 = time.perf_counter()
a = Q.analyze(S.read([sys.argv[1]], sys.argv[2]), settings.database, settings.limits)
table, found = Q.n_plus_one_from_log(a)
print(json.dumps({"seconds": time.perf_counter() - t0, "statements": a.statements,
                  "fingerprints": len(a.fingerprints), "n_plus_one": [f.subject for f in found if f.severity == "warning"],
                  "runs": int(a.runs["runs"].sum()) if len(a.runs) else 0}))
"""


def measured(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run ``argv`` in a child of a fresh helper process; (wall seconds, peak RSS MiB, stdout)."""
    helper = ("import resource, subprocess, sys, time, json\n"
              "t0 = time.perf_counter()\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "dt = time.perf_counter() - t0\n"
              "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
              "print(json.dumps({'seconds': dt, 'peak_mib': peak, 'rc': p.returncode, 'out': p.stdout[-4000:], "
              "'err': p.stderr[-2000:]}))\n")
    out = subprocess.run([sys.executable, "-c", helper, *argv], capture_output=True, text=True, env=env)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise RuntimeError(f"{argv[0]} failed ({res['rc']}): {res['err']}")
    return res["seconds"], res["peak_mib"], res["out"]


def bench(size: int, workdir: Path, pgbadger: str | None, keep: bool) -> dict:
    log = workdir / f"postgresql-{size >> 20}MB.log"
    t0 = time.perf_counter()
    n = generate(log, size)
    real = log.stat().st_size
    print(f"\n== {real / 2**20:,.0f} MiB log, {n:,} statements (generated in {time.perf_counter() - t0:.0f} s)", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    secs, peak, out = measured([sys.executable, "-c", PERFBOOK_CHILD, str(log), PREFIX], env)
    pb = json.loads(out.strip().splitlines()[-1])
    row = {"size_mib": real / 2**20, "statements": n, "perfbook_s": secs, "perfbook_peak_mib": peak,
           "perfbook_mib_s": real / 2**20 / secs, "perfbook_found": pb}
    print(f"perfbook : {secs:7.1f} s  {real / 2**20 / secs:7.1f} MiB/s  peak {peak:6.0f} MiB  "
          f"({pb['statements']:,} statements, {pb['runs']:,} N+1 runs of {pb['n_plus_one']})", flush=True)
    if pgbadger:
        html = workdir / "pgbadger.html"
        secs_b, peak_b, _ = measured([pgbadger, "-f", "stderr", "--prefix", PREFIX, "-j", "1", "-q",
                                      "-o", str(html), str(log)])
        html.unlink(missing_ok=True)
        row.update(pgbadger_s=secs_b, pgbadger_peak_mib=peak_b, pgbadger_mib_s=real / 2**20 / secs_b,
                   throughput_ratio=secs_b / secs)
        print(f"pgBadger : {secs_b:7.1f} s  {real / 2**20 / secs_b:7.1f} MiB/s  peak {peak_b:6.0f} MiB", flush=True)
        print(f"ratio    : perfbook is {secs_b / secs:.1f}x pgBadger's throughput "
              f"(goal: >= 2x), with {peak / peak_b:.2f}x its peak memory", flush=True)
    if not keep:
        log.unlink(missing_ok=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GB", help="log size(s), comma-separated: 200MB, 1GB, 4GB")
    ap.add_argument("--4gb", dest="four", action="store_true", help="shorthand for --size 4GB")
    ap.add_argument("--pgbadger-max", default="4GB", help="skip pgBadger above this size (it is slow)")
    ap.add_argument("--workdir", default=None, help="where to write the log (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args()
    sizes = [parse_size(s) for s in ("4GB" if a.four else a.size).split(",")]
    pgbadger = shutil.which("pgbadger") or ("/usr/bin/pgbadger" if Path("/usr/bin/pgbadger").exists() else None)
    if not pgbadger:
        print("pgbadger not found (apt-get install pgbadger): timing perfbook only")
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="perfbook-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            rows.append(bench(size, workdir, pgbadger if size <= parse_size(a.pgbadger_max) else None, a.keep))
    finally:
        if not a.workdir and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(rows) > 1:
        print("\nperfbook peak memory by log size: " + ", ".join(
            f"{r['size_mib']:,.0f} MiB -> {r['perfbook_peak_mib']:.0f} MiB" for r in rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
