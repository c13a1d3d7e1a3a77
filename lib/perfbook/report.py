"""The report folder: dated run folders, atomic writes, redaction, HTML export, index page.

Layout of one run::

    outputs/YYYY-MM-DD/HHMMSS-<incident or params name>/
        <section>.ipynb  <section>.html   (per notebook)
        index.html  findings.json  manifest.json

Guarantees: a run folder is created with ``mkdir`` (never reused: two batches in the
same second get ``-2``, ``-3``); every file is written to a temporary name and linked
into place, so a reader never sees half a file and nothing is ever overwritten; every
byte passes :class:`Redactor` first.
"""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from .findings import CODES, Finding, severity_rank, sort_key, worst

TEMPLATES = Path(__file__).parent / "templates"

# --------------------------------------------------------------------------- redaction


class Redactor:
    """Removes secret values from text before it is written under outputs/.

    Secrets are the values of every environment variable the params file names, plus
    anything that looks like a DSN password or a bearer token, whatever its source.
    """

    MASK = "[REDACTED]"
    _DSN_PASSWORD = re.compile(r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^:/@\s\"'<>]*:)(?P<pw>[^@\s\"'<>]+)(?=@)", re.I)
    _BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]{8,})", re.I)
    _KEYVAL = re.compile(r"(?P<pre>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>[^\s'\";]+)", re.I)

    def __init__(self, secrets: Iterable[str] = ()):
        values: set[str] = set()
        for s in secrets:
            if not s or len(s) < 4:
                continue
            # A DSN's secret is its password: redact that wherever it appears and keep
            # host and database readable. Any other value is secret as a whole.
            try:
                pw = urlsplit(s).password if "://" in s else None
            except ValueError:
                pw = None
            if pw and len(pw) >= 4:
                values.add(pw)
                values.add(unquote(pw))
            else:
                values.add(s)
        self.values = sorted(values, key=len, reverse=True)

    @classmethod
    def for_env(cls, env_names: Iterable[str], environ: dict[str, str] | None = None) -> "Redactor":
        environ = os.environ if environ is None else environ
        return cls(environ.get(n, "") for n in env_names)

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, self.MASK)
            esc = json.dumps(v)[1:-1]  # the value as it appears inside JSON strings
            if esc != v and esc in text:
                text = text.replace(esc, self.MASK)
            hv = html.escape(v)
            if hv != v and hv in text:
                text = text.replace(hv, self.MASK)
        text = self._DSN_PASSWORD.sub(lambda m: m.group("pre") + self.MASK, text)
        text = self._BEARER.sub(lambda m: m.group("pre") + self.MASK, text)
        text = self._KEYVAL.sub(lambda m: m.group("pre") + self.MASK, text)
        return text

    def obj(self, data: Any) -> Any:
        """Redact every string inside a JSON-like object."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {k: self.obj(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.obj(v) for v in data]
        return data


# --------------------------------------------------------------------------- size caps

#: How much of one outside string a report page shows (a route label, a title, an evidence
#: value, a table cell): a report must stay small enough to attach (< 1.5 MB) even when a
#: label is 100,000 characters long. findings.json and the .ipynb keep the whole text.
CLIP = {"title": 400, "subject": 200, "value": 300, "key": 80, "recommendation": 4000, "header": 300,
        "cell": 300, "text": 20_000, "index_recommendation": 1000}


def clip(text: Any, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters not shown]"


# --------------------------------------------------------------------------- folders and writes

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def slug(text: str, limit: int = 60) -> str:
    s = _SLUG.sub("-", text).strip("-")[:limit]
    return s or "run"


def make_run_dir(root: str | Path, label: str, now: datetime | None = None) -> Path:
    """Create ``root/YYYY-MM-DD/HHMMSS-label`` (or ``-2``, ``-3``, ...): never an existing one."""
    now = now or datetime.now(timezone.utc).astimezone()
    day = Path(root) / now.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    base = f"{now.strftime('%H%M%S')}-{slug(label)}"
    for n in range(1, 1000):
        candidate = day / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {day}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def write_new(path: str | Path, data: str | bytes, redact: Redactor | None = None) -> Path:
    """Write a file atomically that must not exist yet (link a temp file into place)."""
    path = Path(path)
    if isinstance(data, str):
        data = (redact(data) if redact else data).encode("utf-8")
    elif redact is not None:
        data = redact(data.decode("utf-8", "replace")).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; reports are for sharing (umask still applies)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails with FileExistsError: nothing is overwritten
    finally:
        os.unlink(tmp)
    return path


def replace_file(path: str | Path, data: str, redact: Redactor | None = None) -> Path:
    """Atomically replace one of *this run's own* status files (manifest while running)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; reports are for sharing (umask still applies)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(redact(data) if redact else data)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- versions


@lru_cache(maxsize=1)
def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=10"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("perfbook", "papermill", "nbclient", "nbconvert", "jupyter_client", "ipykernel",
                "pandas", "matplotlib", "psycopg", "prometheus_client", "pglast", "locust", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["git"] = git_revision()
    return out


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


def index_html(manifest: dict[str, Any], findings: list[Finding]) -> str:
    """The run's front page: each section's worst severity, then every finding, worst first."""
    e = html.escape
    by_section: dict[str, list[Finding]] = {}
    for f in findings:
        by_section.setdefault(f.section, []).append(f)
    rows = []
    for nb in manifest.get("notebooks", []):
        sec = nb["section"]
        fs = by_section.get(sec, [])
        sev = worst(f.severity for f in fs) if fs else ("error" if nb["status"] != "ok" else "ok")
        if nb["status"] != "ok":
            sev = worst([sev, "error"])
        fg, bg = SEV_STYLE[sev]
        label = sev.upper()
        if not fs and nb["status"] == "ok":
            # A section that concluded nothing (e.g. the load test switched off) is not "OK".
            fg, bg, label = "#666", "#f4f4f4", "NOTHING CHECKED"
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
                "interrupted": "This run was interrupted (Ctrl-C or SIGTERM): the report is incomplete"
                }.get(str(status), f"This run is {status}: the report is incomplete")
        status_note = (f"<p class='perfbook-incomplete' style='background:#fdecea;padding:6px'><b>{e(lead)}.</b> "
                       f"Finished: {e(', '.join(finished) or 'none')}. "
                       f"Not finished: {e(', '.join(unfinished) or 'none')}.</p>")
    checklist = manifest.get("checklist_html", "")
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
<h2>Sections</h2>
<table><tr><th>section</th><th>worst</th><th>findings needing attention</th><th>status</th><th>time</th></tr>
{''.join(rows)}</table>
{checklist}
<h2>Findings, worst first</h2>
<table><tr><th>severity</th><th>section</th><th>code</th><th>subject</th><th>finding</th></tr>
{''.join(items) or '<tr><td colspan=5>No warning, critical or error findings.</td></tr>'}</table>
<p style="color:#666;font-size:.85em">Codes: {''.join(f'<code title="{e(c.meaning)}">{e(k)}</code> ' for k, c in CODES.items())}</p>
</body></html>"""


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return clip(text, 120)


def findings_json(findings: list[Finding]) -> str:
    return json.dumps([f.to_dict() for f in sorted(findings, key=sort_key)], indent=2, ensure_ascii=False)
