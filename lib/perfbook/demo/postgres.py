"""A private, throwaway PostgreSQL server on 127.0.0.1, from the installed binaries.

Used by the demo stack and by any integration test that needs a real server::

    with PostgresServer(tmp_path) as pg:
        psycopg.connect(pg.dsn("postgres"))

The cluster logs every statement (``log_min_duration_statement = 0``) to
``state_dir/postgresql.log`` with ``log_line_prefix = '%m [%p] %c %q%u@%d '`` (time with
milliseconds, PID, session id), the format perfbook's query-log parser reads, and
preloads ``pg_stat_statements``. Durability is off (fsync, full_page_writes): it is
throwaway.

Run as root, initdb refuses to work, so the server processes run as the ``postgres``
OS user (Debian creates it); its files then live where that user can reach them.
"""
from __future__ import annotations

import getpass
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from perfbook.demo import processes
from perfbook.demo.processes import LOOPBACK, ProcInfo

#: Settings written into postgresql.conf at initdb time (static for the cluster).
BASE_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "5000",
    "track_io_timing": "on",
    "log_destination": "'stderr'",
    "logging_collector": "off",
    "log_min_duration_statement": "0",
    "log_line_prefix": "'%m [%p] %c %q%u@%d '",
    "log_lock_waits": "on",
    "log_checkpoints": "off",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
    "lc_messages": "'C'",
    "max_connections": "100",
    "shared_buffers": "128MB",
    # throwaway cluster: no durability, little WAL
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "min_wal_size": "32MB",
    "max_wal_size": "512MB",
}

INSTALL_HINT = ("PostgreSQL server binaries not found. On Debian/Ubuntu: "
                "apt-get install postgresql postgresql-contrib")

#: The privilege levels the demo can run perfbook with (``perfbook demo --db-role``), and the
#: role perfbook connects as for each (docs/database.md, "Privilege levels"):
#:
#: - ``monitor``: ``perfbook``, ``pg_monitor`` only — the role the README recommends (created
#:   with the seed, schema.sql);
#: - ``read_all``: ``perfbook_read_all``, ``pg_monitor`` + ``pg_read_all_data`` (SELECT on every
#:   table before PostgreSQL 14): EXPLAIN verifies the index candidates;
#: - ``hypopg``: ``perfbook_read_all`` with the hypopg extension created in the database.
DB_ROLES: dict[str, str] = {"monitor": "perfbook", "read_all": "perfbook_read_all", "hypopg": "perfbook_read_all"}

#: Creates the higher-level monitoring role (idempotent; the superuser runs it in the database).
READ_ALL_ROLE_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'perfbook_read_all') THEN
    CREATE ROLE perfbook_read_all LOGIN;
  END IF;
  GRANT pg_monitor TO perfbook_read_all;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_read_all_data') THEN  -- PostgreSQL 14+
    GRANT pg_read_all_data TO perfbook_read_all;
  ELSE
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO perfbook_read_all;
  END IF;
END $$
"""


class HypopgUnavailable(RuntimeError):
    pass


def hypopg_available(dsn: str) -> bool:
    """Is the hypopg extension installed on the server (Debian: postgresql-<major>-hypopg)?"""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions "
                            "WHERE name = 'hypopg')").fetchone()[0]


def create_db_roles(dsn: str, level: str = "monitor") -> str:
    """Make the database at ``dsn`` (connected as the superuser) ready for privilege level
    ``level`` (:data:`DB_ROLES`) and return the role perfbook should connect as: the
    ``perfbook_read_all`` role for the higher levels, and ``CREATE EXTENSION hypopg`` for
    ``hypopg`` (HypopgUnavailable when the server does not have it). Idempotent."""
    import psycopg

    if level not in DB_ROLES:
        raise ValueError(f"db role must be one of {', '.join(DB_ROLES)}, not {level!r}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(READ_ALL_ROLE_SQL)
        if level == "hypopg":
            if not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions "
                                "WHERE name = 'hypopg')").fetchone()[0]:
                raise HypopgUnavailable("--db-role hypopg: the hypopg extension is not installed on this server "
                                        "(Debian: apt-get install postgresql-<major>-hypopg)")
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    return DB_ROLES[level]


class PostgresNotFound(RuntimeError):
    pass


def _version_of(bindir: Path) -> tuple[int, ...]:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()


def find_bindir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries.

    Looked up in ``$PERFBOOK_PG_BINDIR``, PATH, ``pg_config --bindir`` and Debian's
    /usr/lib/postgresql/*/bin (plus /usr/pgsql-*/bin on RPM systems); the newest
    version wins.
    """
    candidates: list[Path] = []
    if os.environ.get("PERFBOOK_PG_BINDIR"):
        return Path(os.environ["PERFBOOK_PG_BINDIR"])
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d:
            candidates.append(Path(d))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates += [Path(p) for p in glob.glob("/usr/pgsql-*/bin")]
    found = [d for d in dict.fromkeys(candidates)
             if (d / "initdb").is_file() and (d / "postgres").is_file()]
    if not found:
        raise PostgresNotFound(INSTALL_HINT)
    return max(found, key=_version_of)


def _traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Can ``uid`` reach ``path`` (x permission on every ancestor)?"""
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in gids:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


class PostgresServer:
    """One private PostgreSQL cluster: initdb into ``state_dir``, start, stop.

    ``port`` defaults to a free port on 127.0.0.1. ``settings`` are extra
    ``-c name=value`` options given at start. The superuser is ``postgres``, trust
    authentication on loopback only.
    """

    superuser = "postgres"

    def __init__(self, state_dir: Path | str, port: int | None = None, *,
                 bindir: Path | None = None, settings: dict[str, str] | None = None, home: Path | str | None = None):
        """``home``: where the cluster's files live when they must outlive ``state_dir`` (the
        demo's kept database, see :func:`perfbook.demo.seed.kept_db_home`); never removed here."""
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or processes.free_port()
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.settings = dict(settings or {})
        self.os_user: str | None = None
        self.kept_home = home is not None
        if os.geteuid() == 0:
            self.os_user = "postgres"
            try:
                pw = pwd.getpwnam(self.os_user)
            except KeyError as exc:
                raise PostgresNotFound("running as root needs the 'postgres' OS user "
                                       "(created by Debian's postgresql package)") from exc
            gids = {pw.pw_gid} | set(os.getgrouplist(self.os_user, pw.pw_gid))
            if home is not None:
                self.home = _kept_home(Path(home))
                if not _traversable_by(self.home, pw.pw_uid, gids):
                    raise PostgresNotFound(f"{self.home}: the postgres OS user cannot reach this folder "
                                           f"(a parent folder is private); choose one under /var/tmp")
                self.external_home = False
            elif _traversable_by(self.state_dir, pw.pw_uid, gids):
                self.home = self.state_dir
                self.external_home = False
            else:
                # The postgres user cannot reach state_dir (e.g. under /root or pytest's
                # 0700 tmp): keep the cluster in a private folder it can reach.
                self.home = Path(tempfile.mkdtemp(prefix="perfbook-pg-"))
                self.external_home = True
                os.chmod(self.home, 0o755)
        else:
            self.home = _kept_home(Path(home)) if home is not None else self.state_dir
            self.external_home = False
        self.data_dir = self.home / "pgdata"
        self.socket_dir = self.home / "pgrun"
        self.log_path = self.state_dir / "postgresql.log"
        self._popen: subprocess.Popen | None = None
        self.proc: ProcInfo | None = None

    # -- helpers ---------------------------------------------------------------
    @property
    def version(self) -> tuple[int, ...]:
        return _version_of(self.bindir)

    @property
    def major(self) -> int:
        return self.version[0]

    def _chown(self, path: Path) -> None:
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        extra = {}
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            extra = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        return subprocess.run(argv, capture_output=True, text=True, cwd=str(self.home),
                              env=self._env(), **extra, **kw)

    def _env(self) -> dict:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C",
               "TZ": "UTC"}
        if self.os_user:
            env["HOME"] = str(self.home)
            env["USER"] = env["LOGNAME"] = self.os_user
        return env

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _prepare_dirs(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.socket_dir)
        self.log_path.touch(exist_ok=True)
        if self.external_home and not (self.state_dir / "pgdata").exists():
            try:
                (self.state_dir / "pgdata").symlink_to(self.data_dir)
            except OSError:
                pass

    # -- lifecycle ---------------------------------------------------------------
    def initdb(self) -> None:
        """Create the cluster (trust auth, UTF8, C locale) and write postgresql.conf."""
        self._prepare_dirs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._chown(self.data_dir)
        r = self._run([str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                       "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as f:
            f.write("\n# perfbook demo settings\n")
            for k, v in BASE_SETTINGS.items():
                f.write(f"{k} = {v}\n")

    def copy_data_from(self, template: Path) -> None:
        """Make this cluster a copy of a stopped cluster's data directory."""
        self._prepare_dirs()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        r = subprocess.run(["cp", "-a", "--reflink=auto", str(template), str(self.data_dir)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"copying {template} failed: {r.stderr}")
        for stale in ("postmaster.pid", "postmaster.opts"):
            (self.data_dir / stale).unlink(missing_ok=True)

    def start(self, timeout: float = 60.0) -> float:
        """Start the server (initdb first when needed); return seconds until it accepts
        connections."""
        if self.running:
            return 0.0
        if not self.initialized:
            self.initdb()
        self._prepare_dirs()
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", f"listen_addresses={LOOPBACK}",
                "-c", f"unix_socket_directories={self.socket_dir}"]
        for k, v in self.settings.items():
            argv += ["-c", f"{k}={v}"]
        # stderr -> log file, opened by us; pg_ctl -l would do the same.
        self._popen, self.proc = processes.spawn("postgres", argv, self.log_path, env=self._env(),
                                                 cwd=self.home, user=self.os_user,
                                                 stop_signal=signal.SIGINT)  # SIGINT = fast shutdown
        try:
            return processes.wait_for(self._accepts, timeout, f"PostgreSQL on port {self.port}",
                                      alive=lambda: self._popen.poll() is None)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{processes.tail(self.log_path)}") from exc

    def _accepts(self) -> bool:
        import psycopg
        with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
            return True

    @property
    def running(self) -> bool:
        return self.proc is not None and processes.is_ours(self.proc)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (like ``pg_ctl stop -m fast``), then kill the process group of
        our own postmaster if it does not go."""
        if self.proc is not None:
            processes.stop(self.proc, timeout=timeout, popen=self._popen)
        self.proc = None
        self._popen = None

    def cleanup(self) -> None:
        """Remove the cluster's files (data, sockets; the private home if one was made); a
        kept home (``home=``) is only stopped."""
        self.stop()
        if self.kept_home:
            return
        if self.external_home:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def dsn(self, dbname: str = "demo", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@{LOOPBACK}:{self.port}/{dbname}"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.external_home:   # the private folder outside state_dir is ours to remove
            self.cleanup()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, data_dir={self.data_dir}, running={self.running})"


def _kept_home(home: Path) -> Path:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    return home


def current_user() -> str:
    return "postgres" if os.geteuid() == 0 else getpass.getuser()
