"""perfbook command line.

    perfbook list                              sections and their parameters
    perfbook check-params FILE                 validate a params file (exit 2 on error)
    perfbook run SECTION -p FILE [...]         one section → a dated report folder
    perfbook batch -p FILE [--sections a,b]    every section in parallel → a dated report folder
    perfbook demo [--scenario NAME] [--keep]   the built-in demo stack, diagnosed end to end
    perfbook demo stop                         stop a stack left up with --keep
    perfbook lab [-p FILE] [--incident ID]     JupyterLab on a workspace of its own (outputs/…-lab-…/)
    perfbook report FOLDER                     a `perfbook lab` workspace → HTML report, findings.json, index
    perfbook compare BASELINE INCIDENT         what changed since normal → compare.html/json in INCIDENT
    perfbook archive [--outputs DIR]           rebuild outputs/index.html: every run, recurring problems
    perfbook bundle RUN [-o FILE] [--zip]      a run's report as one HTML file for the postmortem
    perfbook listen --config FILE              Alertmanager's webhook starts the runs itself
    perfbook alerts export -p FILE             the params' alert rules as a Prometheus rules file
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .executors import EXECUTOR_HELP
from .params import ParamsError
from .runner import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_RUNNER_FAILED,
    BadInput,
    available_sections,
    load_params,
    notebooks_dir,
    print_error,
    rebuild_archive,
    run_batch,
)

EXIT_CODES_HELP = """exit status:
  0    every notebook ran, no critical finding
  1    critical findings, or checks that could not run (source.unreachable)
  2    bad input (params file, option, section): nothing ran
  3    a notebook failed or timed out (its HTML report is still written)
  4    perfbook itself failed (disk full, ...): the other notebooks were stopped;
       manifest.json is "failed" with the reason, and nothing unredacted is left
  130  interrupted; the run folder's manifest.json says which sections finished
"""


def cmd_list(a: argparse.Namespace) -> int:
    import papermill as pm

    for s in available_sections():
        nb = notebooks_dir() / f"{s}.ipynb"
        try:
            ps = pm.inspect_notebook(str(nb))
            knobs = ", ".join(f"{k}={v['default']}" for k, v in ps.items()
                              if k not in ("params_file", "since", "until", "incident", "overrides", "resolved_params"))
        except Exception as exc:  # noqa: BLE001
            knobs = f"(cannot inspect: {exc})"
        title = _title(nb)
        print(f"{s:<18} {title}" + (f"  [{knobs}]" if knobs and a.verbose else ""))
    return 0


def _title(nb: Path) -> str:
    import json
    try:
        cells = json.loads(nb.read_text())["cells"]
        for c in cells:
            if c["cell_type"] == "markdown":
                for line in "".join(c["source"]).splitlines():
                    if line.startswith("#"):
                        return line.lstrip("# ").strip()
    except Exception:  # noqa: BLE001
        pass
    return ""


def weak_secret_warnings(path: str, params: Any, environ: dict[str, str] | None = None) -> list[str]:
    """One line per secret (the value of a variable the params file names, as set now) that
    cannot be redacted safely: shorter than 8 characters or a common word. Such a secret is
    masked only where it stands as a secret (a DSN password, ``password=``...), never in
    ordinary text (see :class:`perfbook.report.Redactor`)."""
    from .report import Redactor, secret_weakness

    environ = os.environ if environ is None else environ
    t = params.targets
    fields = [("targets.database_env", t.database_env), ("targets.redis_env", t.redis_env),
              ("targets.prometheus.bearer_token_env", t.prometheus.bearer_token_env if t.prometheus else None)]
    out = []
    for field, name in fields:
        if not name or not environ.get(name):
            continue
        why = next((w for part in Redactor.secret_parts(environ[name]) if (w := secret_weakness(part))), None)
        if why:
            out.append(f"warning: {path}: {field}: the secret in ${name} cannot be redacted safely ({why}); "
                       "reports mask it only where it stands as a password or token: use a long random one")
    return out


def cmd_check_params(a: argparse.Namespace) -> int:
    if (a.file is None) == (a.params_opt is None):
        print("perfbook check-params: give one params file (FILE or -p FILE)", file=sys.stderr)
        return 2
    a.file = a.file or a.params_opt
    params, _ = load_params(a.file, a.set)
    for line in weak_secret_warnings(a.file, params):
        print_error(line)
    print(f"{a.file}: ok — service {params.service!r} ({params.environment}), "
          f"{len(params.endpoints)} endpoints, secrets named: {', '.join(params.env_names()) or 'none'}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    return run_batch(a.params, [a.section], incident=a.incident, since=a.since, until=a.until,
                     overrides=a.set, jobs=1, timeout=a.timeout, outputs=a.outputs, since_run=a.since_run)


def cmd_batch(a: argparse.Namespace) -> int:
    from .executors import BadExecutor, parse_executor
    from .fleet import load_fleet_file, run_fleet

    sections = [s.strip() for s in a.sections.split(",") if s.strip()] if a.sections else None
    try:
        spec = parse_executor(a.executor, a.scheduler)
    except BadExecutor as exc:
        raise BadInput(str(exc)) from None
    if bool(a.params) == bool(a.fleet):
        raise BadInput("give the services to run: -p FILE (once per service) or --fleet FILE, not both")
    if a.jobs is not None and a.jobs < 1:
        raise BadInput(f"--jobs: must be 1 or more, got {a.jobs}")
    incident = a.incident
    if a.fleet:
        entries, fleet_incident = load_fleet_file(a.fleet)
        incident = incident or fleet_incident
    else:
        entries = [(p, None) for p in a.params]
    kwargs = {"incident": incident, "since": a.since, "until": a.until, "overrides": a.set, "jobs": a.jobs,
              "timeout": a.timeout, "outputs": a.outputs, "baseline": a.baseline, "since_run": a.since_run,
              "executor": spec}
    if len(entries) == 1 and not a.fleet:   # one service: its report, as always (no fleet page)
        return run_batch(entries[0][0], sections, **kwargs)
    return run_fleet(entries, sections, **kwargs)


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo_cli import demo_main
    return demo_main(a)


def cmd_lab(a: argparse.Namespace) -> int:
    from .lab import lab_main
    return lab_main(a)


def cmd_report(a: argparse.Namespace) -> int:
    from .lab import report_main
    return report_main(a)


def cmd_alerts(a: argparse.Namespace) -> int:
    from .checks.alerts import export_notes, rules_yaml
    params, _ = load_params(a.params, a.set)
    text = rules_yaml(params)
    for note in export_notes(params):  # a rule stock prom-client cannot feed: said, not silent
        print_error(f"note: {note}")
    if a.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text, encoding="utf-8")
        print(f"wrote {a.output}")
    return 0


BATCH_FLEET_HELP = """fleets:
  perfbook batch -p api.yaml -p worker.yaml [--executor dask-local:2]
  perfbook batch --fleet params/fleet.example.yaml --executor dask --scheduler tcp://HOST:8786
  Each service gets its report folder; the fleet gets HHMMSS-fleet-<incident>/index.html, a
  services x sections grid linking into them, with findings.json and manifest.json. The exit
  status is the most serious of the services': 130, 4, 3, 1, then 0.
  On Dask each notebook runs on a worker, which reads the secrets the params name from its
  own environment and redacts there; only this machine writes under --outputs.
"""

COMPARE_HELP = """Compare an incident run with a baseline run of the same service (two folders `perfbook
batch` or `perfbook demo` wrote). Findings are matched by code and subject: new, worse, resolved,
better, unchanged; key numbers (latency per endpoint, error rate, throughput, CPU, memory,
event-loop lag, DB connections, cache hit rates, external dependencies, 429 share) side by side,
with plots. Writes compare.html and compare.json into the INCIDENT folder (compare-2.* when a
comparison is already there: nothing is overwritten) and links them from its index.html.

Recipe: perfbook demo --scenario healthy; perfbook demo; perfbook compare HEALTHY_DIR INCIDENT_DIR
"""

COMPARE_EXIT_HELP = """exit status:
  0    nothing new or worse than the baseline
  1    something is new or worse at warning, critical or error (a check that could not run)
  2    bad input: a folder that is not a finished run, or runs of different services
  4    the comparison could not be written into INCIDENT (read-only folder, full disk)
"""


def cmd_compare(a: argparse.Namespace) -> int:
    from .compare import Mismatch, exit_status, summary_lines
    from .plots.compare import comparison_figures
    from .report import NotARun, compare_runs, read_run, write_comparison

    try:
        baseline, incident = read_run(a.baseline), read_run(a.incident)
        result = compare_runs(baseline, incident)
    except (NotARun, Mismatch) as exc:
        raise BadInput(str(exc)) from None
    try:
        page = write_comparison(incident.run_dir, result, figures=comparison_figures)
    except OSError as exc:  # a read-only folder, a full disk: one line, nothing half-written
        print_error(f"{incident.run_dir}: cannot write the comparison: {exc.strerror or exc}")
        return EXIT_RUNNER_FAILED
    print("\n".join(summary_lines(result)))
    outputs = Path(incident.run_dir).resolve().parent.parent
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", Path(incident.run_dir).resolve().parent.name) and \
            (outputs / "index.html").is_file():
        rebuild_archive(outputs)   # the archive links the new comparison
    print(f"Comparison: {page.resolve()}")
    return exit_status(result)


def cmd_bundle(a: argparse.Namespace) -> int:
    from .report.bundle import BundleError, write_bundle
    from .report.files import SecretLeak

    try:
        written = write_bundle(a.run, a.output, zip_too=a.zip)
    except BundleError as exc:
        raise BadInput(str(exc)) from None
    except FileExistsError as exc:
        raise BadInput(f"{exc.filename2 or exc.filename}: exists; perfbook never overwrites a file (-o another name)") from None
    except SecretLeak as exc:
        print_error(str(exc))
        return EXIT_RUNNER_FAILED
    except OSError as exc:
        print_error(f"{a.run}: cannot write the bundle: {exc.strerror or exc}")
        return EXIT_RUNNER_FAILED
    for path in written:
        print(f"Bundle: {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_listen(a: argparse.Namespace) -> int:
    from .listen import load_config, serve

    try:
        cfg = load_config(a.config)
    except ParamsError as exc:
        raise BadInput(str(exc)) from None
    try:
        return serve(cfg)
    except OSError as exc:   # the address is taken, or not ours to bind
        raise BadInput(f"{a.config}: bind: cannot listen on {cfg.bind}: {exc.strerror or exc}") from None


def cmd_archive(a: argparse.Namespace) -> int:
    from .report.archive import write_archive

    if not Path(a.outputs).is_dir():
        raise BadInput(f"--outputs {a.outputs}: no such folder (runs are written there by perfbook batch)")
    try:
        path, n = write_archive(a.outputs)
    except OSError as exc:
        print_error(f"{a.outputs}: cannot write index.html: {exc.strerror or exc}")
        return EXIT_RUNNER_FAILED
    print(f"Archive: {path.resolve()} ({n} run folder{'s' if n != 1 else ''})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="perfbook", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The Performance Degradation Runbook, executable: parameterized notebooks run "
                    "headless with papermill into dated, self-contained HTML incident reports.",
        epilog="Start with `make demo` (or `perfbook demo`) to see a full report on the built-in demo "
               "stack.\n\n" + EXIT_CODES_HELP)
    ap.add_argument("--version", action="version", version=f"perfbook {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("list", help="list the runbook sections (notebooks)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show each notebook's own parameters")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("check-params", help="validate a params file without running anything")
    p.add_argument("file", nargs="?", help="params YAML")
    p.add_argument("-p", "--params", dest="params_opt", metavar="FILE", help="the same, as run and batch take it")
    p.add_argument("-P", "--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(fn=cmd_check_params)

    def common(p: argparse.ArgumentParser, fleet: bool = False) -> None:
        if fleet:
            p.add_argument("-p", "--params", action="append", default=[], metavar="FILE",
                           help="params YAML of a service (see params/production.example.yaml); give it once per "
                                "service to run a fleet")
        else:
            p.add_argument("-p", "--params", required=True, help="params YAML (see params/production.example.yaml)")
        p.add_argument("--incident", help="incident ID; names the report folder")
        p.add_argument("--since", help="window start: -30m, now, or ISO-8601 (overrides the params file)")
        p.add_argument("--until", help="window end: now or ISO-8601 (overrides the params file)")
        p.add_argument("-P", "--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a params field, e.g. -P settings.probes.count=50")
        env_timeout = os.environ.get("PERFBOOK_TIMEOUT")
        p.add_argument("--timeout", type=float, default=float(env_timeout) if env_timeout else None,
                       help="per-notebook timeout in seconds, for every notebook (default: each section's "
                            "expected duration, e.g. the load test's stages and recovery, + 25%% + 600 s)")
        p.add_argument("--outputs", default=os.environ.get("PERFBOOK_OUTPUTS", "outputs"),
                       help="report root (default ./outputs)")
        p.add_argument("--since-run", metavar="RUN|previous",
                       help="the database section counts pg_stat_statements and pg_stat_user_tables from the "
                            "snapshot this earlier run stored (snapshots/database.json), not since their last "
                            "reset: a run folder, or 'previous' (the latest earlier complete run of this service "
                            "and environment under --outputs); a reset in between is detected and said")

    p = sub.add_parser("run", help="run one section", epilog=EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section")
    common(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("batch", help="run every section (or --sections a,b) in parallel; several services: a fleet",
                       epilog=BATCH_FLEET_HELP + "\n" + EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p, fleet=True)
    p.add_argument("--fleet", metavar="FILE", help="a fleet file listing the services' params files, each with its "
                                                   "sections if it wants (see params/fleet.example.yaml)")
    p.add_argument("--executor", default=os.environ.get("PERFBOOK_EXECUTOR", "local"), metavar="KIND",
                   help="where the notebooks run: " + EXECUTOR_HELP.replace("%", "%%"))
    p.add_argument("--scheduler", default=os.environ.get("PERFBOOK_DASK_SCHEDULER"), metavar="tcp://HOST:8786",
                   help="the Dask scheduler of --executor dask")
    p.add_argument("--sections", help="comma-separated subset, e.g. quick-diagnostics,database")
    p.add_argument("--jobs", type=int, default=None, help="notebooks at a time (default: 2 per CPU core; they mostly wait on their sources)")
    p.add_argument("--baseline", metavar="RUN|previous|-7d",
                   help="when the batch has finished, compare it with this run, as `perfbook compare` does "
                        "(compare.html at the top of the index): a run folder; 'previous', the latest earlier "
                        "complete run of the same service and environment under --outputs; or a time shift "
                        "(-7d, -1h, -90m): the same sections on the same window that much earlier, run after "
                        "this batch from Prometheus (checks that read the present - probes, pg_stat_statements, "
                        "Redis, the load test - say so, and what they find now is 'unknown', not 'new')")
    p.set_defaults(fn=cmd_batch)

    p = sub.add_parser("demo", help="run every section on the built-in demo stack",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start PostgreSQL, Prometheus, two demo-service instances and an external-API "
                                   "stand-in on 127.0.0.1, drive traffic, run the batch, print the report path, "
                                   "stop everything.")
    p.add_argument("action", nargs="?", default="run", choices=["run", "stop", "scenarios", "env"])
    p.add_argument("--scenario", default="incident", help="incident (all faults, default), healthy, or one fault")
    p.add_argument("--keep", action="store_true", help="leave the stack up (then `make lab`, `perfbook demo stop`)")
    p.add_argument("--db-role", default="monitor", choices=["monitor", "read_all", "hypopg"],
                   help="the privilege level perfbook connects with: monitor (pg_monitor only, the default and the "
                        "README's recommendation), read_all (+ pg_read_all_data: EXPLAIN verifies index candidates), "
                        "hypopg (+ the hypopg extension, when the server has it)")
    p.add_argument("--tsdb", default="prometheus", choices=["prometheus", "victoriametrics", "both"],
                   help="the time-series database scraping the stack: prometheus (default), victoriametrics (the "
                        "engine of Fly.io's managed Prometheus), or both (the batch runs against each, same window, "
                        "and the verdicts are compared)")
    p.add_argument("--db-dir", help="where the demo keeps its PostgreSQL between runs (default: ~/.cache/perfbook/"
                                    "demo-db, /var/tmp/perfbook-demo-db-0 for root): `perfbook demo --scenario "
                                    "healthy` then `perfbook demo` run on one database, so `perfbook compare` shows "
                                    "where the database time went between the two runs")
    p.add_argument("--fresh-db", action="store_true", help="a throwaway database from the seed, not the kept one")
    p.add_argument("--services", type=int, default=1, metavar="N",
                   help="run the batch as a fleet of N services (the demo stack under N service names): "
                        "a fleet page over N reports")
    p.add_argument("--executor", default="local", metavar="KIND", help="where the notebooks run: "
                   + EXECUTOR_HELP.split(", or dask (")[0].replace("%", "%%") + "; e.g. --services 2 --executor dask-local:2")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic before the batch (default 60)")
    p.add_argument("--sections", help="comma-separated subset of sections")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--timeout", type=float, default=None, help="per-notebook timeout (default: per section)")
    p.add_argument("--outputs", default=os.environ.get("PERFBOOK_OUTPUTS", "outputs"))
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("lab", help="JupyterLab on a new investigation workspace (demo stack or -p FILE)",
                       description="Copy the section notebooks, parameters filled in, into "
                                   "outputs/YYYY-MM-DD/HHMMSS-lab-<incident>/ and open JupyterLab there (works as "
                                   "root). Without -p: the demo stack `perfbook demo --keep` left up, or a new one "
                                   "that stops when Lab exits. Afterwards: perfbook report FOLDER.")
    p.add_argument("-p", "--params", help="params YAML of the service to investigate (default: a demo stack)")
    p.add_argument("--incident", help="incident ID; names the workspace folder")
    p.add_argument("--since", help="window start for every notebook: -30m, now, or ISO-8601")
    p.add_argument("--until", help="window end: now or ISO-8601")
    p.add_argument("-P", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params field")
    p.add_argument("--port", type=int, default=0, help="Lab's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--open", action="store_true", help="open a browser on this machine")
    p.add_argument("--scenario", default="incident", help="the demo stack's scenario when one is started")
    p.add_argument("--outputs", default=os.environ.get("PERFBOOK_OUTPUTS", "outputs"),
                   help="where the workspace folder goes (default ./outputs)")
    p.set_defaults(fn=cmd_lab)

    p = sub.add_parser("report", help="turn a `perfbook lab` workspace into an HTML report with findings.json and index")
    p.add_argument("folder", help="the workspace folder `perfbook lab` printed")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("compare", help="what changed since normal: an incident run vs a baseline run",
                       description=COMPARE_HELP, epilog=COMPARE_EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", help="run folder of normal operation (e.g. `perfbook demo --scenario healthy`)")
    p.add_argument("incident", help="run folder of the incident; compare.html and compare.json are written here")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("archive", help="rebuild outputs/index.html: every run, newest first, and recurring problems",
                       description="Rebuild the archive index, outputs/index.html: every run under --outputs, newest "
                                   "first, grouped by service and environment (date, incident, window, worst severity, "
                                   "counts, the codes found, status, links), with the problems found in several of a "
                                   "service's last runs above. Every batch rebuilds it when it ends; this command is "
                                   "for folders copied in or removed by hand. It reads only each run's manifest.json "
                                   "and findings.json.")
    p.add_argument("--outputs", default=os.environ.get("PERFBOOK_OUTPUTS", "outputs"))
    p.set_defaults(fn=cmd_archive)

    p = sub.add_parser("bundle", help="a run's report as one HTML file to attach to a postmortem (--zip: + notebooks)",
                       description="Write a run's report as one self-contained HTML file: the index, every section "
                                   "and the comparisons one after the other with a navigation bar, images inline, "
                                   "code folded, offline and script-free like the pages. For a postmortem document, "
                                   "a ticket or an e-mail. Never overwrites a file.")
    p.add_argument("run", help="the run folder (perfbook batch printed it: the folder of Report: …/index.html)")
    p.add_argument("-o", "--output", help="the file to write (default: RUN/perfbook-<run>.html)")
    p.add_argument("--zip", action="store_true", help="also a .zip beside it with the executed notebooks, "
                                                      "findings.json, manifest.json (and compare.json, snapshots)")
    p.set_defaults(fn=cmd_bundle)

    p = sub.add_parser("listen", help="receive Alertmanager's webhook: a firing alert starts a batch by itself",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="An HTTP receiver for Prometheus Alertmanager webhooks (payload version 4). A "
                                   "firing alert whose labels match a route of --config starts `perfbook batch` on "
                                   "that route's params over [startsAt - lookback, now], once per alert group and "
                                   "firing episode; the report lands in outputs/ and its archive index. See "
                                   "params/listen.example.yaml and the README (wiring it into Alertmanager).")
    p.add_argument("--config", required=True, help="the listen config (YAML): bind, token_env, routes")
    p.set_defaults(fn=cmd_listen)

    p = sub.add_parser("alerts", help="alert rules: export the params' thresholds as Prometheus rules")
    p.add_argument("action", choices=["export"])
    p.add_argument("-p", "--params", required=True)
    p.add_argument("-o", "--output", default="-")
    p.add_argument("-P", "--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(fn=cmd_alerts)
    return ap


def _shift_values(argv: list[str]) -> list[str]:
    """``--baseline -7d`` as ``--baseline=-7d``: argparse takes a value starting with ``-`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--baseline" and i + 1 < len(argv) and re.fullmatch(r"-\d+(?:\.\d+)?[smhdw]", argv[i + 1]):
            out.append(f"--baseline={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(_shift_values(sys.argv[1:] if argv is None else argv))
    if not getattr(a, "fn", None):
        ap.print_help()
        return EXIT_BAD_INPUT
    try:
        return a.fn(a)
    except (ParamsError, BadInput) as exc:
        print_error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
