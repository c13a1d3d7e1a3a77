"""Redis, read-only: INFO and a bounded SCAN sample of keys with their TTLs.

The runbook's cache is checked where it lives: ``INFO`` gives keyspace hits and misses,
evicted and expired keys and memory against ``maxmemory``; a SCAN sample (never
``KEYS``) gives the TTLs actually set per key family. Only read commands are sent
(INFO, SCAN, PTTL); SCAN is bounded in keys and in time so a large keyspace is never
walked in full.

The URL comes from the environment variable the params name (``targets.redis_env``);
it may hold a password, which never reaches an exception or a report
(:func:`perfbook.sources.safe_target`).
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd

from perfbook.sources import SourceError, SourceUnreachable, error_reason, present_only, safe_target

__all__ = ["connect", "info", "sample_ttls", "info_for", "sample_for"]

SOURCE = "redis"


def _client(url: str, timeout: float):
    present_only("Redis", url)
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - redis is a dependency
        raise SourceError(SOURCE, safe_target(url), f"the redis package is not installed ({exc})") from None
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry_on_timeout=False, decode_responses=False,
                                    client_name="perfbook")
    except ValueError as exc:
        raise SourceError(SOURCE, safe_target(url), f"not a Redis URL: {exc}") from None


def _call(url: str, fn):
    """Run ``fn()``; translate redis-py's errors into the sources' two exceptions."""
    import redis

    try:
        return fn()
    except redis.AuthenticationError as exc:  # a subclass of ConnectionError: test it first
        raise SourceError(SOURCE, safe_target(url), f"authentication failed: {error_reason(exc, detail=True)}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SourceUnreachable(SOURCE, safe_target(url), error_reason(exc, detail=True)) from None
    except redis.ResponseError as exc:
        raise SourceError(SOURCE, safe_target(url), error_reason(exc, detail=True)) from None
    except OSError as exc:
        raise SourceUnreachable(SOURCE, safe_target(url), error_reason(exc, detail=True)) from None




def connect(url: str | None, timeout: float = 3.0):
    """A redis-py client that has answered PING. ``url`` None/empty → SourceUnreachable."""
    if not url:
        raise SourceUnreachable(SOURCE, "(not set)", "the environment variable the params name for Redis is empty")
    client = _client(url, timeout)
    _call(url, client.ping)
    return client


def info(url: str | None, timeout: float = 3.0) -> dict[str, Any]:
    """``INFO`` (all sections) as one flat dict, e.g. ``keyspace_hits``, ``evicted_keys``,
    ``used_memory``, ``maxmemory``, ``maxmemory_policy``, ``uptime_in_seconds``, ``db0``
    (a dict of ``keys``/``expires``/``avg_ttl``)."""
    client = connect(url, timeout)
    try:
        data = _call(url, lambda: client.info("all"))
    finally:
        client.close()
    return dict(data)


def sample_ttls(url: str | None, max_keys: int = 1000, timeout: float = 3.0, budget: float = 10.0,
                scan_count: int = 200, match: str | None = None) -> pd.DataFrame:
    """A bounded SCAN sample: at most ``max_keys`` keys, at most ``budget`` seconds.

    One row per key: ``key`` (text; undecodable bytes replaced), ``ttl_s`` (seconds, float;
    ``NaN`` for a key without expiry, dropped keys left out). ``df.attrs``: ``complete``
    (the whole keyspace was scanned), ``scanned`` (keys seen), ``seconds``, and
    ``added_keyspace_hits`` / ``added_keyspace_misses``: Redis counts each PTTL as a
    keyspace lookup (there is no TTL command that does not), so the sample itself raises
    INFO's counters by up to ``max_keys`` — read INFO before sampling (the caching
    notebook does), and keep the sample small against a production Redis's traffic.
    """
    client = connect(url, timeout)
    before = _call(url, lambda: client.info("stats"))
    keys: list[bytes] = []
    ttls: list[int] = []
    complete, seen = False, 0
    t0 = time.monotonic()
    try:
        cursor = 0
        while len(keys) < max_keys and time.monotonic() - t0 < budget:
            cursor, batch = _call(url, lambda: client.scan(cursor=cursor, match=match, count=scan_count))
            keys.extend(batch)
            if int(cursor) == 0:
                complete = True
                break
        seen = len(keys)
        keys = keys[:max_keys]
        for i in range(0, len(keys), 500):
            pipe = client.pipeline(transaction=False)
            for k in keys[i:i + 500]:
                pipe.pttl(k)
            ttls.extend(_call(url, pipe.execute))
        after = _call(url, lambda: client.info("stats"))
    finally:
        client.close()
    rows = []
    for k, ms in zip(keys, ttls):
        if ms == -2:  # expired between SCAN and PTTL
            continue
        rows.append({"key": k.decode("utf-8", errors="replace") if isinstance(k, bytes) else str(k),
                     "ttl_s": float("nan") if ms == -1 else ms / 1000.0})
    df = pd.DataFrame(rows, columns=["key", "ttl_s"])
    df.attrs.update(complete=complete and seen <= max_keys, scanned=len(keys), seconds=time.monotonic() - t0,
                    added_keyspace_hits=int(after.get("keyspace_hits", 0)) - int(before.get("keyspace_hits", 0)),
                    added_keyspace_misses=int(after.get("keyspace_misses", 0)) - int(before.get("keyspace_misses", 0)))
    return df


def _url_from_env(env_name: str) -> str:
    from perfbook.params import env_value

    url = env_value(env_name)
    if not url:
        raise SourceUnreachable(SOURCE, f"${env_name}", f"the environment variable {env_name} is not set")
    return url


def info_for(env_name: str | None, timeout: float = 3.0) -> dict[str, Any] | None:
    """:func:`info` of the Redis whose URL is in the environment variable ``env_name``
    (``targets.redis_env``). None when the params name no Redis (nothing to check);
    :class:`SourceUnreachable` when they do but the variable is empty or Redis is down."""
    return None if not env_name else info(_url_from_env(env_name), timeout)


def sample_for(env_name: str | None, max_keys: int = 1000, timeout: float = 3.0,
               budget: float = 10.0) -> pd.DataFrame | None:
    """:func:`sample_ttls` of the Redis named by ``env_name``; None when none is named."""
    if not env_name or max_keys <= 0:
        return None
    return sample_ttls(_url_from_env(env_name), max_keys=max_keys, timeout=timeout, budget=budget)
