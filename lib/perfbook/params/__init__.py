"""The params file: where to look, the window, the targets, the thresholds.

A params file is YAML validated by :class:`Params` *before any kernel starts*. An error is
one line, ``FILE: field.path: what is wrong`` (:class:`ParamsError`), and nothing runs.

Secrets never live in a params file: the database, Redis and bearer token are given by the
*name of the environment variable* that holds them (``database_env: DATABASE_URL``). A value
that looks like a secret written inline (a DSN, a URL with a password, a token) is refused.

Defaults come from the runbook's "Performance Baselines" tables, so a params file only
says what differs for a service.

The package is that file's model, in parts; import everything from here
(``from perfbook.params import Params``): :mod:`.values` (errors, small types),
:mod:`.targets` (window, targets, endpoints, thresholds, metrics), :mod:`.settings`
(per-section settings and :class:`Params`) and :mod:`.loading` (reading a file, overrides).
"""
from __future__ import annotations

from .loading import env_value, is_loopback, load, load_model, parse_override
from .settings import (
    DEFAULT_ALERTS,
    DERIVED_PLACEHOLDERS,
    PLACEHOLDER,
    AlertRule,
    Balance,
    Caching,
    Database,
    Diagnostics,
    External,
    Limits,
    LoadStage,
    LoadTest,
    Monitoring,
    Params,
    Probes,
    RateLimiting,
    Scaling,
    Sections,
)
from .targets import (
    DEFAULT_ENDPOINTS,
    Endpoint,
    LatencyTargets,
    Level,
    Metrics,
    Prometheus,
    Targets,
    Thresholds,
    Window,
    parse_bytes,
    path_problem,
)
from .values import Duration, EnvName, HttpUrl, ParamsError, Strict, TimeSpec, parse_duration, resolve_time

__all__ = [
    "env_value", "is_loopback", "load", "load_model", "parse_override", "DEFAULT_ALERTS", "DERIVED_PLACEHOLDERS", "PLACEHOLDER", "AlertRule", "Balance", "Caching", "Database", "Diagnostics", "External", "Limits", "LoadStage", "LoadTest", "Monitoring", "Params", "Probes", "RateLimiting", "Scaling", "Sections", "DEFAULT_ENDPOINTS", "Endpoint", "LatencyTargets", "Level", "Metrics", "Prometheus", "Targets", "Thresholds", "Window", "parse_bytes", "path_problem", "Duration", "EnvName", "HttpUrl", "ParamsError", "Strict", "TimeSpec", "parse_duration", "resolve_time",
]
