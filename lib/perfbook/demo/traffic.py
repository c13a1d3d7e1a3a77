"""Traffic driver for the demo stack: a realistic request mix, bounded in time and count,
spread over the instances, loopback only.

Mix (per request): ~42 % GET /api/products (?category=C&page=P&limit=20; popular
categories favoured, 5 % unfiltered), ~42 % GET /api/products/{id} (90 % among the hot
products 1..500, the rest anywhere in 1..100000), ~8 % GET /health, ~8 % GET
/api/analytics/summary; plus one POST /api/content/generate every ``generate_every``
seconds. The mix is a closed loop: ``workers`` threads, each waits for its answer and
then ``think_time`` before the next request, so a slow service gets less traffic rather
than a pile-up. The generate calls have their own ``generate_workers`` threads (at most
that many in flight), so a slow AI API slows those calls, not the rest of the mix.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from perfbook.demo.service import HOT_PRODUCTS

ALLOWED_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class TrafficStats:
    requests: int = 0
    failures: int = 0                      # no HTTP answer (timeout, connection error)
    by_status: Counter = field(default_factory=Counter)
    by_instance: Counter = field(default_factory=Counter)
    by_route: Counter = field(default_factory=Counter)
    started: float = 0.0                   # epoch seconds
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def summary(self) -> str:
        st = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        return (f"{self.requests} requests in {self.elapsed:.0f} s ({self.rps:.1f}/s); status {st}; "
                f"no answer: {self.failures}")


def _check_loopback(urls: Sequence[str]) -> None:
    for u in urls:
        host = urlsplit(u).hostname
        if host not in ALLOWED_HOSTS:
            raise ValueError(f"traffic goes to loopback only, not {u}")


def _pick_request(rng: random.Random) -> tuple[str, str, str]:
    """(method, path, route) of the next request in the mix."""
    r = rng.random()
    if r < 0.42:
        if rng.random() < 0.05:
            return "GET", "/api/products?limit=20", "/api/products"
        category = rng.randint(1, 10) if rng.random() < 0.6 else rng.randint(11, 50)
        page = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        return "GET", f"/api/products?category={category}&page={page}&limit=20", "/api/products"
    if r < 0.84:
        pid = 1 + int(HOT_PRODUCTS * rng.random() ** 2) if rng.random() < 0.9 else rng.randint(1, 100_000)
        return "GET", f"/api/products/{pid}", "/api/products/{id}"
    if r < 0.92:
        return "GET", "/health", "/health"
    return "GET", "/api/analytics/summary", "/api/analytics/summary"


def drive(base_urls: Sequence[str], duration: float = 60.0, *, max_requests: int = 50_000,
          workers: int = 6, weights: Sequence[float] | None = None, think_time: float = 0.1,
          generate_every: float = 0.75, generate_workers: int = 4, timeout: float = 15.0, seed: int | None = None,
          progress: Callable[[float, float, TrafficStats], None] | None = None) -> TrafficStats:
    """Send the mix to ``base_urls`` for ``duration`` seconds (at most ``max_requests``).

    ``weights`` gives each instance's share (e.g. ``[0.8, 0.2]``); even by default.
    ``progress(elapsed, duration, stats)`` is called about twice a second.
    """
    urls = [u.rstrip("/") for u in base_urls]
    _check_loopback(urls)
    if not urls:
        raise ValueError("no instance to send traffic to")
    weights = list(weights) if weights else [1.0] * len(urls)
    stats = TrafficStats(started=time.time())
    lock = threading.Lock()
    t_start = time.monotonic()
    deadline = t_start + duration
    next_generate = [t_start + 0.5]
    sent = [0]
    master = random.Random(seed)

    def send(session: requests.Session, rng: random.Random, gen: bool) -> None:
        base = rng.choices(urls, weights)[0]
        if gen:
            method, path, route = "POST", "/api/content/generate", "/api/content/generate"
        else:
            method, path, route = _pick_request(rng)
        status = None
        try:
            if gen:
                resp = session.post(base + path, json={"product_id": 1 + int(HOT_PRODUCTS * rng.random() ** 2)},
                                    timeout=timeout)
            else:
                resp = session.get(base + path, timeout=timeout)
            status = resp.status_code
        except requests.RequestException:
            pass
        with lock:
            stats.requests += 1
            stats.by_instance[base] += 1
            stats.by_route[f"{method} {route}"] += 1
            if status is None:
                stats.failures += 1
            else:
                stats.by_status[status] += 1

    def take() -> bool:
        """Count one more request; False once the time or the count is used up."""
        with lock:
            if time.monotonic() >= deadline or sent[0] >= max_requests:
                return False
            sent[0] += 1
            return True

    def worker(wseed: int) -> None:
        # closed loop: the request mix, then think time
        rng = random.Random(wseed)
        session = requests.Session()
        while take():
            send(session, rng, gen=False)
            if think_time:
                time.sleep(rng.uniform(0.5, 1.5) * think_time)

    def generator(wseed: int) -> None:
        # open loop on its own threads: one POST every generate_every seconds, so slow AI
        # calls (up to the service's AI timeout) never starve the mix of its workers
        rng = random.Random(wseed)
        session = requests.Session()
        while True:
            with lock:
                slot = max(next_generate[0], time.monotonic())
                next_generate[0] = slot + generate_every
            if slot >= deadline:
                return
            pause = slot - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not take():
                return
            send(session, rng, gen=True)

    gen_threads = max(1, generate_workers) if generate_every and generate_every > 0 else 0
    threads = [threading.Thread(target=worker, args=(master.randrange(2**31),), daemon=True, name=f"traffic-{i}")
               for i in range(workers)]
    threads += [threading.Thread(target=generator, args=(master.randrange(2**31),), daemon=True,
                                 name=f"traffic-generate-{i}") for i in range(gen_threads)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        stats.elapsed = time.monotonic() - t_start
        if progress:
            with lock:
                progress(min(stats.elapsed, duration), duration, stats)
    stats.elapsed = time.monotonic() - t_start
    if progress:
        progress(duration, duration, stats)
    return stats
