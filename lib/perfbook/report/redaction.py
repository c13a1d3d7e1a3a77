"""Redaction and size caps of everything perfbook writes: :class:`Redactor` (secrets taken
out on structure, then every file checked before it is written), the process's active
redactor, and :func:`clip` (how much of an outside string a page shows).
"""
from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

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
