"""The archive index: ``outputs/index.html``, every run under ``outputs/`` newest first,
grouped by service and environment, with the problems that keep coming back above.

Rebuilt after every batch and by ``perfbook archive``. It reads only each run's
``manifest.json`` and ``findings.json`` (both written redacted), never a notebook; a folder
that is half-written, unreadable or still running is listed as such and never stops the
rebuild. Offline and script-free, like the reports (the same Content-Security-Policy).
"""
from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..findings import severity_rank, worst
from .files import replace_file
from .pages import SEV_STYLE
from .redaction import CLIP, clip

#: Recurring problems: a (code, subject) found needing attention in at least RECURRING_MIN
#: of a service's last RECURRING_LAST runs (complete or interrupted, not time-shifted).
RECURRING_LAST = 6
RECURRING_MIN = 2
#: Codes listed per run in the table; the rest are counted ("+4 more").
CODES_PER_ROW = 12
NEEDS_ATTENTION = ("critical", "error", "warning")
#: The file that marks a `perfbook lab` workspace (perfbook.lab writes it).
LAB_MARK = "perfbook-lab.json"
#: The (service, environment) the archive lists fleet folders under (``perfbook batch -p a -p b``).
FLEET_GROUP = ("Fleet runs", "several services")


@dataclass
class ArchivedRun:
    """One folder under ``outputs/<date>/``, as the archive lists it."""
    path: str                        # relative to outputs/, with forward slashes
    status: str                      # complete / interrupted / failed / running / half-written / unreadable
    service: str = "—"
    environment: str = "—"
    started: str = ""                # ISO time; the folder's date and name when unknown
    incident: str = ""
    window: str = ""
    counts: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)   # (severity, code, subject), worst first
    comparisons: list[str] = field(default_factory=list)
    time_shift: str = ""
    note: str = ""

    @property
    def worst(self) -> str:
        return worst(self.counts) if self.counts else ("error" if self.status in ("failed", "unreadable") else "ok")


def _read(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_folder(outputs: Path, folder: Path) -> ArchivedRun:
    """What one run folder holds, never raising: a broken folder says what is wrong."""
    from ..compare import service_identity
    from .comparison import comparisons_in

    rel = folder.relative_to(outputs).as_posix()
    n = folder.name
    started = f"{folder.parent.name}T{n[:2]}:{n[2:4]}:{n[4:6]}" if n[:6].isdigit() else folder.parent.name
    run = ArchivedRun(rel, "half-written", started=started)
    try:
        manifest = _read(folder / "manifest.json")
    except FileNotFoundError:
        if (folder / LAB_MARK).is_file():
            run.status, run.note = "lab workspace", "no report yet: `perfbook report` on this folder makes one"
        else:
            run.note = "no manifest.json: the run stopped before it wrote one"
        return run
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        run.status, run.note = "unreadable", f"manifest.json: {str(exc)[:160]}"
        return run
    if isinstance(manifest, dict) and manifest.get("kind") == "fleet" and isinstance(manifest.get("services"), list):
        return _fleet_folder(folder, run, manifest)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("notebooks"), list):
        run.status, run.note = "unreadable", "manifest.json is not a perfbook run manifest"
        return run
    service, environment = service_identity(manifest)
    head = manifest.get("header") if isinstance(manifest.get("header"), dict) else {}
    run.service, run.environment = service or "—", environment or "—"
    run.status = str(manifest.get("status") or "unknown")
    run.started = str(manifest.get("started") or run.started)
    run.incident = str(manifest.get("incident") or "")
    run.window = str(head.get("window (UTC)") or "")
    run.time_shift = str(manifest.get("time_shift") or "")
    run.comparisons = [c["html"] for c in comparisons_in(folder)]
    try:
        findings = _read(folder / "findings.json")
    except FileNotFoundError:
        run.note = "no findings.json yet" if run.status == "running" else "no findings.json"
        return run
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        run.note = f"findings.json: {str(exc)[:160]}"
        return run
    if not isinstance(findings, list):
        run.note = "findings.json is not a list of findings"
        return run
    seen = set()
    for f in findings:
        if not isinstance(f, dict) or not isinstance(f.get("severity"), str):
            continue
        sev = f["severity"]
        run.counts[sev] += 1
        key = (str(f.get("code", "?")), str(f.get("subject") or ""))
        if sev in NEEDS_ATTENTION and key not in seen:
            seen.add(key)
            run.problems.append((sev, *key))
    run.problems.sort(key=lambda p: (-severity_rank(p[0]), p[1], p[2]))
    return run


def _fleet_folder(folder: Path, run: ArchivedRun, manifest: dict[str, Any]) -> ArchivedRun:
    """A fleet run's folder: listed under "Fleet runs" with its services' counts; its problems
    are each service's own (counted once, in the services' runs, never twice in recurring)."""
    run.service, run.environment = FLEET_GROUP
    run.status = str(manifest.get("status") or "unknown")
    run.started = str(manifest.get("started") or run.started)
    run.incident = str(manifest.get("incident") or "")
    names = [f"{s.get('service')} ({s.get('environment')})" for s in manifest["services"] if isinstance(s, dict)]
    run.note = f"{len(names)} services: {', '.join(names)}"
    try:
        findings = _read(folder / "findings.json")
    except (OSError, UnicodeDecodeError, ValueError):
        return run
    for f in findings if isinstance(findings, list) else []:
        if isinstance(f, dict) and isinstance(f.get("severity"), str):
            run.counts[f["severity"]] += 1
    return run


def scan(outputs: str | Path) -> list[ArchivedRun]:
    """Every run folder (``outputs/<YYYY-MM-DD>/<name>/``), newest first."""
    outputs = Path(outputs)
    runs = []
    for day in outputs.iterdir() if outputs.is_dir() else ():
        if not day.is_dir() or len(day.name) != 10 or day.name.count("-") != 2:
            continue
        for folder in day.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                runs.append(read_folder(outputs, folder))
    return sorted(runs, key=lambda r: (r.started, r.path), reverse=True)


def recurring(runs: list[ArchivedRun], last: int = RECURRING_LAST, least: int = RECURRING_MIN) -> list[dict[str, Any]]:
    """Per service: the (code, subject) pairs found needing attention in at least ``least``
    of its ``last`` runs (newest first in ``runs``), most often first."""
    out = []
    by_service: dict[tuple[str, str], list[ArchivedRun]] = defaultdict(list)
    for r in runs:
        if r.status in ("complete", "interrupted") and not r.time_shift and (r.service, r.environment) != FLEET_GROUP:
            by_service[(r.service, r.environment)].append(r)
    for (service, environment), rs in by_service.items():
        recent = rs[:last]
        seen: dict[tuple[str, str], list[ArchivedRun]] = defaultdict(list)
        worst_of: dict[tuple[str, str], str] = {}
        for r in recent:
            for sev, code, subject in r.problems:   # each (code, subject) once per run
                seen[(code, subject)].append(r)
                worst_of[(code, subject)] = worst([worst_of.get((code, subject), "ok"), sev])
        for (code, subject), found in seen.items():
            if len(found) >= least:
                out.append({"service": service, "environment": environment, "code": code, "subject": subject,
                            "runs": len(found), "of": len(recent), "severity": worst_of[(code, subject)],
                            "first_seen": min(r.started for r in found),
                            "incidents": sorted({r.incident for r in found if r.incident})})
    return sorted(out, key=lambda x: (x["service"], x["environment"], -x["runs"], -severity_rank(x["severity"]),
                                      x["code"], x["subject"]))


def _when(iso: str) -> str:
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M UTC") if t.utcoffset() is not None and not t.utcoffset() else \
        t.strftime("%Y-%m-%d %H:%M %Z").strip()


def _link(path: str, name: str, text: str) -> str:
    return f"<a href='{html.escape(quote(path + '/' + name))}'>{html.escape(text)}</a>"


def _row(r: ArchivedRun) -> str:
    e = html.escape
    sev = r.worst
    fg, bg = SEV_STYLE.get(sev, SEV_STYLE["error"])
    counts = ", ".join(f"{r.counts[s]} {s}" for s in ("critical", "error", "warning") if r.counts[s]) or \
        ("no problem found" if r.counts else "—")
    codes = "".join(f"<code title='{e(sev_)}'>{e(clip(code, CLIP['key']))}</code>"
                    + (f" <span class='s'>{e(clip(subj, 60))}</span>" if subj else "") + "<br>"
                    for sev_, code, subj in r.problems[:CODES_PER_ROW])
    if len(r.problems) > CODES_PER_ROW:
        codes += f"<i>+{len(r.problems) - CODES_PER_ROW} more</i>"
    links = [_link(r.path, "index.html", "report")] if r.status not in ("half-written", "unreadable",
                                                                        "lab workspace") else []
    links += [_link(r.path, c, c.removesuffix(".html")) for c in r.comparisons]
    status = r.status + (f" (baseline {r.time_shift})" if r.time_shift else "")
    note = f"<div class='s'>{e(clip(r.note, 200))}</div>" if r.note else ""
    label = sev.upper() if r.counts or sev != "ok" else "—"
    return (f"<tr><td>{e(_when(r.started))}</td><td>{e(clip(r.incident, 80)) or '—'}</td>"
            f"<td class='s'>{e(clip(r.window, 80))}</td>"
            f"<td style='background:{bg};color:{fg};font-weight:bold'>{e(label)}</td><td>{e(counts)}</td>"
            f"<td>{codes or '—'}</td><td>{e(status)}{note}</td><td>{' · '.join(links) or e(r.path)}</td></tr>")


def archive_html(runs: list[ArchivedRun]) -> str:
    """The archive page for ``runs`` (newest first)."""
    e = html.escape
    groups: dict[tuple[str, str], list[ArchivedRun]] = defaultdict(list)
    for r in runs:
        groups[(r.service, r.environment)].append(r)
    rec = recurring(runs)
    rec_html = ""
    if rec:
        items = "".join(
            f"<li><b style='color:{SEV_STYLE[x['severity']][0]}'>{e(x['code'])}</b>"
            + (f" on {e(clip(x['subject'], 80))}" if x["subject"] else "")
            + f" — {e(x['service'])} ({e(x['environment'])}): {x['runs']} of the last {x['of']} runs, "
              f"first seen {e(_when(x['first_seen']))}"
            + (f"; incidents {e(clip(', '.join(x['incidents']), 200))}" if x["incidents"] else "") + "</li>"
            for x in rec[:100])
        rec_html = (f"<h2>Recurring problems</h2><p class='s'>Found needing attention in at least {RECURRING_MIN} "
                    f"of a service's last {RECURRING_LAST} runs.</p><ul>{items}</ul>")
    sections = []
    for (service, environment), rs in sorted(groups.items(), key=lambda kv: kv[1][0].started, reverse=True):
        title = f"{service} ({environment})" if service != "—" else "Folders that are not readable runs"
        sections.append(
            f"<h2>{e(title)} — {len(rs)} run{'s' if len(rs) != 1 else ''}</h2><table><tr><th>started</th>"
            f"<th>incident</th><th>window</th><th>worst</th><th>counts</th><th>found</th><th>status</th>"
            f"<th>open</th></tr>{''.join(_row(r) for r in rs)}</table>")
    statuses = Counter(r.status for r in runs)
    summary = ", ".join(f"{n} {s}" for s, n in statuses.most_common())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>perfbook — archive of {len(runs)} runs</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1400px; margin: 0 auto; padding: 12px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 18px; }}
td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top; text-align: left; }}
code {{ font-size: .9em; }} .s {{ font-size: .85em; color: #555; }}
</style></head><body>
<h1>perfbook — every run</h1>
<p>{len(runs)} run folder{'s' if len(runs) != 1 else ''} ({e(summary) or 'none yet'}), newest first, by service.
Each report is the run's own <code>index.html</code>.</p>
{rec_html}
{''.join(sections) or '<p>No run yet: <code>perfbook batch -p PARAMS</code> or <code>make demo</code> makes one.</p>'}
</body></html>"""


def write_archive(outputs: str | Path) -> tuple[Path, int]:
    """Rebuild ``outputs/index.html`` atomically; returns its path and the number of runs."""
    outputs = Path(outputs)
    runs = scan(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    return replace_file(outputs / "index.html", archive_html(runs)), len(runs)
