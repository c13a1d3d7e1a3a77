"""The PostgreSQL session (:mod:`perfbook.sources.postgres`): a read-only, time-bounded
psycopg 3 connection (layer 2 of the source's safety: ``default_transaction_read_only``,
``statement_timeout`` and ``lock_timeout`` checked after connecting), the notebook's
:func:`connect`, and statement timeouts turned into source problems (:func:`timeout_problem`,
the ``_bounded`` decorator of the functions a notebook calls), and what the session
finds on the server: version, extensions, the role's privileges.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import PresentOnly, SourceError, SourceProblem, SourceUnreachable, present_only
from .pg_readonly import _scrub, check_read_only, safe_dsn

SOURCE = "postgres"
TAG = "/*perfbook*/"
APPLICATION_NAME = "perfbook"


def _replacing_text_loader():
    """A psycopg text loader that never fails on bad bytes (SQL_ASCII databases, odd
    encodings in query texts): invalid sequences become U+FFFD."""
    from psycopg.adapt import Loader

    class ReplacingTextLoader(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode("utf-8", "replace")

    return ReplacingTextLoader


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


_GUC_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _guc_ms(text: str) -> float | None:
    """A time setting as ``SHOW`` prints it (``5s``, ``500ms``, ``1min``, ``0``) in ms."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*", str(text))
    return float(m.group(1)) * _GUC_UNIT_MS[m.group(2) or "ms"] if m else None


@dataclass
class Session:
    """A read-only, time-bounded psycopg 3 session. Use :func:`connect` or :meth:`open`.

    ``query(sql, params)`` → DataFrame; ``rows(sql, params)`` → list of dicts. Each call
    is checked (:func:`check_read_only`), tagged ``/*perfbook*/`` and runs in its own
    read-only transaction (autocommit; the server default makes each one read-only).
    """

    conn: Any
    target: str
    statement_timeout: float = 5.0
    lock_timeout: float = 1.0
    version_num: int = 0
    _prepared: int = field(default=0, repr=False)

    @classmethod
    def open(cls, dsn: str, *, statement_timeout: float = 5.0, lock_timeout: float = 1.0,
             connect_timeout: float = 5.0) -> Session:
        """Connect. Raises SourceUnreachable (nothing answered, bad credentials) or
        SourceError (connected, but the session could not be made read-only)."""
        present_only("PostgreSQL", "the database")
        import psycopg

        target = safe_dsn(dsn)
        st_ms, lock_ms = _ms(statement_timeout), _ms(lock_timeout)
        options = (f"-c default_transaction_read_only=on -c statement_timeout={st_ms} "
                   f"-c lock_timeout={lock_ms} -c application_name={APPLICATION_NAME}")
        try:
            conn = psycopg.connect(dsn, autocommit=True, options=options, application_name=APPLICATION_NAME,
                                   connect_timeout=max(1, int(math.ceil(connect_timeout))))
        except psycopg.Error as exc:
            raise SourceUnreachable(SOURCE, target, _scrub(str(exc).strip().splitlines()[0] if str(exc).strip()
                                                           else type(exc).__name__, dsn)) from None
        except Exception as exc:  # noqa: BLE001 - bad DSN syntax etc.: never echo the DSN
            raise SourceUnreachable(SOURCE, target, f"invalid DSN ({type(exc).__name__})") from None
        loader = _replacing_text_loader()
        for name in ("text", "varchar", "name", "bpchar"):
            conn.adapters.register_loader(name, loader)
        session = cls(conn, target, statement_timeout, lock_timeout)
        try:
            session._ensure_guards()
        except BaseException:
            conn.close()
            raise
        return session

    def _ensure_guards(self) -> None:
        """Verify the guards after connecting and ``SET`` each one that is missing, whatever
        the startup options did: a pooler (PgBouncer, Supavisor) may drop ``options``, and a
        role may already have ``default_transaction_read_only=on`` with no timeouts at all.

        ``SHOW statement_timeout`` / ``lock_timeout`` must equal ``settings.database``'s
        values, ``SHOW default_transaction_read_only`` and ``SHOW transaction_read_only``
        must be ``on``; anything else is ``SET`` and shown again. A guard that still does
        not hold raises :class:`SourceError` and the session is not used."""
        want_ms = {"statement_timeout": _ms(self.statement_timeout), "lock_timeout": _ms(self.lock_timeout)}
        self.version_num = int(self.conn.execute(f"{TAG} SELECT current_setting('server_version_num')").fetchone()[0])
        missing = self._missing_guards(want_ms)
        for name in missing:
            if name in want_ms:
                self.conn.execute(f"{TAG} SET {name} = '{want_ms[name]}ms'")
            else:  # transaction_read_only follows the session default from the next statement on
                self.conn.execute(f"{TAG} SET default_transaction_read_only = on")
        missing = self._missing_guards(want_ms) if missing else []
        if missing:
            raise SourceError(SOURCE, self.target, f"could not set {', '.join(missing)} on the session "
                                                   f"(SHOW after SET differs); refusing to go on")

    def _missing_guards(self, want_ms: dict[str, int]) -> list[str]:
        """The guards that ``SHOW`` says are not in force."""
        missing = [name for name, ms in want_ms.items()
                   if _guc_ms(self.conn.execute(f"{TAG} SHOW {name}").fetchone()[0]) != ms]
        for name in ("default_transaction_read_only", "transaction_read_only"):
            if self.conn.execute(f"{TAG} SHOW {name}").fetchone()[0] != "on" and "transaction_read_only" not in missing:
                missing.append("transaction_read_only")
        return missing

    # -- running SQL ----------------------------------------------------------
    def _cursor(self, sql: str, params: Any = None):
        import psycopg

        check_read_only(sql, params)
        text = sql if sql.lstrip().startswith(TAG) else f"{TAG} {sql.strip()}"
        try:
            return self.conn.execute(text, params)
        except psycopg.OperationalError as exc:
            if self.conn.closed or self.conn.broken:
                raise SourceUnreachable(SOURCE, self.target, f"connection lost: {str(exc).strip()[:300]}") from None
            raise

    def query(self, sql: str, params: Any = None) -> pd.DataFrame:
        cur = self._cursor(sql, params)
        cols = [c.name for c in cur.description] if cur.description else []
        return pd.DataFrame(cur.fetchall() if cols else [], columns=cols)

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self._cursor(sql, params)
        cols = [c.name for c in cur.description] if cur.description else []
        return [dict(zip(cols, r)) for r in cur.fetchall()] if cols else []

    def value(self, sql: str, params: Any = None) -> Any:
        row = self._cursor(sql, params).fetchone()
        return row[0] if row else None

    @property
    def major(self) -> int:
        return self.version_num // 10000

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.target}, read-only, statement_timeout={self.statement_timeout:g}s)"


def connect(ctx: Any) -> Session:
    """The notebook's session: DSN from the env var ``targets.database_env`` names,
    timeouts from ``settings.database``."""
    try:
        present_only(SOURCE, "the database")
    except PresentOnly as exc:
        _failure[:] = [PRESENT_ONLY, exc.reason]
        raise
    env = ctx.params.targets.database_env
    if not env:
        raise SourceUnreachable(SOURCE, "(not configured)",
                                "the params file has no targets.database_env (the NAME of the "
                                "environment variable holding the DSN)")
    dsn = ctx.secret(env)
    if not dsn:
        _failure[:] = [f"${env}", f"environment variable {env} is not set or empty"]
        raise SourceUnreachable(SOURCE, *_failure)
    s = ctx.params.settings.database
    try:
        session = Session.open(dsn, statement_timeout=s.statement_timeout, lock_timeout=s.lock_timeout)
        _failure.clear()
        return session
    except SourceUnreachable as exc:
        _failure[:] = [exc.target, exc.reason]
        raise


#: Why the last :func:`connect` failed (target, reason): later checks repeat it.
_failure: list[str] = []
#: ``_failure``'s target when the run looks back in time (no connection was tried).
PRESENT_ONLY = "(present only)"


def require(value: Any, what: str) -> Any:
    """``value``, or SourceUnreachable when an earlier step could not read it (``None``):
    the later checks then say they did not run, instead of failing on ``None``."""
    if value is None:
        if _failure and _failure[0] == PRESENT_ONLY:
            raise PresentOnly(SOURCE, "the database", _failure[1])
        if _failure:
            raise SourceUnreachable(SOURCE, _failure[0], f"not connected, so {what} could not be read: {_failure[1]}")
        raise SourceUnreachable(SOURCE, "(not read)", f"{what} could not be read (see the error above)")
    return value


def close(db: Session | None) -> None:
    """Close a session (``None`` is fine)."""
    if db is not None:
        db.close()


def _need(db: Session | None) -> Session:
    if db is None:
        if _failure and _failure[0] == PRESENT_ONLY:
            raise PresentOnly(SOURCE, "the database", _failure[1])
        if _failure:
            raise SourceUnreachable(SOURCE, _failure[0], f"not connected: {_failure[1]}")
        raise SourceUnreachable(SOURCE, "(no session)", "not connected (see the connection check above)")
    return db


# --------------------------------------------------------------------------- timeouts


class StatementTimeout(SourceUnreachable):
    """The server cancelled one of perfbook's statements at the session's ``lock_timeout``
    (another session holds a conflicting lock, e.g. a migration's ACCESS EXCLUSIVE lock on
    a table this check reads) or ``statement_timeout``. The check did not run; the reason
    names the setting and its value, so the report says why instead of a traceback."""


def timeout_problem(exc: BaseException, db: Any) -> SourceProblem | None:
    """The source problem a psycopg cancellation stands for, or None for any other error:

    - ``LockNotAvailable`` (55P03, "canceling statement due to lock timeout") and
      ``QueryCanceled`` at the statement timeout → :class:`StatementTimeout`;
    - ``QueryCanceled`` for another reason (a DBA's ``pg_cancel_backend``) →
      :class:`SourceError` ("the server cancelled the statement").
    """
    import psycopg

    if not isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
        return None
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    target = getattr(db, "target", "(session)")
    if isinstance(exc, psycopg.errors.LockNotAvailable) or "lock timeout" in message:
        limit = getattr(db, "lock_timeout", None)
        return StatementTimeout(SOURCE, target,
                                f"lock_timeout{_secs(limit)} reached (settings.database.lock_timeout): another session "
                                f"holds a conflicting lock on a table this check reads, e.g. a migration or a long "
                                f"transaction ({message})")
    if "statement timeout" in message:
        limit = getattr(db, "statement_timeout", None)
        return StatementTimeout(SOURCE, target,
                                f"statement_timeout{_secs(limit)} reached (settings.database.statement_timeout): "
                                f"no answer in time, blocked on a lock or too slow ({message})")
    return SourceError(SOURCE, target, f"the server cancelled the statement ({message})")


def _secs(value: Any) -> str:
    return f" of {value:g} s" if isinstance(value, (int, float)) else ""


def _bounded(fn):
    """Turn a statement cancelled at a timeout into :func:`timeout_problem`'s exception.
    For the functions a notebook calls; :meth:`Session.query` keeps psycopg's errors."""

    @functools.wraps(fn)
    def wrapper(db: Any, *args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return fn(db, *args, **kwargs)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            problem = timeout_problem(exc, db)
            if problem is None:  # pragma: no cover - both classes are mapped
                raise
            raise problem from None

    return wrapper


# --------------------------------------------------------------------------- server, extensions

SERVER_INFO_SQL = """
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       current_database() AS database,
       current_user AS "user",
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS read_all_stats,
       (SELECT setting::int FROM pg_settings WHERE name = 'max_connections') AS max_connections,
       (SELECT setting::int FROM pg_settings WHERE name = 'superuser_reserved_connections') AS superuser_reserved,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS shared_preload_libraries,
       (SELECT setting FROM pg_settings WHERE name = 'autovacuum') AS autovacuum,
       (SELECT setting FROM pg_settings WHERE name = 'track_io_timing') AS track_io_timing,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) AS stats_reset,
       now() AS now
"""


@_bounded
def server_info(db: Session | None) -> dict[str, Any]:
    """Version, limits, privileges and the settings the checks need (one row as a dict)."""
    return _need(db).rows(SERVER_INFO_SQL)[0]


EXTENSIONS_SQL = """
SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""


@_bounded
def extensions(db: Session | None) -> dict[str, dict[str, str]]:
    """Installed extensions of the current database: name → {version, schema}."""
    return {r["name"]: {"version": r["version"], "schema": r["schema"]} for r in _need(db).rows(EXTENSIONS_SQL)}


PRIVILEGES_SQL = """
SELECT current_user AS "user",
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       pg_has_role(current_user, 'pg_monitor', 'USAGE') AS pg_monitor,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS read_all_stats,
       COALESCE((SELECT pg_has_role(current_user, r.oid, 'USAGE') FROM pg_roles r
                 WHERE r.rolname = 'pg_read_all_data'), false) AS read_all_data,
       (SELECT count(*) FROM pg_stat_user_tables)::int AS tables,
       ARRAY(SELECT s.schemaname || '.' || s.relname FROM pg_stat_user_tables s
             WHERE NOT has_table_privilege(s.relid, 'SELECT') ORDER BY 1) AS unreadable,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg') AS hypopg,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg') AS hypopg_available
"""


@_bounded
def privileges(db: Session | None) -> dict[str, Any]:
    """What this session's role may do, for :func:`perfbook.checks.database.privilege_level`:
    superuser, membership of pg_monitor / pg_read_all_stats / pg_read_all_data (14+), the
    user tables it cannot SELECT (``unreadable``: ``schema.table``; EXPLAIN of a statement
    reading one fails with InsufficientPrivilege), whether the hypopg extension is created
    in this database (``hypopg``) or only installed on the server (``hypopg_available``).
    Catalog reads only: any role may run it."""
    row = _need(db).rows(PRIVILEGES_SQL)[0]
    row["unreadable"] = list(row.get("unreadable") or [])
    return row
