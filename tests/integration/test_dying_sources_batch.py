"""Sources that die in the middle of a batch, and a PostgreSQL query blocked on a lock, through
the real CLI (`perfbook run` / `perfbook batch --jobs 1`) and papermill.

Starts, for the whole module: one demo stack (:class:`perfbook.demo.stack.Stack`, scenario
``healthy``, one service instance: a private PostgreSQL with pg_stat_statements that logs every
statement, a real Prometheus server scraping the service every second, the demo service and the
external-API stand-in, all on 127.0.0.1, free ports), driven with a few seconds of traffic. Per
test, as needed: a private redis-server (free port), and :class:`DyingProxy` — a TCP proxy in this
test process (threads, 127.0.0.1, free port) in front of one real server.

Each death happens at a known point, so the tests are deterministic: the proxy passes traffic
until the request that marks that point arrives, then "dies" before forwarding it — its listener
closes (later connections are refused) and every open connection is reset, the request in
flight included, which is what a client sees when the server process dies. Where a file dies,
the test watches the kernel's read position (psutil) and truncates the file under it.

What every test asserts (docs/reliability.md): each section's report renders; the checks that
needed the source after its death say `source.unreachable` (severity error) — never a health
claim from the answers before — while the checks before the death, and those that do not need
the source, still report; no check raised (`check.failed`); the manifest is complete; exit 1
(checks could not run); and the run ends far inside its per-notebook timeout.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from runs import free_port, hostport, report_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PERFBOOK = [sys.executable, "-m", "perfbook.cli"]
TIMEOUT = 60        # --timeout per notebook; every run must end well inside it
TRAFFIC_S = 4       # seconds of demo traffic before the tests


# --------------------------------------------------------------------------- a proxy that dies


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as the kernel does for a process that died."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class DyingProxy:
    """A TCP proxy on 127.0.0.1 in front of the real server on ``upstream_port``.

    Every time the bytes a client sends match ``marker`` (a regex), ``on_marker(n)`` runs with
    the count so far, *before* those bytes are forwarded: it may :meth:`kill` the proxy (the
    request is then never answered) or do anything else first (kill another server). After
    :meth:`kill`, new connections are refused and open ones are reset.
    """

    def __init__(self, upstream_port: int, marker: bytes | None = None,
                 on_marker: Callable[[int], None] | None = None):
        self.upstream = upstream_port
        self.marker = re.compile(marker) if marker else None
        self.on_marker = on_marker
        self.seen = 0
        self.killed_at: float | None = None
        self.dead = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        try:
            while not self.dead.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                with self._lock:
                    self._conns.append(t)
                t.start()
        finally:
            self._listener.close()  # from here on, connecting is refused

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            _reset(client)
            return
        tail = b""
        try:
            while not self.dead.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client and self.marker is not None:
                        buf = tail + data
                        hits = sum(1 for m in self.marker.finditer(buf) if m.end() > len(tail))
                        tail = buf[-256:]
                        for _ in range(hits):
                            with self._lock:
                                self.seen += 1
                                n = self.seen
                            if self.on_marker:
                                self.on_marker(n)
                    if self.dead.is_set():
                        return
                    (upstream if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            if self.dead.is_set():
                _reset(client)
                _reset(upstream)
            else:
                client.close()
                upstream.close()

    def kill(self) -> None:
        """Die: refuse new connections, reset every open one (each within 50 ms)."""
        if self.dead.is_set():
            return
        self.killed_at = time.monotonic()
        self.dead.set()
        self._acceptor.join(5)
        me = threading.current_thread()
        with self._lock:
            conns = list(self._conns)
        for t in conns:
            if t is not me:
                t.join(5)

    def kill_at(self, n: int) -> DyingProxy:
        """Die when the ``n``-th marked request arrives (before forwarding it)."""
        self.on_marker = lambda seen: self.kill() if seen == n else None
        return self


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from perfbook.demo.stack import Stack

    s = Stack("healthy", state_dir=tmp_path_factory.mktemp("dying-batch") / "stack", instances=1)
    s.start()
    try:
        s.drive(TRAFFIC_S)
        yield s
    finally:
        s.stop()


@pytest.fixture
def redis_port(tmp_path):
    """A private redis-server on a free loopback port, with a few cached keys."""
    import redis

    exe = shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server not installed (Debian: apt-get install redis-server; `make test` does it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        r = redis.Redis(port=port)
        for i in range(40):
            r.set(f"product:{i}", "x", ex=7200)
        r.set("products:all", "x", ex=3600)
        for i in range(30):  # some keyspace hits and misses for INFO
            r.get(f"product:{i}")
            r.get(f"missing:{i}")
        r.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_params(path: Path, name: str, targets: dict, settings: dict | None = None) -> Path:
    doc = {"service": name, "environment": "test", "window": {"since": "-5m", "until": "now"},
           "targets": targets, "endpoints": "default"}
    if settings:
        doc["settings"] = settings
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def prometheus(stack, url: str | None = None) -> dict:
    from perfbook.demo.prometheus import JOB
    return {"url": url or stack.prometheus_url, "selector": f'{{job="{JOB}"}}', "timeout": "5s"}


def perfbook(args: list[str], tmp_path: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run(PERFBOOK + args + ["--outputs", str(tmp_path / "out"), "--timeout", str(TIMEOUT)],
                         cwd=ROOT, env=dict(os.environ, **(env or {})), text=True, capture_output=True,
                         timeout=3 * TIMEOUT)
    return res, time.monotonic() - t0


class Report:
    """A run folder, read back: manifest, findings by section and by check."""

    def __init__(self, res: subprocess.CompletedProcess, sections: list[str]):
        self.dir = report_dir(res.stdout)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.findings = json.loads((self.dir / "findings.json").read_text())
        self.sections = sections
        self.summary = [(f["section"], f["check"], f["code"], f["severity"], f["subject"]) for f in self.findings]

    def check(self, section: str, name: str) -> list[dict]:
        return [f for f in self.findings if f["section"] == section and f["check"] == name]

    def codes(self, section: str, name: str) -> list[tuple[str, str, str]]:
        return [(f["code"], f["severity"], f["subject"]) for f in self.check(section, name)]

    def assert_ran(self, section: str, name: str) -> list[dict]:
        """The check produced findings and none of them says it could not run."""
        fs = self.check(section, name)
        assert fs and not [f for f in fs if f["severity"] == "error"], (section, name, self.summary)
        return fs

    def assert_unreachable(self, section: str, name: str, source: str, reason: str = "") -> dict:
        """The check's only finding: it could not run, `source` unreachable (never a verdict)."""
        fs = self.check(section, name)
        assert [(f["code"], f["severity"], f["subject"]) for f in fs] == [("source.unreachable", "error", source)], \
            (section, name, self.summary)
        assert re.search(reason, fs[0]["evidence"]["reason"]), fs[0]
        return fs[0]

    def assert_rendered(self, unreachable: bool = True) -> None:
        """Every section ran to its end and has its report, showing each check that did not run
        as a callout; nothing raised; the index lists the sections and those findings."""
        assert self.manifest["status"] == "complete" and self.manifest["exit_code"] == 1, self.manifest
        assert {n["section"]: n["status"] for n in self.manifest["notebooks"]} == {s: "ok" for s in self.sections}
        index = (self.dir / "index.html").read_text()
        for s in self.sections:
            html = self.dir / f"{s}.html"
            assert html.exists() and html.stat().st_size > 2048, s
            assert f"{s}.html" in index
            dead = [f for f in self.findings if f["section"] == s and f["code"] == "source.unreachable"]
            assert html.read_text().count('data-code="source.unreachable"') == len(dead), s
        assert ("<td><code>source.unreachable</code></td>" in index) == unreachable
        assert not [f for f in self.findings if f["code"] == "check.failed"], self.summary  # no traceback


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_dies_mid_batch(stack, tmp_path):
    # The real Prometheus behind a proxy that dies when external-apis asks for dependency
    # latency: load-balancing (first) and the first Prometheus check of external-apis were answered.
    proxy = DyingProxy(stack.ports["prometheus"], marker=rb"external_api_duration").kill_at(1)
    try:
        params = write_params(tmp_path / "p.yaml", "dying-prometheus", {
            "base_url": stack.service_urls[0],
            "prometheus": prometheus(stack, proxy.url),
            "external_health_urls": {"ai-api": f"{stack.external_url}/health"},
        }, {"external": {"probe_retries": 0, "probe_timeout": "2s", "probe_budget": "3s"}})
        res, took = perfbook(["batch", "-p", str(params), "--sections", "load-balancing,external-apis", "--jobs", "1"],
                             tmp_path)
    finally:
        proxy.kill()
    assert proxy.killed_at is not None, "the batch never asked for dependency latency"
    assert took < TIMEOUT, f"batch took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, ["load-balancing", "external-apis"])
    r.assert_rendered()

    # before the death: a whole section, and the first checks of the next one
    lb = [f for f in r.findings if f["section"] == "load-balancing"]
    assert lb and not [f for f in lb if f["code"] == "source.unreachable"], r.summary
    r.assert_ran("external-apis", "/health/services")
    r.assert_ran("external-apis", "dependency error rate")
    # after: every check that needs Prometheus did not run — the request in flight was reset,
    # the next ones refused ...
    for name, reason in (("dependency latency vs timeout", r"Connection reset"),
                         ("circuit breaker state", r"Connection refused"),
                         ("latency and breaker plot", r"Connection refused")):
        f = r.assert_unreachable("external-apis", name, "prometheus", reason)
        assert f["evidence"]["target"] == proxy.url
    # ... and the active probe, which does not, still reports
    probes = r.assert_ran("external-apis", "active probes with backoff")
    assert [f["subject"] for f in probes] == ["ai-api"]


# --------------------------------------------------------------------------- /metrics


def test_metrics_endpoint_dies_mid_batch(stack, tmp_path):
    # Snapshot mode (no Prometheus): the service's /metrics behind a proxy that dies at the
    # second scrape, the first of the two that quick-diagnostics takes for CPU %.
    service_port = stack.ports["api-1"]
    proxy = DyingProxy(service_port, marker=rb"GET /metrics").kill_at(2)
    try:
        params = write_params(tmp_path / "p.yaml", "dying-metrics", {
            "base_url": stack.service_urls[0],           # probes go to the service directly
            "metrics_urls": [f"{proxy.url}/metrics"],
        }, {"probes": {"count": 3, "timeout": "2s", "retries": 0}, "diagnostics": {"snapshot_interval": "1s"}})
        res, took = perfbook(["batch", "-p", str(params), "--sections", "quick-diagnostics,bottlenecks", "--jobs", "1"],
                             tmp_path)
    finally:
        proxy.kill()
    assert proxy.seen >= 2
    assert took < TIMEOUT, f"batch took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, ["quick-diagnostics", "bottlenecks"])
    r.assert_rendered()

    qd = "quick-diagnostics"
    assert r.codes(qd, "metrics source") == []  # the first scrape answered
    r.assert_ran(qd, "latency per route (histogram)")   # from that scrape
    r.assert_ran(qd, "response time probes")            # the service itself is up
    # CPU % needs two more scrapes: the first was reset in flight
    f = r.assert_unreachable(qd, "CPU %", "metrics", r"Connection reset")
    assert f["evidence"]["target"] == f"{proxy.url}/metrics"
    # the next section finds /metrics dead, says so once, and runs nothing on no data
    r.assert_unreachable("bottlenecks", "metrics source", "metrics", r"Connection refused")
    assert not [f for f in r.findings if f["section"] == "bottlenecks" and f["severity"] == "ok"], r.summary


def test_one_instance_of_two_down_in_snapshot_mode(stack, tmp_path):
    # Snapshot mode with two metrics URLs, the second instance dead before the batch (a free
    # port nothing listens on): every check reads the live instance, and each section names the
    # dead one once — neither all checks lost nor the dead instance silently left out.
    dead = f"http://127.0.0.1:{free_port()}/metrics"      # nothing listens there
    live = f"{stack.service_urls[0]}/metrics"
    live_instance = hostport(stack.service_urls[0])
    sections = ["quick-diagnostics", "bottlenecks", "load-balancing"]
    params = write_params(tmp_path / "p.yaml", "one-down", {"base_url": stack.service_urls[0], "metrics_urls": [live, dead]},
                          {"probes": {"count": 3, "timeout": "2s", "retries": 0}, "diagnostics": {"snapshot_interval": "1s"}})
    res, took = perfbook(["batch", "-p", str(params), "--sections", ",".join(sections)], tmp_path)
    assert took < TIMEOUT, f"batch took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, sections)
    r.assert_rendered()
    for section in sections:
        dead_found = [f for f in r.findings if f["section"] == section and f["code"] == "source.unreachable"]
        assert [(f["severity"], f["subject"], f["evidence"]["target"]) for f in dead_found] == \
            [("error", "metrics", dead)], (section, r.summary)
        assert dead_found[0]["check"] == "metrics source" and "ran on the other sources only" in dead_found[0]["title"]
    for section in ("quick-diagnostics", "bottlenecks"):
        cpu = [f for f in r.findings if f["section"] == section and f["code"] == "cpu.saturation"]
        assert cpu and cpu[0]["severity"] == "ok" and cpu[0]["evidence"]["instance"] == live_instance, r.summary
    # load balancing judged what it could see: one instance answered
    assert [f for f in r.findings if f["section"] == "load-balancing" and f["code"] == "balance.uneven"], r.summary


# --------------------------------------------------------------------------- Redis


def test_redis_dies_mid_caching_section(stack, redis_port, tmp_path):
    # The real redis-server behind a proxy that dies at the first SCAN (the TTL sample), after
    # the section read INFO.
    proxy = DyingProxy(redis_port, marker=rb"\r\nSCAN\r\n").kill_at(1)
    try:
        params = write_params(tmp_path / "p.yaml", "dying-redis", {
            "prometheus": prometheus(stack), "redis_env": "PB_DYING_REDIS"})
        res, took = perfbook(["run", "caching", "-p", str(params)], tmp_path,
                             env={"PB_DYING_REDIS": f"redis://127.0.0.1:{proxy.port}/0"})
    finally:
        proxy.kill()
    assert proxy.killed_at is not None, "the caching section never sampled TTLs"
    assert took < TIMEOUT, f"run took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, ["caching"])
    r.assert_rendered()
    assert r.codes("caching", "Redis INFO") == []  # answered before the death (a table, no finding)
    f = r.assert_unreachable("caching", "Redis TTL sample", "redis", r"^Connection reset$")  # in flight
    url = f"redis://127.0.0.1:{proxy.port}/0"
    assert f["evidence"]["target"] == "[REDACTED]" and url not in (r.dir / "caching.html").read_text()  # a secret
    # the hit-rate verdict still comes, from Prometheus and the INFO read before the death
    verdict = r.assert_ran("caching", "hit rate vs the 60 % target")
    assert any(f["subject"] == "redis" for f in verdict), r.summary


# --------------------------------------------------------------------------- external API


def test_external_api_dies_while_probed(stack, tmp_path):
    # The stand-in behind a proxy that dies when the active probe's first request arrives,
    # after the service's /health/services (which asks the stand-in itself) said it was up.
    proxy = DyingProxy(int(stack.external_url.rsplit(":", 1)[1]), marker=rb"GET /health").kill_at(1)
    try:
        params = write_params(tmp_path / "p.yaml", "dying-external", {
            "base_url": stack.service_urls[0],
            "prometheus": prometheus(stack),
            "external_health_urls": {"ai-api": f"{proxy.url}/health"},
        }, {"external": {"probe_retries": 1, "probe_timeout": "2s", "probe_budget": "5s"}})
        res, took = perfbook(["run", "external-apis", "-p", str(params)], tmp_path)
    finally:
        proxy.kill()
    assert proxy.killed_at is not None
    assert took < TIMEOUT, f"run took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, ["external-apis"])
    r.assert_rendered(unreachable=False)  # exit 1 for the critical finding below

    # before the death: the service said its dependency was up; Prometheus still answers after
    health = r.assert_ran("external-apis", "/health/services")
    assert [f["evidence"]["status"] for f in health if f["subject"] == "ai-api"] == ["up"], r.summary
    r.assert_ran("external-apis", "dependency error rate")
    # The dependency being down is this section's own finding (documented): critical, with the
    # reset of the request in flight then the refusal of the retry — never "ok", and not
    # source.unreachable: the probe did run.
    [probe] = r.check("external-apis", "active probes with backoff")
    assert (probe["code"], probe["severity"], probe["subject"]) == ("external.errors", "critical", "ai-api"), r.summary
    assert probe["evidence"]["final_status"] is None
    assert probe["evidence"]["errors"] == "Connection reset; Connection refused"


# --------------------------------------------------------------------------- PostgreSQL log file


def test_postgres_log_truncated_while_the_database_section_reads_it(stack, tmp_path):
    """A log file "dies" when it is truncated in place under the reader (logrotate's
    copytruncate): the reads after it end early and silently. The check must say it could not
    read the log, not count the statements it got as the whole log."""
    import psutil

    log = tmp_path / "postgresql.log"
    chunk = stack.postgres_log.read_bytes()
    log.write_bytes(chunk * max(1, (16 << 20) // len(chunk)))  # the stack's real log, ~16 MB
    size = log.stat().st_size
    params = write_params(tmp_path / "p.yaml", "dying-log", {
        "database_env": "PB_DYING_DB", "prometheus": prometheus(stack), "postgres_logs": [str(log)]})
    env = dict(os.environ, PB_DYING_DB=stack.database_url("perfbook"))
    t0 = time.monotonic()
    proc = subprocess.Popen(PERFBOOK + ["run", "database", "-p", str(params), "--outputs", str(tmp_path / "out"),
                                        "--timeout", str(TIMEOUT)],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    truncated_at = None
    try:
        me = psutil.Process(proc.pid)
        while truncated_at is None and proc.poll() is None and time.monotonic() - t0 < TIMEOUT:
            for child in me.children(recursive=True):
                try:
                    files = child.open_files()
                except psutil.Error:
                    continue
                # past the first MB: the reader, not the format sniffer (which reads a few kB)
                pos = [f.position for f in files if f.path == str(log) and f.position >= (1 << 20)]
                if pos:
                    os.truncate(log, 0)
                    truncated_at = pos[0]
                    break
            time.sleep(0.01)
        out, err = proc.communicate(timeout=3 * TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - t0
    assert truncated_at is not None and truncated_at < size, "the section never read the log (or read it too fast)"
    assert took < TIMEOUT, f"run took {took:.0f} s"
    assert proc.returncode == 1, (out[-2000:], err[-2000:])
    r = Report(subprocess.CompletedProcess([], 1, out, err), ["database"])
    r.assert_rendered()
    f = r.assert_unreachable("database", "N+1 from the query logs", "logs", r"truncated while being read")
    assert f["evidence"]["target"] == str(log) and f"from {size:,} to" in f["evidence"]["reason"]
    # everything that does not read the log still reports
    for name in ("slow queries (pg_stat_statements)", "N+1 from pg_stat_statements", "connections (pg_stat_activity)",
                 "missing indexes (table scans + EXPLAIN)"):
        r.assert_ran("database", name)


# --------------------------------------------------------------------------- PostgreSQL blocked on a lock


@pytest.mark.parametrize("lock_timeout, statement_timeout, reason", [
    ("1s", "3s", r"^lock_timeout of 1 s reached \(settings\.database\.lock_timeout\): .*\(canceling statement "
                 r"due to lock timeout\)"),
    ("5s", "1s", r"^statement_timeout of 1 s reached \(settings\.database\.statement_timeout\): .*\(canceling "
                 r"statement due to statement timeout\)"),
], ids=["lock_timeout", "statement_timeout"])
def test_postgres_query_blocked_on_a_lock_hits_its_timeout(stack, tmp_path, lock_timeout, statement_timeout, reason):
    """Another session (a migration) holds ACCESS EXCLUSIVE on `products`: the database
    section's table statistics (pg_table_size opens every user table) wait for it until
    lock_timeout — or statement_timeout, whichever is shorter — and the report says which; the
    checks that do not touch the table still report, and the idle transaction holding the lock
    is named."""
    import psycopg

    params = write_params(tmp_path / "p.yaml", "locked-db", {
        "database_env": "PB_LOCKED_DB", "prometheus": prometheus(stack)},
        {"database": {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout, "long_running": "1s"}})
    with psycopg.connect(stack.pg.dsn("demo")) as migration:  # superuser, its own transaction
        migration.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        res, took = perfbook(["run", "database", "-p", str(params)], tmp_path,
                             env={"PB_LOCKED_DB": stack.database_url("perfbook")})
        still_held = migration.execute("SELECT count(*) FROM pg_locks WHERE relation = 'products'::regclass "
                                       "AND mode = 'AccessExclusiveLock' AND granted").fetchone()[0]
        migration.rollback()
    assert still_held == 1  # perfbook waited, gave up, and took nothing from the migration
    assert took < TIMEOUT, f"run took {took:.0f} s"
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    r = Report(res, ["database"])
    r.assert_rendered()
    db = "database"
    f = r.assert_unreachable(db, "missing indexes (table scans + EXPLAIN)", "postgres", reason)
    assert f["evidence"]["target"] == f"postgresql://127.0.0.1:{stack.ports['postgres']}/demo"  # no user
    # the checks that needed those statistics say so too, pointing at the error above
    for name in ("table bloat (dead tuples)", "unused indexes"):
        r.assert_unreachable(db, name, "postgres", r"could not be read")
    # the rest of the section still reports
    for name in ("slow queries (pg_stat_statements)", "N+1 from pg_stat_statements", "connections (pg_stat_activity)",
                 "lock waits"):
        r.assert_ran(db, name)
    # ... and names the session that holds the lock
    holder = [f for f in r.check(db, "long-running statements and idle transactions")
              if f["code"] == "db.long_running" and "LOCK TABLE products" in (f["subject"] or "")]
    assert holder and holder[0]["severity"] in ("warning", "critical"), r.summary
