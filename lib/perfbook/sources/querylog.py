"""Query logs, streamed: PostgreSQL's statement log and Prisma's ``prisma:query`` lines.

I/O only. Each reader yields one :class:`Statement` per executed statement, reading the
file line by line, each line cut at ``settings.limits.max_line_length`` (memory does not grow
with the file nor with a line that never ends; ``.gz`` files are read through
gzip). The analysis (fingerprints, N+1 runs) is :mod:`perfbook.checks.querylog`. A file
that is missing raises :class:`~perfbook.sources.SourceUnreachable` when opened; one that
dies under the reader (truncated in place by log rotation, a read error, a ``.gz`` that
ends early) raises it when the reader gets there, so part of a log never passes for all
of it (:func:`_lines`).

PostgreSQL (``log_min_duration_statement = 0``, stderr format, any ``log_line_prefix``
that has ``%c`` or ``%p``): records are grouped and split into prefix, severity and
message by pgtoolkit (:func:`pgtoolkit.log.parse`'s machinery). Statements come as

- ``LOG:  duration: 0.123 ms  statement: SELECT ...`` (simple protocol),
- ``LOG:  duration: 0.050 ms  parse <unnamed>: ...`` / ``bind ...`` / ``execute <name>: ...``
  (extended protocol: the parse and bind times are added to the execute that follows),
- ``LOG:  statement: ...`` / ``LOG:  execute <name>: ...`` then ``LOG:  duration: 1.2 ms``
  (``log_statement = all`` with ``log_duration``),

continuation lines (a tab first) belonging to the statement above them. ``DETAIL:``
parameter lines, errors and everything else are skipped.

Prisma (``log: ['query']`` / ``DEBUG=prisma:query``): ``prisma:query <SQL>`` anywhere in a
line (after a platform prefix such as Fly.io's ``app[<id>]``); JSON lines with ``query``
and ``duration`` fields (Prisma's query event) too. A line has no session: the Fly
instance id stands for it when present, otherwise the file.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from . import SourceUnreachable
from .bounded import LineCap, limits_of

SOURCE = "logs"
#: The demo's (and a sensible production) log_line_prefix: time with ms, pid, session id, user@db.
DEFAULT_PREFIX = "%m [%p] %c %q%u@%d "


class Statement(NamedTuple):
    """One executed statement from a log."""

    session: str            # %c (else %p) for PostgreSQL; instance or file for Prisma
    timestamp: str          # as written in the log ("2026-11-26 22:28:51.694 UTC"); "" if none
    duration_ms: float | None
    text: str
    user: str
    database: str


def _open(path: str | Path) -> io.TextIOBase:
    p = Path(path)
    try:
        if p.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace")
        return open(p, encoding="utf-8", errors="replace", newline=None, buffering=1 << 20)
    except FileNotFoundError:
        raise SourceUnreachable(SOURCE, str(p), "no such file") from None
    except IsADirectoryError:
        raise SourceUnreachable(SOURCE, str(p), "is a directory, not a log file") from None
    except PermissionError:
        raise SourceUnreachable(SOURCE, str(p), "permission denied (run as a user who can read the log)") from None


def _lines(f: io.TextIOBase, path: str | Path, cap: LineCap | None = None) -> Iterator[str]:
    """The lines of an open log, guarded against the file dying under the reader.

    A read error (EIO on a failing disk or a lost network mount, a ``.gz`` that ends
    early) raises :class:`SourceUnreachable`. So does a file that shrank while it was read
    (truncated in place, e.g. logrotate's ``copytruncate``) before the reader got to the
    size it had when opened: the reads after the truncation end early and silently, and the
    statements never read must not pass for a clean log. A file renamed away by rotation
    while open is read to its end (the descriptor keeps it), so it is complete as of its
    opening; a file that grows meanwhile (the server still logging) is fine too.

    Lines are cut at ``cap.max_length`` characters (``settings.limits.max_line_length``;
    :class:`~perfbook.sources.bounded.LineCap`): a line without a newline is never read whole.
    """
    cap = cap or LineCap(limits_of().max_line_length)
    try:
        fd = f.fileno()
        st = os.fstat(fd)
        regular, opened_size = stat.S_ISREG(st.st_mode), st.st_size
    except (OSError, AttributeError, io.UnsupportedOperation):  # not a file on disk: nothing to compare
        fd, regular, opened_size = -1, False, 0
    try:
        yield from cap.lines(f)
    except EOFError:  # gzip: "Compressed file ended before the end-of-stream marker was reached"
        raise SourceUnreachable(SOURCE, str(path), "the compressed file ends early (truncated or still being "
                                                   "written): its statements could not all be read") from None
    except OSError as exc:
        raise SourceUnreachable(SOURCE, str(path), f"read failed: {exc.strerror or exc}; its statements could "
                                                   f"not all be read") from None
    if not regular:  # a pipe (process substitution) has no size to compare with
        return
    position, size = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_size
    if size < position and position < opened_size:
        raise SourceUnreachable(SOURCE, str(path),
                                f"the file was truncated while being read (from {opened_size:,} to {size:,} bytes, "
                                f"after {position:,} bytes were read; log rotation with copytruncate?): the rest of "
                                f"its statements could not be read; point the params at the rotated copy or re-run")


# --------------------------------------------------------------------------- PostgreSQL


class _Prefix:
    """pgtoolkit's log_line_prefix pattern, without its casts (no datetime objects per
    line, and time zones other than UTC do not raise)."""

    def __init__(self, prefix: str):
        from pgtoolkit.log.parser import PrefixParser

        self.re_ = PrefixParser.from_configuration(prefix).re_
        self.has_session = "%c" in prefix

    def parse(self, prefix: str) -> dict[str, Any]:
        from pgtoolkit.log import UnknownData

        m = self.re_.search(prefix)
        if not m:
            raise UnknownData([prefix])
        return m.groupdict()


class _StatementsOnly:
    """pgtoolkit filters: keep only records that carry a statement or a duration."""

    def stage1(self, record: Any) -> bool:
        if record.severity != "LOG":
            return True
        if record.message_type == "duration":
            return False
        first = record.message_lines[0]
        return not (first.startswith("statement: ") or first.startswith("execute "))

    def stage2(self, record: Any) -> bool:
        return False

    def stage3(self, record: Any) -> bool:
        return False


_DURATION = re.compile(r"duration: ([0-9.]+) ms(?:  (statement|execute|parse|bind)( [^:]*)?: )?")


def _message(lines: list[str], start: int) -> str:
    """The statement text: the first line from ``start``, continuation lines joined with
    newlines (pgtoolkit's own join drops them, gluing ``...clicks`` and ``FROM``)."""
    first = lines[0][start:].rstrip("\n")
    if len(lines) == 1:
        return first
    rest = [ln[1:].rstrip("\n") if ln.startswith("\t") else ln.rstrip("\n") for ln in lines[1:]]
    return first + "\n" + "\n".join(rest)


def _window(since: datetime | None, until: datetime | None) -> tuple[str, str]:
    fmt = lambda t: t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:23] if t else ""  # noqa: E731
    return fmt(since), fmt(until)


def read_postgres_log(path: str | Path, prefix: str = DEFAULT_PREFIX, since: datetime | None = None,
                      until: datetime | None = None, cap: LineCap | None = None) -> Iterator[Statement]:
    """Statements of one PostgreSQL stderr log, in order. ``since``/``until`` (aware
    datetimes) keep the window when the log's times are UTC (``log_timezone = 'UTC'``);
    with another zone the whole file is read."""
    from pgtoolkit.log import UnknownData
    from pgtoolkit.log.parser import LogParser

    prefix_parser = _Prefix(prefix)
    lo, hi = _window(since, until)
    pending: dict[str, float] = {}          # parse/bind time per session, added to its execute
    waiting: dict[str, Statement] = {}      # log_statement lines waiting for their duration line
    key = "session" if prefix_parser.has_session else "pid"
    with _open(path) as f:
        parser = LogParser(prefix_parser, filters=_StatementsOnly())
        for rec in parser.parse(_lines(f, path, cap)):
            if isinstance(rec, UnknownData):
                continue
            d = rec.__dict__
            session = d.get(key) or d.get("pid") or ""
            ts = d.get("timestamp_ms") or d.get("timestamp") or ""
            if (lo or hi) and ts.endswith(("UTC", "GMT")):
                t = ts[:23]
                if (lo and t < lo) or (hi and t > hi):
                    continue
            lines = rec.message_lines
            first = lines[0]
            if rec.message_type == "duration":
                m = _DURATION.match(first)
                if not m:
                    continue
                ms = float(m.group(1))
                kind = m.group(2)
                if kind is None:  # a bare duration line: completes a log_statement line
                    st = waiting.pop(session, None)
                    if st is not None:
                        yield st._replace(duration_ms=ms)
                    continue
                if kind in ("parse", "bind"):
                    pending[session] = pending.get(session, 0.0) + ms
                    continue
                if session in pending:
                    ms += pending.pop(session)
                yield Statement(session, ts, ms, _message(lines, m.end()), d.get("user") or "",
                                d.get("database") or "")
            else:  # "statement: ..." or "execute <name>: ..." without a duration
                start = len("statement: ") if first.startswith("statement: ") else first.find(": ") + 2
                previous = waiting.pop(session, None)
                if previous is not None:
                    yield previous
                waiting[session] = Statement(session, ts, None, _message(lines, start), d.get("user") or "",
                                             d.get("database") or "")
        yield from waiting.values()


# --------------------------------------------------------------------------- Prisma

_PRISMA = re.compile(r"prisma:query\s+(.*?)\s*(?:\+\d+ms)?\s*$")
_FLY_INSTANCE = re.compile(r"\bapp\[([0-9a-f]+)\]")
_ISO = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?)")
_PRISMA_DURATION = re.compile(r"(?i)\bduration[:=]\s*([0-9.]+)\s*ms\b")


def read_prisma_log(path: str | Path, since: datetime | None = None,
                    until: datetime | None = None, cap: LineCap | None = None) -> Iterator[Statement]:
    """Statements from Prisma query logging, in order (see the module docstring)."""
    name = str(path)
    lo, hi = _window(since, until)
    with _open(path) as f:
        for line in _lines(f, path, cap):
            if "prisma:query" in line:
                m = _PRISMA.search(line)
                if not m:
                    continue
                text = m.group(1)
                dm = _PRISMA_DURATION.search(line)
                ms = float(dm.group(1)) if dm else None
                if dm:
                    text = _PRISMA_DURATION.sub("", text).strip()
            elif line.startswith("{") and '"query"' in line:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                text = ev.get("query")
                if not isinstance(text, str):
                    continue
                dur = ev.get("duration")
                ms = float(dur) if isinstance(dur, (int, float)) else None
            else:
                continue
            inst = _FLY_INSTANCE.search(line)
            ts_m = _ISO.match(line)
            ts = ts_m.group(1).replace("T", " ").rstrip("Z") if ts_m else ""
            if ts and (lo or hi):
                t = ts[:23]
                if (lo and t < lo) or (hi and t > hi):
                    continue
            yield Statement(inst.group(1) if inst else name, ts, ms, text, "", "")


# --------------------------------------------------------------------------- both


def sniff(path: str | Path, lines: int = 200) -> str:
    """``"prisma"`` if the first lines have ``prisma:query``, else ``"postgres"``."""
    with _open(path) as f:
        for i, line in enumerate(LineCap(64 * 1024).lines(f)):
            if "prisma:query" in line or (line.startswith("{") and '"query"' in line):
                return "prisma"
            if " LOG:  " in line or " ERROR:  " in line:
                return "postgres"
            if i >= lines:
                break
    return "postgres"


class Statements:
    """The statements of several logs (an iterator; or iterate it again from the start), with
    what the line cap cut:
    ``cut_lines`` (lines cut at, or continuation lines dropped past, ``max_line_length``
    characters) and ``longest_line``, both after iterating."""

    def __init__(self, paths: Iterable[str | Path], prefix: str, since: datetime | None, until: datetime | None,
                 max_line_length: int) -> None:
        self.paths, self.prefix, self.since, self.until = list(paths), prefix, since, until
        self.max_line_length = int(max_line_length)
        self.cut_lines = 0
        self.longest_line = 0
        self._it: Iterator[Statement] | None = None

    def __next__(self) -> Statement:  # also an iterator, as read() used to be a generator
        if self._it is None:
            self._it = self._statements()
        return next(self._it)

    def __iter__(self) -> Iterator[Statement]:
        return self._statements() if self._it is None else self._it

    def _statements(self) -> Iterator[Statement]:
        cap = LineCap(self.max_line_length)
        try:
            for p in self.paths:
                if sniff(p) == "prisma":
                    yield from read_prisma_log(p, self.since, self.until, cap)
                else:
                    yield from read_postgres_log(p, self.prefix, self.since, self.until, cap)
        finally:
            self.cut_lines, self.longest_line = cap.cut, cap.longest


def read(paths: Iterable[str | Path], prefix: str = DEFAULT_PREFIX, since: datetime | None = None,
         until: datetime | None = None, limits: Any = None) -> Statements:
    """Statements of several logs, one file after the other, each read as its format; no
    line longer than ``settings.limits.max_line_length`` (``limits``: the params'
    ``settings.limits``, default its defaults) is held: see :class:`Statements`."""
    return Statements(paths, prefix, since, until, limits_of(limits).max_line_length)
