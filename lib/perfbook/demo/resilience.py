"""The demo service's in-process cache, rate limiter and circuit breaker.

Small re-creations of what the runbook's Node app uses, with the same knobs:
a TTL cache with a size limit, express-rate-limit's fixed window (standard
``RateLimit-*`` headers of the IETF draft 6, ``RateLimit-Policy`` included, ``Retry-After`` on 429), and opossum's circuit breaker
(``timeout``, ``errorThresholdPercentage``, ``resetTimeout``, rolling window,
``volumeThreshold``).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("demo")

MISSING = object()


class TTLCache:
    """TTL + LRU cache; counts hits and misses into ``hits``/``misses`` (labelled counters)."""

    def __init__(self, name: str, ttl: float, max_entries: int, hits=None, misses=None, entries=None):
        self.name, self.ttl, self.max_entries = name, ttl, max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._hits = hits.labels(cache=name) if hits is not None else None
        self._misses = misses.labels(cache=name) if misses is not None else None
        self._entries = entries.labels(cache=name) if entries is not None else None
        self.hit_count = self.miss_count = 0

    def get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is not None and item[0] > time.monotonic():
            self._data.move_to_end(key)
            self.hit_count += 1
            if self._hits:
                self._hits.inc()
            return item[1]
        if item is not None:
            del self._data[key]
        self.miss_count += 1
        if self._misses:
            self._misses.inc()
        return MISSING

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._data[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
        if self._entries:
            self._entries.set(len(self._data))

    def __len__(self) -> int:
        return len(self._data)

    @property
    def hit_rate(self) -> float | None:
        n = self.hit_count + self.miss_count
        return self.hit_count / n if n else None


@dataclass
class LimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    window_s: float = 60.0

    def headers(self) -> dict[str, str]:
        h = {"RateLimit-Policy": f"{self.limit};w={self.window_s:g}", "RateLimit-Limit": str(self.limit),
             "RateLimit-Remaining": str(self.remaining), "RateLimit-Reset": str(self.reset_s)}
        if not self.allowed:
            h["Retry-After"] = str(self.reset_s)
        return h


class FixedWindowLimiter:
    """express-rate-limit's default store: ``max`` requests per ``window_s`` per key
    (client IP), counted in fixed windows."""

    def __init__(self, name: str, window_s: float, max_requests: int):
        self.name, self.window_s, self.max = name, window_s, max_requests
        self._hits: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> LimitResult:
        now = time.monotonic()
        start, count = self._hits.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        count += 1
        self._hits[key] = (start, count)
        if len(self._hits) > 10_000:   # forget stale clients
            self._hits = {k: v for k, v in self._hits.items() if now - v[0] < self.window_s}
        reset = max(1, math.ceil(start + self.window_s - now))
        return LimitResult(count <= self.max, self.max, max(0, self.max - count), reset, self.window_s)


class BreakerOpen(Exception):
    """The breaker rejected the call without trying it (opossum's EOPENBREAKER)."""


class CallTimeout(Exception):
    pass


class CircuitBreaker:
    """opossum-like breaker around an async call.

    Opens when, within the rolling window, at least ``volume_threshold`` calls were
    made and ``error_threshold_pct`` % of them failed (errors and timeouts); rejects
    calls while open; after ``reset_timeout`` lets one trial through (half-open) and
    closes on its success.
    """

    CLOSED, OPEN, HALF_OPEN = 0, 1, 2
    NAMES = {0: "closed", 1: "open", 2: "halfOpen"}  # noqa: RUF012  (read only)

    def __init__(self, name: str, timeout: float = 10.0, error_threshold_pct: float = 50.0,
                 reset_timeout: float = 30.0, rolling_window: float = 10.0, volume_threshold: int = 0,
                 state_gauge=None):
        self.name = name
        self.timeout, self.error_threshold_pct = timeout, error_threshold_pct
        self.reset_timeout, self.rolling_window, self.volume_threshold = reset_timeout, rolling_window, volume_threshold
        self.state = self.CLOSED
        self.opened_at = 0.0
        self._trial_running = False
        self._results: deque[tuple[float, bool]] = deque()
        self._gauge = state_gauge.labels(name=name) if state_gauge is not None else None
        self._set(self.CLOSED)

    def _set(self, state: int) -> None:
        if state != self.state:
            msg = {self.OPEN: "Circuit breaker opened - too many failures",
                   self.HALF_OPEN: "Circuit breaker half-open - trying request",
                   self.CLOSED: "Circuit breaker closed"}[state]
            log.warning("%s name=%s", msg, self.name)
        self.state = state
        if state == self.OPEN:
            self.opened_at = time.monotonic()
        if self._gauge:
            self._gauge.set(state)

    def _record(self, ok: bool) -> None:
        now = time.monotonic()
        self._results.append((now, ok))
        while self._results and now - self._results[0][0] > self.rolling_window:
            self._results.popleft()
        if self.state == self.HALF_OPEN:
            self._set(self.CLOSED if ok else self.OPEN)
            if ok:
                self._results.clear()
            return
        if not ok and self.state == self.CLOSED:
            total = len(self._results)
            failed = sum(1 for _, good in self._results if not good)
            if total >= max(1, self.volume_threshold) and failed * 100.0 / total >= self.error_threshold_pct:
                self._set(self.OPEN)

    @property
    def state_name(self) -> str:
        self._maybe_half_open()
        return self.NAMES[self.state]

    def _maybe_half_open(self) -> None:
        if self.state == self.OPEN and time.monotonic() - self.opened_at >= self.reset_timeout:
            self._set(self.HALF_OPEN)

    async def fire(self, call: Callable[[], Awaitable[Any]]) -> Any:
        self._maybe_half_open()
        if self.state == self.OPEN or (self.state == self.HALF_OPEN and self._trial_running):
            raise BreakerOpen(f"breaker {self.name} is open")
        trial = self.state == self.HALF_OPEN
        if trial:
            self._trial_running = True
        try:
            try:
                result = await asyncio.wait_for(call(), timeout=self.timeout)
            except asyncio.TimeoutError:
                self._record(False)
                raise CallTimeout(f"{self.name}: timed out after {self.timeout} s") from None
            except Exception:
                self._record(False)
                raise
            self._record(True)
            return result
        finally:
            if trial:
                self._trial_running = False
