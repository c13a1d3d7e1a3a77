"""The report folder: dated run folders, atomic writes, redaction, HTML export, index page.

Layout of one run::

    outputs/YYYY-MM-DD/HHMMSS-<incident or params name>/
        <section>.ipynb  <section>.html   (per notebook)
        index.html  findings.json  manifest.json

Guarantees: a run folder is created with ``mkdir`` (never reused: two batches in the
same second get ``-2``, ``-3``); every file is written to a temporary name and linked
into place, so a reader never sees half a file and nothing is ever overwritten; every
object is redacted on structure (:class:`Redactor`) before it is serialised, and every
file is checked for secrets before it is written.
"""
from __future__ import annotations

import errno
import html
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .findings import CODES, Finding, sort_key, worst

TEMPLATES = Path(__file__).parent / "templates"

# --------------------------------------------------------------------------- redaction


class SecretLeak(RuntimeError):
    """A file about to be written under outputs/ still holds a secret: it is not written."""


#: Secrets that are common words (or short, or digits only) cannot be masked wherever they
#: appear without masking ordinary text too (and so revealing themselves): they are masked
#: in context only (see :class:`Redactor`), and ``check-params`` warns about them.
COMMON_WORDS = frozenset("""
password passwd secret admin administrator root postgres postgresql mysql test testing guest user
default changeme letmein welcome qwerty abc123 123456 12345678 123456789 dragon master monkey login
private public token example demo shop app api service server database redis perfbook sunshine princess
football baseball superman iloveyou trustno1 true false null none""".split())

#: A secret shorter than this is masked in context and as a whole token only.
MIN_SAFE_SECRET = 8


def secret_weakness(value: str) -> str | None:
    """Why ``value`` cannot be redacted safely wherever it appears (``None``: it can)."""
    if len(value) < MIN_SAFE_SECRET:
        return f"it is shorter than {MIN_SAFE_SECRET} characters"
    if value.lower() in COMMON_WORDS:
        return "it is a common word"
    return None


_SECRET_KEY = r"(?:password|passwd|pwd|api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|sig|signature)"
#: A value after ``key=``: libpq's quoted form (backslash escapes, possibly cut short), a
#: double-quoted one, or a bare word up to white space or ``&``.
_VALUE = r"(?:'(?:[^'\\]|\\.)*(?:'|\\?$)|\"(?:[^\"\\]|\\.)*(?:\"|\\?$)|[^\s&]+)"
#: The same in text that may be HTML (a table cell of a notebook's text/html output): quotes
#: may be written as entities there, and a value never runs over markup (``<``, ``>``, or a
#: literal quote that may close an attribute) so a mask never breaks the page's structure.
_Q1 = r"(?:'|&#x27;|&#39;|&apos;)"
_Q2 = r"(?:\"|&quot;|&#34;|&#x22;)"
_ENTITY = r"&(?:quot|#34|#x22|#x27|#39|apos|lt|gt);"


def _text_value(markup: bool) -> str:
    stop = r"<>" if markup else ""
    bare = rf"(?:[^\s&\"'{stop}]|{_ENTITY})+" if markup else rf"(?:[^\s&]|{_ENTITY})+"
    return (rf"(?:{_Q1}(?:(?!{_Q1})[^\\{stop}]|\\.)*(?:{_Q1}|\\?$)"
            rf"|{_Q2}(?:(?!{_Q2})[^\\{stop}]|\\.)*(?:{_Q2}|\\?$)|{bare})")


def _keyval(markup: bool) -> re.Pattern:
    return re.compile(rf"(?P<pre>(?<![A-Za-z0-9]){_SECRET_KEY}(?:{_Q1}|{_Q2})?\s*[=:]\s*)(?P<pw>{_text_value(markup)})",
                      re.I)


def _conninfo_password(dsn: str) -> str | None:
    """The password of a libpq key=value connection string (``password='a b'``), unquoted."""
    m = re.search(r"(?:^|\s)password\s*=\s*(" + _VALUE + ")", dsn)
    if not m:
        return None
    v = m.group(1)
    if v[:1] in "'\"":
        v = v[1:-1] if len(v) > 1 and v[-1] == v[0] else v[1:]
        v = re.sub(r"\\(.)", r"\1", v)
    return v or None


class Redactor:
    """Removes secret values from the strings of an object before it is serialised.

    Redaction works on structure: :meth:`obj` (and :func:`redact_notebook`) redact every
    string of a findings list, a manifest or a notebook *before* it is serialised, so a
    mask never lands inside JSON syntax, and before it is clipped (:func:`clip`), so a
    secret cut at a clip boundary is still whole when it is looked for. The writer
    (:func:`write_new`, :func:`replace_file`) only verifies (:meth:`leak`).

    What is masked:

    - every value of an environment variable the params file names (a DSN's password
      only: host and database stay readable). A *strong* secret (8+ characters, not a
      common word) is masked wherever it appears, also JSON-, HTML- or URL-escaped. A
      *weak* one (:func:`secret_weakness`) is masked only where it stands as a secret: a
      DSN password, the value of a password/token key, and — short ones that are not
      common words or only digits — a whole token (not part of a longer word or number).
      Numbers and JSON literals are never strings of the object, so never touched. ``postgres`` as the password leaves "PostgreSQL 15" and
      ``dbname=postgres`` alone; check-params warns about such secrets;
    - whatever the value, in context: a URL's password (``scheme://user:PW@``),
      ``password=``/``token=``/``api_key=``... values (quoted, backslash-escaped or bare,
      also cut short), ``Bearer`` tokens, and the fragment libpq echoes from a
      connection string it could not parse (``missing "=" after "…"``).
    """

    MASK = "[REDACTED]"
    _DSN_PASSWORD = re.compile(r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^:/@\s\"'<>]*:)(?P<pw>[^@\s\"'<>]+)(?=@)", re.I)
    _BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]{8,})", re.I)
    _KEYVAL = _keyval(markup=False)
    _KEYVAL_MARKUP = _keyval(markup=True)  # in a string that holds HTML markup
    _LIBPQ = re.compile(rf"(?P<pre>(?:missing {_Q2}={_Q2} after|invalid connection option|invalid [a-z_]+ value:?) "
                        rf"{_Q2})(?P<pw>(?:(?!{_Q2})[^<>])*)(?={_Q2}|$)", re.I)

    def __init__(self, secrets: Iterable[str] = ()):
        values: set[str] = set()
        for s in secrets:
            values.update(self.secret_parts(s))
        self.values = sorted(values, key=len, reverse=True)
        self.strong = [v for v in self.values if secret_weakness(v) is None]
        self.weak = frozenset(v for v in self.values if secret_weakness(v) is not None)
        tokens = [v for v in self.values if v in self.weak and v.lower() not in COMMON_WORDS and not v.isdigit()
                  and v.strip()]
        self._tokens = (re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, tokens)) + r")(?![A-Za-z0-9_])")
                        if tokens else None)
        self._variants = [(v, sorted(self._escaped(v), key=len, reverse=True)) for v in self.strong]

    @staticmethod
    def secret_parts(value: str) -> set[str]:
        """What is secret in an environment variable's value: a DSN's password (URL or libpq
        key=value form; host and database stay readable), else the whole value."""
        if not value:
            return set()
        try:
            pw = urlsplit(value).password if "://" in value else _conninfo_password(value) if "=" in value else None
        except ValueError:
            pw = None
        return {pw, unquote(pw)} if pw else {value}

    @staticmethod
    def _escaped(v: str) -> set[str]:
        """The forms a value takes in text: raw, JSON/Python-escaped, HTML-escaped, URL-quoted."""
        out = {v, json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1], repr(v)[1:-1],
               html.escape(v), html.escape(v, quote=False), quote(v, safe="")}
        return {x for x in out if x}

    @classmethod
    def for_env(cls, env_names: Iterable[str], environ: dict[str, str] | None = None) -> Redactor:
        environ = os.environ if environ is None else environ
        return cls(environ.get(n, "") for n in env_names)

    def _context(self, m: re.Match) -> str:
        return m.group("pre") + self.MASK

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            return text
        for _, forms in self._variants:
            for form in forms:
                if form in text:
                    text = text.replace(form, self.MASK)
        if self._tokens is not None:
            text = self._tokens.sub(self.MASK, text)
        text = self._DSN_PASSWORD.sub(self._context, text)
        text = self._BEARER.sub(self._context, text)
        markup = "<" in text and ">" in text
        text = (self._KEYVAL_MARKUP if markup else self._KEYVAL).sub(self._context, text)
        text = self._LIBPQ.sub(self._context, text)
        return text

    def obj(self, data: Any) -> Any:
        """Redact every string inside a JSON-like object (keys too); image data is left as is."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {(self(k) if isinstance(k, str) else k): (v if _binary_mime(k) else self.obj(v))
                    for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.obj(v) for v in data]
        return data

    def leak(self, text: str) -> str | None:
        """What secret ``text`` (serialised: JSON, HTML) still holds, or ``None``.

        The check of last resort before a file is written: a strong secret in any of its
        escaped forms, or a weak one standing as a DSN password or a password value.
        """
        for v, forms in self._variants:
            if any(form in text for form in forms):
                return f"the value of a secret ({len(v)} characters)"
        if self.weak:
            for rx in (self._DSN_PASSWORD, self._KEYVAL_MARKUP):
                for m in rx.finditer(text):
                    pw = re.match(r"[\\'\"]*([^\s&\"'\\]*)", html.unescape(m.group("pw"))).group(1)
                    if pw in self.weak:
                        return f"a secret as {m.group('pre').strip()[:40]!r}"
        return None


def _binary_mime(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(("image/", "application/pdf")) and not key.endswith("svg+xml")


def redact_notebook(nb: Any, redactor: Redactor) -> Any:
    """A copy of a notebook (nbformat v4 node or dict) with every string redacted.

    Sources, outputs (text, HTML, the findings' JSON payloads), metadata and attachments'
    text; base64 images are kept as they are. Multi-line strings stored as lists of lines
    are joined first, so a secret split across two lines of a list is still found.
    Returns an ``nbformat.NotebookNode``; serialise it with ``nbformat.writes``.
    """
    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    data = rejoin_lines(nbformat.from_dict(json.loads(json.dumps(nb))))
    return nbformat.from_dict(redactor.obj(data))


_ACTIVE: list[Redactor] = []


def use_redactor(redactor: Redactor | None) -> None:
    """Make ``redactor`` the one :func:`clip` applies in this process (``None``: from the environment)."""
    _ACTIVE[:] = [redactor] if redactor is not None else []


def active_redactor() -> Redactor:
    """This process's redactor: the one set by :func:`use_redactor`, else one for the variables
    named in ``PERFBOOK_REDACT_ENV`` (comma-separated; the runner sets it for each notebook)."""
    if not _ACTIVE:
        names = [n for n in os.environ.get("PERFBOOK_REDACT_ENV", "").split(",") if n]
        _ACTIVE.append(Redactor.for_env(names))
    return _ACTIVE[0]


# --------------------------------------------------------------------------- size caps

#: How much of one outside string a report page shows (a route label, a title, an evidence
#: value, a table cell): a report must stay small enough to attach (< 1.5 MB) even when a
#: label is 100,000 characters long. findings.json and the .ipynb keep the whole text.
CLIP = {"title": 400, "subject": 200, "value": 300, "key": 80, "recommendation": 4000, "header": 300,
        "cell": 300, "text": 20_000, "index_recommendation": 1000}


def clip(text: Any, limit: int, redact: Redactor | None = None) -> str:
    """``text`` redacted, then cut to ``limit`` characters, saying how many were left out.

    Redaction comes first (``redact``, else this process's :func:`active_redactor`): a
    secret cut at the boundary would no longer be recognised, and its prefix published.
    """
    text = text if isinstance(text, str) else str(text)
    text = (redact or active_redactor())(text)
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


def _verified(path: Path, data: str | bytes, verify: Redactor | None) -> bytes:
    """The bytes to write; :class:`SecretLeak` if ``verify`` finds a secret in them.

    Writers never redact (redaction works on structure, before serialisation: see
    :class:`Redactor`); they refuse a file that still holds a secret.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if verify is not None:
        what = verify.leak(data if isinstance(data, str) else data.decode("utf-8", "replace"))
        if what:
            raise SecretLeak(f"refusing to write {path.name}: it still contains {what}")
    return raw


def write_new(path: str | Path, data: str | bytes, verify: Redactor | None = None) -> Path:
    """Write a file atomically that must not exist yet (link a temp file into place)."""
    path = Path(path)
    data = _verified(path, data, verify)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; reports are for sharing (umask still applies)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails with FileExistsError: nothing is overwritten
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # A filesystem without hard links (some FUSE and network mounts): claim the name
            # with O_EXCL (still never overwriting), then move the whole file onto our claim.
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE))
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EACCES}


def replace_file(path: str | Path, data: str, verify: Redactor | None = None) -> Path:
    """Atomically replace one of *this run's own* status files (manifest while running)."""
    path = Path(path)
    raw = _verified(path, data, verify)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; reports are for sharing (umask still applies)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
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
    from .checks.checklist import LEVELS, MARKS, STATUSES, combine, on_checklist

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
    from .compare import Run, service_identity

    d = Path(folder)
    if not d.exists():
        raise NotARun(f"{folder}: no such folder")
    if not d.is_dir():
        raise NotARun(f"{folder}: not a folder")
    manifest = _read_json(d / "manifest.json", d)
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
    return Run(folder=d.resolve().name, run_dir=str(d.resolve()), service=service, environment=environment,
               started=manifest.get("started"), status=manifest.get("status"), findings=findings,
               sections_ok=ok)


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
    from .compare import fmt
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
