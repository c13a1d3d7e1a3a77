"""I/O only: the places perfbook reads evidence from.

Each module here talks to one kind of source (a Prometheus server, a /metrics endpoint,
HTTP probes, PostgreSQL, Redis, log files) and returns plain data (DataFrames, dicts).
Analysis lives in :mod:`perfbook.checks`.

Two exceptions say why a source gave nothing, so a notebook can turn them into a
``source.unreachable`` (or ``error``) Finding instead of a traceback:

- :class:`SourceUnreachable`: nothing answered (connection refused, DNS, timeout, a
  proxy's 502/503/504).
- :class:`SourceError`: the source answered, with an error (PromQL ``bad_data``, HTTP
  401/403, a page that is not what was expected).

Both carry ``source`` (``"prometheus"``, ``"metrics"``, ``"http"``, ``"postgres"``,
``"redis"``, ``"logs"``...), ``target`` (URL or path, with any credentials removed) and
``reason`` (one line). Neither ever holds a secret: callers pass tokens and passwords
to the source, never into these exceptions.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SourceProblem", "SourceUnreachable", "SourceError", "safe_target", "error_reason"]

# Query parameters whose values are secrets in connection strings and URLs.
_SECRET_PARAMS = re.compile(r"pass(word)?|secret|token|api[_-]?key|auth|sig(nature)?", re.I)


def safe_target(target: object) -> str:
    """``target`` as text with credentials removed: URL user-info and secret-looking
    query parameters (``password``, ``token``, ``api_key``...) are dropped.

    ``postgresql://app:pw@db:5432/shop?sslmode=require&password=x`` becomes
    ``postgresql://db:5432/shop?sslmode=require``. Paths and other text pass through.
    """
    text = str(target).strip()
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if not _SECRET_PARAMS.search(k)])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Not parseable as a URL: at least cut anything that looks like user:pass@.
        return re.sub(r"//[^/@\s]*@", "//", text)


#: What a failed connection's message says, in its own words (checked in this order, case
#: apart): the reason a source gives, without the address, URL or object reprs around it.
_PHRASES = ("Connection refused", "Name or service not known", "No route to host", "Network is unreachable",
            "Connection reset", "Connection closed by server", "RemoteDisconnected",
            "Authentication required", "invalid password", "WRONGPASS", "NOAUTH", "NOPERM")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\"\)\]\(]+")
_TIMEOUT = re.compile(r"timed out|timeout", re.I)  # in the type name (ReadTimeout, redis.TimeoutError)


def error_reason(exc: BaseException, timeout: float | None = None, *, detail: bool = False) -> str:
    """One line saying why a source did not answer, without the URL or address (the
    exception's target says where): a timeout (``no answer within 5 s`` when ``timeout``
    is known, else ``timed out``), a failed TLS verification, a known phrase (``Connection
    refused``, ``Connection reset``, ``Name or service not known``, Redis' ``WRONGPASS``...),
    an ``[Errno N] ...`` text, else the exception's type (with ``detail``, followed by its
    message, for sources whose messages carry no URL, as Redis' errors)."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, TimeoutError) or _TIMEOUT.search(type(exc).__name__) or "timed out" in low:
        return f"no answer within {timeout:g} s" if timeout is not None else "timed out"
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return "TLS certificate verification failed"
    for phrase in _PHRASES:
        if phrase.lower() in low:
            return phrase
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    return f"{type(exc).__name__}: {text[:200]}" if detail else type(exc).__name__


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or "unknown reason"


class SourceProblem(Exception):
    """Base of :class:`SourceUnreachable` and :class:`SourceError`: catch it to handle both."""

    verb = "failed"

    def __init__(self, source: str, target: object, reason: object) -> None:
        self.source = str(source)
        self.target = safe_target(target)
        self.reason = _one_line(reason)
        super().__init__(self.source, self.target, self.reason)

    def __str__(self) -> str:
        return f"{self.source} at {self.target} {self.verb}: {self.reason}"


class SourceUnreachable(SourceProblem):
    """Nothing answered: connection refused, unknown host, timeout, proxy 502/503/504.

    ``str(e)`` is ``"<source> at <target> unreachable: <reason>"``.
    """

    verb = "unreachable"


class PresentOnly(SourceProblem):
    """A source that reads the present (a live probe, pg_stat_statements, Redis INFO, a load
    test) was asked for, in a run that looks back in time (``perfbook batch --baseline -7d``:
    the same window a week earlier, read from Prometheus). The check says so, never guesses.
    """

    verb = "reads the present"


#: Set (to the shift, e.g. "-7d") in the environment of a run that looks back in time.
HISTORICAL_ENV = "PERFBOOK_HISTORICAL"


def present_only(source: str, target: object) -> None:
    """Refuse a live read in a run that looks back in time (:class:`PresentOnly`); nothing otherwise.
    Every source function that reads the present calls it first."""
    import os

    shift = os.environ.get(HISTORICAL_ENV)
    if shift:
        raise PresentOnly(source, target, f"this run looks back in time ({shift}); {source} only tells the present")


class SourceError(SourceProblem):
    """The source answered, but with an error (bad PromQL, HTTP 401/403, wrong page...).

    ``str(e)`` is ``"<source> at <target> answered with an error: <reason>"``.
    """

    verb = "answered with an error"
