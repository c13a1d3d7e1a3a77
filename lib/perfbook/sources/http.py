"""Active HTTP probes: time requests against the service (the runbook's `curl -w time_total`).

I/O only. Each request has a timeout; connection failures are retried a bounded number of
times with exponential backoff (0.5 s, 1 s, 2 s …, as the runbook's retry example). A
target that never answers raises :class:`~perfbook.sources.SourceUnreachable`.

Every URL an HTTP prober sends a request to (probes, bursts, load tests, the checklist's
probes, /health/services) is built by :func:`build_url`: a path on ``base_url``'s host,
re-checked after joining, or :class:`UrlRefused`. ``targets.base_url`` + ``probe_path`` can
never lead to another host (``/https://other.example/x``, ``//other/x``, ``\\other``).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import requests

from perfbook.params import path_problem

from . import SourceUnreachable, error_reason, present_only
from .bounded import TooLarge, limits_of, read_body

if TYPE_CHECKING:  # pandas is imported where a frame is built: the locust subprocess imports this module
    import pandas as pd


class UrlRefused(ValueError):
    """A URL perfbook will not send a request to: the path would leave the base URL's host."""


_DEFAULT_PORT = {"http": 80, "https": 443}


def _origin_key(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) as urllib and urllib3 (what requests sends with) both read it;
    ValueError when they disagree or there is no host."""
    from urllib3.util import parse_url

    p = urlsplit(url)
    scheme, host = (p.scheme or "").lower(), (p.hostname or "").lower()
    port = p.port or _DEFAULT_PORT.get(scheme, 0)
    u = parse_url(url)
    host3 = (u.host or "").lower().strip("[]")
    port3 = u.port or _DEFAULT_PORT.get((u.scheme or "").lower(), 0)
    if scheme not in _DEFAULT_PORT or not host or (host3, port3) != (host, port):
        raise ValueError(f"not an http(s) URL with one clear host: {url!r}")
    return scheme, host, port


def build_url(base: str, path: str) -> str:
    """``base`` (an http(s) URL, e.g. ``targets.base_url``) joined with ``path`` (e.g. an
    endpoint's ``probe_path``): the one function that builds every URL an HTTP prober sends
    a request to. The path is appended to the base's own path (``http://h/api`` +
    ``/x?y=1`` is ``http://h/api/x?y=1``), never resolved against it (no ``urljoin``).

    Raises :class:`UrlRefused` for a path that is not a plain path (:func:`path_problem`)
    and, re-checked on the result, for a URL whose scheme, host or port differ from the
    base's as urllib or urllib3 read them.
    """
    try:
        want = _origin_key(base)
    except ValueError as exc:
        raise UrlRefused(f"base URL: {exc}") from None
    problem = path_problem(path)
    if problem:
        raise UrlRefused(problem)
    b = urlsplit(base)
    url = urlunsplit((b.scheme, b.netloc, b.path.rstrip("/"), "", "")) + path
    try:
        got = _origin_key(url)
    except ValueError as exc:
        raise UrlRefused(f"{path!r} joined to the base URL: {exc}") from None
    if got != want:
        raise UrlRefused(f"{path!r} would leave {want[1]}:{want[2]} for {got[1]}:{got[2]}; refused")
    return url


@dataclass
class ProbeSpec:
    name: str          # "GET /api/products" — the endpoint as the params name it
    method: str
    url: str


def probe(specs: list[ProbeSpec], count: int = 20, timeout: float = 10.0, retries: int = 2,
          backoff: float = 0.5, headers: dict[str, str] | None = None,
          session: requests.Session | None = None, max_bytes: int | None = None) -> pd.DataFrame:
    """Request each spec ``count`` times, sequentially. One row per attempt that got an answer.

    Columns: endpoint, method, url, seq, status, seconds, bytes, error. A request that got no
    answer (connection refused, reset ...) is a row with ``error`` and ``status``/``seconds``
    NaN, and ends that spec's series (the target is down: a target that dies mid-probe leaves
    such a row on every spec probed after it). SourceUnreachable (naming the first URL) is
    raised only if *no* request of any spec got an answer. A body is read up to ``max_bytes``
    (``settings.limits.max_response_bytes``): a larger one is a row with its status and an
    ``error`` naming the cap, never held whole.
    """
    present_only("HTTP probe", "the endpoints")
    import pandas as pd

    max_bytes = max_bytes or limits_of().max_response_bytes
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
                                     allow_redirects=False, stream=True)
                    row["status"] = resp.status_code
                    try:
                        size = len(read_body(resp, max_bytes, source="http", target=spec.url))
                    except TooLarge as exc:
                        row.update(seconds=time.perf_counter() - t0, error=exc.reason)
                        break
                    row.update(seconds=time.perf_counter() - t0, bytes=size, error="")
                    break
                except requests.Timeout:
                    row.update(seconds=time.perf_counter() - t0, error=f"timeout after {timeout:g}s")
                    break  # a timeout is an answer about latency: record it, do not retry
                except requests.RequestException as exc:
                    row.update(status=None, error=error_reason(exc))
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


def host_of(url: str) -> str:
    """The host part of a URL, lower-case, IPv6 without brackets."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    return parts.hostname.lower()


def normalize_host(host: str) -> str:
    """A host name as compared with the params' host lists: lower-case, no brackets, no final dot."""
    return host.strip().strip("[]").lower().rstrip(".")


def host_listed(url: str, *lists: Iterable[str]) -> bool:
    """True when ``url`` is http(s) and its host is literally in one of ``lists``
    (case-insensitive, :func:`normalize_host`). No name is resolved and nothing is sent:
    a name that merely *resolves* to a listed address is not listed."""
    try:
        host = normalize_host(host_of(url))
    except ValueError:
        return False
    return bool(host) and host in {normalize_host(h) for hosts in lists for h in hosts}


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}" + (f":{p.port}" if p.port else "")




def specs_from_params(params) -> list[ProbeSpec]:
    """The endpoints the params file marks for probing, as absolute URLs (:func:`build_url`:
    :class:`UrlRefused` for a probe_path that would leave ``targets.base_url``'s host)."""
    base = params.targets.base_url
    if not base:
        return []
    return [ProbeSpec(e.name, e.method, build_url(base, e.probe_path))
            for e in params.endpoints if e.probe_path]


def get_json(url: str, timeout: float = 5.0, retries: int = 2, backoff: float = 0.5,
             max_bytes: int | None = None) -> tuple[int, object]:
    """GET a JSON document (e.g. /health/services): (status, parsed body or text). A body
    over ``max_bytes`` (``settings.limits.max_response_bytes``) raises :class:`TooLarge`."""
    import json

    max_bytes = max_bytes or limits_of().max_response_bytes
    last = ""
    for attempt in range(retries + 1):
        try:
            resp = requests.get(url, timeout=timeout, stream=True, allow_redirects=False)
            body = read_body(resp, max_bytes, source="http", target=url)
            try:
                return resp.status_code, json.loads(body)
            except ValueError:
                return resp.status_code, body[:10_000].decode(resp.encoding or "utf-8", errors="replace")
        except requests.RequestException as exc:
            last = error_reason(exc)
            if attempt < retries:
                time.sleep(backoff * 2 ** attempt)
    raise SourceUnreachable("http", _origin(url), last)
