"""The demo service's outermost ASGI middleware (:mod:`perfbook.demo.service` installs it):
route templates, rate limiting, the Prometheus metrics and request log of every response,
and the memory-growth fault.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import Match, Route

log = logging.getLogger("demo")

LEAK_CHUNK = 256 * 1024
LEAK_CAP = 384 * 1024 * 1024


class ObservabilityMiddleware:
    """Pure ASGI middleware: route template, rate limiting, metrics, request log, the
    memory-growth fault. Outermost, so it sees every response including 429 and 500."""

    def __init__(self, app, service: Any, routes: list[Route]):  # service: a demo Service
        self.app, self.svc, self.routes = app, service, routes

    def _route(self, scope) -> str:
        for r in self.routes:
            match, _ = r.matches(scope)
            if match in (Match.FULL, Match.PARTIAL):
                return r.path
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/metrics":
            return await self.app(scope, receive, send)
        svc, m = self.svc, self.svc.m
        svc.last_request = time.monotonic()
        route = self._route(scope)
        method = scope["method"]
        t0 = time.perf_counter()
        m.http_active.inc()
        status = {"code": 500}
        client = (scope.get("client") or ("unknown", 0))[0]
        try:
            if svc.s.has("memory_growth") and svc.leaked < LEAK_CAP:
                svc.leak.append(b"x" * LEAK_CHUNK)   # Bad: per-request data kept forever
                svc.leaked += LEAK_CHUNK
            headers: dict[str, str] = {}
            for prefix, limiter in svc.limiters:
                if path.startswith(prefix):
                    res = limiter.hit(client)
                    headers = res.headers()
                    if not res.allowed:
                        m.rate_limit_hits.labels(route=route, limiter=limiter.name).inc()
                        log.warning("rate limit exceeded ip=%s route=%s limiter=%s", client, route, limiter.name)
                        status["code"] = 429
                        resp = JSONResponse({"error": "Too many requests, please try again later."},
                                            status_code=429, headers=headers)
                        return await resp(scope, receive, send)
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    if extra:
                        message = {**message, "headers": list(message.get("headers", [])) + extra}
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:  # a 5xx, logged; the process goes on
                log.exception("unhandled error on %s %s", method, path)
                status["code"] = 500
                resp = JSONResponse({"error": "Internal Server Error"}, status_code=500)
                await resp(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - t0
            code = str(status["code"])
            m.http_active.dec()
            m.http_duration.labels(method=method, route=route, status_code=code).observe(elapsed)
            m.http_requests.labels(method=method, route=route, status_code=code).inc()
            if status["code"] >= 500:
                m.http_errors.labels(method=method, route=route, status_code=code).inc()
            qs = scope.get("query_string", b"").decode()
            log.info("%s %s%s %s duration=%.1fms", method, path, f"?{qs}" if qs else "", code, elapsed * 1000)
