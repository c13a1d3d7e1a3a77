"""The params file's errors and small types: :class:`ParamsError` (the one-line
message), durations, byte sizes' cousins, environment-variable names, URLs without
secrets, times (``now``, ``-30m``, ISO-8601) and the :class:`Strict` base model.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

# --------------------------------------------------------------------------- errors


class ParamsError(Exception):
    """A params file that cannot be used. ``str()`` is the one-line message."""

    def __init__(self, file: str | Path, field: str, problem: str):
        # One line, whatever the input: control characters, line separators and lone
        # surrogates (in a file name, a key, a value) are shown escaped.
        self.file, self.field, self.problem = _one_line(str(file)), _one_line(field), _one_line(problem)
        super().__init__(f"{self.file}: {self.field}: {self.problem}")


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


# --------------------------------------------------------------------------- small types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"200ms"``, ``"1s"``, ``"5m"``, ``2`` (seconds) → seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 200ms, 1s, 5m or a number of seconds")
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
        else:
            raise ValueError(f"expected a duration like 200ms, 1s, 5m or a number of seconds, got {_short(value)}")
    except OverflowError:
        raise ValueError(f"a duration out of range: {_short(value)}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, got {_short(value)}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from the file, cut for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


Duration = Annotated[float, BeforeValidator(parse_duration)]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: str) -> str:
    if "://" in value or "@" in value or "=" in value:
        raise ValueError(
            "looks like a secret value written inline; put it in an environment variable "
            "and write the variable's name here (e.g. DATABASE_URL)"
        )
    if not _ENV_NAME.match(value):
        raise ValueError(f"must be the name of an environment variable (letters, digits, _), got {value!r}")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


#: Query parameters that carry credentials (``?api_key=``, ``&token=``, ``&X-Amz-Signature=``...).
_QUERY_SECRET = re.compile(r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|apikey|^key$|access[_-]?key|"
                           r"signature|^sig$|auth|credential|session)", re.I)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
    if parts.password:
        raise ValueError("contains a password; secrets are named by environment variable, never written inline")
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _QUERY_SECRET.search(key):
            raise ValueError(f"carries a secret in its query string ({key}=…); secrets are named by "
                             "environment variable, never written inline (use a header, e.g. bearer_token_env)")
    try:
        parts.port  # noqa: B018  (raises ValueError on an invalid port)
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


def resolve_time(value: str | datetime, now: datetime | None = None) -> datetime:
    """``now``, ``-30m`` (relative to now) or ISO-8601 → aware UTC datetime."""
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if text == "now":
            return now
        try:
            if m := _RELATIVE.match(text):
                return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected 'now', a relative time like -30m, or ISO-8601, got {_short(text)}") from None
        except OverflowError:
            raise ValueError(f"a time out of range: {_short(text)}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"a time out of range: {_short(value)}") from None


def _time_spec(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected 'now', a relative time like -30m, or ISO-8601, got {value!r}")
    resolve_time(value)  # validates
    return value


TimeSpec = Annotated[str, BeforeValidator(_time_spec)]


class Strict(BaseModel):
    # NaN or infinity is never a meaningful threshold, target or setting.
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True, allow_inf_nan=False)
