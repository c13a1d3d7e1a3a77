"""Database checks on recorded inputs: real pg view rows captured from the demo stack
(PostgreSQL 15, pg_stat_statements 1.10) by tests/fixtures/postgres/record.py."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from perfbook.checks import database as D
from perfbook.params import DEFAULT_ENDPOINTS, Endpoint, Level
from perfbook.sources import postgres as P

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"
ENDPOINTS = [Endpoint(**e) for e in DEFAULT_ENDPOINTS]
CONNECTION_LEVELS = Level(normal=20, warning=50, critical=80)


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
    table, found = D.n_plus_one_from_statements(incident["statements"], ENDPOINTS, incident["requests"])
    [f] = bad(found)
    assert f.code == "db.n_plus_one"
    assert "categories" in f.subject and "WHERE id = $1" in f.subject
    assert f.evidence["endpoint"] == "GET /api/products"
    assert f.evidence["lookups_per_parent_call"] == pytest.approx(20, rel=0.05)
    assert "FROM products p WHERE p.category_id" in f.evidence["parent_query"]
    assert "include: { category: true }" in f.recommendation


def test_n_plus_one_names_endpoint_without_prometheus(incident):
    _, found = D.n_plus_one_from_statements(incident["statements"], ENDPOINTS, None)
    [f] = bad(found)
    assert f.evidence["endpoint"] == "GET /api/products" and f.evidence["endpoint_requests"] is None


def test_missing_index_on_products_category_then_created_at(incident):
    sugg = D.index_suggestions(incident["plans"], incident["tables"], incident["indexes"])
    table, found = D.missing_indexes(incident["tables"], sugg, incident["statements"])
    [f] = bad(found)
    assert f.subject == "products"
    assert f.evidence["table"] == "products"
    assert f.evidence["columns"] == ["category_id", "created_at"]
    assert ("CREATE INDEX CONCURRENTLY idx_products_category_id_created_at ON products "
            "(category_id, created_at DESC);") in f.recommendation


def test_hypopg_keeps_an_index_only_if_the_cost_halves(incident):
    sugg = D.index_suggestions(incident["plans"], incident["tables"], incident["indexes"])
    key = (sugg[0].queryid, "products")
    _, kept = D.missing_indexes(incident["tables"], sugg, incident["statements"],
                                {key: {"cost_before": 4000.0, "cost_after": 100.0}})
    assert bad(kept) and bad(kept)[0].evidence["hypopg_cost_after"] == 100.0
    # the recorded hypopg answer for the unpaginated listing: 4396 -> 3041, not halved
    recorded = {(h["queryid"], h["table"]): h for h in incident["hypopg"]}
    table, dropped = D.missing_indexes(incident["tables"], sugg, incident["statements"], recorded)
    assert not bad(dropped)
    assert table["verdict"].str.startswith("dropped").any()


def test_large_result_of_unpaginated_listing(incident):
    _, found = D.large_results(incident["statements"], incident["tables"], 1000)
    [f] = bad(found)
    assert "products" in f.subject and f.evidence["has_limit"] is False
    assert f.evidence["rows_per_call"] > 1000
    assert "take: 100" in f.recommendation and "cursor" in f.recommendation


def test_bloat_on_sessions_with_autovacuum_disabled(incident):
    _, found = D.bloat(incident["tables"], 0.20)
    [f] = bad(found)
    assert f.subject == "sessions"
    assert 30 <= f.evidence["dead_pct"] <= 50
    assert f.evidence["autovacuum_enabled"] is False
    assert f.recommendation.startswith("VACUUM (ANALYZE) sessions;")
    assert "RESET (autovacuum_enabled" in f.recommendation


def test_pool_saturation_from_prisma_pool_metrics(incident):
    _, found = D.pool_saturation(incident["pool"])
    [f] = found
    assert f.code == "db.connections" and f.severity in ("warning", "critical")
    assert f.subject == "connection pool"
    assert f.evidence["wait_p95_ms"] > 20


def test_slow_listing_query_flagged_only_above_pghero_bar(incident):
    _, found = D.slow_queries(incident["statements"], mean_ms=20, min_calls=50)
    assert any("FROM products p WHERE p.category_id" in f.subject for f in bad(found))
    _, found = D.slow_queries(incident["statements"], mean_ms=20, min_calls=100_000)
    assert not bad(found) and found[0].severity == "ok"


# --------------------------------------------------------------------------- healthy: nothing


def test_healthy_stack_raises_nothing(healthy):
    h = healthy
    findings = D.statements_available(h["statements"])
    findings += D.slow_queries(h["statements"])[1]
    findings += D.n_plus_one_from_statements(h["statements"], ENDPOINTS, h["requests"])[1]
    findings += D.n_plus_one_from_statements(h["statements"], ENDPOINTS, None)[1]
    sugg = D.index_suggestions(h["plans"], h["tables"], h["indexes"])
    findings += D.missing_indexes(h["tables"], sugg, h["statements"])[1]
    findings += D.large_results(h["statements"], h["tables"])[1]
    findings += D.bloat(h["tables"])[1]
    findings += D.unused_indexes(h["indexes"], h["info"]["stats_reset"], h["info"]["now"])[1]
    findings += D.connections(h["activity"], h["info"], CONNECTION_LEVELS)[1]
    findings += D.long_running(h["activity"])[1]
    findings += D.lock_waits(h["activity"])[1]
    findings += D.pool_saturation(h["pool"])[1]
    assert bad(findings) == []
    assert {f.code for f in findings} >= {"db.slow_query", "db.n_plus_one", "db.missing_index", "db.large_result",
                                          "db.bloat", "db.connections", "db.long_running", "db.lock_waits"}


def test_every_check_says_ok_when_it_finds_nothing(healthy):
    for found in (D.slow_queries(healthy["statements"])[1], D.bloat(healthy["tables"])[1],
                  D.lock_waits(healthy["activity"])[1]):
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
    _, found = D.long_running(act, 60)
    [f] = bad(found)
    assert f.evidence["pid"] == pid and f.evidence["seconds"] == 95
    assert f"pg_cancel_backend({pid})" in f.recommendation


def test_idle_in_transaction_is_long_running_too(healthy):
    act, pid = _activity_with(healthy, state="idle in transaction", state_age_s=400.0)
    _, found = D.long_running(act, 60)
    assert bad(found)[0].severity == "critical"


def test_lock_wait_names_the_blocking_pid(healthy):
    act = healthy["activity"].copy()
    clients = act.index[act["backend_type"] == "client backend"][:2]
    blocker, waiter = act.loc[clients[0], "pid"], act.loc[clients[1], "pid"]
    act.at[clients[1], "blocking_pids"] = [blocker]
    act.at[clients[1], "query_age_s"] = 12.0
    _, found = D.lock_waits(act)
    [f] = found
    assert f.code == "db.lock_waits" and f.severity == "warning"
    assert f.evidence["blocking_pid"] == blocker and f.evidence["waiting_pids"] == [waiter]


def test_connections_against_runbook_levels(healthy):
    act = pd.concat([healthy["activity"]] * 20, ignore_index=True)
    _, [f] = D.connections(act, healthy["info"], CONNECTION_LEVELS)
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
    assert D.slow_queries(empty)[1] == []


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
    [s] = D.index_suggestions(pd.DataFrame([{"queryid": 1, "query": q, "plan": plan}]), tables, idx)
    assert s.columns == ["category_id", "created_at"] and s.sort == [("created_at", True)]
    idx2 = pd.concat([idx, pd.DataFrame([{"table": "products", "index": "x", "is_valid": True,
                                          "definition": "CREATE INDEX x ON public.products USING btree (category_id, created_at DESC)"}])])
    assert D.index_suggestions(pd.DataFrame([{"queryid": 1, "query": q, "plan": plan}]), tables, idx2) == []


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
    _, with_sizes = D.large_results(stmts, pd.DataFrame([{"table": "products", "n_live_tup": 500}]))
    _, without = D.large_results(stmts, None)
    assert [f.severity for f in with_sizes] == [f.severity for f in without] == ["ok"]
    assert with_sizes[0].evidence["table_sizes_known"] and "not checked" not in with_sizes[0].title
    assert not without[0].evidence["table_sizes_known"] and "not checked" in without[0].title
