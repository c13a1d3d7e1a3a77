"""Manual use of the demo stack, without the report (``perfbook demo`` is the real entry).

    python -m perfbook.demo up [--scenario NAME] [--duration S] [--instances N] [--params FILE]
    python -m perfbook.demo stop
    python -m perfbook.demo scenarios

``up`` starts the stack, drives traffic, writes the params file, prints addresses and
leaves it running; ``stop`` ends the recorded stack.
"""
from __future__ import annotations

import argparse
import sys

from perfbook.demo import scenarios
from perfbook.demo.stack import Stack


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfbook.demo")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--scenario", default="incident", choices=list(scenarios.SCENARIOS))
    up.add_argument("--duration", type=float, default=30.0)
    up.add_argument("--instances", type=int, default=2)
    up.add_argument("--params", default=None)
    up.add_argument("--no-cache", action="store_true")
    sub.add_parser("stop")
    sub.add_parser("scenarios")
    a = ap.parse_args(argv)
    if a.cmd == "scenarios":
        for s in scenarios.SCENARIOS.values():
            print(f"{s.name:28s} {', '.join(sorted(s.faults)) or '-'}")
        return 0
    if a.cmd == "stop":
        try:
            Stack.load_state().stop()
        except FileNotFoundError as exc:
            print(exc)
            return 1
        print("stopped")
        return 0
    stack = Stack(a.scenario, instances=a.instances, keep=True, use_cache=not a.no_cache, log=print)
    with stack:
        print(stack.timings)
        print(stack.describe())
        if a.duration > 0:
            def progress(done, total, stats):
                sys.stdout.write(f"\rtraffic {done:5.1f}/{total:.0f} s  {stats.requests} requests")
                sys.stdout.flush()
            st = stack.drive(a.duration, progress=progress)
            print("\n" + st.summary())
        path = stack.write_params(a.params or stack.state_dir / "params.yaml")
        print(f"params: {path}")
        for k, v in stack.env().items():
            print(f"export {k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
