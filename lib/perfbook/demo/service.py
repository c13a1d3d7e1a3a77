"""The demo service: a miniature of the runbook's Node API, in Python (Starlette + uvicorn).

One process per instance::

    python -m perfbook.demo.service --port 8101 --instance-name api-1 \\
        --dsn postgresql://demo_app@127.0.0.1:5433/demo --external-url http://127.0.0.1:8300 \\
        --faults n_plus_one,missing_index

Routes: GET /health, GET /health/services, GET /api/products (?category=&limit=&page=),
GET /api/products/{id}, GET /api/analytics/summary, POST /api/content/generate, GET /metrics.
PostgreSQL through an async connection pool, an in-process TTL cache (pre-warmed at
start), fixed-window rate limiters, a circuit breaker around the AI API, gzip for
responses over 1 KB. Metrics carry prom-client's names (see :mod:`perfbook.demo.metrics`);
every query goes through :meth:`Service.query`, which times it into
``pg_query_duration_seconds``. A request log line per request (``... duration=12.3ms``)
goes to stdout, as ``flyctl logs | grep duration`` shows it in production.

The faults (``--faults``) are described in :mod:`perfbook.demo.scenarios`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import decimal
import gc
import hashlib
import logging
import math
import random
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field

import psutil
import requests
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import dict_row
from psycopg.types.numeric import Int8Dumper
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perfbook.demo.metrics import ServiceMetrics
from perfbook.demo.middleware import ObservabilityMiddleware
from perfbook.demo.resilience import MISSING, BreakerOpen, CallTimeout, CircuitBreaker, FixedWindowLimiter, TTLCache

log = logging.getLogger("demo")

SERVICE_FAULTS = {"n_plus_one", "low_cache_hit", "cpu_blocking", "memory_growth", "rate_limit",
                  "no_rate_limit_on_generate", "pool_saturation", "large_result", "slow_endpoint", "errors",
                  "cpu_saturation", "memory_pressure"}

#: Products pre-warmed into the cache and favoured by the traffic driver (ids 1..HOT_PRODUCTS).
HOT_PRODUCTS = 500
#: cpu_saturation: the background job works while a request came in this recently (s) ...
BUSY_WHILE_TRAFFIC_S = 3.0
#: ... on this many worker threads (as libuv's pool runs a Node job's crypto/zlib work), each
#: busy this share of the time (work slices of 60 ms, 40 ms pauses): ~1.2 cores when the
#: machine is free, and still most of a core when the instance competes for 2 busy cores.
BUSY_THREADS = 2
BUSY_DUTY = 0.6
#: memory_pressure: the in-process page cache is filled at start to this share of the heap limit.
PRESSURE_SHARE = 0.9


@dataclass
class Settings:
    """Knobs of one instance, derived from its faults."""

    faults: frozenset[str] = frozenset()
    pool_min: int = 8        # opened at start, as a warmed-up production pool is
    pool_max: int = 8
    pool_timeout: float = 10.0
    cache_ttl: dict = field(default_factory=lambda: {"products": 7200.0, "product-lists": 60.0, "analytics": 30.0})
    cache_max_entries: int = 10_000
    prewarm: bool = True
    api_limit: tuple[float, int] = (60.0, 6000)             # public catalogue API: /api/products*
    generate_limit: tuple[float, int] | None = (60.0, 60)   # /api/content/generate (expensive)
    external_timeout: float = 3.0
    breaker_reset: float = 3.0   # short: over a minute of demo traffic the half-open trials make enough real calls to judge
    breaker_window: float = 20.0
    breaker_volume: int = 3
    heap_limit_mb: int = 512

    @classmethod
    def for_faults(cls, faults: set[str] | frozenset[str], **overrides) -> Settings:
        s = cls(faults=frozenset(faults), **overrides)
        if "pool_saturation" in faults:
            s.pool_min, s.pool_max = 2, 2
        if "low_cache_hit" in faults:
            s.cache_ttl = {k: 0.5 for k in s.cache_ttl}
            s.cache_max_entries = 8
            s.prewarm = False
        if "rate_limit" in faults:
            s.api_limit = (10.0, 40)
        if "no_rate_limit_on_generate" in faults:
            s.generate_limit = None
        return s

    def has(self, fault: str) -> bool:
        return fault in self.faults


def _jsonable(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# -- SQL: one place per query ---------------------------------------------------------
SQL_LIST_JOIN = """SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at,
       c.id AS category_id, c.name AS category_name
FROM products p JOIN categories c ON c.id = p.category_id
WHERE p.category_id = %s ORDER BY p.created_at DESC LIMIT %s OFFSET %s"""
SQL_LIST_PRODUCTS = """SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at, p.category_id
FROM products p WHERE p.category_id = %s ORDER BY p.created_at DESC LIMIT %s OFFSET %s"""
SQL_LIST_ALL_OF_CATEGORY = """SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at, p.category_id
FROM products p WHERE p.category_id = %s ORDER BY p.created_at DESC"""
SQL_LIST_LATEST = """SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at,
       c.id AS category_id, c.name AS category_name
FROM products p JOIN categories c ON c.id = p.category_id
ORDER BY p.id DESC LIMIT %s OFFSET %s"""
SQL_CATEGORY = "SELECT id, name, slug FROM categories WHERE id = %s"
SQL_PRODUCT = """SELECT p.id, p.name, p.description, p.price, p.rating, p.affiliate_url, p.created_at,
       c.id AS category_id, c.name AS category_name,
       (SELECT count(*) FROM clicks k WHERE k.product_id = p.id) AS clicks
FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id = %s"""
SQL_PRODUCTS_HOT = """SELECT p.id, p.name, p.description, p.price, p.rating, p.affiliate_url, p.created_at,
       c.id AS category_id, c.name AS category_name,
       (SELECT count(*) FROM clicks k WHERE k.product_id = p.id) AS clicks
FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id BETWEEN 1 AND %s"""
SQL_LIVE_STOCK = "SELECT stock, price FROM products WHERE id = %s"
SQL_CLICKS_SUMMARY = """SELECT count(*) AS clicks, count(DISTINCT product_id) AS products,
       count(DISTINCT session_ref) AS sessions
FROM clicks WHERE created_at > %s"""
SQL_TOP_PRODUCTS = """WITH top AS (
    SELECT product_id, count(*) AS clicks FROM clicks WHERE created_at > %s
    GROUP BY product_id ORDER BY clicks DESC LIMIT 10)
SELECT t.product_id, p.name, t.clicks FROM top t JOIN products p ON p.id = t.product_id ORDER BY t.clicks DESC"""
SQL_SEEDED_AT = "SELECT value::timestamptz AS t FROM demo_meta WHERE key = 'seeded_at'"
SQL_INSERT_CONTENT = """INSERT INTO content (product_id, kind, title, body, status, created_at)
VALUES (%s, 'blog_post', %s, %s, 'draft', now()) RETURNING id"""


class Service:
    def __init__(self, name: str, dsn: str, external_url: str, settings: Settings):
        self.name, self.dsn, self.external_url, self.s = name, dsn, external_url.rstrip("/"), settings
        self.m = ServiceMetrics()
        self.pool: AsyncConnectionPool | None = None
        self.busy = 0
        self.waiting = 0
        self.peak_busy = 0       # high-water marks since the last scrape (see _update_pool_gauges)
        self.peak_waiting = 0
        ttl, cap = settings.cache_ttl, settings.cache_max_entries
        mk = lambda n: TTLCache(n, ttl[n], cap, self.m.cache_hits, self.m.cache_misses, self.m.cache_entries)  # noqa: E731
        self.caches = {n: mk(n) for n in ("products", "product-lists", "analytics")}
        # Like app.use('/api/products', apiLimiter) ... and app.use('/api/content/generate', expensiveLimiter).
        api = FixedWindowLimiter("api", *settings.api_limit)
        self.limiters: list[tuple[str, FixedWindowLimiter]] = [("/api/products", api)]
        if settings.generate_limit:
            self.limiters.append(("/api/content/generate", FixedWindowLimiter("expensive", *settings.generate_limit)))
        routes_of = {"/api/products": ["/api/products", "/api/products/{id}"],
                     "/api/content/generate": ["/api/content/generate"]}
        for prefix, limiter in self.limiters:   # export the series at 0 from the start
            for route in routes_of[prefix]:
                self.m.rate_limit_hits.labels(route=route, limiter=limiter.name)
        for outcome in ("success", "error", "timeout", "rejected"):
            self.m.external_requests.labels(service="ai-api", outcome=outcome)
        for name in ("products", "product-lists", "analytics"):
            self.m.cache_hits.labels(cache=name)
            self.m.cache_misses.labels(cache=name)
        self.breaker = CircuitBreaker("ai-api", timeout=settings.external_timeout, error_threshold_pct=50,
                                      reset_timeout=settings.breaker_reset, rolling_window=settings.breaker_window,
                                      volume_threshold=settings.breaker_volume, state_gauge=self.m.breaker_state)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="ext")
        self.http = requests.Session()
        self.started = time.time()
        self.seeded_at: dt.datetime = dt.datetime.now(dt.timezone.utc)
        self.leak: list[bytes] = []
        self.product_requests = 0
        self.leaked = 0
        self.last_request = 0.0          # monotonic time of the last request (cpu_saturation)
        self.page_cache: list[bytes] = []  # memory_pressure's oversized cache
        self._stop = threading.Event()

    # -- database --------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connection(self):
        """A pool connection; counts waiters (requests that find every connection in use)
        and busy connections for the pool gauges."""
        queued = self.busy >= self.s.pool_max
        if queued:
            self.waiting += 1
            self.peak_waiting = max(self.peak_waiting, self.waiting)
        t0 = time.perf_counter()
        try:
            async with self.pool.connection(timeout=self.s.pool_timeout) as conn:
                if queued:
                    self.waiting -= 1
                    queued = False
                self.m.pool_wait_ms.observe((time.perf_counter() - t0) * 1000)
                self.busy += 1
                self.peak_busy = max(self.peak_busy, self.busy)
                try:
                    yield conn
                finally:
                    self.busy -= 1
        finally:
            if queued:
                self.waiting -= 1

    async def query(self, operation: str, sql: str, params: tuple = (), *, conn=None, one: bool = False):
        """Run one statement (on ``conn`` or a pool connection) and time it into
        pg_query_duration_seconds{operation}."""
        if conn is None:
            async with self.connection() as c:
                return await self.query(operation, sql, params, conn=c, one=one)
        t0 = time.perf_counter()
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall() if cur.description else []
        elapsed = time.perf_counter() - t0
        self.m.query_duration.labels(operation=operation).observe(elapsed)
        if len(rows) > 100:
            log.info("query %s rows returned: %d duration=%.1fms", operation, len(rows), elapsed * 1000)
        if one:
            return rows[0] if rows else None
        return rows

    # -- lifecycle -------------------------------------------------------------
    async def startup(self) -> None:
        async def configure(conn) -> None:
            # ints as bigint always (as an ORM does): one pg_stat_statements entry per query
            conn.adapters.register_dumper(int, Int8Dumper)

        self.pool = AsyncConnectionPool(self.dsn, min_size=self.s.pool_min, max_size=self.s.pool_max, open=False,
                                        configure=configure,
                                        kwargs={"autocommit": True, "row_factory": dict_row,
                                                "application_name": f"demo-api:{self.name}"})
        await self.pool.open(wait=True, timeout=30)
        self.m.pool_max.set(self.s.pool_max)
        row = await self.query("DemoMeta.findUnique", SQL_SEEDED_AT, one=True)
        if row:
            self.seeded_at = row["t"]
        if self.s.prewarm:
            await self.prewarm()
        self._update_pool_gauges()
        if self.s.has("memory_pressure"):
            self.fill_page_cache()
        if self.s.has("cpu_saturation"):
            for i in range(BUSY_THREADS):
                threading.Thread(target=self.export_job, name=f"export-job-{i}", daemon=True).start()
        gc.collect()
        gc.freeze()   # start-up objects out of the collector's way: shorter GC pauses
        self.m.monitor.start()   # lag is measured from when the instance serves
        log.info("instance %s ready faults=%s", self.name, ",".join(sorted(self.s.faults)) or "none")

    async def shutdown(self) -> None:
        self._stop.set()
        await self.m.monitor.stop()
        if self.pool is not None:
            await self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def prewarm(self) -> None:
        """Fill the cache before serving (runbook Issue 5: pre-warm cache on startup):
        the hot products, page 1 of every category, the analytics summary."""
        for row in await self.query("Product.findMany", SQL_PRODUCTS_HOT, (HOT_PRODUCTS,)):
            self.caches["products"].set(f"product:{row['id']}", _jsonable(row))
        for category in range(1, 51):
            self.caches["product-lists"].set(self._list_key(category, 1, 20), await self._load_list(category, 1, 20))
        self.caches["analytics"].set("analytics:summary", await self._load_summary())

    def fill_page_cache(self) -> None:
        """memory_pressure: an unbounded cache of rendered pages, filled at start until the
        process uses :data:`PRESSURE_SHARE` of its heap limit (as a Node service whose
        cache holds most of ``--max-old-space-size``). Written, so the pages are resident."""
        mem = psutil.Process().memory_info()
        used = mem.rss - getattr(mem, "shared", 0)
        want = int(PRESSURE_SHARE * self.s.heap_limit_mb * 1024 * 1024) - used
        chunk = 1024 * 1024
        self.page_cache = [bytes([i % 251 + 1]) * chunk for i in range(max(0, want // chunk))]
        log.info("page cache filled: %d MiB", len(self.page_cache))

    def export_job(self) -> None:
        """cpu_saturation: one worker thread of a background export job (zlib releases
        the GIL, so the event loop stays responsive), busy :data:`BUSY_DUTY` of the time
        while the instance serves traffic, idle when no request came in
        :data:`BUSY_WHILE_TRAFFIC_S` seconds."""
        data = random.Random(7).randbytes(1024 * 1024)   # ~20 ms per call outside the GIL
        while not self._stop.is_set():
            if time.monotonic() - self.last_request > BUSY_WHILE_TRAFFIC_S:
                self._stop.wait(0.2)
                continue
            t0 = time.thread_time()
            while time.thread_time() - t0 < 0.1 * BUSY_DUTY:
                zlib.compress(data, 6)
            self._stop.wait(0.1 * (1 - BUSY_DUTY))

    def _update_pool_gauges(self) -> None:
        """Pool gauges at scrape time. Busy and waiting report the high-water mark since
        the previous scrape (then reset to the current value), so a 1 s scrape does not
        miss the short queues that saturation makes."""
        if self.pool is None:
            return
        stats = self.pool.get_stats()
        open_ = stats.get("pool_size", 0)
        busy, waiting = max(self.busy, self.peak_busy), max(self.waiting, self.peak_waiting)
        self.peak_busy, self.peak_waiting = self.busy, self.waiting
        self.m.pool_open.set(open_)
        self.m.pool_busy.set(busy)
        self.m.pool_idle.set(max(0, open_ - busy))
        self.m.pool_wait.set(waiting)

    # -- handlers --------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "instance": self.name, "uptime_s": round(time.time() - self.started, 1)})

    async def health_services(self, request: Request) -> JSONResponse:
        services = {}
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self.query("health", "SELECT 1"), timeout=2.0)
            services["database"] = {"status": "up", "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            services["database"] = {"status": "down", "error": type(exc).__name__}
        t0 = time.perf_counter()
        try:
            r = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: self.http.get(f"{self.external_url}/health", timeout=2.0))
            status = "up" if r.status_code < 400 else "down"
            services["ai-api"] = {"status": status, "http_status": r.status_code,
                                  "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
        except requests.RequestException as exc:
            services["ai-api"] = {"status": "down", "error": type(exc).__name__}
        services["ai-api"]["circuit_breaker"] = self.breaker.state_name
        if self.breaker.state_name == "open":
            services["ai-api"]["status"] = "down"
        services["cache"] = {"status": "up", "entries": {n: len(c) for n, c in self.caches.items()},
                             "hit_rate": {n: (round(c.hit_rate, 3) if c.hit_rate is not None else None)
                                          for n, c in self.caches.items()}}
        ok = all(v["status"] == "up" for v in services.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "instance": self.name, "services": services},
                            status_code=200 if ok else 503)

    @staticmethod
    def _list_key(category, page, limit) -> str:
        return f"products:category:{category}:page:{page}:limit:{limit}"

    async def _load_list(self, category: int | None, page: int, limit: int) -> list[dict]:
        offset = (page - 1) * limit
        if category is None:
            rows = await self.query("Product.findMany", SQL_LIST_LATEST, (limit, offset))
        elif self.s.has("large_result"):
            # Bad: loading all records of the category, paging in memory.
            rows = await self.query("Product.findMany", SQL_LIST_ALL_OF_CATEGORY, (category,))
            rows = rows[offset:offset + limit]
        elif self.s.has("n_plus_one"):
            rows = await self.query("Product.findMany", SQL_LIST_PRODUCTS, (category, limit, offset))
        else:
            rows = await self.query("Product.findMany", SQL_LIST_JOIN, (category, limit, offset))
        if self.s.has("n_plus_one") and category is not None:
            # Bad: N+1, one category lookup per product.
            async with self.connection() as conn:
                for row in rows:
                    cat = await self.query("Category.findUnique", SQL_CATEGORY, (row["category_id"],),
                                           conn=conn, one=True)
                    row["category_name"] = cat["name"] if cat else None
        return [_jsonable(r) for r in rows]

    async def products(self, request: Request) -> JSONResponse:
        q = request.query_params
        try:
            category = int(q["category"]) if q.get("category") else None
            limit = max(1, min(100, int(q.get("limit", 20))))
            page = max(1, int(q.get("page", 1)))
        except ValueError:
            return JSONResponse({"error": "category, limit and page must be integers"}, status_code=400)
        key = self._list_key(category, page, limit)
        cache = self.caches["product-lists"]
        data = cache.get(key)
        if data is MISSING:
            data = await self._load_list(category, page, limit)
            cache.set(key, data)
        return JSONResponse({"data": data, "page": page, "limit": limit, "count": len(data)})

    async def product(self, request: Request) -> JSONResponse:
        try:
            pid = int(request.path_params["id"])
        except ValueError:
            return JSONResponse({"error": "id must be an integer"}, status_code=400)
        self.product_requests += 1
        if self.s.has("errors") and self.product_requests % 10 == 0:   # every 10th request: 10 %
            raise RuntimeError("failed to deserialize product record")  # -> 500
        cache = self.caches["products"]
        data = cache.get(f"product:{pid}")
        if data is MISSING:
            row = await self.query("Product.findUnique", SQL_PRODUCT, (pid,), one=True)
            if row is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            data = _jsonable(row)
            cache.set(f"product:{pid}", data)
        data = dict(data)
        # Live stock and price are never cached.
        if self.s.has("pool_saturation"):
            # Bad: holding a connection (inside a transaction) while awaiting a slow call.
            async with self.connection() as conn, conn.transaction():
                live = await self.query("Product.findUnique", SQL_LIVE_STOCK, (pid,), conn=conn, one=True)
                await asyncio.sleep(0.3)  # pricing service
        else:
            live = await self.query("Product.findUnique", SQL_LIVE_STOCK, (pid,), one=True)
        if live:
            data.update(_jsonable(live))
        if self.s.has("slow_endpoint"):
            await asyncio.sleep(min(5.0, random.lognormvariate(math.log(1.2), 0.25)))  # slow enrichment
        return JSONResponse(data)

    async def _load_summary(self) -> dict:
        since = self.seeded_at - dt.timedelta(days=1)
        async with self.connection() as conn:
            totals = await self.query("Click.aggregate", SQL_CLICKS_SUMMARY, (since,), conn=conn, one=True)
            top = await self.query("Click.groupBy", SQL_TOP_PRODUCTS, (since,), conn=conn)
        return _jsonable({"window": "24h", "since": since, **(totals or {}), "top_products": top})

    async def analytics_summary(self, request: Request) -> JSONResponse:
        cache = self.caches["analytics"]
        data = cache.get("analytics:summary")
        if data is MISSING:
            data = await self._load_summary()
            cache.set("analytics:summary", data)
        data = dict(data)
        if self.s.has("cpu_blocking"):
            data["trend_score"] = _trend_scores_sync(0.3)  # Bad: CPU work on the event loop
        return JSONResponse(data)

    def _call_ai(self, prompt: str) -> dict:
        """The external call (runs in a worker thread)."""
        t0 = time.perf_counter()
        try:
            r = self.http.post(f"{self.external_url}/v1/generate", json={"prompt": prompt},
                               timeout=(1.0, self.s.external_timeout + 0.5))
        except requests.Timeout:
            self.m.external_duration.labels(service="ai-api", status="timeout").observe(time.perf_counter() - t0)
            raise
        self.m.external_duration.labels(service="ai-api", status=str(r.status_code)).observe(time.perf_counter() - t0)
        r.raise_for_status()
        return r.json()

    async def generate(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        pid = int(body.get("product_id") or random.randint(1, HOT_PRODUCTS))
        prompt = f"Write an affiliate blog post for product {pid}"
        loop = asyncio.get_running_loop()
        ext = self.m.external_requests
        try:
            result = await self.breaker.fire(lambda: loop.run_in_executor(self.executor, self._call_ai, prompt))
        except BreakerOpen:
            ext.labels(service="ai-api", outcome="rejected").inc()
            return JSONResponse({"error": "AI service unavailable (circuit open)"}, status_code=503)
        except (CallTimeout, requests.Timeout):
            ext.labels(service="ai-api", outcome="timeout").inc()
            return JSONResponse({"error": "AI service timed out"}, status_code=504)
        except requests.RequestException as exc:
            ext.labels(service="ai-api", outcome="error").inc()
            return JSONResponse({"error": f"AI service error: {type(exc).__name__}"}, status_code=502)
        ext.labels(service="ai-api", outcome="success").inc()
        row = await self.query("Content.create", SQL_INSERT_CONTENT,
                               (pid, f"Post about product {pid}", result.get("text", "")), one=True)
        return JSONResponse({"content_id": row["id"] if row else None, "text": result.get("text")}, status_code=201)

    async def metrics(self, request: Request) -> Response:
        self._update_pool_gauges()
        return Response(generate_latest(self.m.registry), media_type=CONTENT_TYPE_LATEST)


def _trend_scores_sync(seconds: float) -> str:
    """Synchronous CPU work (hashing) for about ``seconds``: blocks the event loop."""
    deadline = time.perf_counter() + seconds
    h = hashlib.sha256(b"trend")
    while time.perf_counter() < deadline:
        for _ in range(200):
            h.update(h.digest())
    return h.hexdigest()[:12]


def create_app(service: Service) -> Starlette:
    routes = [
        Route("/health", service.health),
        Route("/health/services", service.health_services),
        Route("/api/products", service.products),
        Route("/api/products/{id}", service.product),
        Route("/api/analytics/summary", service.analytics_summary),
        Route("/api/content/generate", service.generate, methods=["POST"]),
        Route("/metrics", service.metrics),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.startup()
        try:
            yield
        finally:
            await service.shutdown()

    return Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(ObservabilityMiddleware, service=service, routes=routes),
        Middleware(GZipMiddleware, minimum_size=1000),
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="perfbook demo service (one instance)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--instance-name", default="api-1")
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--external-url", required=True)
    ap.add_argument("--faults", default="", help="comma-separated fault names")
    ap.add_argument("--heap-limit-mb", type=int, default=512)
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the demo service listens on loopback only")
    faults = {f for f in a.faults.split(",") if f}
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"%(asctime)s.%(msecs)03dZ %(levelname)s {a.instance_name} %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    logging.Formatter.converter = time.gmtime
    settings = Settings.for_faults(faults & SERVICE_FAULTS, heap_limit_mb=a.heap_limit_mb)
    service = Service(a.instance_name, a.dsn, a.external_url, settings)
    import uvicorn
    uvicorn.run(create_app(service), host=a.host, port=a.port, log_level="warning", access_log=False,
                lifespan="on", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
