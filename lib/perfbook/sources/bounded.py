"""Bounded reads: what perfbook reads from the outside never grows without limit.

I/O helpers shared by the sources (``settings.limits`` in the params file):

- :func:`read_body`: an HTTP answer (``requests`` response opened with ``stream=True``) read
  up to ``max_bytes`` after decompression (a gzip bomb stops at the cap too); a larger one
  raises :class:`TooLarge`, a :class:`~perfbook.sources.SourceError` whose one-line reason
  names the cap and the params field — a check turns it into an ``error`` finding, never a
  MemoryError.
- :class:`LineCap`: the lines of an open text file, each at most ``max_length``
  characters. A longer line is cut (its head kept, the rest skipped without being held in
  memory) and counted; continuation lines (a tab first, PostgreSQL's multi-line statements)
  past ``max_length`` characters in a row are dropped and counted the same way.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import SourceError

__all__ = ["TooLarge", "read_body", "read_text", "LineCap", "limits_of"]

CHUNK = 64 * 1024


def limits_of(limits: Any = None) -> Any:
    """``settings.limits``: of a params object, as given, or the params file's defaults
    (one place for them)."""
    settings = getattr(limits, "settings", None)
    if settings is not None:
        limits = getattr(settings, "limits", None)
    if limits is not None:
        return limits
    from perfbook.params import Limits

    return Limits()


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} bytes"


class TooLarge(SourceError):
    """An answer larger than ``settings.limits.max_response_bytes``; nothing of it is used."""

    def __init__(self, source: str, target: object, max_bytes: int, what: str = "the answer",
                 declared: int | None = None) -> None:
        self.max_bytes = max_bytes
        size = f"declares {_size(declared)}" if declared is not None else f"is over {_size(max_bytes)}"
        super().__init__(source, target, f"{what} {size}, above settings.limits.max_response_bytes "
                                         f"({_size(max_bytes)}); not read further — narrow the query or "
                                         f"raise the limit in the params file")


def read_body(response: Any, max_bytes: int, *, source: str, target: object, what: str = "the answer") -> bytes:
    """The body of a ``stream=True`` response, at most ``max_bytes`` (decoded) bytes.

    Raises :class:`TooLarge` (the response is closed) when the declared ``Content-Length``
    or the bytes actually received exceed the cap."""
    declared = response.headers.get("Content-Length")
    try:
        declared_n = int(declared) if declared is not None else None
    except ValueError:
        declared_n = None
    # Content-Length counts the bytes on the wire (compressed): only an identity body can be
    # refused before reading.
    if (declared_n is not None and declared_n > max_bytes
            and response.headers.get("Content-Encoding", "identity").lower() in ("", "identity")):
        response.close()
        raise TooLarge(source, target, max_bytes, what, declared_n)
    buf = bytearray()
    try:
        for chunk in response.iter_content(CHUNK):
            buf += chunk
            if len(buf) > max_bytes:
                raise TooLarge(source, target, max_bytes, what)
    finally:
        response.close()
    return bytes(buf)


def read_text(response: Any, max_bytes: int, *, source: str, target: object, what: str = "the answer") -> str:
    """:func:`read_body` decoded with the response's charset (UTF-8 when it names none)."""
    body = read_body(response, max_bytes, source=source, target=target, what=what)
    encoding = response.encoding or "utf-8"
    try:
        return body.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


class LineCap:
    """Lines of a text file, each cut at ``max_length`` characters; counts what was cut.

    ``cut``: lines cut (or continuation lines dropped); ``longest``: the longest line seen,
    in characters, as far as it was read (at least ``max_length`` once one was cut).
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = int(max_length)
        self.cut = 0
        self.longest = 0

    def lines(self, f: Any) -> Iterator[str]:
        """The lines of ``f`` (an open text file), none longer than ``max_length`` (+ newline)."""
        limit = self.max_length
        readline = f.readline
        continued = 0       # characters of continuation lines in a row (a tab first)
        while True:
            line = readline(limit)
            if not line:
                return
            n = len(line)
            if n >= limit and not line.endswith("\n"):
                # Too long: keep the head, skip the rest without holding it.
                skipped = 0
                while True:
                    rest = readline(limit)
                    skipped += len(rest)
                    if not rest or rest.endswith("\n"):
                        break
                self.cut += 1
                self.longest = max(self.longest, n + skipped)
                line += "\n"
            elif n > self.longest:
                self.longest = n
            if line.startswith("\t"):
                continued += len(line)
                if continued > limit:
                    self.cut += 1
                    continue
            else:
                continued = 0
            yield line
