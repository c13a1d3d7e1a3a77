"""Active HTTP probes: time requests against the service (the runbook's `curl -w time_total`).

I/O only. Each request has a timeout; connection failures are retried a bounded number of
times with exponential backoff (0.5 s, 1 s, 2 s …, as the runbook's retry example). A
target that never answers raises :class:`~perfbook.sources.SourceUnreachable`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import pandas as pd
import requests

from . import SourceUnreachable


@dataclass
class ProbeSpec:
    name: str          # "GET /api/products" — the endpoint as the params name it
    method: str
    url: str


def probe(specs: list[ProbeSpec], count: int = 20, timeout: float = 10.0, retries: int = 2,
          backoff: float = 0.5, headers: dict[str, str] | None = None,
          session: requests.Session | None = None) -> pd.DataFrame:
    """Request each spec ``count`` times, sequentially. One row per attempt that got an answer.

    Columns: endpoint, method, url, seq, status, seconds, bytes, error. A request that got no
    answer (connection refused, reset ...) is a row with ``error`` and ``status``/``seconds``
    NaN, and ends that spec's series (the target is down: a target that dies mid-probe leaves
    such a row on every spec probed after it). SourceUnreachable (naming the first URL) is
    raised only if *no* request of any spec got an answer.
    """
    s = session or requests.Session()
    rows = []
    reasons: dict[str, str] = {}
    for spec in specs:
        for i in range(count):
            row = {"endpoint": spec.name, "method": spec.method, "url": spec.url, "seq": i,
                   "status": None, "seconds": None, "bytes": None, "error": ""}
            for attempt in range(retries + 1):
                t0 = time.perf_counter()
                try:
                    resp = s.request(spec.method, spec.url, timeout=timeout, headers=headers,
                                     allow_redirects=False)
                    row.update(status=resp.status_code, seconds=time.perf_counter() - t0,
                               bytes=len(resp.content), error="")
                    break
                except requests.Timeout:
                    row.update(seconds=time.perf_counter() - t0, error=f"timeout after {timeout:g}s")
                    break  # a timeout is an answer about latency: record it, do not retry
                except requests.RequestException as exc:
                    row["error"] = _reason(exc)
                    if attempt < retries:
                        time.sleep(backoff * 2 ** attempt)
            if row["status"] is None and row["error"] and not row["error"].startswith("timeout"):
                reasons.setdefault(spec.url, row["error"])
                rows.append(row)  # recorded, so the endpoint's failed requests are counted
                break  # the target is down: one bounded retry series per endpoint is enough
            rows.append(row)
    if specs and all(r["seconds"] is None for r in rows):
        first = specs[0].url
        raise SourceUnreachable("http", _origin(first), reasons.get(first, "no answer"))
    df = pd.DataFrame(rows, columns=["endpoint", "method", "url", "seq", "status", "seconds", "bytes", "error"])
    df.attrs["unreachable"] = reasons
    return df


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}" + (f":{p.port}" if p.port else "")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for key in ("Connection refused", "Name or service not known", "No route to host", "timed out",
                "Connection reset"):
        if key in text:
            return key
    return type(exc).__name__


def specs_from_params(params) -> list[ProbeSpec]:
    """The endpoints the params file marks for probing, as absolute URLs."""
    base = params.targets.base_url
    if not base:
        return []
    return [ProbeSpec(e.name, e.method, urljoin(base + "/", e.probe_path.lstrip("/")))
            for e in params.endpoints if e.probe_path]


def get_json(url: str, timeout: float = 5.0, retries: int = 2, backoff: float = 0.5) -> tuple[int, object]:
    """GET a JSON document (e.g. /health/services): (status, parsed body or text)."""
    last = ""
    for attempt in range(retries + 1):
        try:
            resp = requests.get(url, timeout=timeout)
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, resp.text[:10_000]
        except requests.RequestException as exc:
            last = _reason(exc)
            if attempt < retries:
                time.sleep(backoff * 2 ** attempt)
    raise SourceUnreachable("http", _origin(url), last)
