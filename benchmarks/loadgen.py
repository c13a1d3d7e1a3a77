"""perfbook's load engine (locust FastHttpUser, in a subprocess) against wrk, side by side.

    .venv/bin/python benchmarks/loadgen.py [--duration 10] [--connections 32]

Starts a trivial HTTP/1.1 keep-alive endpoint on 127.0.0.1 (a raw asyncio server in its
own process answering "200 ok" without parsing more than the header terminator), then:

1. **Throughput per core.** wrk (``/usr/bin/wrk -t1``) and perfbook's engine (one locust
   process, FastHttpUser, no think time), each with the same number of connections /
   users for the same time. The generator's CPU is measured over the steady part of the
   run (psutil, after start-up and spawning), so "req/s per core" is requests per second
   divided by the share of a core the generator used. Goal: >= 5,000 req/s per core.
2. **The runbook's stages.** The generator's own CPU at 100 and 500 users with 1 s think
   time (the runbook's high stages) — to show it is not the bottleneck there.
3. **Latency overhead.** locust's p50/p95 against the trivial endpoint (whose own service
   time is tens of microseconds) at 10 users — the floor the generator adds to every
   measurement — next to wrk's at the same concurrency.

Prints a table and the ratio locust/wrk. On a 2-core machine the endpoint, the generator
and the OS share the cores; per-core figures are what compare.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from perfbook.params import Params  # noqa: E402
from perfbook.sources import loadgen  # noqa: E402

SERVER = r'''
import asyncio, sys
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.t.write(RESP * n)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, port


def cpu_seconds(p: psutil.Process) -> float:
    """CPU of a process and its children (wrk is one process; locust too, without workers)."""
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def steady_cpu(proc: subprocess.Popen, warmup: float, measure: float) -> float:
    """Share of one core the process used between ``warmup`` and ``warmup + measure`` seconds."""
    p = psutil.Process(proc.pid)
    time.sleep(warmup)
    c0, t0 = cpu_seconds(p), time.monotonic()
    time.sleep(measure)
    return (cpu_seconds(p) - c0) / (time.monotonic() - t0)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, connections: int, duration: int) -> dict:
    cmd = ["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    share = steady_cpu(proc, 1.0, duration - 2.0)
    out = proc.communicate()[0]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    return {"rps": rps, "cpu_share": share, "p50_ms": lat["50"], "p99_ms": lat["99"]}


def run_locust(port: int, users: int, duration: int, think: float, workdir: Path) -> dict:
    params = Params.model_validate({
        "service": "bench", "targets": {"base_url": f"http://127.0.0.1:{port}"},
        "settings": {"load_test": {"mode": "load", "users": users, "duration": duration, "think_time": think,
                                   "spawn_rate": max(50, users * 4), "mix": {"GET /": 1}}}})
    plan = loadgen.plan_from_params(params)
    assert plan.refused is None, plan.refused
    stage = plan.stages[0]
    prefix = str(workdir / f"locust-{users}-{think:g}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    locustfile = workdir / "perfbook_locustfile.py"       # as loadgen.run_stage does
    if not locustfile.exists():
        shutil.copyfile(loadgen.LOCUSTFILE, locustfile)
    proc = subprocess.Popen(loadgen.locust_command(plan, stage, prefix, locustfile=str(locustfile)), cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # locust imports for ~1 s and spawns within a quarter second here: measure after that.
    share = steady_cpu(proc, 2.0, duration - 3.0)
    proc.wait(duration + 30)
    summary = json.loads(Path(prefix + "_summary.json").read_text())
    total = summary["total"]
    return {"rps": total["rps"], "cpu_share": share, "p50_ms": total["p50"], "p95_ms": total["p95"],
            "p99_ms": total["p99"], "requests": total["requests"], "failures": total["failures"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    if not Path("/usr/bin/wrk").exists():
        print("wrk not found at /usr/bin/wrk (Debian package: wrk)")
        return 2
    server, port = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="perfbook-bench-") as tmp:
            wd = Path(tmp)
            w = run_wrk(port, a.connections, a.duration)
            lo = run_locust(port, a.connections, a.duration, 0.0, wd)
            w10 = run_wrk(port, 10, max(5, a.duration // 2))
            lo10 = run_locust(port, 10, max(6, a.duration // 2), 0.0, wd)
            stages = {u: run_locust(port, u, a.duration, 1.0, wd) for u in (100, 500)}
    finally:
        server.terminate()
        server.wait(5)

    def per_core(r: dict) -> float:
        return r["rps"] / r["cpu_share"] if r["cpu_share"] > 0 else float("nan")

    print(f"\nTrivial endpoint on 127.0.0.1, {os.cpu_count()} cores, {a.connections} connections/users, "
          f"{a.duration} s each\n")
    print(f"{'generator':<34}{'req/s':>10}{'CPU (cores)':>13}{'req/s per core':>16}{'p50 ms':>9}{'p99 ms':>9}")
    rows = [("wrk -t1", w), ("perfbook (locust FastHttpUser)", lo)]
    for name, r in rows:
        print(f"{name:<34}{r['rps']:>10.0f}{r['cpu_share']:>13.2f}{per_core(r):>16.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    ratio = per_core(lo) / per_core(w)
    print(f"\nratio perfbook/wrk, req/s per core: {ratio:.3f}   "
          f"(goal >= 5000 req/s per core: {'met' if per_core(lo) >= 5000 else 'NOT met'}, {per_core(lo):.0f})")
    print(f"\nlatency floor at 10 users/connections, no think time:"
          f"\n  wrk      p50 {w10['p50_ms']:.2f} ms  p99 {w10['p99_ms']:.2f} ms  ({w10['rps']:.0f} req/s)"
          f"\n  perfbook p50 {lo10['p50_ms']:.2f} ms  p95 {lo10['p95_ms']:.2f} ms  p99 {lo10['p99_ms']:.2f} ms  "
          f"({lo10['rps']:.0f} req/s; locust rounds to whole ms)")
    print("\nthe runbook's high stages (1 s think time): generator CPU")
    for u, r in stages.items():
        print(f"  {u:>4} users: {r['rps']:7.1f} req/s, generator {100 * r['cpu_share']:5.1f} % of a core, "
              f"p95 {r['p95_ms']} ms, {r['failures']} failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
