"""perfbook batch vs the loop a user would otherwise write, side by side in one run.

The loop: for each notebook, `papermill NB OUT -p ...` then `jupyter nbconvert --to html OUT`,
one after another. perfbook: `perfbook batch` (parallel processes, HTML export in the same
process as the execution). Same notebooks, same params, same machine, same run.

    .venv/bin/python benchmarks/batch.py -p params/demo.yaml [--sections a,b] [--repeat 1]

Prints per-notebook timings (kernel+execution, export) and the ratio loop / perfbook.
Start the demo stack first (`perfbook demo --keep`) for numbers on real data; against no stack the
notebooks still run (every source unreachable), which measures the runner's own overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def loop(sections: list[str], params: Path, out: Path) -> tuple[float, list[dict]]:
    rows = []
    t0 = time.monotonic()
    for s in sections:
        nb_out = out / f"{s}.ipynb"
        a = time.monotonic()
        subprocess.run([str(BIN / "papermill"), str(ROOT / "notebooks" / f"{s}.ipynb"), str(nb_out),
                        "-p", "params_file", str(params), "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"],
                       check=False, capture_output=True)
        b = time.monotonic()
        subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "html", str(nb_out)], check=False,
                       capture_output=True)
        c = time.monotonic()
        rows.append({"section": s, "execute_s": b - a, "export_s": c - b})
    return time.monotonic() - t0, rows


def perfbook(sections: list[str], params: Path, out: Path, jobs: int | None) -> tuple[float, list[dict]]:
    cmd = [str(BIN / "perfbook"), "batch", "-p", str(params), "--sections", ",".join(sections),
           "--outputs", str(out)] + (["--jobs", str(jobs)] if jobs else [])
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    run_dir = Path([l for l in res.stdout.splitlines() if l.startswith("Report: ")][-1][8:]).parent
    m = json.loads((run_dir / "manifest.json").read_text())
    rows = [{"section": n["section"], "execute_s": n["timings"].get("execute_s", float("nan")),
             "export_s": n["timings"].get("export_s", float("nan")), "process_s": n["duration_s"]}
            for n in m["notebooks"]]
    return wall, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--params", type=Path, default=ROOT / "params" / "demo.yaml")
    ap.add_argument("--sections", default="")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "lib"))
    from perfbook.runner import available_sections
    sections = [s for s in args.sections.split(",") if s] or available_sections()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "loop").mkdir()
        t_loop, rows_loop = loop(sections, args.params.resolve(), tmp / "loop")
        t_pb, rows_pb = perfbook(sections, args.params.resolve(), tmp / "pb", args.jobs)
    print(f"{len(sections)} notebooks on {os.cpu_count()} cores, params {args.params}")
    print(f"{'section':<20}{'loop exec':>10}{'loop html':>10}{'pb exec':>10}{'pb html':>10}")
    by = {r["section"]: r for r in rows_pb}
    for r in rows_loop:
        p = by.get(r["section"], {})
        print(f"{r['section']:<20}{r['execute_s']:>10.2f}{r['export_s']:>10.2f}"
              f"{p.get('execute_s', float('nan')):>10.2f}{p.get('export_s', float('nan')):>10.2f}")
    print(f"\nloop (papermill CLI + jupyter nbconvert, sequential): {t_loop:.1f} s")
    print(f"perfbook batch:                                      {t_pb:.1f} s")
    print(f"ratio: perfbook is {t_loop / t_pb:.2f}x faster (goal >= 2.5x with >= 4 notebooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
