"""The archive index at 1,000 runs: rebuild time and page size, beside what a user would
otherwise do to see every run — read every run's findings.json and manifest.json (the
floor: the archive reads nothing else) — side by side in one process run.

    .venv/bin/python benchmarks/archive.py [--runs 1000] [--findings 80] [--services 5]

Writes synthetic runs (the demo incident's size: ~80 findings each, 5 services, a few
broken folders) into a temporary outputs/, then prints the rebuild time, the page size and
the ratio rebuild / read-only.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from perfbook.report import archive  # noqa: E402

CODES = ["db.missing_index", "db.n_plus_one", "latency.slo_breach", "errors.high_rate", "cache.low_hit_rate",
         "cpu.saturation", "memory.growth", "external.slow", "ratelimit.rejections", "db.bloat"]


def make(outputs: Path, runs: int, findings: int, services: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(runs):
        day = f"2026-{1 + i // 300 % 12:02d}-{1 + i // 10 % 28:02d}"
        d = outputs / day / f"{i % 24:02d}{i % 60:02d}{i % 59:02d}-inc-{i}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 200 == 7:
            continue                                      # half-written: no manifest
        manifest = {"status": "complete" if i % 50 else "interrupted", "service": f"svc-{i % services}",
                    "environment": "prod", "started": f"{day}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}+00:00",
                    "incident": f"inc-{i}", "header": {"window (UTC)": f"{day} 10:00 → {day} 10:30 (30 min)"},
                    "notebooks": [{"section": s, "status": "ok"} for s in ("database", "bottlenecks")]}
        (d / "manifest.json").write_text(json.dumps(manifest))
        (d / "findings.json").write_text(json.dumps([
            {"code": rng.choice(CODES), "severity": rng.choice(["ok", "ok", "info", "warning", "critical"]),
             "subject": f"subject-{rng.randrange(20)}", "section": "database", "title": "x" * 120,
             "evidence": {"value": rng.random(), "query": "SELECT … " * 10}, "recommendation": "y" * 300}
            for _ in range(findings)]))


def read_only(outputs: Path) -> int:
    n = 0
    for p in outputs.glob("*/*/manifest.json"):
        json.loads(p.read_text())
        f = p.parent / "findings.json"
        if f.exists():
            json.loads(f.read_text())
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=80)
    ap.add_argument("--services", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        make(out, a.runs, a.findings, a.services)
        read_only(out)                                   # warm the page cache for both
        t0 = time.perf_counter()
        n = read_only(out)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        path, listed = archive.write_archive(out)
        t_build = time.perf_counter() - t0
        size = path.stat().st_size
    print(f"{a.runs} run folders ({n} with a manifest), {a.findings} findings each, {a.services} services")
    print(f"  read every manifest.json + findings.json : {t_read:6.2f} s")
    print(f"  perfbook archive (read + page + write)   : {t_build:6.2f} s  ({listed} folders listed)")
    print(f"  ratio archive / read-only                : {t_build / t_read:6.2f} x")
    print(f"  page size                                : {size / 1e6:6.2f} MB ({size / max(listed, 1) / 1e3:.1f} kB per run)")


if __name__ == "__main__":
    main()
