"""The fleet page (``HHMMSS-fleet-<incident>/index.html``): one row per service, one column per
section, each cell the section's worst severity for that service linking into its report;
then what needs attention across the fleet, worst first; then where each notebook ran.
Offline and script-free like every report page (the same Content-Security-Policy)."""
from __future__ import annotations

import html
from collections import Counter
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from ..findings import Finding, severity_rank, sort_key, worst
from .pages import SEV_STYLE, STATUS_TEXT, redact_findings, section_verdict
from .redaction import CLIP, Redactor, active_redactor, clip

#: The fleet page lists at most this many findings needing attention; findings.json has them all.
MAX_FLEET_FINDINGS = 300
NEEDS_ATTENTION = ("critical", "error", "warning")
EXIT_MEANING = {0: "no critical finding", 1: "critical findings, or checks that could not run",
                3: "a notebook failed or timed out", 4: "perfbook itself failed", 130: "interrupted"}


def fleet_findings(services: list[tuple[str, str, str, list[Finding]]]) -> list[dict[str, Any]]:
    """Every finding of every service as a dict, with ``service``, ``environment`` and ``run``
    (the service's run folder, relative to the fleet folder); worst first, service by service."""
    out = []
    for service, environment, run, findings in services:
        for f in sorted(findings, key=sort_key):
            out.append({"service": service, "environment": environment, "run": run, **f.to_dict()})
    return out


def _when(iso: Any) -> str:
    try:
        return datetime.fromisoformat(str(iso)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(iso or "—")


def _href(run: str, page: str | None) -> str:
    return html.escape(quote(f"{run}/{page}")) if page else ""


def _cell(nb: dict[str, Any] | None, run: str) -> str:
    e = html.escape
    if nb is None:
        return "<td class='none'>—</td>"
    status = nb.get("status", "pending")
    n = nb.get("findings") or {}
    _, label, fg, bg = section_verdict(status, [sev for sev, k in n.items() if k and sev in SEV_STYLE])
    if status != "ok":
        label = STATUS_TEXT.get(status, status).upper()
    bad = sum(n.get(s, 0) for s in NEEDS_ATTENTION)
    text = e(label) + (f" <span class='s'>({bad})</span>" if bad else "")
    link = _href(run, nb.get("html"))
    inner = f"<a href='{link}' style='color:{fg}'>{text}</a>" if link else text
    return f"<td style='background:{bg};color:{fg};font-weight:bold'>{inner}</td>"


def fleet_html(manifest: dict[str, Any], findings: list[dict[str, Any]], redact: Redactor | None = None) -> str:
    """The fleet's front page from its manifest (:class:`perfbook.fleet.Fleet`) and findings."""
    e = html.escape
    redact = redact or active_redactor()
    manifest = redact.obj(manifest)
    services = manifest.get("services", [])
    present = {nb["section"] for s in services for nb in s.get("notebooks", [])}
    columns = [c for c in manifest.get("sections", []) if c in present]
    columns += sorted(present - set(columns))
    rows = []
    for s in services:
        by_section = {nb["section"]: nb for nb in s.get("notebooks", [])}
        name = f"{s['service']} ({s['environment']})"
        status = s.get("status", "running")
        rows.append(f"<tr><th class='nw'><a href='{_href(s['run'], 'index.html')}'>{e(clip(name, 120))}</a>"
                    + (f"<div class='s'>{e(status)}, exit {s.get('exit_code')}</div>" if status != "running"
                       else "<div class='s'>running</div>")
                    + "</th>" + "".join(_cell(by_section.get(c), s["run"]) for c in columns) + "</tr>")
    header = "".join(f"<th>{e(c)}</th>" for c in columns)
    counts = Counter(f.get("severity") for f in findings)
    attention = sorted((f for f in findings if f.get("severity") in NEEDS_ATTENTION),
                       key=lambda f: (-severity_rank(f["severity"]), f.get("service", ""), f.get("section", ""),
                                      f.get("code", "")))
    items = []
    for raw in attention[:MAX_FLEET_FINDINGS]:
        finding = redact_findings([Finding.from_dict({k: v for k, v in raw.items()
                                                      if k not in ("service", "environment", "run")})], redact)[0]
        fg, bg = SEV_STYLE[finding.severity]
        page = next((nb.get("html") for s in services if s["run"] == raw["run"] for nb in s.get("notebooks", [])
                     if nb["section"] == finding.section), None)
        sec = f"<a href='{_href(raw['run'], page)}'>{e(finding.section)}</a>" if page else e(finding.section)
        items.append(f"<tr style='background:{bg}'><td style='color:{fg};font-weight:bold'>{e(finding.severity.upper())}"
                     f"</td><td class='nw'>{e(clip(raw['service'], 80))}</td><td>{sec}</td><td><code>{e(finding.code)}</code></td>"
                     f"<td>{e(clip(finding.subject or '', CLIP['subject']))}</td>"
                     f"<td class='perfbook-title'>{e(clip(finding.title, CLIP['title']))}</td></tr>")
    if len(attention) > MAX_FLEET_FINDINGS:
        items.append(f"<tr><td colspan=6><i>{len(attention) - MAX_FLEET_FINDINGS} more in findings.json and in "
                     "the services' reports.</i></td></tr>")
    where = "".join(f"<tr><td>{e(s['service'])} ({e(s['environment'])})</td><td>{e(nb['section'])}</td>"
                    f"<td>{e(STATUS_TEXT.get(nb['status'], nb['status']))}</td><td>{nb.get('duration_s', 0):.1f} s</td>"
                    f"<td><code>{e(clip(nb.get('worker') or '—', 200))}</code></td></tr>"
                    for s in services for nb in s.get("notebooks", []))
    status, code = manifest.get("status"), manifest.get("exit_code")
    ex = manifest.get("executor", {})
    verdict = worst(f.get("severity", "ok") for f in findings) if findings else "ok"
    if any(nb.get("status") != "ok" for s in services for nb in s.get("notebooks", [])):
        verdict = worst([verdict, "error"])
    fg, bg = SEV_STYLE[verdict]
    lead = {"running": "This fleet run is still running: the page is incomplete (reload when it has finished).",
            "interrupted": "This fleet run was interrupted (Ctrl-C or SIGTERM): some sections did not finish.",
            "failed": "perfbook itself failed during this fleet run: some sections were stopped."}.get(str(status), "")
    status_note = f"<p style='background:#fdecea;padding:6px'><b>{e(lead)}</b></p>" if lead else ""
    exit_line = (f"exit status {code}: {e(EXIT_MEANING.get(code, ''))}" if code is not None else "exit status: —")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>perfbook — fleet of {len(services)} services — {e(str(manifest.get('incident') or ''))}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1500px; margin: 0 auto; padding: 12px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 18px; }}
td, th {{ padding: 4px 8px; border: 1px solid #ddd; vertical-align: top; text-align: left; }}
td a {{ text-decoration: none; }} .s {{ font-size: .8em; color: #555; font-weight: normal; }}
.none {{ color: #aaa; text-align: center; }} .nw {{ white-space: nowrap; }}
.verdict {{ font-size: 1.3em; padding: 10px 14px; border-left: 8px solid {fg}; background: {bg}; }}
</style></head><body>
<h1>perfbook fleet report</h1>
<table style="border:none"><tr><th>incident</th><td>{e(clip(str(manifest.get('incident') or '—'), 200))}</td></tr>
<tr><th>started</th><td>{e(_when(manifest.get('started')))}</td></tr>
<tr><th>executor</th><td>{e(str(ex.get('executor', '—')))}, {e(str(ex.get('slots', '—')))} notebooks at a time</td></tr>
<tr><th>status</th><td>{e(str(status))}; {exit_line}</td></tr></table>
{status_note}
<div class="verdict"><b style="color:{fg}">{e(verdict.upper())}</b> — {len(services)} services:
{counts['critical']} critical, {counts['error']} checks that could not run, {counts['warning']} warnings,
{counts['ok']} checks passed.</div>
<h2>Services × sections</h2>
<p class="s">Each cell is the section's worst severity for the service (in brackets: findings needing attention);
it opens the section's page. The service opens its report.</p>
<table><tr><th>service</th>{header}</tr>{''.join(rows)}</table>
<h2>Needs attention across the fleet, worst first</h2>
<table><tr><th>severity</th><th>service</th><th>section</th><th>code</th><th>subject</th><th>finding</th></tr>
{''.join(items) or '<tr><td colspan=6>No warning, critical or error findings in any service.</td></tr>'}</table>
<details><summary>Where each notebook ran</summary>
<table><tr><th>service</th><th>section</th><th>status</th><th>time</th><th>worker</th></tr>{where}</table></details>
</body></html>"""
