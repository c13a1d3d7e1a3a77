"""The demo database: schema, seed data, a cache of the seeded cluster, DB-side faults.

Seeding (``schema.sql`` + ``seed.sql``: 50 categories, 100k products, 500k clicks, 20k
content rows, 50k sessions) takes a few seconds; the seeded, cleanly stopped data
directory is then cached under ``~/.cache/perfbook/pg-seed-<major>-<hash>`` (the hash
covers the SQL, the server settings and the OS user) and later stacks start from a copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

import psycopg

from perfbook.demo.postgres import BASE_SETTINGS, PostgresServer

SEED_VERSION = "1"
DEMO_DB = "demo"
APP_USER = "demo_app"
MONITOR_USER = "perfbook"


def _sql(name: str) -> str:
    return resources.files("perfbook.demo").joinpath(name).read_text(encoding="utf-8")


def cache_root() -> Path:
    """``$PERFBOOK_CACHE_DIR`` or ``~/.cache/perfbook``."""
    return Path(os.environ.get("PERFBOOK_CACHE_DIR") or Path.home() / ".cache" / "perfbook")


def seed_key(server: PostgresServer) -> str:
    h = hashlib.sha256()
    for part in (SEED_VERSION, _sql("schema.sql"), _sql("seed.sql"), repr(sorted(BASE_SETTINGS.items())),
                 server.os_user or str(os.getuid()), ".".join(map(str, server.version))):
        h.update(part.encode())
    return f"pg-seed-{server.major}-{h.hexdigest()[:12]}"


def seed(server: PostgresServer) -> None:
    """Create database ``demo`` and fill it (server must be running)."""
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DEMO_DB}")
    with psycopg.connect(server.dsn(DEMO_DB)) as conn:   # one transaction: wal_level=minimal skips WAL
        conn.execute(_sql("schema.sql"))
        conn.execute(_sql("seed.sql"))
    with psycopg.connect(server.dsn(DEMO_DB), autocommit=True) as conn:
        # Statistics as of a freshly loaded, vacuumed database: reset first, then let
        # VACUUM ANALYZE set n_live_tup (a reset leaves it at 0).
        conn.execute("SELECT pg_stat_reset()")
        conn.execute("VACUUM (ANALYZE, FREEZE)")
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_stat_statements_reset()")


def prepare(server: PostgresServer, use_cache: bool = True) -> str:
    """Give ``server`` a seeded data directory; return ``"cache"`` or ``"seeded"``.

    The server is left stopped. A fresh seed is cached for the next time.
    """
    cached = cache_root() / seed_key(server)
    if use_cache and (cached / "PG_VERSION").is_file():
        try:
            server.copy_data_from(cached)
            return "cache"
        except RuntimeError:
            pass  # unreadable cache (other user): seed afresh
    if server.data_dir.exists():
        shutil.rmtree(server.data_dir)
    server.initdb()
    server.start()
    try:
        seed(server)
    finally:
        server.stop()
    if use_cache:
        _store(server.data_dir, cached)
    return "seeded"


def _store(data_dir: Path, cached: Path) -> None:
    """Copy a stopped data dir into the cache, atomically (tmp + rename)."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.parent / f".{cached.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(["cp", "-a", "--reflink=auto", str(data_dir), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for stale in ("postmaster.pid", "postmaster.opts"):
        (tmp / stale).unlink(missing_ok=True)
    try:
        os.rename(tmp, cached)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    # Old seeds of other versions are dead weight.
    for old in cached.parent.glob("pg-seed-*"):
        if old != cached and old.name.startswith("pg-seed-") and time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)


# -- DB-side faults -------------------------------------------------------------------

#: The index the missing_index fault removes (ground truth: products(category_id, created_at)).
MISSING_INDEX_SQL = "DROP INDEX IF EXISTS idx_products_category_created"

#: The bloat fault: autovacuum off for sessions, then a churn that leaves ~40 % dead tuples.
BLOAT_SQL = [
    "ALTER TABLE sessions SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
    "UPDATE sessions SET last_seen_at = last_seen_at + interval '1 minute', "
    "cart = cart || '{\"touched\": true}' WHERE id % 2 = 0",
    "DELETE FROM sessions WHERE id % 10 = 1",
]


def apply_db_faults(server: PostgresServer, faults: set[str], *, reset: bool = True) -> None:
    """Apply the scenario's database faults, then (``reset``) reset pg_stat_statements so
    the window starts clean (table statistics are kept: they are the bloat's evidence)."""
    with psycopg.connect(server.dsn(DEMO_DB), autocommit=True) as conn:
        if "missing_index" in faults:
            conn.execute(MISSING_INDEX_SQL)
        if "bloat" in faults:
            for stmt in BLOAT_SQL:
                conn.execute(stmt)
        if reset:
            conn.execute("SELECT pg_stat_statements_reset()")


# -- the kept database of `perfbook demo` ------------------------------------------------
# One PostgreSQL cluster that outlives each demo run, as a service's database outlives its
# incidents: `perfbook demo --scenario healthy` then `perfbook demo` run on the same server,
# so the second run's statistics continue the first's (perfbook's --since-run and compare
# read the delta). A database fault cannot be taken back cheaply (a dropped index, dead
# tuples), so a scenario without a fault the kept database has starts from the seed again.

DB_FAULTS = frozenset({"missing_index", "bloat"})
KEPT_RECORD = "perfbook-db.json"


def kept_db_home() -> Path:
    """Where `perfbook demo` keeps its database: ``<cache>/demo-db``, or, when the
    ``postgres`` OS user (root runs) cannot reach the cache, ``/var/tmp/perfbook-demo-db-<uid>``."""
    home = cache_root() / "demo-db"
    if os.geteuid() != 0:
        return home
    import pwd

    from perfbook.demo.postgres import _traversable_by
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return home
    gids = {pw.pw_gid} | set(os.getgrouplist("postgres", pw.pw_gid))
    probe = home
    while not probe.exists():
        probe = probe.parent
    if _traversable_by(probe, pw.pw_uid, gids):
        return home
    return Path("/var/tmp") / f"perfbook-demo-db-{os.getuid()}"


def kept_record(home: Path) -> dict:
    """What the kept database at ``home`` holds: seed key, faults applied, port, last run."""
    try:
        data = json.loads((Path(home) / KEPT_RECORD).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_kept_record(home: Path, **changes) -> dict:
    data = {**kept_record(home), **changes}
    tmp = Path(home) / f".{KEPT_RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, Path(home) / KEPT_RECORD)
    return data


def can_continue(record: dict, key: str, faults: set[str] | frozenset[str], initialized: bool) -> bool:
    """May a run with ``faults`` go on with the kept database ``record`` describes? Only the
    same seed, and only adding database faults, never taking one back."""
    return bool(initialized and record.get("seed_key") == key
                and set(record.get("faults") or ()) <= set(faults) & DB_FAULTS)


def prepare_kept(server: PostgresServer, faults: set[str] | frozenset[str], *, fresh: bool = False) -> str:
    """Prepare the kept database in ``server.home`` for a run with ``faults`` and leave it
    started with the faults in place: ``"kept"`` when it goes on from the last run
    (statistics not reset), else (or ``fresh``) the seed's ``"cache"`` / ``"seeded"``
    (a new window)."""
    home = server.home
    record = kept_record(home)
    key = seed_key(server)
    if not fresh and can_continue(record, key, faults, server.initialized):
        server.start()
        apply_db_faults(server, set(faults) & DB_FAULTS - set(record.get("faults") or ()), reset=False)
        how = "kept"
    else:
        how = prepare(server)
        server.start()
        apply_db_faults(server, set(faults))
        record = {}
    write_kept_record(home, seed_key=key, faults=sorted(set(record.get("faults") or ()) | (set(faults) & DB_FAULTS)),
                      port=server.port, last_run=record.get("last_run") if how == "kept" else None)
    return how
