"""The demo stack: PostgreSQL (seeded, cached), the AI-API stand-in, N instances of the
demo service and Prometheus scraping them every second, all on 127.0.0.1, with a
scenario's faults switched on.

::

    with Stack("incident") as stack:          # start() on enter, stop() on exit
        stack.drive(60, progress=print)
        params = stack.write_params(stack.state_dir / "params.yaml")
        env = stack.env()                     # PERFBOOK_DEMO_DATABASE_URL=...

Every stack saves its PIDs (with their start times) and ports in ``<state_dir>/stack.json``.
``keep=True`` leaves it running when the ``with`` block ends without error, and
``~/.cache/perfbook/demo-current.json`` points to it, so ``Stack.load_state().stop()``
(``perfbook demo stop``) ends it from another process; ``Stack.recorded()`` also finds
stacks whose owner was killed.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import requests
import yaml

import perfbook
from perfbook.demo import processes, scenarios, seed, traffic
from perfbook.demo.postgres import DB_ROLES, PostgresServer, create_db_roles
from perfbook.demo.processes import LOOPBACK, ProcInfo
from perfbook.demo.prometheus import JOB, PrometheusServer
from perfbook.demo.victoriametrics import VictoriaMetricsServer

DATABASE_ENV = "PERFBOOK_DEMO_DATABASE_URL"
SERVICE_NAME = "demo-api"

#: The stand-in's behaviour: healthy, and under the external_failing fault.
EXTERNAL_HEALTHY = {"latency_ms": 300, "jitter_ms": 100, "failure_rate": 0.0}
EXTERNAL_FAILING = {"latency_ms": 3000, "jitter_ms": 1500, "failure_rate": 0.6}

#: ``tsdb=``: which time-series databases scrape the instances (both: the same targets, same labels).
TSDBS = ("prometheus", "victoriametrics", "both")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pointer_path() -> Path:
    return seed.cache_root() / "demo-current.json"


class Stack:
    """The demo stack for one scenario (see :mod:`perfbook.demo.scenarios`)."""

    def __init__(self, scenario: str = "incident", state_dir: Path | str | None = None, instances: int = 2,
                 *, keep: bool = False, use_cache: bool = True, log: Callable[[str], None] | None = None,
                 everywhere: Iterable[str] = (), tsdb: str = "prometheus", db_role: str = "monitor",
                 db_home: Path | str | None = None):
        """``db_home``: keep PostgreSQL's cluster there, across stacks (see
        :func:`seed.prepare_kept`); None (tests) gives each stack a fresh one in ``state_dir``."""
        self.scenario = scenarios.get(scenario)
        if tsdb not in TSDBS:
            raise ValueError(f"tsdb must be one of {', '.join(TSDBS)}, not {tsdb!r}")
        #: which servers scrape the instances; the params point to Prometheus unless it is "victoriametrics"
        self.tsdb = tsdb
        if db_role not in DB_ROLES:
            raise ValueError(f"db_role must be one of {', '.join(DB_ROLES)}, not {db_role!r}")
        #: the privilege level perfbook runs with (perfbook demo --db-role; see demo.postgres.DB_ROLES)
        self.db_role = db_role
        #: faults placed on one instance (scenarios.Fault.instance) put on every instance instead
        self.everywhere = frozenset(everywhere)
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self.n_instances = instances
        self.keep = keep
        self.use_cache = use_cache
        self.log = log or (lambda msg: None)
        if state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="perfbook-demo-"))
            self._created_dir = True
        else:
            self.state_dir = Path(state_dir).resolve()
            self._created_dir = not self.state_dir.exists()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # the postgres OS user must reach its data dir
        self.pg: PostgresServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.victoriametrics: VictoriaMetricsServer | None = None
        self.procs: dict[str, ProcInfo] = {}
        self._popens: dict = {}
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float | str] = {}
        self.started_at: float | None = None
        self.traffic_started_at: float | None = None
        self.traffic_stats: traffic.TrafficStats | None = None
        self._pg_home_external: str | None = None
        self._stopped = False
        self.db_home = Path(db_home).resolve() if db_home else None
        #: "kept" when PostgreSQL went on from the previous run's cluster (statistics not reset)
        self.db_prepared: str | None = None
        self._db_lock = None

    # -- addresses ---------------------------------------------------------------
    @property
    def faults(self) -> frozenset[str]:
        return self.scenario.faults

    @property
    def service_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{self.ports[f'api-{i}']}" for i in range(1, self.n_instances + 1)]

    @property
    def external_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['external']}"

    @property
    def prometheus_url(self) -> str:
        """The primary time-series database (Prometheus, or VictoriaMetrics when it is the only one)."""
        return self.tsdb_url(self.primary_tsdb)

    @property
    def primary_tsdb(self) -> str:
        return "victoriametrics" if self.tsdb == "victoriametrics" else "prometheus"

    @property
    def tsdb_names(self) -> list[str]:
        return ["prometheus", "victoriametrics"] if self.tsdb == "both" else [self.tsdb]

    def tsdb_url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def postgres_log(self) -> Path:
        return self.state_dir / "postgresql.log"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    def database_url(self, user: str = "perfbook") -> str:
        return f"postgresql://{user}@{LOOPBACK}:{self.ports['postgres']}/{seed.DEMO_DB}"

    # -- start -------------------------------------------------------------------
    def start(self) -> dict[str, float | str]:
        """Bring everything up; return the timings (seconds) of each part and ``total``.
        On failure, whatever was started is stopped again and the error raised."""
        t0 = time.monotonic()
        self.started_at = time.time()
        try:
            self._start(t0)
        except BaseException:
            self.stop(remove=not self.keep)
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        self.save_state()
        self.log(f"stack up in {self.timings['total']:.1f} s ({self.timings.get('seed')} seed)")
        return self.timings

    def _start(self, t0: float) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.db_home is not None and not self._lock_db_home():
            self.log(f"the kept database in {self.db_home} is in use by another demo: this one gets its own")
            self.db_home = None
        kept_port = seed.kept_record(self.db_home).get("port") if self.db_home else None
        same_port = isinstance(kept_port, int) and processes.claim_port(kept_port)
        if kept_port and not same_port:   # another address: its statistics could not go on (window.incomparable)
            self.log(f"port {kept_port} of the kept database is taken: it starts from the seed again")
        pg_port = kept_port if same_port else processes.free_port()
        self.ports = {"postgres": pg_port, "external": processes.free_port(),
                      **{name: processes.free_port() for name in self.tsdb_names},
                      **{f"api-{i}": processes.free_port() for i in range(1, self.n_instances + 1)}}
        env = self._child_env()
        # Stand-in and Prometheus start while PostgreSQL is being prepared.
        ext = EXTERNAL_FAILING if "external_failing" in self.faults else EXTERNAL_HEALTHY
        self._spawn("external", [sys.executable, "-m", "perfbook.demo.external", "--port", str(self.ports["external"]),
                                 "--latency-ms", str(ext["latency_ms"]), "--jitter-ms", str(ext["jitter_ms"]),
                                 "--failure-rate", str(ext["failure_rate"])], env)
        targets = [f"{LOOPBACK}:{self.ports[f'api-{i}']}" for i in range(1, self.n_instances + 1)]
        labels = {t: {"instance_name": f"api-{i}"} for i, t in enumerate(targets, 1)}
        # Both: Prometheus scrapes and sends every sample on to VictoriaMetrics (remote_write), so the
        # two hold the same samples (two scrapers would not: see VictoriaMetricsServer).
        if "victoriametrics" in self.tsdb_names:
            self.victoriametrics = VictoriaMetricsServer(self.state_dir, port=self.ports["victoriametrics"],
                                                         targets=targets, target_labels=labels,
                                                         scrape=self.tsdb == "victoriametrics")
        if "prometheus" in self.tsdb_names:
            self.prometheus = PrometheusServer(self.state_dir, port=self.ports["prometheus"], targets=targets,
                                               target_labels=labels, remote_write=[self.victoriametrics.write_url]
                                               if self.victoriametrics else None)
        for server in self._tsdb_servers():
            if not self._scrapes_at_once(server):
                server.spawn()
                self.procs[server.name] = server.proc
        self.save_state()

        self.pg = PostgresServer(self.state_dir, port=self.ports["postgres"], home=self.db_home)
        if self.pg.external_home:
            self._pg_home_external = str(self.pg.home)
        t = time.monotonic()
        if self.db_home is not None:
            self.timings["seed"] = self.db_prepared = seed.prepare_kept(self.pg, set(self.faults),
                                                                        fresh=not same_port)
            self.procs["postgres"] = self.pg.proc
            self.save_state()
            self.timings["postgres_prepare"] = round(time.monotonic() - t, 2)
        else:
            self.timings["seed"] = seed.prepare(self.pg, use_cache=self.use_cache)
            self.timings["postgres_prepare"] = round(time.monotonic() - t, 2)
            t = time.monotonic()
            self.pg.start()
            self.procs["postgres"] = self.pg.proc
            self.save_state()
            seed.apply_db_faults(self.pg, set(self.faults))
        create_db_roles(self.pg.dsn(seed.DEMO_DB), self.db_role)
        self.timings["postgres_start"] = round(time.monotonic() - t, 2)

        t = time.monotonic()
        for i in range(1, self.n_instances + 1):
            service_faults = ",".join(sorted(self.scenario.faults_of(i, self.n_instances, self.everywhere)))
            self._spawn(f"api-{i}", [sys.executable, "-m", "perfbook.demo.service", "--port", str(self.ports[f"api-{i}"]),
                                     "--instance-name", f"api-{i}", "--dsn", self.database_url(seed.APP_USER),
                                     "--external-url", self.external_url, "--faults", service_faults], env)
        self.save_state()
        self._wait_http("external", f"{self.external_url}/admin/config")
        for i, url in enumerate(self.service_urls, 1):
            self._wait_http(f"api-{i}", f"{url}/health", timeout=60)
        self.timings["services"] = round(time.monotonic() - t, 2)
        for server in self._tsdb_servers():
            if server.proc is None:  # a scraping VictoriaMetrics: only now the instances answer
                server.spawn()
                self.procs[server.name] = server.proc
                self.save_state()
        for server in self._tsdb_servers():
            t = time.monotonic()
            server.wait_ready()
            processes.wait_for(lambda: self._all_targets_up(server.url), 60, f"{server.name} scraping every instance")
            self.timings[server.name] = round(time.monotonic() - t, 2)

    def _lock_db_home(self) -> bool:
        """Hold the kept database for this stack's life (released when the process ends);
        False when another demo holds it, or its server still runs (a stack left up with --keep)."""
        import fcntl
        self.db_home.mkdir(parents=True, exist_ok=True)
        try:
            pid = int((self.db_home / "pgdata" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return False
        except PermissionError:   # alive, another user's
            return False
        except (OSError, ValueError, IndexError):
            pass   # no server runs on it
        fd = os.open(self.db_home / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._db_lock = fd
        return True

    def _tsdb_servers(self) -> list:
        return [s for s in (self.prometheus, self.victoriametrics) if s is not None]

    def _scrapes_at_once(self, server) -> bool:
        """VictoriaMetrics scrapes from its first second (Prometheus's first scrapes come later):
        started before the instances listen, it would store the stack's own start-up as missed
        scrapes (``up`` 0) inside the report's window — instance.down on a healthy stack."""
        return server is self.victoriametrics and self.victoriametrics.scrape

    def _child_env(self) -> dict:
        env = dict(os.environ)
        lib = str(Path(perfbook.__file__).resolve().parents[1])
        env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict) -> None:
        popen, info = processes.spawn(name, argv, self.log_dir / f"{name}.log", env=env, cwd=self.state_dir)
        self._popens[name] = popen
        self.procs[name] = info

    def _wait_http(self, name: str, url: str, timeout: float = 30) -> None:
        popen = self._popens[name]
        try:
            processes.wait_for(lambda: requests.get(url, timeout=1).status_code == 200, timeout, name,
                               alive=lambda: popen.poll() is None)
        except Exception as exc:
            log = self.log_dir / f"{name}.log"
            raise RuntimeError(f"{exc}\n--- {log} ---\n{processes.tail(log)}") from exc

    def _all_targets_up(self, url: str | None = None) -> bool:
        r = requests.get(f"{url or self.prometheus_url}/api/v1/query",
                         params={"query": f'up{{job="{JOB}"}}', "nocache": "1"}, timeout=2)
        res = r.json()["data"]["result"]
        return len(res) == self.n_instances and all(x["value"][1] == "1" for x in res)

    # -- traffic -------------------------------------------------------------------
    def traffic_weights(self) -> list[float]:
        if "uneven_load" in self.faults and self.n_instances > 1:
            rest = 0.2 / (self.n_instances - 1)
            return [0.8] + [rest] * (self.n_instances - 1)
        return [1.0] * self.n_instances

    def drive(self, duration: float = 60.0, progress: Callable | None = None, **kw) -> traffic.TrafficStats:
        """Send the scenario's traffic for ``duration`` seconds (see :func:`traffic.drive`)."""
        if self.traffic_started_at is None:
            self.traffic_started_at = time.time()
            self.save_state()
        self.traffic_stats = traffic.drive(self.service_urls, duration, weights=self.traffic_weights(),
                                           progress=progress, **kw)
        return self.traffic_stats

    # -- params ------------------------------------------------------------------
    def params_dict(self, tsdb: str | None = None) -> dict:
        """The params-file content for this stack (validated by perfbook.params); ``tsdb``
        picks the time-series database of a ``tsdb="both"`` stack (default: the primary)."""
        tsdb = tsdb or self.primary_tsdb
        prometheus = {"url": self.tsdb_url(tsdb), "selector": f'{{job="{JOB}"}}'}
        if tsdb == "victoriametrics":
            prometheus["flavor"] = "victoriametrics"
        since = (self.traffic_started_at or self.started_at or time.time()) - 10
        return {
            "service": SERVICE_NAME,
            "environment": "demo",
            "window": {"since": _iso(since), "until": _iso(time.time())},
            "targets": {
                "base_url": self.service_urls[0],
                "metrics_urls": [f"{u}/metrics" for u in self.service_urls],
                "prometheus": prometheus,
                "database_env": DATABASE_ENV,
                "postgres_logs": [str(self.postgres_log)],
                "external_health_urls": {"ai-api": f"{self.external_url}/health"},
            },
            "endpoints": "default",
        }

    def write_params(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# perfbook params for the demo stack (scenario {self.scenario.name}), written {_iso(time.time())}\n"
        path.write_text(header + yaml.safe_dump(self.params_dict(), sort_keys=False), encoding="utf-8")
        return path

    def env(self) -> dict[str, str]:
        """Environment variables the params name (the database URL, read-only role)."""
        return {DATABASE_ENV: self.database_url(self.monitor_user)}

    @property
    def monitor_user(self) -> str:
        """The role perfbook connects as: ``perfbook`` (pg_monitor only) unless ``db_role`` says more."""
        return DB_ROLES[getattr(self, "db_role", "monitor")]

    # -- state -------------------------------------------------------------------
    def save_state(self) -> Path:
        state = {
            "scenario": self.scenario.name, "instances": self.n_instances, "tsdb": self.tsdb, "state_dir": str(self.state_dir),
            "created_dir": self._created_dir, "keep": self.keep, "ports": self.ports,
            "procs": {k: v.to_dict() for k, v in self.procs.items() if v is not None},
            "pg_home_external": self._pg_home_external, "started_at": self.started_at,
            "traffic_started_at": self.traffic_started_at, "timings": self.timings, "db_role": self.db_role,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_file)
        if self.keep:   # only a kept stack outlives its process: that is the one to point to
            ptr = pointer_path()
            ptr.parent.mkdir(parents=True, exist_ok=True)
            ptr.write_text(json.dumps({"state_file": str(self.state_file)}), encoding="utf-8")
        return self.state_file

    @staticmethod
    def recorded() -> list[Path]:
        """State files of stacks that may still run: the kept one the pointer names, and
        any default-located ``perfbook-demo-*/stack.json`` with a live process (a stack
        whose owner was killed)."""
        found: list[Path] = []
        ptr = pointer_path()
        if ptr.is_file():
            try:
                found.append(Path(json.loads(ptr.read_text(encoding="utf-8"))["state_file"]))
            except (ValueError, KeyError):
                pass
        for f in sorted(Path(tempfile.gettempdir()).glob("perfbook-demo-*/stack.json")):
            if f in found:
                continue
            try:
                procs = json.loads(f.read_text(encoding="utf-8")).get("procs", {})
            except (OSError, ValueError):
                continue
            if any(processes.is_ours(ProcInfo.from_dict(p)) for p in procs.values()):
                found.append(f)
        return [f for f in found if f.is_file()]

    @classmethod
    def load_state(cls, state_file: Path | str | None = None) -> Stack:
        """The stack described by ``state_file`` (default: the one
        ``~/.cache/perfbook/demo-current.json`` points to). FileNotFoundError if none."""
        if state_file is None:
            ptr = pointer_path()
            if not ptr.is_file():
                raise FileNotFoundError("no demo stack is recorded as running")
            state_file = json.loads(ptr.read_text(encoding="utf-8"))["state_file"]
        state = json.loads(Path(state_file).read_text(encoding="utf-8"))
        stack = cls.__new__(cls)
        stack.scenario = scenarios.get(state["scenario"])
        stack.n_instances = state["instances"]
        stack.tsdb = state.get("tsdb", "prometheus")
        stack.state_dir = Path(state["state_dir"])
        stack._created_dir = state["created_dir"]
        stack.keep = state.get("keep", False)
        stack.use_cache = True
        stack.log = lambda msg: None
        stack.ports = state["ports"]
        stack.procs = {k: ProcInfo.from_dict(v) for k, v in state["procs"].items()}
        stack._popens = {}
        stack._pg_home_external = state.get("pg_home_external")
        stack.started_at = state.get("started_at")
        stack.traffic_started_at = state.get("traffic_started_at")
        stack.timings = state.get("timings", {})
        stack.db_role = state.get("db_role", "monitor")
        stack.traffic_stats = None
        stack.pg = None
        stack.prometheus = None
        stack.victoriametrics = None
        stack._stopped = False
        return stack

    def running(self) -> dict[str, bool]:
        """Which recorded processes are still alive (and ours)."""
        return {name: processes.is_ours(info) for name, info in self.procs.items()}

    # -- stop ----------------------------------------------------------------------
    def stop(self, remove: bool = True) -> None:
        """Stop every process the stack started (by PID; services and stand-in first,
        then Prometheus, then PostgreSQL) and remove the state folder (``remove``).
        Safe to call twice."""
        order = [n for n in self.procs if n.startswith("api-")] + ["external", "prometheus", "victoriametrics"]

        def _stop(name: str) -> None:
            info = self.procs.get(name)
            if info is not None:
                processes.stop(info, timeout=10, popen=self._popens.get(name))

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            list(ex.map(_stop, [n for n in order if n in self.procs]))
        if self.pg is not None:
            self.pg.stop()
        elif "postgres" in self.procs:
            processes.stop(self.procs["postgres"], timeout=20)
        if getattr(self, "_db_lock", None) is not None:
            os.close(self._db_lock)
            self._db_lock = None
        self._stopped = True
        if self.pg is not None and self.pg.external_home:
            shutil.rmtree(self.pg.home, ignore_errors=True)
        elif self._pg_home_external:
            shutil.rmtree(self._pg_home_external, ignore_errors=True)
        try:
            ptr = pointer_path()
            if ptr.is_file() and json.loads(ptr.read_text())["state_file"] == str(self.state_file):
                ptr.unlink()
        except (OSError, ValueError, KeyError):
            pass
        if remove:
            if self._created_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            else:
                for sub in ("pgdata", "pgrun", "prometheus-data", "logs", "postgresql.log", "prometheus.yml",
                            "victoriametrics-data", "victoriametrics.yml", "stack.json"):
                    p = self.state_dir / sub
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # keep=True leaves a healthy exit running (``perfbook demo --keep``); errors always stop.
        if self.keep and exc_type is None:
            self.save_state()
            return
        self.stop(remove=not self.keep)

    def describe(self) -> str:
        lines = [f"scenario: {self.scenario.name} ({', '.join(sorted(self.faults)) or 'no faults'})",
                 f"state:    {self.state_dir}"]
        for i, u in enumerate(self.service_urls, 1):
            lines.append(f"api-{i}:    {u}")
        lines += [f"ai-api:   {self.external_url}", *(f"{n}: {self.tsdb_url(n)}" for n in self.tsdb_names),
                  f"postgres: {self.database_url(self.monitor_user)}  ({self.db_role} privilege level; "
                  f"log {self.postgres_log})"]
        return "\n".join(lines)
