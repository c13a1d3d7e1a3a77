"""PostgreSQL, read through a session that cannot hurt production.

I/O only: every function runs one piece of SQL (written right above or inside it, once)
and returns plain data. The analysis lives in :mod:`perfbook.checks.database`.

Safety, in layers (the last one is the real guarantee):

1. :meth:`Session.query` refuses anything that is not a read: it parses each statement
   with pglast and accepts only SELECT / EXPLAIN / SHOW / PREPARE / EXECUTE / DEALLOCATE
   and a few harmless SETs; no INSERT/UPDATE/DELETE/MERGE anywhere (data-modifying CTEs
   included), no ``SELECT ... FOR UPDATE`` / ``INTO``, no functions that act on the server
   (``pg_terminate_backend``, ``set_config``, ``pg_stat_statements_reset`` ...).
2. The connection starts with ``-c default_transaction_read_only=on -c statement_timeout=5000
   -c lock_timeout=1000 -c application_name=perfbook`` (values from
   ``settings.database``), checked after connecting with ``SHOW`` and ``SET`` when missing
   (a pooler may drop startup options; a read-only role may have no timeouts): every
   transaction is read-only and bounded in time. Each statement carries a ``/*perfbook*/``
   tag, so the DBA sees whose it is in ``pg_stat_activity`` and in the logs, and perfbook leaves its own statements
   out of its analysis.
3. **Connect as a role that cannot write** (``CREATE ROLE perfbook LOGIN; GRANT pg_monitor
   TO perfbook;``): a read-only transaction can be switched off by anyone who can send
   SQL, a role's privileges cannot.

The DSN comes from the environment variable that ``targets.database_env`` names, read
inside the kernel; it is never printed. Errors name the server as
``postgresql://host:port/db`` (no user, no password).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..sql import func_name, walk
from . import SourceError, SourceProblem, SourceUnreachable

SOURCE = "postgres"
TAG = "/*perfbook*/"
APPLICATION_NAME = "perfbook"

__all__ = [
    "Session", "connect", "require", "ReadOnlyViolation", "server_info", "extensions", "statements",
    "statements_sql", "table_stats", "index_stats", "activity", "explain", "explain_analyze", "privileges",
    "analyzable", "ANALYZE_SAFE_FUNCTIONS",
    "hypothetical_index_cost", "explain_all", "verify_with_hypopg", "endpoint_requests", "pool_usage", "safe_dsn",
    "StatementTimeout", "timeout_problem",
]


class ReadOnlyViolation(ValueError):
    """perfbook refused to send a statement that could write or act on the server."""


# --------------------------------------------------------------------------- the DSN


def safe_dsn(dsn: str) -> str:
    """The DSN as ``postgresql://host:port/dbname``: no user, no password, no options.

    Works for URLs and ``key=value`` strings; anything unparseable becomes a fixed text.
    """
    try:
        from psycopg.conninfo import conninfo_to_dict
        d = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - never let a DSN's text escape
        return "postgresql://(unparseable DSN)"
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    if host.startswith("/"):
        host = f"[{host}]"
    port = d.get("port") or 5432
    return f"postgresql://{host}:{port}/{d.get('dbname') or ''}"


def _scrub(text: str, dsn: str) -> str:
    """A driver message with any password (or the whole DSN) taken out."""
    out = str(text).replace(dsn, "<dsn>") if dsn else str(text)
    try:
        from psycopg.conninfo import conninfo_to_dict
        pw = conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001
        pw = None
    if pw:
        out = out.replace(str(pw), "***")
    return out


# --------------------------------------------------------------------------- the allow-list

#: Functions that act on the server even in a read-only transaction, or could turn it off.
FORBIDDEN_FUNCTIONS = frozenset({
    "set_config", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_promote",
    "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
    "pg_stat_statements_reset", "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_lock_shared",
    "pg_try_advisory_lock", "pg_try_advisory_xact_lock", "pg_sleep_for", "pg_sleep_until",
    "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_from_bytea", "lo_put",
    "pg_file_write", "pg_file_unlink", "pg_file_rename", "dblink", "dblink_exec", "dblink_connect",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "pg_replication_origin_create", "pg_import_system_collations",
    "nextval", "setval", "txid_current", "pg_current_xact_id",
})

#: The only functions a statement may call for perfbook to EXPLAIN ANALYZE it — which
#: *runs* it. An allow-list of functions that only compute on their arguments
#: (aggregates, window functions, arithmetic, text, date/time, JSON, arrays): advisory
#: locks in any variant, dblink_*, lo_*, pg_sleep*, nextval, pg_notify, user-defined
#: functions (which may write, or wait) and anything nobody thought of are refused.
#: Schema-qualified names count only in pg_catalog.
ANALYZE_SAFE_FUNCTIONS = frozenset({
    # aggregates and window functions
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "array_agg", "string_agg",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "stddev", "stddev_pop", "stddev_samp",
    "variance", "var_pop", "var_samp", "percentile_cont", "percentile_disc", "mode", "corr", "covar_pop",
    "covar_samp", "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "power", "pow", "mod", "exp",
    "ln", "log", "log10", "div", "width_bucket", "greatest", "least", "random",
    # text
    "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length", "bit_length",
    "substr", "substring", "position", "strpos", "overlay", "trim", "btrim", "ltrim", "rtrim", "replace",
    "translate", "concat", "concat_ws", "left", "right", "lpad", "rpad", "repeat", "reverse", "split_part",
    "regexp_replace", "regexp_match", "regexp_matches", "regexp_split_to_array", "regexp_like", "starts_with",
    "md5", "format", "quote_literal", "quote_nullable", "encode", "decode", "to_char", "to_number", "to_hex",
    "ascii", "chr", "similar_to_escape", "similar_escape", "like_escape", "textlen", "texteq",
    # date and time
    "now", "date_trunc", "date_part", "extract", "age", "make_interval", "make_date", "make_time",
    "make_timestamp", "make_timestamptz", "to_date", "to_timestamp", "timezone", "date_bin", "isfinite",
    "justify_days", "justify_hours", "justify_interval", "statement_timestamp", "transaction_timestamp",
    "clock_timestamp",
    # json and arrays
    "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object", "jsonb_build_object",
    "json_build_array", "jsonb_build_array", "json_extract_path", "json_extract_path_text",
    "jsonb_extract_path", "jsonb_extract_path_text", "json_array_length", "jsonb_array_length",
    "json_typeof", "jsonb_typeof", "jsonb_set", "jsonb_strip_nulls", "json_array_elements",
    "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text", "jsonb_each",
    "jsonb_each_text", "json_each", "json_each_text", "jsonb_object_keys", "json_object_keys",
    "jsonb_path_exists", "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first",
    "array_length", "array_lower", "array_upper", "array_ndims", "array_dims", "array_position",
    "array_positions", "array_to_string", "string_to_array", "array_remove", "array_replace", "array_append",
    "array_prepend", "array_cat", "cardinality", "unnest", "generate_series", "generate_subscripts",
    # misc pure helpers
    "coalesce", "nullif", "num_nulls", "num_nonnulls", "gen_random_uuid", "uuid_generate_v4", "pg_typeof",
})

#: Operators allowed in a statement perfbook EXPLAIN ANALYZEs (a user-defined operator
#: runs a function of its own).
ANALYZE_SAFE_OPERATORS = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "~~", "!~~", "~~*", "!~~*",
    "~", "~*", "!~", "!~*", "@>", "<@", "&&", "?", "?|", "?&", "->", "->>", "#>", "#>>", "#-", "@@", "@?",
    "|/", "||/", "@", "&", "|", "#", "<<", ">>", "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC",
    "NOT BETWEEN SYMMETRIC",
})


def analyze_refusal(stmt: Any) -> str | None:
    """Why a parsed SELECT may not be EXPLAIN ANALYZEd (it would run): a function outside
    :data:`ANALYZE_SAFE_FUNCTIONS` or an operator outside :data:`ANALYZE_SAFE_OPERATORS`;
    None when it may."""
    from pglast import ast

    for node in walk(stmt):
        if isinstance(node, ast.FuncCall):
            parts = [getattr(p, "sval", "") or "" for p in (node.funcname or ())]
            name = parts[-1].lower() if parts else ""
            schema = parts[-2].lower() if len(parts) > 1 else None
            if name not in ANALYZE_SAFE_FUNCTIONS or schema not in (None, "pg_catalog"):
                return (f"{'.'.join(parts)}() is not on perfbook's list of functions that only compute "
                        f"(settings.database.explain_analyze runs the statement)")
        elif isinstance(node, ast.A_Expr) and node.name:
            parts = [getattr(p, "sval", "") or "" for p in node.name]
            if parts[-1] not in ANALYZE_SAFE_OPERATORS or (len(parts) > 1 and parts[-2].lower() != "pg_catalog"):
                return f"operator {'.'.join(parts)} is not on perfbook's list of built-in operators"
    return None


#: SET is allowed for these names only (planner/EXPLAIN knobs; never the read-only switch).
SETTABLE = frozenset({"plan_cache_mode", "statement_timeout", "lock_timeout", "work_mem",
                      "enable_seqscan", "enable_indexscan", "enable_bitmapscan", "search_path",
                      "max_parallel_workers_per_gather", "jit"})

_WRITES = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


def _explain_options(stmt: Any) -> dict[str, Any]:
    opts = {}
    for opt in stmt.options or ():
        value = getattr(opt.arg, "sval", None) or getattr(opt.arg, "ival", None) or True
        if isinstance(value, str):
            value = value.lower() not in ("false", "off", "0")
        opts[opt.defname.lower()] = value
    return opts


def _for_parsing(sql: str) -> str:
    """psycopg's ``%s`` / ``%(name)s`` placeholders as SQL pglast can parse."""
    return re.sub(r"%\(\w+\)s|%s|%%", lambda m: "%" if m.group(0) == "%%" else "NULL", sql)


def check_read_only(sql: str, params: Any = None) -> None:
    """Raise :class:`ReadOnlyViolation` unless ``sql`` is one read-only statement.

    Accepted: SELECT (no INTO, no FOR UPDATE/SHARE), EXPLAIN (ANALYZE only of such a
    SELECT), SHOW, SET of a planner knob (:data:`SETTABLE`), PREPARE of a SELECT,
    EXECUTE, DEALLOCATE. Nowhere a write (data-modifying CTEs included) or a
    :data:`FORBIDDEN_FUNCTIONS` call.
    """
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        stmts = parse_sql(_for_parsing(sql) if params is not None else sql)
    except ParseError as exc:
        raise ReadOnlyViolation(f"not valid SQL, not sent: {exc}") from None
    if len(stmts) != 1:
        raise ReadOnlyViolation(f"exactly one statement per call, got {len(stmts)}")
    stmt = stmts[0].stmt
    kind = type(stmt).__name__
    for node in walk(stmt):
        name = type(node).__name__
        if name in _WRITES:
            raise ReadOnlyViolation(f"{name.removesuffix('Stmt').upper()} is a write; perfbook only reads")
        if isinstance(node, ast.SelectStmt) and (node.intoClause or node.lockingClause):
            raise ReadOnlyViolation("SELECT INTO / FOR UPDATE|SHARE write or lock; perfbook only reads")
        if isinstance(node, ast.FuncCall) and func_name(node).split(".")[-1].lower() in FORBIDDEN_FUNCTIONS:
            raise ReadOnlyViolation(f"{func_name(node)}() acts on the server; perfbook does not call it")
    if kind == "SelectStmt" or kind == "VariableShowStmt" or kind == "DeallocateStmt" or kind == "ExecuteStmt":
        return
    if kind == "ExplainStmt":
        inner = type(stmt.query).__name__
        if inner not in ("SelectStmt", "ExecuteStmt"):
            raise ReadOnlyViolation(f"EXPLAIN of {inner.removesuffix('Stmt').upper()}: perfbook explains SELECTs only")
        if _explain_options(stmt).get("analyze"):
            if inner != "SelectStmt":
                raise ReadOnlyViolation("EXPLAIN ANALYZE runs the statement: perfbook does it for a SELECT it "
                                        "can read only, not a prepared statement")
            why = analyze_refusal(stmt.query)
            if why:
                raise ReadOnlyViolation(f"EXPLAIN ANALYZE runs the statement: {why}")
        return
    if kind == "PrepareStmt":
        if type(stmt.query).__name__ != "SelectStmt":
            raise ReadOnlyViolation("PREPARE of a non-SELECT")
        return
    if kind == "VariableSetStmt":
        if (stmt.name or "").lower() in SETTABLE:
            return
        raise ReadOnlyViolation(f"SET {stmt.name}: not a setting perfbook may change")
    raise ReadOnlyViolation(f"{kind.removesuffix('Stmt')} statements are not reads; perfbook does not send them")


# --------------------------------------------------------------------------- the session


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


def require(value: Any, what: str) -> Any:
    """``value``, or SourceUnreachable when an earlier step could not read it (``None``):
    the later checks then say they did not run, instead of failing on ``None``."""
    if value is None:
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


# --------------------------------------------------------------------------- pg_stat_statements

#: Which column holds what, by pg_stat_statements' own column names. PostgreSQL 12
#: (extension 1.7): total_time/mean_time/max_time; 13 (1.8) renamed them *_exec_time and
#: added planning time; 14 (1.9) added ``toplevel``; 17 (1.11) renamed blk_read_time /
#: blk_write_time to shared_blk_read_time / shared_blk_write_time. The columns present
#: are read from the catalog, so an extension left at an older version after a server
#: upgrade is handled too.
_PGSS_VARIANTS = {
    "total_ms": ("total_exec_time", "total_time"),
    "mean_ms": ("mean_exec_time", "mean_time"),
    "max_ms": ("max_exec_time", "max_time"),
    "blk_read_ms": ("shared_blk_read_time", "blk_read_time"),
    "blk_write_ms": ("shared_blk_write_time", "blk_write_time"),
}


def statements_sql(columns: Iterable[str], schema: str = "public", limit: int = 500) -> str:
    """The pg_stat_statements query for an extension with these ``columns``.

    Normalised output columns: queryid, username, query, calls, total_ms, mean_ms,
    max_ms, rows, rows_per_call, shared_blks_hit, shared_blks_read, hit_ratio,
    blk_read_ms, blk_write_ms, toplevel. Only the current database, only top-level
    statements (14+), never perfbook's own (tagged) statements; ordered by total time.
    """
    cols = set(columns)
    pick = {}
    for out, names in _PGSS_VARIANTS.items():
        pick[out] = next((f"s.{n}" for n in names if n in cols), "NULL::float8")
    toplevel = "s.toplevel" if "toplevel" in cols else "true"
    where_top = "AND s.toplevel" if "toplevel" in cols else ""
    ident = '"' + schema.replace('"', '""') + '"'
    return f"""
SELECT s.queryid, r.rolname AS username, s.query, s.calls,
       {pick['total_ms']} AS total_ms, {pick['mean_ms']} AS mean_ms, {pick['max_ms']} AS max_ms,
       s.rows, s.rows::float8 / NULLIF(s.calls, 0) AS rows_per_call,
       s.shared_blks_hit, s.shared_blks_read,
       s.shared_blks_hit::float8 / NULLIF(s.shared_blks_hit + s.shared_blks_read, 0) AS hit_ratio,
       {pick['blk_read_ms']} AS blk_read_ms, {pick['blk_write_ms']} AS blk_write_ms,
       {toplevel} AS toplevel
FROM {ident}.pg_stat_statements s
LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  {where_top}
  AND (s.query IS NULL OR s.query NOT LIKE '/*perfbook*/%')
ORDER BY {pick['total_ms']} DESC NULLS LAST
LIMIT {int(limit)}
""".strip()


PGSS_COLUMNS_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""

PGSS_INFO_SQL = "SELECT dealloc, stats_reset FROM {schema}.pg_stat_statements_info"

INSUFFICIENT = "<insufficient privilege>"


@_bounded
def statements(db: Session | None, limit: int = 500) -> pd.DataFrame:
    """The top statements of the current database by total time (see :func:`statements_sql`).

    Never raises for a missing extension: the frame is empty and ``attrs`` say why:

    - ``attrs["unavailable"]``: ``"not_loaded"`` (not in shared_preload_libraries),
      ``"not_created"`` (loaded but no CREATE EXTENSION in this database) or ``None``;
    - ``attrs["hidden"]``: how many rows show ``<insufficient privilege>`` instead of
      their text (the role lacks pg_read_all_stats); those rows are kept, text and all;
    - ``attrs["sql"]``, ``attrs["stats_reset"]``, ``attrs["extension_version"]``.
    """
    import psycopg

    db = _need(db)
    exts = extensions(db)
    info = server_info(db)
    preload = [x.strip().strip('"') for x in (info.get("shared_preload_libraries") or "").split(",") if x.strip()]
    empty = pd.DataFrame(columns=["queryid", "username", "query", "calls", "total_ms", "mean_ms", "max_ms", "rows",
                                  "rows_per_call", "shared_blks_hit", "shared_blks_read", "hit_ratio",
                                  "blk_read_ms", "blk_write_ms", "toplevel"])
    base_attrs = {"unavailable": None, "hidden": 0, "hidden_total_ms": 0.0, "sql": "", "stats_reset": None,
                  "extension_version": None, "shared_preload_libraries": info.get("shared_preload_libraries"),
                  "server_version": info.get("version")}
    if "pg_stat_statements" not in exts:
        empty.attrs.update(base_attrs, unavailable="not_created" if "pg_stat_statements" in preload
                           or info.get("shared_preload_libraries") is None else "not_loaded")
        return empty
    schema = exts["pg_stat_statements"]["schema"]
    cols = [r["attname"] for r in db.rows(PGSS_COLUMNS_SQL, (f'"{schema}".pg_stat_statements',))]
    sql = statements_sql(cols, schema, limit)
    try:
        frame = db.query(sql)
    except psycopg.errors.ObjectNotInPrerequisiteState:
        # "pg_stat_statements must be loaded via shared_preload_libraries"
        empty.attrs.update(base_attrs, unavailable="not_loaded", extension_version=exts["pg_stat_statements"]["version"])
        return empty
    for c in ("calls", "rows", "shared_blks_hit", "shared_blks_read"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in ("total_ms", "mean_ms", "max_ms", "rows_per_call", "hit_ratio", "blk_read_ms", "blk_write_ms"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame["query"] = frame["query"].fillna(INSUFFICIENT).astype(str)
    hidden = frame["query"] == INSUFFICIENT
    stats_reset = None
    if db.major >= 14:  # pg_stat_statements_info came with 14
        try:
            r = db.rows(PGSS_INFO_SQL.format(schema='"' + schema.replace('"', '""') + '"'))
            stats_reset = r[0]["stats_reset"] if r else None
        except psycopg.Error:
            stats_reset = None
    frame.attrs.update(base_attrs, hidden=int(hidden.sum()), hidden_total_ms=float(frame.loc[hidden, "total_ms"].sum()),
                       sql=sql, stats_reset=stats_reset, extension_version=exts["pg_stat_statements"]["version"],
                       columns=sorted(cols))
    return frame


# --------------------------------------------------------------------------- tables and indexes

TABLE_STATS_SQL = """
SELECT s.schemaname AS schema, s.relname AS table,
       s.seq_scan, s.seq_tup_read, s.idx_scan, s.idx_tup_fetch,
       s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
       c.reltuples, c.reloptions,
       pg_table_size(s.relid) AS table_bytes, pg_total_relation_size(s.relid) AS total_bytes,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
ORDER BY s.seq_tup_read DESC
"""


@_bounded
def table_stats(db: Session | None) -> pd.DataFrame:
    """pg_stat_user_tables with reloptions (autovacuum_enabled=...), sizes and column names
    (pg_attribute: readable without SELECT on the table), one row per table."""
    frame = _need(db).query(TABLE_STATS_SQL)
    frame["reloptions"] = frame["reloptions"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame["columns"] = frame["columns"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame.attrs["sql"] = TABLE_STATS_SQL.strip()
    return frame


INDEX_STATS_SQL = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) AS backs_constraint,
       pg_relation_size(s.indexrelid) AS index_bytes,
       pg_get_indexdef(s.indexrelid) AS definition
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid
ORDER BY s.idx_scan ASC, pg_relation_size(s.indexrelid) DESC
"""


@_bounded
def index_stats(db: Session | None) -> pd.DataFrame:
    """pg_stat_user_indexes with uniqueness, constraint use, size and definition."""
    frame = _need(db).query(INDEX_STATS_SQL)
    frame.attrs["sql"] = INDEX_STATS_SQL.strip()
    return frame


# --------------------------------------------------------------------------- activity

ACTIVITY_SQL = """
SELECT a.pid, a.datname AS database, a.usename AS username, a.application_name,
       a.client_addr::text AS client_addr, a.backend_type, a.state,
       a.wait_event_type, a.wait_event,
       EXTRACT(EPOCH FROM now() - a.backend_start)::float8 AS backend_age_s,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_age_s,
       EXTRACT(EPOCH FROM now() - a.query_start)::float8 AS query_age_s,
       EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_age_s,
       pg_blocking_pids(a.pid) AS blocking_pids,
       left(a.query, 2000) AS query
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
ORDER BY a.query_start NULLS LAST
"""


@_bounded
def activity(db: Session | None) -> pd.DataFrame:
    """pg_stat_activity (every backend but perfbook's own), ages in seconds, blocking pids."""
    frame = _need(db).query(ACTIVITY_SQL)
    frame["blocking_pids"] = frame["blocking_pids"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    frame.attrs["sql"] = ACTIVITY_SQL.strip()
    return frame


# --------------------------------------------------------------------------- EXPLAIN


def _param_count(query: str) -> int:
    """Highest ``$n`` in a statement (pglast when it parses; a regex otherwise)."""
    try:
        from pglast import ast, parse_sql
        nums = [n.number for n in walk(parse_sql(query)) if isinstance(n, ast.ParamRef)]
        return max(nums, default=0)
    except Exception:  # noqa: BLE001
        return max((int(m) for m in re.findall(r"\$(\d+)", query)), default=0)


@_bounded
def explain(db: Session | None, query: str) -> dict[str, Any]:
    """Plain ``EXPLAIN (FORMAT JSON)`` of one SELECT; never runs it.

    Texts with ``$n`` placeholders (pg_stat_statements' normalised form) get a generic
    plan: ``EXPLAIN (GENERIC_PLAN)`` on PostgreSQL 16+, before that ``PREPARE`` and
    ``EXECUTE`` with NULLs under ``plan_cache_mode = force_generic_plan`` (the planner
    ignores the values of a generic plan). Returns the top plan node (``{"Node Type":
    ..., "Plans": [...]}``) with ``"Total Cost"``.
    """
    db = _need(db)
    n = _param_count(query)
    body = query.strip().rstrip(";")
    if n == 0:
        return db.value(f"EXPLAIN (FORMAT JSON) {body}")[0]["Plan"]
    if db.major >= 16:
        return db.value(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {body}")[0]["Plan"]
    name = f"perfbook_explain_{db._prepared}"
    db._prepared += 1
    db.query(f"PREPARE {name} AS {body}")
    try:
        db.query("SET plan_cache_mode = force_generic_plan")
        nulls = ", ".join(["NULL"] * n)
        return db.value(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")[0]["Plan"]
    finally:
        try:
            db.query(f"DEALLOCATE {name}")
            db.query("SET plan_cache_mode = auto")
        except Exception:  # noqa: BLE001 - the session may be gone; nothing to clean then
            pass


def is_single_select(query: str) -> bool:
    """One statement, a plain SELECT (no INTO / FOR UPDATE, no data-modifying CTE)."""
    from pglast import ast, parse_sql

    try:
        stmts = parse_sql(query)
    except Exception:  # noqa: BLE001
        return False
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return False
    try:
        check_read_only(query)
    except ReadOnlyViolation:
        return False
    return True


def analyzable(query: str) -> str | None:
    """Why ``query`` may not be EXPLAIN ANALYZEd (None when it may): it must be a single
    plain SELECT (:func:`is_single_select`) calling only allow-listed functions and
    operators (:func:`analyze_refusal`)."""
    from pglast import parse_sql

    if not is_single_select(query):
        return "not a single plain SELECT"
    return analyze_refusal(parse_sql(query)[0].stmt)


@_bounded
def explain_analyze(db: Session | None, query: str, params: Any = None) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of a single SELECT: it *runs* the query.

    Refused (ValueError) unless ``query`` is a single plain SELECT calling only functions
    and operators of an allow-list (:func:`analyzable`, checked with pglast);
    runs inside a read-only transaction that is rolled back, under ``statement_timeout``.
    Queries with ``$n`` need ``params``. Call it only when ``settings.database.explain_analyze``
    says so.
    """
    db = _need(db)
    why = analyzable(query)
    if why:
        raise ReadOnlyViolation(f"EXPLAIN ANALYZE runs the statement, so perfbook refuses it: {why}")
    if _param_count(query) and not params:
        raise ValueError("this statement has $n placeholders: give their values to EXPLAIN ANALYZE it")
    db.conn.execute(f"{TAG} BEGIN READ ONLY")
    try:
        db.conn.execute(f"{TAG} SET LOCAL statement_timeout = {int(db.statement_timeout * 1000)}")
        plan = db.value(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query.strip().rstrip(';')}", params)
    finally:
        if not db.conn.closed:
            db.conn.execute(f"{TAG} ROLLBACK")
    return plan[0]["Plan"] | {"Execution Time": plan[0].get("Execution Time")}


@_bounded
def explain_analyze_top(db: Session | None, candidates: pd.DataFrame, enabled: bool = False,
                        limit: int = 5) -> pd.DataFrame:
    """:func:`explain_analyze` of up to ``limit`` candidate statements, only when
    ``enabled`` (``settings.database.explain_analyze``). Statements with ``$n`` placeholders
    or that are not a single SELECT are listed as skipped, with the reason."""
    import psycopg

    cols = ["query", "execution_ms", "node", "actual_rows", "shared_hit", "shared_read", "skipped"]
    if not enabled:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = "EXPLAIN ANALYZE is off (settings.database.explain_analyze: false): plain EXPLAIN only."
        return out
    db = _need(db)
    rows = []
    for r in candidates.head(limit).to_dict("records"):
        q = r["query"]
        row = {"query": q, "execution_ms": None, "node": None, "actual_rows": None, "shared_hit": None,
               "shared_read": None, "skipped": None}
        why = analyzable(q)
        if isinstance(r.get("skip"), str) and r["skip"]:
            row["skipped"] = r["skip"]
        elif why:
            row["skipped"] = why
        elif _param_count(q):
            row["skipped"] = "has $n placeholders (values unknown)"
        else:
            try:
                plan = explain_analyze(db, q)
                row.update(execution_ms=plan.get("Execution Time"), node=plan.get("Node Type"),
                           actual_rows=plan.get("Actual Rows"), shared_hit=plan.get("Shared Hit Blocks"),
                           shared_read=plan.get("Shared Read Blocks"))
            except StatementTimeout as exc:
                row["skipped"] = f"timed out: {exc.reason[:160]}"
            except psycopg.Error as exc:
                row["skipped"] = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


@_bounded
def hypothetical_index_cost(db: Session | None, query: str, create_index: str) -> dict[str, float]:
    """The planner's estimated total cost of ``query`` without and with a hypothetical
    index (hypopg; dexter's check). ``create_index`` is a ``CREATE INDEX ... ON t (...)``
    statement (CONCURRENTLY and a name are dropped). hypopg keeps hypothetical indexes in
    this backend's memory only; nothing is written. Needs ``CREATE EXTENSION hypopg`` in
    the database.
    """
    db = _need(db)
    ddl = re.sub(r"\bCONCURRENTLY\s+", "", create_index, flags=re.I)
    ddl = re.sub(r"(?i)^\s*CREATE\s+INDEX\s+(IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|\w+)?\s*ON\b", "CREATE INDEX ON", ddl)
    before = float(explain(db, query)["Total Cost"])
    db.query("SELECT indexrelid FROM hypopg_create_index(%s)", (ddl,))
    try:
        after = float(explain(db, query)["Total Cost"])
    finally:
        db.query("SELECT hypopg_reset()")
    return {"cost_before": before, "cost_after": after}


@_bounded
def explain_all(db: Session | None, candidates: pd.DataFrame) -> pd.DataFrame:
    """:func:`explain` for each row (``queryid``, ``query``) of ``candidates``.

    Columns: queryid, query, plan (dict or None), error (why a statement could not be
    explained: no SELECT privilege on a table it reads (InsufficientPrivilege), types the
    planner cannot infer from ``$n``, a dropped table...). A row whose ``skip`` column
    holds a reason (:func:`perfbook.checks.database.explain_candidates`: a table the role
    cannot read) is not sent; the reason becomes its error.
    """
    import psycopg

    db = _need(db)
    out = []
    for r in candidates.to_dict("records"):
        skip = r.get("skip")
        if isinstance(skip, str) and skip:
            out.append({"queryid": r["queryid"], "query": r["query"], "plan": None, "error": skip})
            continue
        try:
            plan, err = explain(db, r["query"]), None
        except StatementTimeout as exc:
            plan, err = None, f"timed out: {exc.reason[:200]}"
        except (psycopg.Error, ReadOnlyViolation) as exc:
            plan, err = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        out.append({"queryid": r["queryid"], "query": r["query"], "plan": plan, "error": err})
    return pd.DataFrame(out, columns=["queryid", "query", "plan", "error"])


@_bounded
def verify_with_hypopg(db: Session | None, suggestions: Iterable[Any]) -> dict | None:
    """Planner cost without/with each suggested index, as hypothetical indexes (hypopg):
    ``{(queryid, table): {"cost_before", "cost_after"}}``; ``None`` when the hypopg
    extension is not installed in this database (``CREATE EXTENSION hypopg``)."""
    import psycopg

    db = _need(db)
    if "hypopg" not in extensions(db):
        return None
    out = {}
    for s in suggestions:
        try:
            out[(s.queryid, s.table)] = hypothetical_index_cost(db, s.query, s.create_index)
        except StatementTimeout as exc:
            out[(s.queryid, s.table)] = {"cost_before": None, "cost_after": None, "error": f"timed out: {exc.reason[:200]}"}
        except psycopg.Error as exc:
            out[(s.queryid, s.table)] = {"cost_before": None, "cost_after": None, "error": str(exc)[:200]}
    return out


# --------------------------------------------------------------------------- from the app's metrics


def _range(seconds: float) -> str:
    return f"{max(60, int(round(seconds)))}s"


def endpoint_requests(prom: Any, params: Any, start: Any, end: Any) -> pd.DataFrame:
    """Requests per endpoint over the window, from Prometheus: ``sum by (method, route)
    (increase(http_requests_total[window]))``. Columns: endpoint, method, route, requests.

    ``prom`` is a :class:`perfbook.sources.prometheus.PromClient`.
    """
    m = params.metrics
    window = _range((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds())
    expr = prom.render(f"sum by ({m.method_label}, {m.route_label}) "
                       f"(increase({m.http_requests}{{__SEL__}}[{window}]))")
    frame = prom.query(expr, at=end)
    out = pd.DataFrame({
        "method": frame.get(m.method_label, pd.Series(dtype=str)).astype(str),
        "route": frame.get(m.route_label, pd.Series(dtype=str)).astype(str),
        "requests": frame.get("value", pd.Series(dtype=float)).astype(float)})
    out["endpoint"] = out["method"] + " " + out["route"]
    out = out[["endpoint", "method", "route", "requests"]].sort_values("requests", ascending=False)
    out.attrs["query"] = expr
    return out.reset_index(drop=True)


def pool_usage(prom: Any, params: Any, start: Any, end: Any) -> pd.DataFrame:
    """The application's DB connection pool over the window, per instance, from its
    metrics (prom-client / Prisma names by default): open and busy connections
    (``prisma_pool_connections_open/_busy``: max, average), the pool limit when exported
    (``settings.database.pool_max_metric``), queries waiting for a connection
    (``prisma_client_queries_wait``: average, max, share of the window with any) and the
    time they waited (``settings.database.pool_wait_histogram``, in ms: mean and p95).
    A metric the service does not export gives NaN.
    """
    m, d = params.metrics, params.settings.database
    w = _range((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds())
    inst = m.instance_label
    h = d.pool_wait_histogram
    exprs = {
        "pool_max": f"max by ({inst}) (max_over_time({d.pool_max_metric}{{__SEL__}}[{w}]))",
        "open_max": f"max by ({inst}) (max_over_time({m.db_pool_open}{{__SEL__}}[{w}]))",
        "busy_avg": f"max by ({inst}) (avg_over_time({m.db_pool_busy}{{__SEL__}}[{w}]))",
        "busy_max": f"max by ({inst}) (max_over_time({m.db_pool_busy}{{__SEL__}}[{w}]))",
        "waiting_avg": f"max by ({inst}) (avg_over_time({m.db_pool_wait}{{__SEL__}}[{w}]))",
        "waiting_max": f"max by ({inst}) (max_over_time({m.db_pool_wait}{{__SEL__}}[{w}]))",
        "waiting_share": f"max by ({inst}) (avg_over_time(({m.db_pool_wait}{{__SEL__}} > bool 0)[{w}:]))",
        "wait_mean_ms": f"sum by ({inst}) (increase({h}_sum{{__SEL__}}[{w}])) / "
                        f"sum by ({inst}) (increase({h}_count{{__SEL__}}[{w}]))",
        "wait_p95_ms": f"histogram_quantile(0.95, sum by ({inst}, le) (increase({h}_bucket{{__SEL__}}[{w}])))",
    }
    merged: pd.DataFrame | None = None
    queries = {}
    for col, template in exprs.items():
        expr = prom.render(template)
        queries[col] = expr
        frame = prom.query(expr, at=end)
        part = pd.DataFrame({"instance": frame.get(inst, pd.Series(dtype=str)).astype(str),
                             col: frame.get("value", pd.Series(dtype=float)).astype(float)})
        merged = part if merged is None else merged.merge(part, on="instance", how="outer")
    merged = merged if merged is not None else pd.DataFrame(columns=["instance", *exprs])
    merged = merged[merged["instance"] != "nan"].sort_values("instance").reset_index(drop=True)
    merged.attrs["queries"] = queries
    return merged
