"""External dependencies, asked directly: the service's /health/services and each
dependency's own health URL, with the runbook's retry.

:func:`probe_with_backoff` is the runbook's ``callAPIWithRetry`` made safe for a
report: each attempt has a timeout; a failed attempt (no connection, timeout, 5xx,
429) is retried after 1 s, 2 s, 4 s (``backoff * 2**i``); and the whole probe of one
dependency never takes longer than ``budget`` seconds — a retry that could not finish
inside it is not started.
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd
import requests

from perfbook.sources import SourceError, bounded, error_reason, http, present_only

__all__ = ["health_services", "probe_with_backoff", "probe_all", "PROBE_COLUMNS"]

PROBE_COLUMNS = ["dependency", "url", "attempt", "waited_s", "status", "seconds", "error", "ok"]


def health_services(base_url: str | None, timeout: float = 5.0, retries: int = 1,
                    path: str = "/health/services") -> tuple[int, Any]:
    """GET ``base_url`` + ``/health/services``: ``(HTTP status, parsed JSON or text)``.

    A service that is degraded often answers 503 with the same JSON body; that is an
    answer, not an outage. Raises :class:`~perfbook.sources.SourceUnreachable` when nothing answers and
    :class:`SourceError` when no base_url is configured or the body is not JSON.
    """
    present_only("/health/services", base_url)
    if not base_url:
        raise SourceError("http", "(targets.base_url not set)", "no base URL to ask for /health/services")
    url = http.build_url(base_url, path)
    status, body = http.get_json(url, timeout=timeout, retries=retries)
    if not isinstance(body, (dict, list)):
        raise SourceError("http", url, f"HTTP {status}, not JSON: {str(body)[:120]!r}")
    return status, body


def _retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status == 429


def probe_with_backoff(dependency: str, url: str, timeout: float = 5.0, retries: int = 3,
                       backoff: float = 1.0, budget: float = 30.0,
                       session: requests.Session | None = None) -> pd.DataFrame:
    """GET ``url`` until it answers well or the retries or the budget run out.

    One row per attempt (columns :data:`PROBE_COLUMNS`): ``waited_s`` is the backoff slept
    before it, ``status`` the HTTP status (None without an answer), ``ok`` True for an
    answer under 400. Never raises for the dependency's own failures: they are the finding.
    """
    s = session or requests.Session()
    rows = []
    t0 = time.monotonic()
    waited = 0.0
    for attempt in range(retries + 1):
        row = {"dependency": dependency, "url": url, "attempt": attempt + 1, "waited_s": waited,
               "status": None, "seconds": None, "error": "", "ok": False}
        left = budget - (time.monotonic() - t0)
        this_timeout = min(timeout, max(0.1, left))
        started = time.perf_counter()
        try:
            resp = s.get(url, timeout=this_timeout, allow_redirects=False, stream=True,
                         headers={"User-Agent": "perfbook-probe"})
            row.update(status=resp.status_code, ok=resp.status_code < 400)
            if resp.status_code >= 400:
                row["error"] = f"HTTP {resp.status_code}"
            try:  # the body is read (bounded: settings.limits' default), as a client would
                bounded.read_body(resp, bounded.limits_of().max_response_bytes, source="http", target=url)
            except bounded.TooLarge as exc:
                row.update(ok=False, error=exc.reason)
        except requests.Timeout:
            row["error"] = f"timeout after {this_timeout:.3g} s"
        except requests.RequestException as exc:
            row["error"] = error_reason(exc)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        if row["ok"] or not _retryable(row["status"]) or attempt == retries:
            break
        delay = backoff * 2 ** attempt
        # Start a retry only if it can finish (sleep + one full timeout) inside the budget.
        if time.monotonic() - t0 + delay + timeout > budget:
            break
        time.sleep(delay)
        waited = delay
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def probe_all(urls: dict[str, str], timeout: float = 5.0, retries: int = 3, budget: float = 30.0,
              backoff: float = 1.0) -> pd.DataFrame:
    """:func:`probe_with_backoff` for each ``{dependency: health URL}`` (the params'
    ``targets.external_health_urls``), one after the other; ``budget`` is per dependency."""
    present_only("external health probe", "the dependencies")
    frames = [probe_with_backoff(name, url, timeout=timeout, retries=retries, backoff=backoff, budget=budget)
              for name, url in urls.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROBE_COLUMNS)
