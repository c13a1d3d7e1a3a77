"""The read-only guard of the PostgreSQL source (:mod:`perfbook.sources.postgres`), layer 1
of its safety: every statement is parsed with pglast and only reads pass (SELECT / EXPLAIN /
SHOW / PREPARE / EXECUTE / DEALLOCATE and a few harmless SETs); no writes anywhere
(data-modifying CTEs included), no ``SELECT ... FOR UPDATE`` / ``INTO``, no functions that
act on the server. Also what EXPLAIN ANALYZE may run, and the DSN shown without secrets.

Pure text checks: no connection here.
"""
from __future__ import annotations

import re
from typing import Any

from ..sql import func_name, walk


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
