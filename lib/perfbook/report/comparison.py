"""Two runs compared (``perfbook compare``): reading a finished run folder, the comparison
page and writing it into the later run, whose index then links it.
"""
from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..findings import Finding
from .files import (
    replace_file,
    write_new,
)
from .pages import (
    SEV_STYLE,
    checklist_index_html,
    index_html,
)
from .redaction import (
    CLIP,
    Redactor,
    active_redactor,
    clip,
)

# --------------------------------------------------------------------------- compare (two runs)


class NotARun(ValueError):
    """A folder given to ``perfbook compare`` is not a finished run folder (one line, exit 2)."""


def _read_json(path: Path, folder: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotARun(f"{folder}: no {path.name}: not a perfbook run folder (or a run still running)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotARun(f"{folder}: {path.name} cannot be read: {clip(str(exc), 200)}") from None


def read_run(folder: str | Path) -> Any:
    """The :class:`perfbook.compare.Run` a run folder holds (its manifest.json and findings.json);
    :class:`NotARun` naming the folder and what is wrong otherwise.

    The service identity is the manifest's top-level ``service``/``environment`` (runs since
    issue 15), else its header's, else its params' (older runs): see
    :func:`perfbook.compare.service_identity`."""
    from ..compare import Run, service_identity

    d = Path(folder)
    if not d.exists():
        raise NotARun(f"{folder}: no such folder")
    if not d.is_dir():
        raise NotARun(f"{folder}: not a folder")
    manifest = _read_json(d / "manifest.json", d)
    if isinstance(manifest, dict) and manifest.get("kind") == "fleet":
        raise NotARun(f"{folder}: a fleet's folder; give one service's run folder (the fleet page links them)")
    if not isinstance(manifest, dict) or "notebooks" not in manifest:
        raise NotARun(f"{folder}: manifest.json is not a perfbook run manifest")
    if manifest.get("status") == "running":
        raise NotARun(f"{folder}: this run is still running (manifest.json status 'running')")
    findings = _read_json(d / "findings.json", d)
    if not isinstance(findings, list) or not all(isinstance(f, dict) and "code" in f and "severity" in f
                                                 for f in findings):
        raise NotARun(f"{folder}: findings.json is not a list of findings")
    service, environment = service_identity(manifest)
    ok = frozenset(nb.get("section") for nb in manifest.get("notebooks", [])
                   if isinstance(nb, dict) and nb.get("status") == "ok")
    snapshots = {}
    for path in sorted((d / "snapshots").glob("*.json")):
        try:
            snapshots[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a damaged snapshot: the comparison goes on without it
    return Run(folder=d.resolve().name, run_dir=str(d.resolve()), service=service, environment=environment,
               started=manifest.get("started"), status=manifest.get("status"), findings=findings,
               sections_ok=ok, snapshots=snapshots, time_shift=manifest.get("time_shift"))


#: Statements and tables listed in "where the database time went".
DATABASE_TOP = 10


def database_between(baseline: Any, incident: Any, top: int = DATABASE_TOP) -> dict[str, Any] | None:
    """Where the database's time went between two runs (:class:`perfbook.compare.Run`), from
    their snapshots (:func:`perfbook.checks.database.window.database_window`); None when either
    has none (its database section did not run, or predates snapshots)."""
    from ..checks.database.window import database_window, is_snapshot

    b, i = baseline.snapshots.get("database"), incident.snapshots.get("database")
    if not (is_snapshot(b) and is_snapshot(i)):
        return None
    return database_window(b, i, top)


def compare_runs(baseline: Any, incident: Any) -> dict[str, Any]:
    """:func:`perfbook.compare.compare` of two runs read by :func:`read_run`, with where the
    database time went between them (``perfbook compare``, ``batch --baseline``)."""
    from ..compare import compare

    return compare(baseline, incident, database=database_between(baseline, incident))


def previous_run(outputs: str | Path, service: str, environment: str, *, exclude: str | Path | None = None,
                 before: str | None = None) -> Any:
    """The latest earlier complete run of ``service`` in ``environment`` under ``outputs``
    (``outputs/YYYY-MM-DD/HHMMSS-label/``), as :func:`read_run` reads it: the baseline
    ``perfbook batch --baseline previous`` compares with. ``exclude``: the run being made;
    ``before``: only runs started before this ISO time. :class:`NotARun` when there is none.
    Folders that are not finished runs (lab workspaces, interrupted or failed runs) and
    time-shifted baselines (``--baseline -7d``: an earlier window, made later) are skipped."""
    skip = Path(exclude).resolve() if exclude else None
    best = None
    for manifest in Path(outputs).glob("*/*/manifest.json"):
        folder = manifest.parent
        if skip is not None and folder.resolve() == skip:
            continue
        try:
            run = read_run(folder)
        except NotARun:
            continue
        if (run.status != "complete" or run.time_shift or (run.service, run.environment) != (service, environment)
                or not run.started or (before and str(run.started) >= before)):
            continue
        if best is None or str(run.started) > str(best.started):
            best = run
    if best is None:
        raise NotARun(f"{outputs}: no earlier complete run of {service} ({environment}) to compare with; "
                      "run a batch on a normal day first, or give --baseline RUN_FOLDER")
    return best


def run_redactor(run_dir: str | Path) -> Redactor:
    """A redactor for a written run folder: this process's, plus the values of the environment
    variables its manifest's params name (as set now)."""
    try:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
        t = (manifest.get("params") or {}).get("targets") or {}
        names = [t.get("database_env"), t.get("redis_env"), (t.get("prometheus") or {}).get("bearer_token_env")]
    except (OSError, ValueError, AttributeError):
        names = []
    names += os.environ.get("PERFBOOK_REDACT_ENV", "").split(",")
    return Redactor.for_env(sorted({n for n in names if isinstance(n, str) and n}))


def _figure_img(fig: Any, alt: str) -> str:
    """A Figure as an inline PNG (a data: URI: the page stays self-contained)."""
    import base64
    import io

    if fig is None:
        return ""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<p><img alt='{html.escape(alt)}' style='max-width:100%' src='data:image/png;base64,{data}'></p>"


def _fmt_key(v: Any, unit: str) -> str:
    from ..compare import fmt
    return fmt(v, unit)


def _rel(r: Any) -> str:
    return "" if r is None else f"{r:+.0%}"


def _when(iso: Any) -> str:
    """An ISO-8601 time as ``YYYY-MM-DD HH:MM:SS UTC`` (the text as is when it is not one)."""
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso or "—")
    return t.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if t.tzinfo else t.strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {"new": SEV_STYLE["critical"], "worse": SEV_STYLE["warning"], "resolved": SEV_STYLE["ok"],
                "better": SEV_STYLE["ok"], "unchanged": ("#666", "#f4f4f4"), "unknown": SEV_STYLE["error"],
                "quiet": ("#666", "#fff")}


#: ``figures(comparison) -> [(matplotlib Figure or None, alt text), ...]``: the plots of a
#: comparison, drawn from its redacted data by the caller (the plots live above this layer).
Figures = Callable[[dict[str, Any]], list[tuple[Any, str]]]


def _count(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _share(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def database_html(db: dict[str, Any] | None) -> str:
    """"Where the database time went between the two runs" (compare.json's ``database``)."""
    from ..checks.database.window import window_notes

    e = html.escape
    if not db:
        return ("<p>Not known: a run without a database snapshot (its database section did not run, or it "
                "predates snapshots).</p>")
    if not db.get("comparable"):
        return f"<p>No window between the two runs: {e(str(db.get('reason')))}.</p>"
    notes = window_notes(db)
    since_text = {"new": "new since the baseline", "not in baseline": "at most (outside the baseline's top)",
                  "reset": "since a reset"}
    srows = "".join(
        f"<tr><td>{e(_share(r.get('share')))}</td>"
        f"<td>{e(_count(r.get('calls')))}</td><td>{e(_fmt_key(r.get('total_ms'), 'ms'))}</td>"
        f"<td>{e(_fmt_key(r.get('mean_ms'), 'ms'))}</td><td>{e(_count(r.get('rows')))}</td>"
        f"<td><code>{e(clip(r.get('query') or '', CLIP['subject']))}</code></td>"
        f"<td>{e(since_text.get(r.get('since') or '', ''))}</td></tr>" for r in db.get("statements", []))
    trows = "".join(
        f"<tr><td>{e(str(r.get('schema')))}.{e(str(r.get('table')))}</td><td>{e(_count(r.get('seq_scan')))}</td>"
        f"<td>{e(_count(r.get('seq_tup_read')))}</td><td>{e(_count(r.get('idx_scan')))}</td>"
        f"<td>{e(_count(r.get('n_live_tup')))}</td></tr>" for r in db.get("tables", []))
    return (f"<p><b>{e(db.get('headline') or 'No statement ran between the two runs.')}</b> "
            f"{e(_count(db.get('calls')))} calls and {e(_fmt_key(db.get('total_ms'), 'ms'))} of statement time in "
            f"all, from {e(_when(db.get('baseline_taken_at')))} to {e(_when(db.get('taken_at')))}.</p>"
            + "".join(f"<p style='background:#fff6e0;padding:6px'>{e(n)}</p>" for n in notes)
            + "<table><tr><th>share of time</th><th>calls</th><th>total</th><th>mean</th><th>rows</th>"
              f"<th>statement</th><th></th></tr>{srows or '<tr><td colspan=7>None.</td></tr>'}</table>"
            + "<table><tr><th>table</th><th>sequential scans</th><th>rows read sequentially</th>"
              f"<th>index scans</th><th>live rows (now)</th></tr>{trows or '<tr><td colspan=5>None.</td></tr>'}"
              "</table>")


def compare_html(comparison: dict[str, Any], redact: Redactor | None = None, figures: Figures | None = None) -> str:
    """compare.html: one page for 3 a.m. — the headline, new and worse (both numbers), resolved
    and better, the key numbers side by side, the plots (``figures``), unchanged collapsed."""
    e = html.escape
    redact = redact or active_redactor()
    c = redact.obj(comparison)
    base, inc = c["baseline"], c["incident"]

    def change_rows(items: list[dict[str, Any]]) -> str:
        rows = []
        for x in items:
            fg, bg = STATUS_STYLE[x["status"]]
            sev = x["severity"]
            k = x.get("key")
            num = (f"{e(k['name'])}: <b>{e(_fmt_key(k['baseline'], k['unit']))}</b> → "
                   f"<b>{e(_fmt_key(k['incident'], k['unit']))}</b> {e(_rel(k.get('relative')))}") if k else ""
            title = x["title"]["incident"] or x["title"]["baseline"] or ""
            rows.append(
                f"<tr style='background:{bg}'><td style='color:{fg};font-weight:bold'>{e(x['status'].upper())}</td>"
                f"<td>{e(sev['baseline'] or '—')} → {e(sev['incident'] or '—')}</td>"
                f"<td><code>{e(x['code'])}</code></td><td>{e(clip(x['subject'] or '—', CLIP['subject']))}</td>"
                f"<td>{num}</td><td>{e(clip(title, CLIP['title']))}"
                f"<div style='font-size:.85em;color:#666'>{e(', '.join(x['sections']))}</div></td></tr>")
        head = ("<tr><th>status</th><th>severity (baseline → incident)</th><th>code</th><th>subject</th>"
                "<th>key number (baseline → incident)</th><th>finding</th></tr>")
        return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>None.</p>"

    by = {s: [x for x in c["changes"] if x["status"] == s] for s in c["counts"]}
    attention = by.get("new", []) + by.get("worse", [])
    settled = by.get("resolved", []) + by.get("better", []) + by.get("unknown", [])
    krows = []
    for r in c["key_numbers"]:
        colour = {"worse": "#c62828", "better": "#2e7d32"}.get(r["change"], "#444")
        krows.append(f"<tr><td>{e(r['group'])}</td><td>{e(r['metric'])}</td>"
                     f"<td>{e(clip(r['subject'] if r['subject'] is not None else 'worst / overall', CLIP['subject']))}</td>"
                     f"<td>{e(_fmt_key(r['baseline'], r['unit']))}</td><td>{e(_fmt_key(r['incident'], r['unit']))}</td>"
                     f"<td>{e(_rel(r['relative']))}</td><td style='color:{colour};font-weight:bold'>{e(r['change'])}</td></tr>")
    plots = "".join(_figure_img(fig, alt) for fig, alt in (figures(c) if figures else []))
    n_attention = len(attention)
    fg, bg = SEV_STYLE["critical"] if n_attention else SEV_STYLE["ok"]
    notes = "".join(f"<p style='background:#fff6e0;padding:6px'>Note: {e(n)}</p>" for n in c.get("notes", []))
    tol = c["tolerance"]
    meta = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{e(label)}</th><td>{e(r['folder'])}</td>"
        f"<td>{e(_when(r.get('started')))}</td><td>{e(str(r.get('service')))} ({e(str(r.get('environment')))})</td>"
        f"<td style='font-size:.85em;color:#666'>{e(r['run_dir'])}</td></tr>"
        for label, r in (("baseline", base), ("incident", inc)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>perfbook compare — {e(str(inc.get('service')))} — {e(inc['folder'])} vs {e(base['folder'])}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1200px; margin: 0 auto; padding: 12px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 18px; }}
td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top; text-align: left; }}
.verdict {{ font-size: 1.3em; padding: 10px 14px; border-left: 8px solid {fg}; background: {bg}; }}
</style></head><body>
<p><a href='index.html'>&larr; this run's report</a></p>
<h1>What changed since the baseline</h1>
<table style="width:auto">{meta}</table>
<div class="verdict">{e(c['headline'])}</div>
{notes}
<h2>New and worse ({n_attention})</h2>
{change_rows(attention)}
<h2>Resolved and better ({len(settled)})</h2>
{change_rows(settled)}
<h2>Key numbers side by side</h2>
<table><tr><th>group</th><th>metric</th><th>subject</th><th>baseline</th><th>incident</th><th>change</th><th></th></tr>
{''.join(krows) or '<tr><td colspan=7>No key number in either run.</td></tr>'}</table>
<h2>Baseline vs incident</h2>
{plots or '<p>Nothing to plot.</p>'}
<h2>Where the database time went between the two runs</h2>
{database_html(c.get('database'))}
<details><summary>Unchanged problems ({len(by.get('unchanged', []))})</summary>{change_rows(by.get('unchanged', []))}</details>
<details><summary>No problem in either run ({len(by.get('quiet', []))} code/subject pairs)</summary>{change_rows(by.get('quiet', []))}</details>
<p style="color:#666;font-size:.85em">Findings are matched by code and subject. A number has moved when it changed by more
than {tol['relative']:.0%} of the baseline and by more than its unit's floor
({e(', '.join(f'{k} {v:g}' for k, v in tol['floors'].items()))}). compare.json holds every row.</p>
</body></html>"""


def comparison_name(run_dir: Path) -> str:
    """``compare``, else ``compare-2``, ``compare-3``...: the first stem with neither file yet."""
    for n in range(1, 1000):
        stem = "compare" if n == 1 else f"compare-{n}"
        if not (run_dir / f"{stem}.html").exists() and not (run_dir / f"{stem}.json").exists():
            return stem
    raise RuntimeError(f"{run_dir}: too many comparisons")


def write_comparison(run_dir: str | Path, comparison: dict[str, Any], redact: Redactor | None = None,
                     figures: Figures | None = None) -> Path:
    """Write compare.json and compare.html into the incident's run folder, never overwriting:
    when a comparison is already there, the next is compare-2.json/.html, and so on. Both files
    are written atomically (:func:`write_new`); then the index is written again with a link to
    every comparison (:func:`refresh_index`). Returns the HTML page's path."""
    run_dir = Path(run_dir)
    redact = redact or run_redactor(run_dir)
    data = redact.obj(comparison)
    page = compare_html(data, redact, figures)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    for _ in range(100):
        stem = comparison_name(run_dir)
        try:
            write_new(run_dir / f"{stem}.json", text, redact)
        except FileExistsError:
            continue  # another compare took the name between the check and the link: next one
        try:
            write_new(run_dir / f"{stem}.html", page, redact)
        except FileExistsError:
            os.unlink(run_dir / f"{stem}.json")
            continue
        break
    else:
        raise RuntimeError(f"{run_dir}: could not claim a comparison name")
    refresh_index(run_dir, redact)
    return run_dir / f"{stem}.html"


def comparisons_in(run_dir: str | Path) -> list[dict[str, Any]]:
    """The comparisons written into a run folder: ``{"html", "json", "headline", "baseline"}`` each."""
    out = []
    for p in sorted(Path(run_dir).glob("compare*.json"),
                    key=lambda p: (len(p.stem), p.stem)):
        if not re.fullmatch(r"compare(-\d+)?", p.stem) or not p.with_suffix(".html").exists():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out.append({"html": p.with_suffix(".html").name, "json": p.name, "headline": data.get("headline", ""),
                    "baseline": (data.get("baseline") or {}).get("folder", "")})
    return out


def refresh_index(run_dir: str | Path, redact: Redactor | None = None) -> Path:
    """Write a finished run's index.html again from its manifest.json and findings.json (the
    run's own status file, replaced atomically), now with a link to each comparison."""
    run_dir = Path(run_dir)
    redact = redact or run_redactor(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    findings = [Finding.from_dict(f) for f in json.loads((run_dir / "findings.json").read_text(encoding="utf-8"))]
    # The runner's order (sections in runbook order; findings.json is sorted worst first), so the
    # checklist summary picks the same finding per item as the batch did.
    order = {nb.get("section"): n for n, nb in enumerate(manifest.get("notebooks", []))}
    findings.sort(key=lambda f: order.get(f.section, len(order)))
    manifest["checklist_html"] = checklist_index_html(findings)  # as the runner does at the end of a batch
    manifest["comparisons"] = comparisons_in(run_dir)
    return replace_file(run_dir / "index.html", index_html(manifest, findings, redact), redact)
