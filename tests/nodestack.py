"""A stock Node.js service stack for the tests: tests/nodesvc (express + prom-client 15 + pg)
in two instances, a private PostgreSQL 15 with pg_stat_statements, a real Prometheus
scraping both every second, all on 127.0.0.1 free ports, and a perfbook params file
pointing at them. perfbook connects as a role with ``pg_monitor`` only (plus CONNECT).

::

    stack = NodeStack(tmp / "incident", faults=INCIDENT)
    stack.start()
    try:
        stack.warm_up()                           # past the processes' warm-up; the window starts here
        stack.drive(30)
        stack.write_params(tmp / "params.yaml")   # env: stack.env()
    finally:
        stack.stop()

Faults (:data:`FAULTS`; none = healthy):

- ``missing_index``: clicks (300k rows) has no index on (product_id, created_at), so
  ``GET /api/products/:id/clicks`` seq-scans it (healthy: the index exists);
- ``n_plus_one``: ``GET /api/products`` looks up each row's category with its own query
  (healthy: one JOIN); ``GET /api/products/:id`` looks up one category either way;
- ``event_loop_block``: instance api-2 (the one with 20 % of the traffic) runs a 250 ms
  synchronous loop every second;
- ``pool_saturation``: both pools have 2 connections (healthy: 10) and ``GET /api/products/:id``
  keeps its connection, in an open transaction, across a 200 ms call to a stock service: demand
  for connections is then above what the pool has whatever the machine's speed (2 connections
  serve at most 10 product pages a second; the traffic asks for more), so queries wait;
- ``large_export``: the traffic calls ``GET /api/export`` (~200k rows: 60 days of 90) on
  api-2 every 20 s.

The traffic is a closed loop on loopback (bounded in time and count), 80 % to api-1 and
20 % to api-2. Every process is started in its own process group and stopped by PID.
"""
from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import requests
import yaml

from perfbook.demo import processes
from perfbook.demo.postgres import PostgresServer
from perfbook.demo.processes import LOOPBACK
from perfbook.demo.prometheus import PrometheusServer

NODESVC = Path(__file__).resolve().parent / "nodesvc"
FAULTS = frozenset({"missing_index", "n_plus_one", "event_loop_block", "pool_saturation", "large_export"})
INCIDENT = FAULTS
HEALTHY = frozenset()

DB = "shop"
APP_USER = "shop_app"
MONITOR_USER = "perfbook_ro"
DATABASE_ENV = "PERFBOOK_NODESVC_DATABASE_URL"
JOB = "nodesvc"
BLOCKED = "api-2"            # the instance with the event-loop block (and the export traffic)
BLOCK_MS = 250
HOLD_MS = 200               # the pool fault: a connection held across a slow call
EXPORT_EVERY_S = 20.0
PRODUCTS = 20_000
CLICKS = 300_000
WEIGHTS = {"api-1": 0.8, "api-2": 0.2}

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE categories (
    id   integer PRIMARY KEY,
    name text NOT NULL,
    slug text NOT NULL UNIQUE
);
CREATE TABLE products (
    id          bigint PRIMARY KEY,
    category_id integer NOT NULL REFERENCES categories (id),
    name        text NOT NULL,
    description text NOT NULL,
    price       numeric(10, 2) NOT NULL,
    stock       integer NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE clicks (
    id         bigint PRIMARY KEY,
    product_id bigint NOT NULL,
    source     text NOT NULL,
    created_at timestamptz NOT NULL
);
SELECT setseed(0.13);
INSERT INTO categories SELECT i, 'Category ' || i, 'category-' || i FROM generate_series(1, 40) i;
INSERT INTO products
SELECT g, 1 + (g * 7919) % 40, 'Product ' || g, 'About product ' || g || ': ' || md5(g::text),
       round((5 + random() * 495)::numeric, 2), (random() * 500)::int, now() - random() * interval '2 years'
FROM generate_series(1, {PRODUCTS}) g;
-- clicks skewed to popular (low-id) products, spread over 90 days
INSERT INTO clicks
SELECT g, 1 + floor({PRODUCTS} * power(random(), 2))::bigint,
       (ARRAY['google', 'tiktok', 'youtube', 'email', 'direct'])[1 + floor(random() * 5)::int],
       now() - random() * interval '90 days'
FROM generate_series(1, {CLICKS}) g;
ALTER TABLE clicks ADD CONSTRAINT clicks_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);
CREATE ROLE {APP_USER} LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_USER};
-- perfbook's role as its README recommends: pg_monitor, nothing more
CREATE ROLE {MONITOR_USER} LOGIN;
GRANT CONNECT ON DATABASE {DB} TO {MONITOR_USER};
GRANT pg_monitor TO {MONITOR_USER};
"""
#: The index the missing_index fault leaves out.
CLICKS_INDEX = "CREATE INDEX clicks_product_id_created_at_idx ON clicks (product_id, created_at DESC)"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_binary() -> str:
    for name in ("node", "nodejs"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("Node.js not found: apt-get install nodejs npm (make setup does)")


def _prioritize(pid: int) -> None:
    """Run a service instance at nice -10 when we may (root): the test's ground truth ("no
    event-loop lag" on the healthy stack) must hold while the rest of the machine is busy,
    as it would for a service on its own VM."""
    if os.geteuid() == 0:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, -10)
        except OSError:
            pass


@dataclass
class TrafficStats:
    requests: int = 0
    failures: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_instance: Counter = field(default_factory=Counter)
    by_route: Counter = field(default_factory=Counter)
    exports: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        return (f"{self.requests} requests in {self.elapsed:.0f} s; status {dict(self.by_status)}; "
                f"per instance {dict(self.by_instance)}; exports {self.exports}; no answer {self.failures}")


class NodeStack:
    """PostgreSQL + Prometheus + two instances of tests/nodesvc with ``faults`` on."""

    def __init__(self, state_dir: Path | str, faults: frozenset[str] | set[str] = HEALTHY):
        unknown = set(faults) - FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
        self.faults = frozenset(faults)
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)   # PostgreSQL runs as the postgres OS user under root
        self.names = list(WEIGHTS)
        self.ports: dict[str, int] = {}
        self.pg: PostgresServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.procs: dict[str, processes.ProcInfo] = {}
        self._popens: dict = {}
        self.timings: dict[str, float] = {}
        self.window_start: float | None = None    # epoch seconds: where the params' window begins
        self.traffic_stats: TrafficStats | None = None

    # -- addresses -------------------------------------------------------------------------
    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    def instance(self, name: str) -> str:
        """The ``instance`` label Prometheus gives ``name`` (host:port)."""
        return f"{LOOPBACK}:{self.ports[name]}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    def database_url(self, user: str = MONITOR_USER) -> str:
        return f"postgresql://{user}@{LOOPBACK}:{self.ports['postgres']}/{DB}"

    def env(self) -> dict[str, str]:
        """The variables the params file names (perfbook's pg_monitor-only role)."""
        return {DATABASE_ENV: self.database_url(MONITOR_USER)}

    # -- start -----------------------------------------------------------------------------
    def start(self) -> dict[str, float]:
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        return self.timings

    def _start(self) -> None:
        node = node_binary()
        if not (NODESVC / "node_modules" / "prom-client").is_dir():
            raise RuntimeError(f"{NODESVC}/node_modules is missing: run `make setup` (npm ci in tests/nodesvc)")
        self.ports = {"postgres": processes.free_port(), "prometheus": processes.free_port(),
                      **{n: processes.free_port() for n in self.names}}
        targets = [self.instance(n) for n in self.names]
        self.prometheus = PrometheusServer(self.state_dir, port=self.ports["prometheus"], targets=targets,
                                           job=JOB, target_labels={self.instance(n): {"instance_name": n}
                                                                   for n in self.names})
        self.prometheus.spawn()
        self.procs["prometheus"] = self.prometheus.proc

        t = time.monotonic()
        # Statement logging off: a service's database rarely logs every statement.
        self.pg = PostgresServer(self.state_dir / "pg", port=self.ports["postgres"],
                                 settings={"log_min_duration_statement": "-1"})
        self.pg.start()
        self.procs["postgres"] = self.pg.proc
        self._seed()
        self.timings["postgres"] = round(time.monotonic() - t, 2)

        t = time.monotonic()
        for name in self.names:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.state_dir),
                   "NODE_ENV": "production", "HOST": LOOPBACK, "PORT": str(self.ports[name]),
                   "INSTANCE_NAME": name, "DATABASE_URL": self.database_url(APP_USER),
                   "POOL_MAX": "2" if "pool_saturation" in self.faults else "10",
                   "FAULT_HOLD_CONNECTION_MS": str(HOLD_MS) if "pool_saturation" in self.faults else "0",
                   "FAULT_N_PLUS_ONE": "1" if "n_plus_one" in self.faults else "0",
                   "FAULT_EVENT_LOOP_BLOCK_MS":
                       str(BLOCK_MS) if "event_loop_block" in self.faults and name == BLOCKED else "0"}
            popen, info = processes.spawn(name, [node, "server.js"], self.state_dir / "logs" / f"{name}.log",
                                          env=env, cwd=NODESVC)
            self._popens[name], self.procs[name] = popen, info
            _prioritize(info.pid)
        for name in self.names:
            self._wait_http(name, f"{self.url(name)}/health")
        self.timings["node"] = round(time.monotonic() - t, 2)

        t = time.monotonic()
        self.prometheus.wait_ready()
        processes.wait_for(self._all_targets_up, 60, "Prometheus scraping both instances")
        self.timings["prometheus"] = round(time.monotonic() - t, 2)

    def _seed(self) -> None:
        with psycopg.connect(self.pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with psycopg.connect(self.pg.dsn(DB)) as conn:
            conn.execute(SCHEMA)
            if "missing_index" not in self.faults:
                conn.execute(CLICKS_INDEX)
        with psycopg.connect(self.pg.dsn(DB), autocommit=True) as conn:
            # Statistics as of a freshly loaded database: reset, then VACUUM ANALYZE sets
            # n_live_tup (a reset leaves it at 0); the statements start clean.
            conn.execute("SELECT pg_stat_reset()")
            conn.execute("VACUUM ANALYZE")
            conn.execute("SELECT pg_stat_statements_reset()")

    def _wait_http(self, name: str, url: str, timeout: float = 60) -> None:
        popen = self._popens[name]
        try:
            processes.wait_for(lambda: requests.get(url, timeout=2).status_code == 200, timeout, name,
                               alive=lambda: popen.poll() is None)
        except Exception as exc:
            log = self.state_dir / "logs" / f"{name}.log"
            raise RuntimeError(f"{exc}\n--- {log} ---\n{processes.tail(log)}") from exc

    def _all_targets_up(self) -> bool:
        r = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": f'up{{job="{JOB}"}}'}, timeout=2)
        res = r.json()["data"]["result"]
        return len(res) == len(self.names) and all(x["value"][1] == "1" for x in res)

    # -- traffic ---------------------------------------------------------------------------
    def warm_up(self, per_instance: int = 1500, max_s: float = 30.0) -> TrafficStats:
        """Bring both instances past their warm-up (V8's heap and the process's RSS grow for
        the first ~1,500 requests, as any freshly started Node process does: a production
        service under diagnosis has been up for hours), ``per_instance`` requests each or
        ``max_s`` seconds, split evenly; then reset pg_stat_statements so the database's
        statement statistics cover the same window as the metrics.

        Health checks only: perfbook counts requests per endpoint over at least the last 60 s
        (``increase(...[60s])``), which reaches back into the warm-up when the window is
        shorter, while pg_stat_statements starts at the window; warm-up requests to the product
        routes would skew the statements-per-request ratios its N+1 attribution reads (a list
        query seen ~1x per product-page request, a product lookup seen < 1x)."""
        stats = self.drive(max_s, weights={n: 1.0 for n in self.names}, workers=8, think_time=0.0,
                           enough=lambda st: all(st.by_instance[n] >= per_instance for n in self.names),
                           exports=False, warm=True)
        with psycopg.connect(self.pg.dsn(DB), autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        self.window_start = time.time()
        return stats

    def drive(self, duration: float, workers: int = 6, max_requests: int = 20_000, think_time: float = 0.05,
              seed: int = 7, weights: dict[str, float] | None = None, enough=None,
              exports: bool = True, warm: bool = False) -> TrafficStats:
        """A closed-loop request mix for ``duration`` seconds (at most ``max_requests``, or until
        ``enough(stats)``), 80/20 over the instances (``weights``): 35 % product lists, 35 %
        product pages, 20 % click histories, 10 % health checks; with ``large_export``,
        GET /api/export on api-2 every 20 s."""
        weights = weights or WEIGHTS
        for name in self.names:
            assert urlsplit(self.url(name)).hostname == LOOPBACK
        if self.window_start is None:
            self.window_start = time.time()
        stats = TrafficStats()
        lock = threading.Lock()
        t0 = time.monotonic()
        deadline = t0 + duration
        sent = [0]
        master = random.Random(seed)

        def pick(rng: random.Random) -> tuple[str, str]:
            r = rng.random()
            hot = 1 + int(500 * rng.random() ** 2)
            if warm:
                r = 0.95
            if r < 0.35:
                return f"/api/products?limit=20&page={rng.randint(1, 50)}", "/api/products"
            if r < 0.70:
                return f"/api/products/{hot}", "/api/products/:id"
            if r < 0.90:
                return f"/api/products/{hot}/clicks?limit=20", "/api/products/:id/clicks"
            return "/health", "/health"

        def record(name: str, route: str, status: int | None) -> None:
            with lock:
                stats.requests += 1
                stats.by_instance[name] += 1
                stats.by_route[route] += 1
                if status is None:
                    stats.failures += 1
                else:
                    stats.by_status[status] += 1

        def worker(wseed: int) -> None:
            rng = random.Random(wseed)
            session = requests.Session()
            while True:
                with lock:
                    if time.monotonic() >= deadline or sent[0] >= max_requests or (enough and enough(stats)):
                        return
                    sent[0] += 1
                name = rng.choices(self.names, [weights[n] for n in self.names])[0]
                path, route = pick(rng)
                try:
                    status = session.get(self.url(name) + path, timeout=20).status_code
                except requests.RequestException:
                    status = None
                record(name, route, status)
                time.sleep(rng.uniform(0.5, 1.5) * think_time)

        def exporter() -> None:
            session = requests.Session()
            next_at = time.monotonic() + 1.0
            while next_at < deadline:
                time.sleep(max(0.0, next_at - time.monotonic()))
                try:
                    status = session.get(self.url(BLOCKED) + "/api/export", timeout=60).status_code
                except requests.RequestException:
                    status = None
                record(BLOCKED, "/api/export", status)
                with lock:
                    stats.exports += 1
                next_at += EXPORT_EVERY_S

        threads = [threading.Thread(target=worker, args=(master.randrange(2**31),), daemon=True)
                   for _ in range(workers)]
        if exports and "large_export" in self.faults:
            threads.append(threading.Thread(target=exporter, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 90)
        stats.elapsed = time.monotonic() - t0
        self.traffic_stats = stats
        return stats

    # -- params ----------------------------------------------------------------------------
    def params_dict(self, until: float | None = None) -> dict:
        """A perfbook params file for this stack, as a new user would write it for a stock
        prom-client service: their metric names mapped, the pool gauges they export."""
        since = self.window_start or time.time()
        ep = lambda method, route, probe, p50, p95, p99: {  # noqa: E731
            "method": method, "route": route, "probe_path": probe, "targets": {"p50": p50, "p95": p95, "p99": p99}}
        return {
            "service": "nodesvc",
            "environment": "test",
            "window": {"since": _iso(since), "until": _iso(until or time.time())},
            "targets": {
                "base_url": self.url("api-1"),
                "metrics_urls": [f"{self.url(n)}/metrics" for n in self.names],
                "prometheus": {"url": self.prometheus_url, "selector": f'{{job="{JOB}"}}'},
                "database_env": DATABASE_ENV,
                "memory_limit": "512MB",
            },
            "endpoints": [
                ep("GET", "/health", "/health", "100ms", "200ms", "500ms"),
                ep("GET", "/api/products", "/api/products?limit=20", "500ms", "1s", "2s"),
                ep("GET", "/api/products/:id", "/api/products/1", "500ms", "1s", "2s"),
                ep("GET", "/api/products/:id/clicks", "/api/products/1/clicks?limit=20", "500ms", "1s", "2s"),
                ep("GET", "/api/export", None, "5s", "10s", "20s"),
            ],
            # No http_requests_total: requests are the duration histogram's count; the pool's
            # gauges are the team's own names.
            "metrics": {
                "http_requests": "http_request_duration_seconds_count",
                "db_pool_open": "pg_pool_connections_open",
                "db_pool_busy": "pg_pool_connections_busy",
                "db_pool_idle": "pg_pool_connections_idle",
                "db_pool_wait": "pg_pool_requests_waiting",
            },
            "settings": {
                "probes": {"count": 5, "timeout": "5s", "retries": 1},
                "database": {"pool_max_metric": "pg_pool_connections_max"},
                "load_test": {"mode": "off"},
            },
        }

    def write_params(self, path: Path | str, until: float | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# perfbook params for tests/nodesvc (faults: {', '.join(sorted(self.faults)) or 'none'})\n"
                        + yaml.safe_dump(self.params_dict(until), sort_keys=False), encoding="utf-8")
        return path

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop what was started (by PID): the instances, Prometheus, then PostgreSQL, and
        remove the database's files. Safe to call twice."""
        for name in self.names:
            info = self.procs.pop(name, None)
            if info is not None:
                processes.stop(info, timeout=10, popen=self._popens.get(name))
        if self.prometheus is not None:
            self.prometheus.stop()
            self.procs.pop("prometheus", None)
        if self.pg is not None:
            self.pg.cleanup()
            self.procs.pop("postgres", None)
