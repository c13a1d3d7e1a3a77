"""The locustfile perfbook's load engine runs: ``python -m locust -f <this file> ...``.

NEVER import this module (or locust) in a notebook kernel or in perfbook itself: importing
locust monkey-patches the standard library with gevent, which hangs Jupyter kernels.
:mod:`perfbook.sources.loadgen` runs it in a subprocess.

Configuration comes as JSON in the custom argument ``--perfbook-config`` (or the
``PERFBOOK_LOCUST_CONFIG`` environment variable). Locust forwards custom arguments from the
master to its workers, so a distributed run needs it on the master only::

    {"mix": [{"method": "GET", "path": "/api/products?limit=20",
              "name": "GET /api/products", "weight": 6}, ...],
     "think_time": 1.0, "request_timeout": 10.0,
     "headers": {"User-Agent": "perfbook-loadtest"}}

Each simulated user (a ``FastHttpUser``) picks a request from the mix by weight, sends it
to the URL :func:`perfbook.sources.http.build_url` makes of ``--host`` and its path (refused
if it would leave that host) without following redirects (a redirect must never lead the load off the allowed host),
and waits ``think_time`` x U(0.5, 1.5) seconds. A status of 400 or more is a failure named
``HTTP <code>`` (429 is ``HTTP 429 (rate limited)``, so rejections can be told from
errors) and counted under its own name, ``<name> [429]``, so the latency of the requests
the service actually served is not diluted by fast rejections; no answer is a failure
named after the exception.

With ``--perfbook-summary PATH`` the master (or the single local process) writes, when the
run ends, the final statistics as locust computes them — per request name and in
aggregate: count, failures, req/s, min/avg/max, percentiles — plus the failures by error.
The CSV files (``--csv``) are periodic snapshots and miss the last second; this summary
does not.
"""
from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, events, task
from locust.runners import WorkerRunner

from perfbook.sources.http import build_url
from perfbook.web import REJECTED_SUFFIX  # requests rejected with HTTP 429 are counted under "<name> [429]"

PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 1.0)

_env = None          # the locust Environment (set at init)
_config: dict | None = None
_workers_seen = 0    # master: workers connected when spawning completed


@events.init_command_line_parser.add_listener
def _arguments(parser, **_kw):
    parser.add_argument("--perfbook-config", type=str, include_in_web_ui=False,
                        default=os.environ.get("PERFBOOK_LOCUST_CONFIG", ""),
                        help="JSON: request mix, think time, timeout, headers")
    parser.add_argument("--perfbook-summary", type=str, include_in_web_ui=False, default="",
                        help="write the final stats as JSON to this path (master/local only)")


@events.init.add_listener
def _init(environment, **_kw):
    global _env
    _env = environment


@events.spawning_complete.add_listener
def _spawned(user_count, **_kw):
    global _workers_seen
    runner = _env.runner if _env is not None else None
    _workers_seen = max(_workers_seen, int(getattr(runner, "worker_count", 0) or 0))


def config() -> dict:
    """The run's configuration (parsed once per process)."""
    return config_for(_env)


def config_for(env) -> dict:
    global _config
    if _config is None:
        raw = ""
        opts = env.parsed_options if env is not None else None
        if opts is not None:
            raw = getattr(opts, "perfbook_config", "") or ""
        raw = raw or os.environ.get("PERFBOOK_LOCUST_CONFIG", "")
        cfg = json.loads(raw) if raw else {}
        mix = [m for m in cfg.get("mix", []) if float(m.get("weight", 1)) > 0]
        if not mix:
            mix = [{"method": "GET", "path": "/", "name": "GET /", "weight": 1}]
        for m in mix:
            if not str(m["path"]).startswith("/") or str(m["path"]).startswith("//"):
                raise ValueError(f"mix path must be relative to the host: {m['path']!r}")
        cfg["mix"] = mix
        cfg["_weights"] = [float(m.get("weight", 1)) for m in mix]
        _config = cfg
    return _config


class MixUser(FastHttpUser):
    """One simulated user sending the params' request mix."""

    max_redirects = 0    # a redirect must never lead the load off the allowed host

    def __init__(self, environment) -> None:
        # FastHttpUser builds its session from these in __init__; workers have the config
        # from the master by now (it comes with the spawn message).
        cfg = config_for(environment)
        self.network_timeout = self.connection_timeout = float(cfg.get("request_timeout", 10))
        self.default_headers = dict(cfg.get("headers") or {})
        super().__init__(environment)
        # Every request goes to a URL built (and its host re-checked) by perfbook's one
        # URL-building function: a path that would leave the host raises here, before any request.
        self.urls = [build_url(self.host, m["path"]) for m in cfg["mix"]]

    def wait_time(self) -> float:
        think = float(config().get("think_time", 0) or 0)
        return random.uniform(0.5 * think, 1.5 * think) if think > 0 else 0.0

    @task
    def one_request(self) -> None:
        cfg = config()
        i = random.choices(range(len(cfg["mix"])), weights=cfg["_weights"])[0]
        m = cfg["mix"][i]
        kwargs = {"json": m["json"]} if m.get("json") is not None else {}
        with self.client.request(m["method"], self.urls[i], name=m.get("name") or m["path"],
                                 allow_redirects=False,
                                 catch_response=True, **kwargs) as resp:
            code = resp.status_code or 0
            if code == 0:
                err = getattr(resp, "error", None)
                resp.failure(f"no answer: {type(err).__name__ if err else 'connection error'}")
            elif code == 429:
                # Its own stats entry: rejections are fast and would hide the served latency.
                resp.request_meta["name"] = f"{resp.request_meta['name']}{REJECTED_SUFFIX}"
                resp.failure("HTTP 429 (rate limited)")
            elif code >= 400:
                resp.failure(f"HTTP {code}")
            else:
                resp.success()


def _entry(e) -> dict:
    row = {"method": e.method or "", "name": e.name, "requests": e.num_requests,
           "failures": e.num_failures, "rps": e.total_rps, "fail_rps": e.total_fail_per_sec,
           "avg_ms": e.avg_response_time, "min_ms": e.min_response_time or 0,
           "max_ms": e.max_response_time, "start_time": e.start_time,
           "last_request": e.last_request_timestamp}
    for p in PERCENTILES:
        row[f"p{p * 100:g}"] = e.get_response_time_percentile(p) if e.num_requests else None
    return row


@events.quit.add_listener
def _write_summary(exit_code, **_kw):
    env = _env
    if env is None or env.runner is None or isinstance(env.runner, WorkerRunner):
        return
    path = getattr(env.parsed_options, "perfbook_summary", "") if env.parsed_options else ""
    if not path:
        return
    stats = env.runner.stats
    summary = {
        "entries": [_entry(e) for e in stats.entries.values() if e.num_requests or e.num_failures],
        "total": _entry(stats.total),
        "errors": [{"method": e.method or "", "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in stats.errors.values()],
        "user_count": env.runner.user_count,
        "exit_code": exit_code,
        "workers": _workers_seen,
    }
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    os.replace(tmp, path)
