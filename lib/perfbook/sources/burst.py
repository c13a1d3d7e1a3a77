"""A bounded burst against one route: does a rate limiter answer 429?

The runbook's question "is the expensive route rate-limited at all?" is answered the
way an attacker would find out, but small: at most ``requests`` requests (20 by
default), at most ``concurrency`` in flight, each with a timeout, the whole burst within
``budget`` seconds, and it stops at the first 429 (the limiter is proven; there is no
need to push further). Every answer's status, time and rate-limit headers
(``RateLimit-*``, ``X-RateLimit-*``, ``Retry-After``) are kept.

Safety: a burst is sent only to a host in the params' ``targets.allowed_hosts``
(loopback by default) or explicitly opted in by
``settings.rate_limiting.burst_opt_in_hosts``; :func:`burst` refuses anything else
with :class:`BurstRefused`, whatever its caller checked before.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import requests

from perfbook.sources import SourceUnreachable, error_reason, present_only
from perfbook.sources.bounded import TooLarge, limits_of, read_body
from perfbook.sources.http import UrlRefused, build_url, host_listed

__all__ = ["BurstTarget", "BurstRefused", "host_allowed", "targets_from_params", "burst", "run_all",
           "RATE_LIMIT_HEADERS"]

#: Response headers kept from each answer (lower-case): IETF draft-7/8 names, the legacy
#: X- names (express-rate-limit ``legacyHeaders``) and Retry-After.
RATE_LIMIT_HEADERS = ("ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining",
                      "ratelimit-reset", "x-ratelimit-limit", "x-ratelimit-remaining",
                      "x-ratelimit-reset", "retry-after")

USER_AGENT = "perfbook-burst (rate-limit check; bounded)"


class BurstRefused(ValueError):
    """The target's host is not allowed for bursts."""


@dataclass
class BurstTarget:
    name: str     # "POST /api/content/generate", the endpoint as the params name it
    method: str
    url: str
    refused: str = ""  # why no URL could be built on targets.base_url's host (url is then "")


def host_allowed(url: str, allowed_hosts: Iterable[str], opt_in: Iterable[str] = ()) -> bool:
    """True if ``url``'s host is listed in ``allowed_hosts`` or ``opt_in`` (:func:`perfbook.sources.http.host_listed`)."""
    return host_listed(url, allowed_hosts, opt_in)


def targets_from_params(params: Any) -> list[BurstTarget]:
    """The params' expensive endpoints as burst targets (probe_path, else a route without
    ``:params``); an endpoint with neither, or no base_url, is left out. URLs come from
    :func:`~perfbook.sources.http.build_url`: a path that would leave the base URL's host
    gives a target with ``refused`` set and no URL."""
    base = params.targets.base_url
    out = []
    for e in params.endpoints:
        if not e.expensive or not base:
            continue
        path = e.probe_path or (e.route if ":" not in e.route else None)
        if path:
            try:
                out.append(BurstTarget(e.name, e.method, build_url(base, path)))
            except UrlRefused as exc:
                out.append(BurstTarget(e.name, e.method, "", refused=str(exc)))
    return out


def _headers_of(resp: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items() if k.lower() in RATE_LIMIT_HEADERS}


def burst(target: BurstTarget, allowed_hosts: Iterable[str], opt_in: Iterable[str] = (), *,
          requests_: int = 20, timeout: float = 10.0, budget: float = 30.0, concurrency: int = 4,
          body: dict | None = None, stop_on_429: bool = True,
          session: requests.Session | None = None, max_bytes: int | None = None) -> pd.DataFrame:
    """Send the bounded burst; one row per request sent.

    Columns: ``endpoint``, ``seq`` (order sent), ``order`` (order answered), ``status``
    (NaN if no answer), ``seconds``, ``error``,
    ``headers`` (dict of the rate-limit headers present). ``df.attrs``: ``stopped``
    (``"429"``, ``"budget"``, ``"done"``, ``"no connection"``), ``seconds`` (whole
    burst), ``url``.

    Raises :class:`BurstRefused` for a host not allowed, :class:`SourceUnreachable`
    (source ``"http"``) when no request got an answer because nothing accepted a connection.
    """
    present_only("rate-limit burst", target.url)
    if target.refused:
        raise BurstRefused(target.refused)
    if not host_allowed(target.url, allowed_hosts, opt_in):
        raise BurstRefused(f"{urlsplit(target.url).hostname} is not in targets.allowed_hosts nor "
                           f"settings.rate_limiting.burst_opt_in_hosts")
    s = session or requests.Session()
    max_bytes = max_bytes or limits_of().max_response_bytes
    payload = json.dumps(body or {}) if target.method in ("POST", "PUT", "PATCH") else None
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    t0 = time.monotonic()
    deadline = t0 + budget
    stop, refused = threading.Event(), threading.Event()
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(seq: int) -> None:
        row = {"endpoint": target.name, "seq": seq, "status": None, "seconds": None, "error": "", "headers": {}}
        left = deadline - time.monotonic()
        if left <= 0.05 or stop.is_set():
            return
        started = time.perf_counter()
        try:
            resp = s.request(target.method, target.url, data=payload, headers=headers,
                             timeout=min(timeout, left), allow_redirects=False, stream=True)
            row.update(status=resp.status_code, headers=_headers_of(resp))
            try:  # read the body (bounded) so the connection is reusable
                read_body(resp, max_bytes, source="http", target=target.url)
            except TooLarge as exc:
                row["error"] = exc.reason
            if resp.status_code == 429 and stop_on_429:
                stop.set()
        except requests.Timeout:
            row["error"] = f"timeout after {min(timeout, left):.3g} s"
        except requests.RequestException as exc:
            row["error"] = error_reason(exc)
            refused.set()  # nothing listens: sending the rest proves nothing
            stop.set()
        row["seconds"] = time.perf_counter() - started
        with lock:
            row["order"] = len(rows) + 1  # answers in the order they came back
            rows.append(row)

    sent = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: set = set()
        while True:
            while (sent < requests_ and len(pending) < concurrency and not stop.is_set()
                   and time.monotonic() < deadline):
                pending.add(pool.submit(one, sent))
                sent += 1
            if not pending:
                break
            _, pending = wait(pending, timeout=max(0.05, deadline - time.monotonic() + timeout),
                              return_when=FIRST_COMPLETED)
    stopped = ("no connection" if refused.is_set() else "429" if stop.is_set()
               else "done" if len(rows) >= requests_ else "budget")
    df = pd.DataFrame(sorted(rows, key=lambda r: r["seq"]),
                      columns=["endpoint", "seq", "order", "status", "seconds", "error", "headers"])
    df.attrs.update(stopped=stopped, seconds=time.monotonic() - t0, url=target.url)
    if len(df) and df["status"].isna().all() and refused.is_set():
        p = urlsplit(target.url)
        raise SourceUnreachable("http", f"{p.scheme}://{p.netloc}", df["error"].iloc[0] or "no answer")
    return df




def run_all(params: Any, session: requests.Session | None = None) -> dict[str, pd.DataFrame | str]:
    """Burst every expensive endpoint the params list, within one shared budget.

    Returns, per endpoint name, the burst's answers, or a string saying why none was sent
    (bursts off, host not allowed, no concrete path, budget used up). Settings:
    ``settings.rate_limiting`` (burst_requests, burst_timeout, burst_budget,
    burst_concurrency, burst_body, burst_opt_in_hosts); hosts: ``targets.allowed_hosts``.
    """
    present_only("rate-limit burst", "the expensive endpoints")
    s = params.settings.rate_limiting
    out: dict[str, pd.DataFrame | str] = {}
    runnable = {t.name: t for t in targets_from_params(params)}
    t0 = time.monotonic()
    for e in params.endpoints:
        if not e.expensive:
            continue
        target = runnable.get(e.name)
        if s.burst_requests == 0:
            out[e.name] = "bursts are off (settings.rate_limiting.burst_requests: 0)"
        elif target is None:
            out[e.name] = ("no targets.base_url" if not params.targets.base_url else
                           "no probe_path, and the route has parameters")
        elif target.refused:
            out[e.name] = f"refused: {target.refused}"
        elif not host_allowed(target.url, params.targets.allowed_hosts, s.burst_opt_in_hosts):
            out[e.name] = (f"host {urlsplit(target.url).hostname} not allowed (targets.allowed_hosts / "
                           f"settings.rate_limiting.burst_opt_in_hosts)")
        elif (left := s.burst_budget - (time.monotonic() - t0)) < 1:
            out[e.name] = "burst budget used up by the routes before"
        else:
            out[e.name] = burst(target, params.targets.allowed_hosts, s.burst_opt_in_hosts,
                                requests_=s.burst_requests, timeout=s.burst_timeout, budget=left,
                                concurrency=s.burst_concurrency, body=s.burst_body, session=session,
                                max_bytes=limits_of(params).max_response_bytes)
    return out
