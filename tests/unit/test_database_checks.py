"""Database checks on recorded inputs: real pg view rows captured from the demo stack
(PostgreSQL 15, pg_stat_statements 1.10) by tests/fixtures/postgres/record.py."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import database as D
from perfbook.params import DEFAULT_ENDPOINTS, Endpoint, Level, Params
from perfbook.sources import postgres as P

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"
ENDPOINTS = [Endpoint(**e) for e in DEFAULT_ENDPOINTS]
CONNECTION_LEVELS = Level(normal=20, warning=50, critical=80)
SETTINGS = Params(service="x").settings.database
POOL_EXHAUSTED = {"wait_warning": SETTINGS.pool_exhausted_share, "wait_critical": SETTINGS.pool_exhausted_share_critical}


def frame(d: dict) -> pd.DataFrame:
    df = pd.DataFrame(d["records"], columns=d["columns"])
    df.attrs.update(d["attrs"])
    return df


@pytest.fixture(scope="module", params=["incident", "healthy"])
def rec(request):
    return load(request.param)


def load(name: str) -> dict:
    d = json.loads((FIX / f"{name}.json").read_text())
    out = {k: frame(d[k]) for k in ("statements", "tables", "indexes", "activity", "plans", "requests", "pool")}
    out.update(name=name, info=d["server_info"], hypopg=d["hypopg"])
    return out


@pytest.fixture(scope="module")
def incident():
    return load("incident")


@pytest.fixture(scope="module")
def healthy():
    return load("healthy")


def bad(findings):
    return [f for f in findings if f.severity in ("warning", "critical")]


# --------------------------------------------------------------------------- the incident's faults


def test_n_plus_one_found_on_categories_lookup_of_products_list(incident):
    _table, found = D.n_plus_one_from_statements(incident["statements"], SETTINGS, ENDPOINTS, incident["requests"])
    [f] = bad(found)
    assert f.code == "db.n_plus_one"
    assert "categories" in f.subject and "WHERE id = $1" in f.subject
    assert f.evidence["endpoint"] == "GET /api/products"
    assert f.evidence["lookups_per_parent_call"] == pytest.approx(20, rel=0.05)
    assert "FROM products p WHERE p.category_id" in f.evidence["parent_query"]
    assert "include: { category: true }" in f.recommendation


def test_n_plus_one_names_endpoint_without_prometheus(incident):
    _, found = D.n_plus_one_from_statements(incident["statements"], SETTINGS, ENDPOINTS, None)
    [f] = bad(found)
    assert f.evidence["endpoint"] == "GET /api/products" and f.evidence["endpoint_requests"] is None


def test_missing_index_on_products_category_then_created_at(incident):
    sugg = D.index_suggestions(incident["plans"], incident["tables"], incident["indexes"], SETTINGS)
    _table, found = D.missing_indexes(incident["tables"], sugg, incident["statements"], settings=SETTINGS)
    [f] = bad(found)
    assert f.subject == "products"
    assert f.evidence["table"] == "products"
    assert f.evidence["columns"] == ["category_id", "created_at"]
    assert ("CREATE INDEX CONCURRENTLY idx_products_category_id_created_at ON public.products "
            "(category_id, created_at DESC);") in f.recommendation


def test_hypopg_keeps_an_index_only_if_the_cost_halves(incident):
    sugg = D.index_suggestions(incident["plans"], incident["tables"], incident["indexes"], SETTINGS)
    key = (sugg[0].queryid, "products")
    _, kept = D.missing_indexes(incident["tables"], sugg, incident["statements"],
                                {key: {"cost_before": 4000.0, "cost_after": 100.0}}, settings=SETTINGS)
    assert bad(kept) and bad(kept)[0].evidence["hypopg_cost_after"] == 100.0
    # the recorded hypopg answer for the unpaginated listing: 4396 -> 3041, not halved
    recorded = {(h["queryid"], h["table"]): h for h in incident["hypopg"]}
    table, dropped = D.missing_indexes(incident["tables"], sugg, incident["statements"], recorded, settings=SETTINGS)
    assert not bad(dropped)
    assert table["verdict"].str.startswith("dropped").any()


def test_large_result_of_unpaginated_listing(incident):
    _, found = D.large_results(incident["statements"], incident["tables"], SETTINGS)
    [f] = bad(found)
    assert "products" in f.subject and f.evidence["has_limit"] is False
    assert f.evidence["rows_per_call"] > 1000
    assert "take: 100" in f.recommendation and "cursor" in f.recommendation


def test_bloat_on_sessions_with_autovacuum_disabled(incident):
    _, found = D.bloat(incident["tables"], SETTINGS)
    [f] = bad(found)
    assert f.subject == "sessions"
    assert 30 <= f.evidence["dead_pct"] <= 50
    assert f.evidence["autovacuum_enabled"] is False
    assert f.recommendation.startswith("VACUUM (ANALYZE) sessions;")
    assert "RESET (autovacuum_enabled" in f.recommendation


def test_pool_saturation_from_prisma_pool_metrics(incident):
    _, found = D.pool_saturation(incident["pool"], SETTINGS)
    [f] = found
    assert f.code == "db.connections" and f.severity in ("warning", "critical")
    assert f.subject == "connection pool"
    assert f.evidence["wait_p95_ms"] > 20


def test_slow_listing_query_flagged_only_above_pghero_bar(incident):
    _, found = D.slow_queries(incident["statements"], SETTINGS.model_copy(update={"slow_query_calls": 50}))
    assert any("FROM products p WHERE p.category_id" in f.subject for f in bad(found))
    _, found = D.slow_queries(incident["statements"], SETTINGS.model_copy(update={"slow_query_calls": 100_000}))
    assert not bad(found) and found[0].severity == "ok"


# --------------------------------------------------------------------------- healthy: nothing


def test_healthy_stack_raises_nothing(healthy):
    h = healthy
    findings = D.statements_available(h["statements"])
    findings += D.slow_queries(h["statements"], SETTINGS)[1]
    findings += D.n_plus_one_from_statements(h["statements"], SETTINGS, ENDPOINTS, h["requests"])[1]
    findings += D.n_plus_one_from_statements(h["statements"], SETTINGS, ENDPOINTS, None)[1]
    sugg = D.index_suggestions(h["plans"], h["tables"], h["indexes"], SETTINGS)
    findings += D.missing_indexes(h["tables"], sugg, h["statements"], settings=SETTINGS)[1]
    findings += D.large_results(h["statements"], h["tables"], SETTINGS)[1]
    findings += D.bloat(h["tables"], SETTINGS)[1]
    findings += D.unused_indexes(h["indexes"], SETTINGS, h["info"]["stats_reset"], h["info"]["now"])[1]
    findings += D.connections(h["activity"], h["info"], CONNECTION_LEVELS, SETTINGS)[1]
    findings += D.long_running(h["activity"], SETTINGS)[1]
    findings += D.lock_waits(h["activity"], SETTINGS)[1]
    findings += D.pool_saturation(h["pool"], SETTINGS)[1]
    assert bad(findings) == []
    assert {f.code for f in findings} >= {"db.slow_query", "db.n_plus_one", "db.missing_index", "db.large_result",
                                          "db.bloat", "db.connections", "db.long_running", "db.lock_waits"}


def test_every_check_says_ok_when_it_finds_nothing(healthy):
    for found in (D.slow_queries(healthy["statements"], SETTINGS)[1], D.bloat(healthy["tables"], SETTINGS)[1],
                  D.lock_waits(healthy["activity"], SETTINGS)[1]):
        assert [f.severity for f in found] == ["ok"]


# --------------------------------------------------------------------------- connections, long-running, locks


def _activity_with(rec, **changes):
    act = rec["activity"].copy()
    client = act.index[act["backend_type"] == "client backend"][0]
    for k, v in changes.items():
        act.at[client, k] = v
    return act, act.at[client, "pid"]


def test_long_running_statement_over_60_seconds(healthy):
    act, pid = _activity_with(healthy, state="active", query_age_s=95.0, query="SELECT pg_sleep(100)")
    _, found = D.long_running(act, SETTINGS)
    [f] = bad(found)
    assert f.evidence["pid"] == pid and f.evidence["seconds"] == 95
    assert f"pg_cancel_backend({pid})" in f.recommendation


def test_idle_in_transaction_is_long_running_too(healthy):
    act, _pid = _activity_with(healthy, state="idle in transaction", state_age_s=400.0)
    _, found = D.long_running(act, SETTINGS)
    assert bad(found)[0].severity == "critical"


def test_lock_wait_names_the_blocking_pid(healthy):
    act = healthy["activity"].copy()
    clients = act.index[act["backend_type"] == "client backend"][:2]
    blocker, waiter = act.loc[clients[0], "pid"], act.loc[clients[1], "pid"]
    act.at[clients[1], "blocking_pids"] = [blocker]
    act.at[clients[1], "query_age_s"] = 12.0
    _, found = D.lock_waits(act, SETTINGS)
    [f] = found
    assert f.code == "db.lock_waits" and f.severity == "warning"
    assert f.evidence["blocking_pid"] == blocker and f.evidence["waiting_pids"] == [waiter]


def test_connections_against_runbook_levels(healthy):
    act = pd.concat([healthy["activity"]] * 20, ignore_index=True)
    _, [f] = D.connections(act, healthy["info"], CONNECTION_LEVELS, SETTINGS)
    n = int((act["backend_type"] == "client backend").sum())
    assert f.evidence["connections"] == n
    assert f.severity == ("critical" if n >= 80 else "warning" if n >= 50 else "ok")


# --------------------------------------------------------------------------- pg_stat_statements versions and access


@pytest.mark.parametrize("version,cols,total,blk", [
    (12, {"total_time", "mean_time", "max_time", "blk_read_time", "blk_write_time"}, "s.total_time", "s.blk_read_time"),
    (13, {"total_exec_time", "mean_exec_time", "max_exec_time", "blk_read_time", "blk_write_time"},
     "s.total_exec_time", "s.blk_read_time"),
    (14, {"total_exec_time", "mean_exec_time", "max_exec_time", "blk_read_time", "blk_write_time", "toplevel"},
     "s.total_exec_time", "s.blk_read_time"),
    (17, {"total_exec_time", "mean_exec_time", "max_exec_time", "shared_blk_read_time", "shared_blk_write_time",
          "toplevel"}, "s.total_exec_time", "s.shared_blk_read_time"),
])
def test_statements_sql_per_server_version(version, cols, total, blk):
    base = {"queryid", "query", "calls", "rows", "shared_blks_hit", "shared_blks_read", "userid", "dbid"}
    sql = P.statements_sql(base | cols)
    assert f"{total} AS total_ms" in sql and f"{blk} AS blk_read_ms" in sql
    assert ("AND s.toplevel" in sql) == (version >= 14)
    P.check_read_only(sql)  # the query perfbook sends passes its own guard


def test_recorded_pg15_columns_pick_exec_time(incident):
    sql = P.statements_sql(incident["statements"].attrs["columns"])
    assert "s.total_exec_time AS total_ms" in sql and "AND s.toplevel" in sql


@pytest.mark.parametrize("why,needle", [("not_loaded", "shared_preload_libraries"),
                                        ("not_created", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")])
def test_missing_pg_stat_statements_is_an_error_saying_how_to_enable_it(why, needle):
    empty = pd.DataFrame(columns=["queryid", "query", "calls", "total_ms", "mean_ms"])
    empty.attrs.update(unavailable=why, shared_preload_libraries="auto_explain")
    [f] = D.statements_available(empty)
    assert f.severity == "error" and f.subject == "pg_stat_statements"
    assert needle in f.recommendation
    if why == "not_loaded":
        assert "'auto_explain, pg_stat_statements'" in f.recommendation
    assert D.slow_queries(empty, SETTINGS)[1] == []


def test_insufficient_privilege_rows_are_counted_and_skipped(incident):
    st = incident["statements"].copy()
    st.loc[st.index[:3], "query"] = "<insufficient privilege>"
    st.attrs.update(incident["statements"].attrs, hidden=3, hidden_total_ms=float(st["total_ms"].head(3).sum()))
    [f] = D.statements_available(st)
    assert f.severity == "info" and f.evidence["hidden_rows"] == 3
    assert "pg_read_all_stats" in f.recommendation
    assert "<insufficient privilege>" not in D.top_statements(st)["query"].tolist()


# --------------------------------------------------------------------------- small pure helpers


def test_filter_columns_from_plan_filters():
    assert D.filter_columns("(category_id = $1)") == (["category_id"], [])
    eq, rng = D.filter_columns("((status = ANY ('{a,b}'::text[])) AND (price > '10'::numeric) AND (name ~~* $3))")
    assert eq == ["status"] and rng == ["price"]
    assert D.filter_columns("((lower(name) = $1) OR (id = 2))") == ([], [])


def test_index_columns_of_indexdef():
    assert D.index_columns("CREATE INDEX i ON public.products USING btree (category_id, created_at DESC)") == [
        "category_id", "created_at"]
    assert D.index_columns("CREATE UNIQUE INDEX k ON public.t USING btree (lower(name)) WHERE (x > 1)") == ["lower(name)"]


def test_index_suggestion_from_index_scan_with_filter():
    """The planner walks idx_products_created_at and filters category_id (recorded on PG 15 with LIMIT)."""
    plan = {"Node Type": "Limit", "Total Cost": 1517.46, "Plans": [{
        "Node Type": "Index Scan", "Index Name": "idx_products_created_at", "Relation Name": "products",
        "Alias": "products", "Total Cost": 15171.95, "Plan Rows": 2000, "Filter": "(category_id = $1)"}]}
    q = "SELECT id, name FROM products WHERE category_id = $1 ORDER BY created_at DESC LIMIT $2"
    tables = pd.DataFrame([{"schema": "public", "table": "products", "n_live_tup": 100_000, "reltuples": 1e5}])
    idx = pd.DataFrame([{"table": "products", "index": "idx_products_created_at", "is_valid": True,
                         "definition": "CREATE INDEX idx_products_created_at ON public.products USING btree (created_at DESC)"}])
    [s] = D.index_suggestions(pd.DataFrame([{"queryid": 1, "query": q, "plan": plan}]), tables, idx, SETTINGS)
    assert s.columns == ["category_id", "created_at"] and s.sort == [("created_at", True)]
    idx2 = pd.concat([idx, pd.DataFrame([{"table": "products", "index": "x", "is_valid": True,
                                          "definition": "CREATE INDEX x ON public.products USING btree (category_id, created_at DESC)"}])])
    assert D.index_suggestions(pd.DataFrame([{"queryid": 1, "query": q, "plan": plan}]), tables, idx2, SETTINGS) == []


def test_query_shape_key_lookup_and_prisma_form():
    assert D.query_shape("SELECT id, name, slug FROM categories WHERE id = $1").key_columns == ["id"]
    prisma = ('SELECT "public"."Category"."id", "public"."Category"."name" FROM "public"."Category" '
              'WHERE ("public"."Category"."id" = $1 AND 1=1) LIMIT $2 OFFSET $3')
    sh = D.query_shape(prisma)
    assert sh.key_columns == ["id"] and sh.from_tables == ["Category"] and sh.has_limit
    assert D.query_shape("SELECT * FROM products WHERE price > $1").key_columns == []
    assert D.query_shape("COMMIT").kind == "utility"


def test_short_query_keeps_the_table_visible():
    q = "SELECT p.id, p.name, p.price, p.rating, p.stock, p.created_at, p.category_id\nFROM products p WHERE p.category_id = $1"
    assert D.short_query(q) == "SELECT … FROM products p WHERE p.category_id = $1"
    assert len(D.short_query("SELECT x FROM t WHERE " + "a = 1 AND " * 50 + "b = 2", 50)) == 50


def test_quote_ident():
    assert D.quote_ident("products") == "products"
    assert D.quote_ident("Category") == '"Category"'
    assert D.quote_ident("user") == '"user"'


def test_figure_has_title_and_units(incident):
    from perfbook.plots.database import top_queries_figure
    fig = top_queries_figure(D.top_statements(incident["statements"]))
    ax = fig.axes[0]
    assert ax.get_title() and "(s)" in ax.get_xlabel()


# --------------------------------------------------------------------------- the read-only guard (pure)


@pytest.mark.parametrize("sql", [
    "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "DROP TABLE t", "CREATE INDEX ON t (a)",
    "TRUNCATE t", "VACUUM t", "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
    "SELECT * FROM t FOR UPDATE", "SELECT * INTO t2 FROM t", "EXPLAIN ANALYZE DELETE FROM t",
    "SELECT set_config('default_transaction_read_only', 'off', false)", "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "BEGIN READ WRITE", "SELECT pg_terminate_backend(1)",
    "SELECT 1; DROP TABLE t", "COPY t TO '/tmp/x'", "PREPARE p AS DELETE FROM t", "CALL proc()",
])
def test_guard_refuses_writes(sql):
    with pytest.raises(P.ReadOnlyViolation):
        P.check_read_only(sql)


@pytest.mark.parametrize("sql", [
    "SELECT 1", "EXPLAIN (FORMAT JSON) SELECT * FROM t WHERE a = $1", "EXPLAIN (GENERIC_PLAN, FORMAT JSON) SELECT 1",
    "SHOW max_connections", "SET plan_cache_mode = force_generic_plan", "PREPARE p AS SELECT * FROM t WHERE a = $1",
    "EXECUTE p(NULL)", "DEALLOCATE p", "SELECT indexrelid FROM hypopg_create_index('CREATE INDEX ON t (a)')",
])
def test_guard_allows_reads(sql):
    P.check_read_only(sql)


def test_guard_handles_psycopg_placeholders():
    P.check_read_only("SELECT a FROM t WHERE b = %s AND c LIKE 'x%%'", ("v",))


def test_safe_dsn_drops_credentials():
    assert P.safe_dsn("postgresql://app:s3cret@db.internal:6543/shop?sslmode=require") == \
        "postgresql://db.internal:6543/shop"
    assert P.safe_dsn("host=db user=app password=s3cret dbname=shop") == "postgresql://db:5432/shop"
    assert "s3cret" not in P.safe_dsn("postgresql://app:s3cret@")


def test_large_results_ok_says_what_it_could_not_check_without_table_sizes():
    stmts = pd.DataFrame([{"queryid": 1, "query": "SELECT id, name FROM products", "calls": 50, "rows": 50 * 300,
                           "rows_per_call": 300.0, "total_ms": 100.0, "mean_ms": 2.0}])
    _, with_sizes = D.large_results(stmts, pd.DataFrame([{"table": "products", "n_live_tup": 500}]), SETTINGS)
    _, without = D.large_results(stmts, None, SETTINGS)
    assert [f.severity for f in with_sizes] == [f.severity for f in without] == ["ok"]
    assert with_sizes[0].evidence["table_sizes_known"] and "not checked" not in with_sizes[0].title
    assert not without[0].evidence["table_sizes_known"] and "not checked" in without[0].title


# --------------------------------------------------------------------------- privilege levels (issue 13)


def _priv(**kw):
    base = {"user": "perfbook", "superuser": False, "pg_monitor": True, "read_all_stats": True,
            "read_all_data": False, "tables": 4, "unreadable": ["public.a", "public.b", "public.c", "public.clicks"],
            "hypopg": False, "hypopg_available": False}
    return base | kw


def test_privilege_levels_say_which_ran_and_what_the_next_adds():
    level, [f] = D.privilege_level(_priv())
    assert level == "monitor" and f.code == "db.privileges" and f.severity == "info"
    assert "level 1 of 3" in f.title and "pg_monitor only" in f.title and "pg_read_all_data" in f.title
    assert f.evidence["next_level"] == "read_all" and "EXPLAIN" in f.evidence["next_level_adds"]
    assert f.recommendation.startswith("GRANT pg_read_all_data TO perfbook;")
    level, [f] = D.privilege_level(_priv(read_all_data=True, unreadable=[]))
    assert level == "read_all" and "level 2 of 3" in f.title and "hypopg" in f.title
    assert "not installed on this server" in f.title and "CREATE EXTENSION hypopg" in f.recommendation
    level, [f] = D.privilege_level(_priv(read_all_data=True, unreadable=[], hypopg=True, hypopg_available=True))
    assert level == "hypopg" and "level 3 of 3" in f.title and "Nothing more to grant" in f.title
    assert f.evidence["next_level"] is None and f.recommendation == ""
    # SELECT granted table by table: all of them is level 2, some of them stays level 1 and says so
    assert D.privilege_level(_priv(unreadable=[]))[0] == "read_all"
    level, [f] = D.privilege_level(_priv(unreadable=["public.clicks"]))
    assert level == "monitor" and "SELECT on 3 of 4 tables" in f.title
    level, [f] = D.privilege_level(_priv(read_all_stats=False, pg_monitor=False))
    assert level == "none" and "GRANT pg_monitor" in f.recommendation


def test_explain_is_not_sent_for_a_table_the_role_cannot_read():
    stmts = _stmts([("SELECT id FROM clicks WHERE product_id = $1 ORDER BY created_at DESC LIMIT $2", 1415, 900.0, 20),
                    ("SELECT id FROM products WHERE id = $1", 2000, 50.0, 1)])
    tables = _tables([("clicks", 500_000, 1415, 0), ("products", 100_000, 0, 2000)])
    _, cands = D.index_candidates(stmts, tables, None, SETTINGS)
    out = D.explain_candidates(stmts, tables, SETTINGS, cands, _priv(unreadable=["public.clicks", "public.products"]))
    assert set(out["queryid"]) == {1, 2}
    assert out["skip"].str.contains("no SELECT privilege on public.clicks").any()
    assert "InsufficientPrivilege" in out.loc[out["queryid"] == 1, "skip"].iloc[0]
    allowed = D.explain_candidates(stmts, tables, SETTINGS, cands, _priv(read_all_data=True, unreadable=[]))
    assert allowed["skip"].isna().all()


# --------------------------------------------------------------------------- index candidates from the statement text


def _stmts(rows):
    """rows: (query, calls, total_ms, rows_per_call); queryid = position + 1."""
    return pd.DataFrame([{"queryid": i, "query": q, "calls": float(c), "total_ms": t, "mean_ms": t / c,
                          "max_ms": t / c, "rows": float(c * rpc), "rows_per_call": float(rpc), "username": "app"}
                         for i, (q, c, t, rpc) in enumerate(rows, 1)])


def _tables(rows, schema="public", columns=None):
    """rows: (table, n_live_tup, seq_scan, idx_scan)."""
    return pd.DataFrame([{"schema": schema, "table": t, "n_live_tup": n, "seq_scan": s, "seq_tup_read": s * n,
                          "idx_scan": i, "idx_tup_fetch": i, "n_dead_tup": 0, "reltuples": float(n),
                          "reloptions": [], "columns": (columns or {}).get(t, [])} for t, n, s, i in rows])


def _indexes(rows, schema="public"):
    """rows: (table, index, definition columns)."""
    return pd.DataFrame([{"schema": schema, "table": t, "index": name, "idx_scan": 10, "is_unique": False,
                          "is_primary": False, "is_valid": True, "backs_constraint": False, "index_bytes": 1 << 22,
                          "definition": f"CREATE INDEX {name} ON {schema}.{t} USING btree ({cols})"}
                         for t, name, cols in rows])


#: The issue's stock Node service: clicks 500k rows, 1,415 seq scans, no index use; its top statement
#: (90 % of the time) reads the clicks of one product, newest first.
CLICKS_TOP = "SELECT id, source, created_at FROM clicks WHERE product_id = $1 ORDER BY created_at DESC LIMIT $2"
NODE_STMTS = [(CLICKS_TOP, 1415, 9000.0, 20),
              ("SELECT id, product_id, source, created_at FROM clicks WHERE created_at >= $1", 4, 520.0, 200_000),
              ("SELECT id, name, price, category_id FROM products ORDER BY id LIMIT $1 OFFSET $2", 300, 300.0, 20),
              ("SELECT id, name, slug FROM categories WHERE id = $1", 6000, 180.0, 1)]
NODE_TABLES = [("clicks", 500_000, 1415 + 4, 0), ("products", 10_000, 0, 300), ("categories", 40, 2, 6000)]


def test_candidate_from_the_statement_text_for_the_issue_example():
    considered, [c] = D.index_candidates(_stmts(NODE_STMTS), _tables(NODE_TABLES), _indexes([]), SETTINGS)
    assert (c.schema, c.table, c.columns, c.sort) == ("public", "clicks", ["product_id", "created_at"],
                                                       [("created_at", True)])
    assert c.create_index == ("CREATE INDEX CONCURRENTLY idx_clicks_product_id_created_at ON public.clicks "
                              "(product_id, created_at DESC);")
    assert c.share_pct == pytest.approx(90, abs=1)
    # the export reads 40 % of clicks per call: a sequential scan is its right plan, no candidate
    export = considered[considered["query"].str.contains("created_at >= ")]
    assert export["verdict"].iloc[0].startswith("returns 200,000 rows per call, 40 % of clicks")


@pytest.mark.parametrize("query,table,columns,desc", [
    # join, qualified columns: the filter and the sort are on products; categories is a join partner
    ("SELECT p.id, p.name FROM products p JOIN categories c ON c.id = p.category_id "
     "WHERE p.category_id = $1 ORDER BY p.created_at DESC LIMIT $2", "products", ["category_id", "created_at"],
     ["created_at"]),
    # IN list then a range (no ORDER BY)
    ("SELECT * FROM orders WHERE status IN ($1, $2) AND created_at >= $3 AND created_at < $4", "orders",
     ["status", "created_at"], []),
    # = ANY($1) is an equality; BETWEEN a range; ORDER BY without LIMIT goes after the range
    ("SELECT * FROM orders WHERE customer_id = ANY($1) AND total BETWEEN $2 AND $3 ORDER BY created_at DESC",
     "orders", ["customer_id", "total", "created_at"], ["created_at"]),
    # under a LIMIT the ORDER BY columns come before the range: the index returns rows in order
    ("SELECT * FROM orders WHERE customer_id = $1 AND total > $2 ORDER BY created_at DESC LIMIT 20",
     "orders", ["customer_id", "created_at", "total"], ["created_at"]),
    # a correlated subquery's column of the outer query is a value for the inner one
    ("SELECT o.id, (SELECT count(*) FROM lines l WHERE l.order_id = o.id) FROM orders o WHERE o.id = $1",
     "lines", ["order_id"], []),
    # IS NULL is an equality; a function of the value side is still a value
    ("SELECT * FROM orders WHERE shipped_at IS NULL AND created_at < now() - $1::interval", "orders",
     ["shipped_at", "created_at"], []),
    # ORDER BY + LIMIT alone asks for an index on the sort key
    ("SELECT id FROM orders ORDER BY created_at DESC LIMIT 50", "orders", ["created_at"], ["created_at"]),
    # DELETE / UPDATE read with their WHERE too
    ("DELETE FROM lines WHERE order_id = $1", "lines", ["order_id"], []),
])
def test_candidate_columns_for_statement_shapes(query, table, columns, desc):
    tables = _tables([("orders", 200_000, 500, 10), ("lines", 900_000, 300, 0), ("products", 100_000, 80, 10),
                      ("categories", 50, 1000, 100)])
    _, cands = D.index_candidates(_stmts([(query, 500, 1000.0, 5)]), tables, _indexes([]), SETTINGS)
    [c] = [c for c in cands if c.table == table]
    assert c.columns == columns
    assert [col for col, d in c.sort if d] == desc
    assert all(x.table != "categories" for x in cands)   # 50 rows: never a candidate


@pytest.mark.parametrize("query", [
    "SELECT * FROM orders WHERE lower(email) = $1",              # a function of the column
    "SELECT * FROM orders WHERE customer_id = $1 OR total > $2",  # OR
    "SELECT * FROM orders WHERE note LIKE $1",                    # LIKE needs a special operator class
    "SELECT * FROM orders ORDER BY created_at DESC",              # no LIMIT: the whole table anyway
    "SELECT o.id FROM orders o JOIN lines l ON l.order_id = o.id",  # join condition only
    "WITH t AS (SELECT 1 AS id) SELECT * FROM t WHERE id = $1",    # a CTE is not a table
    "SELECT * FROM orders WHERE",                                 # does not parse
])
def test_no_candidate_without_a_condition_an_index_serves(query):
    tables = _tables([("orders", 200_000, 500, 10), ("lines", 900_000, 300, 0)])
    _, cands = D.index_candidates(_stmts([(query, 500, 1000.0, 5)]), tables, _indexes([]), SETTINGS)
    assert cands == []


def test_already_indexed_columns_are_skipped():
    stmts, tables = _stmts(NODE_STMTS), _tables(NODE_TABLES)
    for cols in ("product_id, created_at DESC", "product_id", "product_id, source"):
        considered, cands = D.index_candidates(stmts, tables, _indexes([("clicks", "ix", cols)]), SETTINGS)
        assert cands == [], cols
        assert considered["verdict"].str.startswith("already indexed: ix").any()
    # an index leading with another column does not serve the equality
    _, [c] = D.index_candidates(stmts, tables, _indexes([("clicks", "ix", "created_at")]), SETTINGS)
    assert c.columns == ["product_id", "created_at"]


def test_candidates_only_on_large_sequentially_scanned_tables_ranked_by_share():
    stmts = _stmts([("SELECT * FROM a WHERE x = $1", 100, 300.0, 1), ("SELECT * FROM b WHERE y = $1", 100, 600.0, 1),
                    ("SELECT * FROM c WHERE z = $1", 100, 100.0, 1), ("SELECT * FROM d WHERE w = $1", 10, 30.0, 1)])
    tables = _tables([("a", 50_000, 100, 0), ("b", 80_000, 100, 10), ("c", 50_000, 20, 2000),   # c: 99 % by index
                      ("d", 50_000, 100, 0)])
    tables.loc[tables["table"] == "c", "idx_tup_fetch"] = 2_000_000      # ... which read most of its rows
    considered, cands = D.index_candidates(stmts, tables, _indexes([]), SETTINGS)
    assert [c.table for c in cands] == ["b", "a"]          # largest share of statement time first
    assert considered.set_index("table").loc["c", "verdict"].startswith("c is read mostly by index")
    assert "d" not in set(considered["table"])             # 3 % of the time: under index_candidate_min_share


def test_unqualified_columns_of_a_join_are_attributed_with_the_column_names():
    q = ("SELECT p.id FROM products p JOIN categories c ON c.id = p.category_id "
         "WHERE category_id = $1 AND slug = $2 ORDER BY created_at DESC LIMIT 20")
    cols = {"products": ["id", "category_id", "created_at"], "categories": ["id", "slug", "name"]}
    tables = _tables([("products", 100_000, 80, 10), ("categories", 50_000, 80, 10)], columns=cols)
    _, cands = D.index_candidates(_stmts([(q, 100, 100.0, 20)]), tables, _indexes([]), SETTINGS)
    by = {c.table: c.columns for c in cands}
    assert by == {"products": ["category_id", "created_at"], "categories": ["slug"]}
    # without the column names the unqualified terms cannot be placed: nothing is guessed
    _, cands = D.index_candidates(_stmts([(q, 100, 100.0, 20)]), _tables([("products", 100_000, 80, 10),
                                                                          ("categories", 50_000, 80, 10)]), None,
                                  SETTINGS)
    assert cands == []


def test_schema_qualified_create_and_drop_index():
    _, [c] = D.index_candidates(_stmts(NODE_STMTS), _tables(NODE_TABLES, schema="shop"), _indexes([], "shop"),
                                SETTINGS)
    assert " ON shop.clicks (product_id, created_at DESC);" in c.create_index
    idx = _indexes([("clicks", "Old Index", "source")], schema="Shop").assign(idx_scan=0)
    [f] = D.unused_indexes(idx, SETTINGS)[1]
    assert 'DROP INDEX CONCURRENTLY "Shop"."Old Index";' in f.recommendation


# --------------------------------------------------------------------------- missing indexes at each level


def _plan_for(queryid, query, plan=None, error=None):
    return pd.DataFrame([{"queryid": queryid, "query": query, "plan": plan, "error": error}])


SEQ_PLAN = {"Node Type": "Limit", "Total Cost": 9000.0, "Plans": [{
    "Node Type": "Sort", "Sort Key": ["created_at DESC"], "Total Cost": 8990.0, "Plans": [{
        "Node Type": "Seq Scan", "Relation Name": "clicks", "Alias": "clicks", "Total Cost": 8900.0,
        "Plan Rows": 3, "Filter": "(product_id = $1)"}]}]}
INDEX_PLAN = {"Node Type": "Limit", "Total Cost": 12.0, "Plans": [{
    "Node Type": "Index Scan", "Relation Name": "clicks", "Alias": "clicks", "Index Name": "clicks_by_product",
    "Total Cost": 12.0, "Plan Rows": 3, "Index Cond": "(product_id = $1)"}]}


def _missing(plans=None, verified=None, indexes=None):
    stmts, tables = _stmts(NODE_STMTS), _tables(NODE_TABLES)
    idx = indexes if indexes is not None else _indexes([])
    considered, cands = D.index_candidates(stmts, tables, idx, SETTINGS)
    sugg = D.index_suggestions(plans, tables, idx, SETTINGS) if plans is not None else []
    return D.missing_indexes(tables, sugg, stmts, verified, settings=SETTINGS, candidates=cands, plans=plans,
                             considered=considered)


def test_monitor_level_finds_the_missing_index_unverified_with_the_reason():
    reason = "no SELECT privilege on public.clicks (EXPLAIN would fail with InsufficientPrivilege)"
    _table, found = _missing(_plan_for(1, CLICKS_TOP, error=reason))
    [f] = bad(found)
    assert f.severity == "critical"          # 90 % of all statement time
    assert f.subject == "clicks" and f.evidence["columns"] == ["product_id", "created_at"]
    assert f.recommendation.startswith("CREATE INDEX CONCURRENTLY idx_clicks_product_id_created_at ON public.clicks "
                                       "(product_id, created_at DESC);")
    assert f"not verified by EXPLAIN: {reason}, grant pg_read_all_data to verify" in f.title
    assert f.evidence["seq_scan"] == 1419 and f.evidence["index_share"] == 0
    assert f.evidence["share_pct"] == pytest.approx(90, abs=1) and f.evidence["verified_by"] is None
    # no plans at all (EXPLAIN never ran) says so too
    [g] = bad(_missing()[1])
    assert "not verified by EXPLAIN: the statement was not explained, grant pg_read_all_data" in g.title


def test_read_all_level_verifies_with_explain_and_keeps_the_verdict():
    [mon] = bad(_missing(_plan_for(1, CLICKS_TOP, error="no SELECT privilege"))[1])
    [f] = bad(_missing(_plan_for(1, CLICKS_TOP, SEQ_PLAN))[1])
    assert (f.severity, f.subject, f.evidence["columns"], f.recommendation.splitlines()[0]) == \
        (mon.severity, mon.subject, mon.evidence["columns"], mon.recommendation.splitlines()[0])
    assert f.evidence["verified_by"] == "EXPLAIN" and "verified by EXPLAIN: Seq Scan on clicks" in f.title


def test_explain_that_refutes_a_candidate_says_why():
    _table, found = _missing(_plan_for(1, CLICKS_TOP, INDEX_PLAN))
    assert bad(found) == []
    [f] = [f for f in found if f.subject == "clicks"]
    assert f.severity == "info" and "EXPLAIN does not confirm" in f.title
    assert "Index Scan using clicks_by_product" in f.title


def test_hypopg_level_drops_an_index_that_does_not_halve_the_cost_saying_why():
    _, found = _missing(_plan_for(1, CLICKS_TOP, SEQ_PLAN), {(1, "clicks"): {"cost_before": 9000.0, "cost_after": 6000.0}})
    assert bad(found) == []
    [f] = [f for f in found if f.subject == "clicks"]
    assert f.severity == "info" and "9000 → 6000, not halved" in f.title
    _, found = _missing(_plan_for(1, CLICKS_TOP, SEQ_PLAN), {(1, "clicks"): {"cost_before": 9000.0, "cost_after": 14.0}})
    [f] = bad(found)
    assert f.evidence["verified_by"] == "EXPLAIN + hypopg" and f.evidence["hypopg_cost_after"] == 14.0


def test_recorded_incident_gives_the_same_verdict_at_both_levels(incident):
    stmts, tables, indexes = incident["statements"], incident["tables"], incident["indexes"]
    considered, cands = D.index_candidates(stmts, tables, indexes, SETTINGS)
    verdicts = []
    for plans in (D.explain_candidates(stmts, tables, SETTINGS, cands).assign(plan=None, error="no SELECT privilege"),
                  incident["plans"]):
        sugg = D.index_suggestions(plans, tables, indexes, SETTINGS)
        _, found = D.missing_indexes(tables, sugg, stmts, settings=SETTINGS, candidates=cands, plans=plans,
                                     considered=considered)
        [f] = bad(found)
        verdicts.append((f.severity, f.subject, f.evidence["columns"], f.evidence["create_index"]))
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][1:] == ("products", ["category_id", "created_at"],
                               "CREATE INDEX CONCURRENTLY idx_products_category_id_created_at ON public.products "
                               "(category_id, created_at DESC);")


def test_healthy_recording_has_no_candidate(healthy):
    considered, cands = D.index_candidates(healthy["statements"], healthy["tables"], healthy["indexes"], SETTINGS)
    assert cands == [] and not considered.empty
    _, found = D.missing_indexes(healthy["tables"], [], healthy["statements"], candidates=cands,
                                 considered=considered, settings=SETTINGS)
    assert [f.severity for f in found] == ["ok"]


# --------------------------------------------------------------------------- large results, by what they cost


def test_one_large_export_every_20_seconds_is_a_finding():
    stmts = _stmts(NODE_STMTS)
    _, found = D.large_results(stmts, _tables(NODE_TABLES), SETTINGS)
    [f] = bad(found)
    assert "clicks WHERE created_at >= $1" in f.subject and f.evidence["calls"] == 4
    assert f.evidence["rows_per_call"] == 200_000 and f.evidence["rows"] == 800_000
    assert any("rows returned" in c for c in f.evidence["costly_by"])
    assert "200,000 rows per call over 4 call(s)" in f.title


def test_small_lists_stay_quiet_and_the_ok_names_the_largest():
    stmts = _stmts([("SELECT id, name FROM products ORDER BY id LIMIT $1", 1000, 900.0, 20),
                    ("SELECT id FROM products WHERE category_id = $1", 2000, 100.0, 1)])
    _, [f] = D.large_results(stmts, _tables([("products", 100_000, 0, 3000)]), SETTINGS)
    assert f.severity == "ok" and "largest: 20" in f.title and f.evidence["max_rows_per_call"] == 20


def test_a_cheap_large_result_is_ok_and_the_title_says_it_is_large():
    stmts = _stmts([("SELECT id FROM products ORDER BY id LIMIT $1", 1000, 9000.0, 20),
                    ("SELECT * FROM products WHERE category_id = $1", 2, 30.0, 5000)])   # 10k rows, 0.3 %
    _, [f] = D.large_results(stmts, _tables([("products", 100_000, 0, 3000)]), SETTINGS)
    assert f.severity == "ok" and f.evidence["max_rows_per_call"] == 5000
    assert "No SELECT returns more than" not in f.title and "5,000 rows per call" in f.title
    assert "under every cost bar" in f.title
    # the same statement at 10x the share of time is a finding
    stmts.loc[1, "total_ms"] = 3000.0
    assert bad(D.large_results(stmts, None, SETTINGS)[1])


# --------------------------------------------------------------------------- N+1 endpoint attribution


def _requests(d):
    return pd.DataFrame([{"endpoint": e, "method": e.split()[0], "route": e.split()[1], "requests": float(n)}
                         for e, n in d.items()])


LIST = "SELECT id, name, price, category_id FROM products ORDER BY id LIMIT $1 OFFSET $2"
LOOKUP = "SELECT id, name, slug FROM categories WHERE id = $1"


def test_n_plus_one_never_blames_a_health_route():
    # 300 list requests x 20 lookups + 900 detail requests x 1 lookup; health checks are the busiest route
    stmts = _stmts([(LIST, 300, 300.0, 20), (LOOKUP, 300 * 20 + 900, 700.0, 1)])
    reqs = _requests({"GET /health/services": 6900, "GET /health": 3000, "GET /metrics": 600,
                      "GET /api/products": 300, "GET /api/products/:id": 900, "GET /api/products/:id/clicks": 310})
    [f] = bad(D.n_plus_one_from_statements(stmts, SETTINGS, ENDPOINTS, reqs)[1])
    assert f.evidence["endpoint"] == "GET /api/products" and not f.evidence["endpoint_ambiguous"]
    assert "health" not in f.title and "GET /api/products" in f.title
    assert all("health" not in c["endpoint"] and "metrics" not in c["endpoint"]
               for c in f.evidence["endpoint_candidates"])
    # the statement-based finding's endpoint is what the query log's finding repeats
    assert D.is_infra_route("GET /health/services") and D.is_infra_route("/readyz") and D.is_infra_route("/metrics")
    assert not D.is_infra_route("GET /api/healthy-products") and not D.is_infra_route("GET /api/products")


def test_n_plus_one_with_no_application_endpoint_to_blame_says_unknown():
    stmts = _stmts([(LIST, 300, 300.0, 20), (LOOKUP, 6000, 700.0, 1)])
    reqs = _requests({"GET /health/services": 6900, "GET /api/other": 40})
    [f] = bad(D.n_plus_one_from_statements(stmts, SETTINGS, ENDPOINTS, reqs)[1])
    assert f.evidence["endpoint"] is None and "endpoint is unknown" in f.title
    assert "GET /health/services not counted (health/metrics routes)" in f.title
    assert f.evidence["endpoint_candidates"] == []


def test_ambiguous_attribution_lists_the_candidates():
    stmts = _stmts([("SELECT id, name, category_id FROM items WHERE shop_id = $1 LIMIT 20", 200, 300.0, 20),
                    (LOOKUP, 4000, 700.0, 1)])
    reqs = _requests({"GET /api/search": 210, "GET /api/feed": 220, "GET /health": 5000})
    [f] = bad(D.n_plus_one_from_statements(stmts, SETTINGS, ENDPOINTS, reqs)[1])
    assert f.evidence["endpoint"] is None and f.evidence["endpoint_ambiguous"]
    names = [c["endpoint"] for c in f.evidence["endpoint_candidates"]]
    assert set(names) == {"GET /api/search", "GET /api/feed"}
    assert "ambiguous" in f.title and "GET /api/search" in f.title and "GET /api/feed" in f.title


def test_a_detail_endpoint_lookup_once_per_request_is_not_n_plus_one():
    # GET /api/products/{id} looks up its product's category once per request: healthy
    stmts = _stmts([(LIST.replace("category_id", "c.name") + "", 300, 300.0, 20), (LOOKUP, 905, 90.0, 1)])
    reqs = _requests({"GET /api/products": 300, "GET /api/products/{id}": 900, "GET /health": 3000})
    table, found = D.n_plus_one_from_statements(stmts, SETTINGS, ENDPOINTS, reqs)
    assert bad(found) == [] and table.empty
    [ok] = found
    assert "a detail page" in ok.evidence["lookups_looked_at"][0]["why_not"]


def test_without_a_list_query_only_many_lookups_per_application_request_count():
    reqs = _requests({"GET /api/products": 300, "GET /api/orders": 200, "GET /health": 9000})
    # 900 lookups for 500 application requests: 1.8 per request, no N+1 can be shown
    assert bad(D.n_plus_one_from_statements(_stmts([(LOOKUP, 900, 50.0, 1)]), SETTINGS, ENDPOINTS, reqs)[1]) == []
    # 5000 lookups: 10 per application request, two endpoints could issue them: ambiguous
    [f] = bad(D.n_plus_one_from_statements(_stmts([(LOOKUP, 5000, 50.0, 1)]), SETTINGS, ENDPOINTS, reqs)[1])
    assert f.evidence["endpoint_ambiguous"] and "health" not in f.title


# --------------------------------------------------------------------------- ok findings claim only what their evidence shows


def _near_misses(h):
    """The healthy recording plus a near miss for each check."""
    st = h["statements"].copy()
    extra = _stmts([("SELECT * FROM products WHERE rating > $1", 99, 99 * 25.0, 3),         # slow, but 99 calls
                    ("SELECT * FROM products WHERE category_id = $1", 2, 8.0, 4000)])       # large, but cheap
    extra["queryid"] = [-1, -2]
    st = pd.concat([st, extra.reindex(columns=st.columns)], ignore_index=True)
    st.attrs.update(h["statements"].attrs)
    tables = h["tables"].copy()
    small = tables.iloc[[0]].copy()
    small["table"], small["n_live_tup"], small["n_dead_tup"] = "tiny_cache", 200, 300      # 60 % dead, 500 rows
    tables = pd.concat([tables, small], ignore_index=True)
    idx = h["indexes"].copy()
    tiny = idx.iloc[[0]].copy()
    tiny["index"], tiny["idx_scan"], tiny["index_bytes"] = "idx_tiny", 0, 8192               # unused, 8 KiB
    tiny["is_unique"] = tiny["is_primary"] = tiny["backs_constraint"] = False
    idx = pd.concat([idx, tiny], ignore_index=True)
    pool = h["pool"].copy()
    pool["busy_max"] = pool["pool_max"]                                                      # full, no waiting
    return st, tables, idx, pool


def _ok_claims_hold(f):
    """The generic rule: an ok finding's evidence never shows its own bar crossed unless the
    title says so."""
    ev, t = f.evidence, f.title
    if f.code == "db.slow_query":
        assert not (ev["slowest_mean_ms"] >= ev["threshold_mean_ms"] and ev["slowest_calls"] >= ev["threshold_calls"])
        if ev["slowest_mean_ms"] >= ev["threshold_mean_ms"]:
            assert f"{ev['slowest_mean_ms']:.0f} ms on average, ran {int(ev['slowest_calls'])} time" in t
    elif f.code == "db.large_result":
        if ev["max_rows_per_call"] and ev["max_rows_per_call"] > ev["threshold_rows"]:
            assert "No SELECT returns more than" not in t and f"{ev['max_rows_per_call']:,.0f} rows per call" in t
    elif f.code == "db.bloat":
        assert ev["max_dead_pct"] < ev["threshold_pct"]
        if (ev["max_dead_pct_smaller_tables"] or 0) >= ev["threshold_pct"]:
            assert "not judged" in t and ev["worst_smaller_table"] in t
    elif f.code == "db.unused_index":
        if ev["smaller_never_scanned"]:
            assert "never scanned, not judged" in t
    elif f.code == "db.missing_index":
        assert "No table of ≥" in t and (ev.get("its_index_share") is None or ev["its_index_share"] >= 0.95
                                          or ev["its_seq_scan"] < 10)
    elif f.code == "db.n_plus_one":
        assert all(x["why_not"] for x in ev["lookups_looked_at"])
    elif f.code == "db.long_running":
        assert ev["longest_active_s"] < ev["threshold_s"]
    elif f.code == "db.connections" and f.subject == "connection pool" \
            and ev["busy_max"] >= (ev["pool_max"] if ev["pool_max"] == ev["pool_max"] else ev["open_max"]):
        assert "full at times" in t


def test_every_ok_finding_of_the_database_checks_agrees_with_its_evidence(healthy):
    st, tables, idx, pool = _near_misses(healthy)
    considered, cands = D.index_candidates(st, tables, idx, SETTINGS)
    findings = [*D.slow_queries(st, SETTINGS)[1],
                *D.n_plus_one_from_statements(st, SETTINGS, ENDPOINTS, healthy["requests"])[1],
                *D.missing_indexes(tables, [], st, candidates=cands, considered=considered, settings=SETTINGS)[1],
                *D.large_results(st, tables, SETTINGS)[1], *D.bloat(tables, SETTINGS)[1],
                *D.unused_indexes(idx, SETTINGS, healthy["info"]["stats_reset"], healthy["info"]["now"])[1],
                *D.connections(healthy["activity"], healthy["info"], CONNECTION_LEVELS, SETTINGS)[1],
                *D.long_running(healthy["activity"], SETTINGS)[1], *D.lock_waits(healthy["activity"], SETTINGS)[1],
                *D.pool_saturation(pool, SETTINGS)[1]]
    assert bad(findings) == []
    oks = [f for f in findings if f.severity == "ok"]
    assert {f.code for f in oks} >= {"db.slow_query", "db.n_plus_one", "db.missing_index", "db.large_result",
                                     "db.bloat", "db.unused_index", "db.long_running", "db.lock_waits",
                                     "db.connections"}
    for f in oks:
        _ok_claims_hold(f)
    # the near misses are named, not hidden
    by = {f.code: f for f in oks}
    assert "25 ms" in by["db.slow_query"].title and "4,000 rows per call" in by["db.large_result"].title
    assert "tiny_cache" in by["db.bloat"].title and "not judged" in by["db.unused_index"].title
    assert "full at times" in [f for f in oks if f.subject == "connection pool"][0].title


# --------------------------------------------------------------------------- EXPLAIN ANALYZE: an allow-list of functions


@pytest.mark.parametrize("sql", [
    "SELECT pg_try_advisory_lock_shared(1)", "SELECT pg_advisory_unlock_all()", "SELECT pg_advisory_lock(1, 2)",
    "SELECT dblink_send_query('c', 'DELETE FROM t')", "SELECT dblink_open('c', 'x')", "SELECT my_schema.f(1)",
    "SELECT public.lower(name) FROM t", "SELECT pg_sleep(1)", "SELECT pg_notify('a', 'b')",
    "SELECT * FROM t WHERE a === 1", "SELECT lo_get(1)",
])
def test_explain_analyze_refuses_functions_off_the_allow_list(sql):
    assert P.analyzable(sql)
    with pytest.raises(P.ReadOnlyViolation):
        P.check_read_only(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")


@pytest.mark.parametrize("sql", [
    "SELECT count(*), lower(name), date_trunc('day', created_at) FROM t WHERE a = $1 AND b LIKE 'x%' GROUP BY 2, 3",
    "SELECT coalesce(a, 0), extract(epoch FROM now() - created_at) FROM t WHERE c BETWEEN 1 AND 2 ORDER BY 1",
    "SELECT jsonb_build_object('a', a), array_length(tags, 1) FROM t WHERE tags @> ARRAY['x'] LIMIT 5",
])
def test_explain_analyze_allows_ordinary_selects(sql):
    assert P.analyzable(sql) is None
    P.check_read_only(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")


# --------------------------------------------------------------------------- issue 13 point 6


def test_db_connections_without_open_gauge_nor_server_count_does_not_fail():
    from perfbook.checks import resources as R
    from perfbook.params import Thresholds
    t0 = pd.Timestamp("2025-01-01T00:00:00Z")
    busy = pd.DataFrame([{"timestamp": t0 + pd.Timedelta(seconds=i), "instance": "a", "value": 1.0} for i in range(5)])
    wait = busy.assign(value=0.0)
    # pool gauges under other names than Prisma's: no open-connections series; the database unreachable
    _, found = R.db_connections(None, busy, wait, Thresholds().db_connections, None, **POOL_EXHAUSTED)
    assert found and all(f.severity in ("ok", "info") for f in found)
    assert any("not checked" in f.title for f in found)
    _table, found = R.db_connections(None, None, None, Thresholds().db_connections, None, **POOL_EXHAUSTED)
    assert [f.severity for f in found] == ["info"]


def test_demo_db_role_flag():
    from perfbook.cli import build_parser
    from perfbook.demo.stack import Stack

    p = build_parser()
    assert p.parse_args(["demo"]).db_role == "monitor"
    assert p.parse_args(["demo", "--db-role", "read_all"]).db_role == "read_all"
    with pytest.raises(SystemExit):
        p.parse_args(["demo", "--db-role", "superuser"])
    with pytest.raises(ValueError, match="db_role"):
        Stack("healthy", db_role="superuser")


def test_full_scans_beside_many_by_id_lookups_still_make_a_candidate():
    """A listing that seq-scans 100k products 97 times, beside 3,000 product-page reads by id:
    97 % of the table's scans are by index, yet 99.9 % of the rows it reads come from the
    scans. The listing's index is missing (the demo incident, kept database, stop 25)."""
    q = "SELECT p.id FROM products p WHERE p.category_id = $1 ORDER BY p.created_at DESC LIMIT 20"
    stmts = _stmts([(q, 97, 1900.0, 20), ("SELECT stock FROM products WHERE id = $1", 3000, 90.0, 1)])
    tables = _tables([("products", 100_000, 97, 3000)], columns={"products": ["id", "category_id", "created_at"]})
    considered, [c] = D.index_candidates(stmts, tables, _indexes([("products", "products_pkey", "id")]), SETTINGS)
    assert c.table == "products" and c.columns == ["category_id", "created_at"], considered
    # the same scans reading few rows (an index did most of the reading): refused, and said why
    tables.loc[0, "seq_tup_read"], tables.loc[0, "idx_tup_fetch"] = 1_000, 3_000_000
    considered, cands = D.index_candidates(stmts, tables, _indexes([("products", "products_pkey", "id")]), SETTINGS)
    assert cands == [] and considered["verdict"].str.contains("% of rows read").any(), considered
