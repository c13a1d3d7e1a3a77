"""A fleet of services: the sequential loop vs `perfbook batch --executor local` vs
`--executor dask-local:2`, side by side in one run.

    .venv/bin/python benchmarks/fleet.py [--services 4] [--sections 8] [-p PARAMS] [--skip-loop]

The same notebooks (the first --sections runbook sections, never the load test) for each of
--services services: copies of PARAMS under other service names (default: a params file whose
every source is a closed port on 127.0.0.1, so the notebooks run end to end in seconds and the
numbers are the runners' own; give the demo's params, `perfbook demo --keep`, for real data).

- loop: for each service and section, `papermill` then `jupyter nbconvert --to html`, one after
  another: what a user without perfbook would write.
- local: `perfbook batch -p S1 -p S2 ...`: notebook processes on this machine, 2 per core.
- dask-local:2: the same on a Dask LocalCluster of 2 worker processes (started by the command,
  and counted in its time).

Prints the wall times and their ratios, then where the time goes on each executor, from the
run manifests: the notebook's own time where it ran (duration_s), the round trip from submit to
the outcome on the client (round_trip_s), the difference (scheduling, queueing for a thread and
the transfer of the result back), and the bytes each result carried.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def dead_params(folder: Path) -> tuple[Path, dict[str, str]]:
    dead = f"http://127.0.0.1:{closed_port()}"
    p = folder / "dead.yaml"
    p.write_text(f"""
service: bench
environment: bench
window: {{since: -5m, until: now}}
targets:
  base_url: {dead}
  metrics_urls: ['{dead}/metrics']
  prometheus: {{url: '{dead}', timeout: 2s}}
  database_env: PB_BENCH_DB
  external_health_urls: {{ai-api: '{dead}/health'}}
settings:
  probes: {{count: 2, timeout: 1s, retries: 0}}
  external: {{probe_retries: 0, probe_timeout: 1s, probe_budget: 3s}}
  load_test: {{mode: "off"}}
""")
    return p, {"PB_BENCH_DB": f"postgresql://bench@127.0.0.1:{closed_port()}/bench"}


def services(params: Path, n: int, folder: Path) -> list[Path]:
    data = yaml.safe_load(params.read_text())
    out = []
    for i in range(1, n + 1):
        p = params.parent / f".bench-fleet-{os.getpid()}-{i}.yaml" if params.parent != folder else folder / f"s{i}.yaml"
        p.write_text(yaml.safe_dump(dict(data, service=f"{data.get('service', 'svc')}-{i}")))
        out.append(p)
    return out


def loop(files: list[Path], sections: list[str], out: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    for f in files:
        for s in sections:
            nb_out = out / f"{f.stem}-{s}.ipynb"
            subprocess.run([str(BIN / "papermill"), str(ROOT / "notebooks" / f"{s}.ipynb"), str(nb_out),
                            "-p", "params_file", str(f), "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"],
                           check=False, capture_output=True, env=env)
            subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "html", str(nb_out)], check=False,
                           capture_output=True, env=env)
    return time.monotonic() - t0


def fleet(files: list[Path], sections: list[str], out: Path, env: dict[str, str], executor: str) -> tuple[float, dict]:
    cmd = [str(BIN / "perfbook"), "batch", "--sections", ",".join(sections), "--outputs", str(out),
           "--executor", executor, "--incident", f"bench-{executor.replace(':', '-')}"]
    for f in files:
        cmd += ["-p", str(f)]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    reports = [ln[8:] for ln in res.stdout.splitlines() if ln.startswith("Report: ")]
    if not reports:
        sys.exit(f"perfbook batch --executor {executor} printed no report:\n{res.stderr[-2000:]}")
    fleet_dir = Path(reports[-1]).parent
    manifest = json.loads((fleet_dir / "manifest.json").read_text())
    rows = []
    for s in manifest["services"]:
        run = json.loads(((fleet_dir / s["run"]) / "manifest.json").read_text())
        rows += run["notebooks"]
    return wall, {"manifest": manifest, "notebooks": rows}


def where_time_goes(name: str, wall: float, info: dict) -> None:
    nbs = info["notebooks"]
    own = [nb["duration_s"] for nb in nbs]
    trip = [nb["timings"].get("round_trip_s", float("nan")) for nb in nbs]
    over = [t - d for t, d in zip(trip, own)]
    size = [nb["timings"].get("result_bytes", 0) for nb in nbs]
    ex = info["manifest"]["executor"]
    start = ex.get("start_s")
    print(f"  {name:<14} {len(nbs)} notebooks, {ex.get('slots')} at a time"
          + (f"; cluster start {start:.1f} s" if start is not None else "")
          + f"; not ok: {sum(nb['status'] != 'ok' for nb in nbs)}")
    print(f"    notebook where it ran: median {statistics.median(own):.2f} s, sum {sum(own):.1f} s "
          f"(= {sum(own) / wall:.1f} notebooks busy on average over the {wall:.1f} s)")
    print(f"    submit → outcome:      median {statistics.median(trip):.2f} s; overhead per task (round trip - "
          f"notebook): median {statistics.median(over) * 1000:.0f} ms, max {max(over) * 1000:.0f} ms")
    print(f"    result carried back:   median {statistics.median(size) / 1e3:.0f} kB, total {sum(size) / 1e6:.1f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--params", type=Path, default=None, help="a service's params (default: dead sources)")
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--skip-loop", action="store_true", help="only the two executors")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "lib"))
    from perfbook.runner import available_sections

    sections = [s for s in available_sections() if s != "load-test"][:args.sections]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, MPLBACKEND="Agg")
        if args.params is None:
            params, extra = dead_params(tmp)
            env.update(extra)
        else:
            params = args.params.resolve()
        files = services(params, args.services, tmp)
        try:
            n = len(files) * len(sections)
            print(f"{len(files)} services × {len(sections)} sections = {n} notebooks on {os.cpu_count()} cores "
                  f"({', '.join(sections)})", flush=True)
            (tmp / "loop").mkdir()
            t_loop = None if args.skip_loop else loop(files, sections, tmp / "loop", env)
            t_local, local = fleet(files, sections, tmp / "out", env, "local")
            t_dask, dask = fleet(files, sections, tmp / "out", env, "dask-local:2")
        finally:
            for f in files:
                if f.parent != tmp:
                    f.unlink(missing_ok=True)
    print()
    if t_loop is not None:
        print(f"loop (papermill + nbconvert, one after another): {t_loop:7.1f} s  ({t_loop / n:.2f} s per notebook)")
    print(f"perfbook batch --executor local:                 {t_local:7.1f} s")
    print(f"perfbook batch --executor dask-local:2:          {t_dask:7.1f} s")
    if t_loop is not None:
        print(f"ratio loop / local: {t_loop / t_local:.2f}x   loop / dask-local:2: {t_loop / t_dask:.2f}x")
    print(f"ratio local / dask-local:2: {t_local / t_dask:.2f}x (above 1: Dask faster)\n")
    print("Where the time goes:")
    where_time_goes("local", t_local, local)
    where_time_goes("dask-local:2", t_dask, dask)
    per = statistics.median(nb["duration_s"] for nb in dask["notebooks"])
    print(f"\nA fleet of 50 services × {len(sections)} sections on W worker machines of {os.cpu_count()} cores "
          f"(at {per:.1f} s per notebook, {2 * (os.cpu_count() or 1)} at a time each): about "
          f"{50 * len(sections) * per / (2 * (os.cpu_count() or 1)):.0f} s / W")
    return 0


if __name__ == "__main__":
    sys.exit(main())
