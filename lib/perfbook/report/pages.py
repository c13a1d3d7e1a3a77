"""The HTML of a run: each notebook exported to one offline page, the error page, the
index page (every finding, worst first), the checklist's summary and findings.json.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..findings import CODES, Finding, sort_key, worst
from .redaction import CLIP, Redactor, active_redactor, clip

#: nbconvert's template folder (``perfbook/templates``, beside this package).
TEMPLATES = Path(__file__).parent.parent / "templates"


# --------------------------------------------------------------------------- HTML export


def notebook_html(ipynb_path: str | Path) -> str:
    """Export an executed notebook to one self-contained, offline HTML page (code collapsed)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb_path), as_version=4)
    exporter = HTMLExporter(template_name="perfbook", extra_template_basedirs=[str(TEMPLATES)],
                            embed_images=True)
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    _cap_outputs(nb)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(ipynb_path).stem}})
    return body


#: One cell output larger than this (HTML or text) is left out of the page with a note; the
#: executed .ipynb keeps it. A backstop for the 1.5 MB page budget: tables and callouts clip
#: their own text long before this.
MAX_OUTPUT_CHARS = 500_000


def _cap_outputs(nb: Any) -> None:
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            for mime in ("text/html", "text/plain", "text/markdown"):
                val = data.get(mime)
                text = "".join(val) if isinstance(val, list) else val
                if isinstance(text, str) and len(text) > MAX_OUTPUT_CHARS:
                    note = (f"This output ({len(text):,} characters) is too large for the report page and is "
                            f"left out; it is in the executed notebook ({mime}).")
                    data[mime] = f"<p><i>{html.escape(note)}</i></p>" if mime == "text/html" else note
            if out.get("output_type") == "stream":
                text = "".join(out["text"]) if isinstance(out.get("text"), list) else out.get("text", "")
                if len(text) > MAX_OUTPUT_CHARS:
                    out["text"] = clip(text, MAX_OUTPUT_CHARS)


def error_html(title: str, message: str) -> str:
    """A minimal page for a notebook whose execution or export failed outright."""
    e = html.escape
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"</head><body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
            f"<p><a href='index.html'>&larr; all sections of this run</a></p><h1>{e(title)}</h1>"
            f"<pre style='white-space:pre-wrap;background:#fdecea;padding:8px'>{e(message)}</pre></body></html>")


# --------------------------------------------------------------------------- index page

SEV_STYLE = {
    "critical": ("#c62828", "#fdecea"), "error": ("#6a1b9a", "#f3e8fd"), "warning": ("#e08a00", "#fff6e0"),
    "info": ("#1565c0", "#eef4fb"), "ok": ("#2e7d32", "#eef8ee"),
}
#: The index lists at most this many non-ok findings (worst first); findings.json has them all.
MAX_INDEX_FINDINGS = 200

STATUS_TEXT = {"ok": "ran", "failed": "notebook failed", "timeout": "timed out", "interrupted": "interrupted",
               "pending": "not run", "running": "running"}


def section_verdict(status: str, severities: list[str]) -> tuple[str, str, str, str]:
    """One section's cell on an index or fleet page: (severity, label, colour, background).
    The worst of its findings' severities; ``error`` at least when the notebook did not run to
    its end; a section that ran and concluded nothing (the load test switched off) is
    "NOTHING CHECKED", never "OK"."""
    sev = worst(severities) if severities else "ok"
    if status != "ok":
        sev = worst([sev, "error"])
    if status == "ok" and not severities:
        return sev, "NOTHING CHECKED", "#666", "#f4f4f4"
    fg, bg = SEV_STYLE[sev]
    return sev, sev.upper(), fg, bg


def redact_findings(findings: list[Finding], redact: Redactor) -> list[Finding]:
    """The findings with every string (title, subject, evidence keys and values, ...) redacted."""
    return [Finding.from_dict(redact.obj(f.to_dict())) for f in findings]


def index_html(manifest: dict[str, Any], findings: list[Finding], redact: Redactor | None = None) -> str:
    """The run's front page: each section's worst severity, then every finding, worst first.

    Manifest and findings are redacted on structure first (``redact``, else this process's
    :func:`active_redactor`), then clipped for the page."""
    e = html.escape
    redact = redact or active_redactor()
    manifest, findings = redact.obj(manifest), redact_findings(findings, redact)
    by_section: dict[str, list[Finding]] = {}
    for f in findings:
        by_section.setdefault(f.section, []).append(f)
    rows = []
    for nb in manifest.get("notebooks", []):
        sec = nb["section"]
        fs = by_section.get(sec, [])
        _, label, fg, bg = section_verdict(nb["status"], [f.severity for f in fs])
        n_bad = sum(1 for f in fs if f.severity in ("warning", "critical", "error"))
        link = nb.get("html")
        name = f"<a href='{e(link)}'>{e(sec)}</a>" if link else e(sec)
        rows.append(
            f"<tr style='background:{bg}'><td>{name}</td>"
            f"<td style='color:{fg};font-weight:bold'>{e(label)}</td>"
            f"<td>{n_bad} of {len(fs)}</td><td>{e(STATUS_TEXT.get(nb['status'], nb['status']))}"
            + (f": {e(clip(nb.get('error', ''), 200))}" if nb.get("error") else "")
            + f"</td><td>{nb.get('duration_s', 0):.1f} s</td></tr>")
    items: list[str] = []
    left_out = 0
    for f in sorted(findings, key=sort_key):
        if f.severity == "ok":
            continue
        fg, bg = SEV_STYLE[f.severity]
        link = next((nb.get("html") for nb in manifest.get("notebooks", []) if nb["section"] == f.section), None)
        sec = f"<a href='{e(link)}'>{e(f.section)}</a>" if link else e(f.section)
        if len(items) >= MAX_INDEX_FINDINGS:
            left_out += 1
            continue
        ev = "; ".join(f"{e(clip(k, CLIP['key']))}={e(_short(v))}" for k, v in list(f.evidence.items())[:6])
        items.append(
            f"<tr style='background:{bg}'><td style='color:{fg};font-weight:bold'>{e(f.severity.upper())}</td>"
            f"<td>{sec}</td><td><code>{e(f.code)}</code></td><td>{e(clip(f.subject or '', CLIP['subject']))}</td>"
            f"<td><b class='perfbook-title'>{e(clip(f.title, CLIP['title']))}</b>"
            f"<div style='font-size:.85em;color:#444'>{ev}</div>"
            + (f"<details><summary>what to do</summary><pre style='white-space:pre-wrap'>"
               f"{e(clip(f.recommendation, CLIP['index_recommendation']))}</pre></details>"
               if f.recommendation else "")
            + "</td></tr>")
    if left_out:
        items.append(f"<tr><td colspan=5><i>{left_out} more findings not shown here (of "
                     f"{left_out + len(items)}); every finding is in findings.json and in its section's page.</i></td></tr>")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "error", "warning", "info", "ok")}
    overall = worst(f.severity for f in findings) if findings else "ok"
    if any(nb["status"] != "ok" for nb in manifest.get("notebooks", [])):
        overall = worst([overall, "error"])
    fg, bg = SEV_STYLE[overall]
    overall_label = overall.upper() if findings or overall != "ok" else "NOTHING CHECKED"
    if overall_label == "NOTHING CHECKED":
        fg, bg = "#666", "#f4f4f4"
    head = manifest.get("header", {})
    meta = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{e(clip(k, CLIP['key']))}</th>"
                   f"<td>{e(clip(v, CLIP['header']))}</td></tr>" for k, v in head.items())
    status_note = ""
    status = manifest.get("status")
    if status != "complete":
        nbs = manifest.get("notebooks", [])
        finished = [nb["section"] for nb in nbs if nb["status"] in ("ok", "failed", "timeout")]
        unfinished = [nb["section"] for nb in nbs if nb["section"] not in finished]
        lead = {"running": "This run is still running: the report is incomplete (reload when it has finished)",
                "interrupted": "This run was interrupted (Ctrl-C or SIGTERM): the report is incomplete",
                "failed": f"perfbook itself failed ({clip(manifest.get('error', 'no reason recorded'), 300)}); "
                          "the other sections were stopped and the report is incomplete",
                }.get(str(status), f"This run is {status}: the report is incomplete")
        status_note = (f"<p class='perfbook-incomplete' style='background:#fdecea;padding:6px'><b>{e(lead)}.</b> "
                       f"Finished: {e(', '.join(finished) or 'none')}. "
                       f"Not finished: {e(', '.join(unfinished) or 'none')}.</p>")
    checklist = manifest.get("checklist_html", "")
    compared = "".join(
        f"<li><a href='{e(quote(c['html']))}'>{e(c['html'])}</a> — {e(clip(c.get('headline', ''), CLIP['title']))}</li>"
        for c in manifest.get("comparisons", []) if re.fullmatch(r"compare(-\d+)?\.html", str(c.get("html"))))
    if compared:
        compared = f"<h2>Compared with a baseline</h2><ul class='perfbook-comparisons'>{compared}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>perfbook — {e(clip(head.get('service', ''), 200))} — {e(str(head.get('run at', '')))}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1200px; margin: 0 auto; padding: 12px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 18px; }}
td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top; text-align: left; }}
.verdict {{ font-size: 1.3em; padding: 10px 14px; border-left: 8px solid {fg}; background: {bg}; }}
code {{ font-size: .95em; }}
</style></head><body>
<h1>perfbook incident report</h1>
<table style="width:auto">{meta}</table>
{status_note}
<div class="verdict"><b style="color:{fg}">{e(overall_label)}</b> —
{counts['critical']} critical, {counts['error']} checks that could not run, {counts['warning']} warnings,
{counts['info']} info, {counts['ok']} checks passed.</div>
{compared}
<h2>Sections</h2>
<table><tr><th>section</th><th>worst</th><th>findings needing attention</th><th>status</th><th>time</th></tr>
{''.join(rows)}</table>
{checklist}
<h2>Findings, worst first</h2>
<table><tr><th>severity</th><th>section</th><th>code</th><th>subject</th><th>finding</th></tr>
{''.join(items) or '<tr><td colspan=5>No warning, critical or error findings.</td></tr>'}</table>
<p style="color:#666;font-size:.85em">Codes: {''.join(f'<code title="{e(c.meaning)}">{e(k)}</code> ' for k, c in CODES.items())}</p>
</body></html>"""


def checklist_index_html(findings: Iterable[Finding]) -> str:
    """The checklist summary for the batch's index page (see :func:`perfbook.checks.checklist.combine`): a tick, a
    cross or a question mark per item, with the evidence. Empty when no finding of the
    batch bears on the checklist (neither the monitoring section nor a mapped code)."""
    from ..checks.checklist import LEVELS, MARKS, STATUSES, combine, on_checklist

    findings = list(findings)
    if not on_checklist(findings):
        return ""
    answers = combine(findings)
    e = html.escape
    colour = {"met": ("#2e7d32", "#eef8ee"), "unmet": ("#c62828", "#fdecea"), "unknown": ("#555", "#f5f5f5")}
    counts = {s: sum(1 for a in answers if a.status == s) for s in STATUSES}
    rows = []
    for level in LEVELS:
        rows.append(f"<tr><th colspan='3' style='text-align:left;padding-top:6px'>{e(level)} Level</th></tr>")
        for a in (x for x in answers if x.item.level == level):
            fg, bg = colour[a.status]
            rows.append(f"<tr style='background:{bg}'><td style='color:{fg};font-weight:bold;text-align:center'>"
                        f"{MARKS[a.status]}</td><td>{e(a.item.text)}</td>"
                        f"<td style='font-size:.85em'>{e(a.why[:600])}"
                        f"<span style='color:#777'> — {e(a.source)}</span></td></tr>")
    return (f"<div class='perfbook-checklist'><h2>Performance Optimization Checklist</h2>"
            f"<p>{counts['met']} met, {counts['unmet']} unmet, {counts['unknown']} unknown "
            f"(✔ met · ✘ unmet · ? cannot be known from outside, or not measured in this batch)</p>"
            f"<table class='perfbook-table'>{''.join(rows)}</table></div>")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return clip(text, 120)


def findings_json(findings: list[Finding], redact: Redactor | None = None) -> str:
    """findings.json: every finding redacted on structure, then serialised."""
    redact = redact or active_redactor()
    return json.dumps([redact.obj(f.to_dict()) for f in sorted(findings, key=sort_key)], indent=2,
                      ensure_ascii=False)
