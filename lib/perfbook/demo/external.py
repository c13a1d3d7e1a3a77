"""Stand-in for the external AI API the demo service calls (POST /v1/generate).

A separate process with a set latency and failure rate::

    python -m perfbook.demo.external --port 8300 --latency-ms 300 --jitter-ms 100 --failure-rate 0

Routes: ``POST /v1/generate`` (JSON ``{"id", "text", "model"}`` after the latency, or
HTTP 500 at the failure rate), ``GET /health`` (200 ``ok``; 503 ``degraded`` while the
failure rate is 50 % or more), ``GET /admin/config`` and ``POST /admin/config`` (change
``latency_ms``, ``jitter_ms``, ``failure_rate`` at run time).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Config:
    def __init__(self, latency_ms: float = 300.0, jitter_ms: float = 100.0, failure_rate: float = 0.0):
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.failure_rate = failure_rate

    def as_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms, "failure_rate": self.failure_rate}

    def latency(self) -> float:
        return max(0.0, random.uniform(self.latency_ms - self.jitter_ms, self.latency_ms + self.jitter_ms)) / 1000


def create_app(config: Config) -> Starlette:
    started = time.time()
    counts = {"requests": 0, "failures": 0}

    async def generate(request: Request) -> JSONResponse:
        counts["requests"] += 1
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if random.random() < config.failure_rate:
            counts["failures"] += 1
            # a failing upstream answers quickly with an error most of the time
            await asyncio.sleep(min(config.latency(), 0.2))
            return JSONResponse({"error": "upstream model overloaded"}, status_code=500)
        await asyncio.sleep(config.latency())
        prompt = str(body.get("prompt", ""))[:200]
        return JSONResponse({"id": str(uuid.uuid4()), "model": "demo-llm-1",
                             "text": f"Generated copy for: {prompt}" if prompt else "Generated copy."})

    async def health(request: Request) -> JSONResponse:
        degraded = config.failure_rate >= 0.5
        return JSONResponse({"status": "degraded" if degraded else "ok", "uptime_s": round(time.time() - started, 1),
                             **config.as_dict(), **counts}, status_code=503 if degraded else 200)

    async def admin_config(request: Request) -> JSONResponse:
        if request.method == "POST":
            data = await request.json()
            for k in ("latency_ms", "jitter_ms", "failure_rate"):
                if k in data:
                    setattr(config, k, float(data[k]))
        return JSONResponse(config.as_dict())

    return Starlette(routes=[
        Route("/v1/generate", generate, methods=["POST"]),
        Route("/health", health),
        Route("/admin/config", admin_config, methods=["GET", "POST"]),
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--jitter-ms", type=float, default=100.0)
    ap.add_argument("--failure-rate", type=float, default=0.0)
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the stand-in listens on loopback only")
    import uvicorn
    uvicorn.run(create_app(Config(a.latency_ms, a.jitter_ms, a.failure_rate)), host=a.host, port=a.port,
                log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
