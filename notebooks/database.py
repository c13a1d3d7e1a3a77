# %% [markdown]
# # Database — slow queries, N+1, missing indexes, large results, bloat, connections
#
# The runbook's *Issue 1 §4 Database Bottleneck* and *Issue 2: Database Query Optimization*, in their order,
# each step ending in the SQL or code that fixes what it found.
#
# **Safe on production.** perfbook's session is read-only (`default_transaction_read_only=on`), bounded
# (`statement_timeout`, `lock_timeout`), tagged (`application_name=perfbook`, `/*perfbook*/` on every statement)
# and refuses any statement that is not a read before sending it. Plain `EXPLAIN` only — `EXPLAIN ANALYZE` runs
# only when the params ask for it, for single SELECTs calling only allow-listed functions, in a transaction that is
# rolled back. The real guarantee is the role: connect as one that cannot write
# (`CREATE ROLE perfbook LOGIN; GRANT pg_monitor TO perfbook;`).
#
# **Three privilege levels, each fully useful.** `pg_monitor` only (the recommended default) reaches every
# conclusion the statistics and the statement texts allow — index candidates included, from the statement text;
# `+ pg_read_all_data` adds EXPLAIN, which verifies (or refutes, saying why) each candidate; `+ hypopg` adds the
# planner's cost with each index, created hypothetically. The page says below which level it ran with, and what
# the next one would add.

# %% tags=["parameters"]
# Parameters (papermill injects these in batch runs).
# since / until set the window (-30m, now, ISO-8601); None keeps the params file's window.
# overrides is the JSON of `-P key.path=value` overrides.
# resolved_params: the runner's validated params, overrides applied (batch); None loads params_file here.
params_file = "../params/demo.yaml"
since = None
until = None
incident = None
overrides = "{}"
resolved_params = None
# since_snapshot: an earlier run's snapshots/database.json (`--since-run RUN`): statistics count from there.
since_snapshot = None

# %%
from IPython.display import display

from perfbook import notebook as pb
from perfbook.checks import database, querylog
from perfbook.checks.database import window
from perfbook.plots import database as dbplots
from perfbook.sources import postgres, querylog as logs
from perfbook.sources.prometheus import PromClient

ctx = pb.start("database", params_file, since=since, until=until, incident=incident, overrides=overrides,
               resolved_params=resolved_params)
s, t = ctx.params.settings.database, ctx.params.targets
p = t.prometheus
prom = PromClient.from_env(p.url, p.bearer_token_env, timeout=p.timeout, selector=p.selector) if p else None
db = info = stmts = tables = indexes = activity = requests = candidates = privileges = identity = None
base = cumulative_stmts = cumulative_tables = None
level = None
nplus1 = []

# %% [markdown]
# ## Connect (read-only)
#
# The DSN is read from the environment variable the params name (`targets.database_env`); it is never shown.

# %%
with pb.check(ctx, "connect to PostgreSQL (read-only)"):
    db = postgres.connect(ctx)
    info = postgres.server_info(db)
    pb.note(f"PostgreSQL {info['version']} — database {info['database']} as {info['user']} "
            f"(superuser: {info['superuser']}, pg_read_all_stats: {info['read_all_stats']}); {db!r}")

# %% [markdown]
# ## Privilege level
#
# Which of the three levels this role has — `pg_monitor` only; `+ pg_read_all_data` (or SELECT on the tables);
# `+ hypopg` — read from the catalog (`pg_has_role`, `has_table_privilege`, `pg_extension`), and what the next
# level would add (the `db.privileges` finding, with the GRANT).

# %%
with pb.check(ctx, "privilege level"):
    privileges = postgres.privileges(db)
    level, found = database.privilege_level(privileges)
    pb.emit(ctx, found)

# %% [markdown]
# ## 1. Slow queries
#
# The runbook's *Top 10 slow queries* from `pg_stat_statements` (cumulative since its last reset), by total time —
# where the database spends its time — with mean and max, rows per call and the buffer-cache hit ratio of each.
# A statement is slow when it averages ≥ `settings.database.slow_query_mean` (20 ms) over ≥ `slow_query_calls`
# (100) calls, pghero's bar.

# %% [markdown]
# ## The statistics' window
#
# pg_stat_statements and pg_stat_user_tables count since their last reset, which can be weeks: the numbers below
# are those totals, unless the run was given an earlier run's snapshot (`perfbook run database --since-run RUN`):
# then every statement and table counts the interval between that run and this one, and a reset in between is
# detected and said, never shown as negative numbers. This run stores its own snapshot at the end of the page.

# %%
with pb.check(ctx, "statistics window (pg_stat_statements, pg_stat_user_tables)"):
    cumulative_stmts = stmts = postgres.statements(db)
    identity = postgres.identity(db, stmts)
    if since_snapshot:
        base = pb.load_record(since_snapshot)
        stmts, found = window.statements_since(base, identity, stmts, source=window.source_name(since_snapshot))
        pb.emit(ctx, found)
    else:
        pb.note(f"Cumulative statistics: pg_stat_statements since {stmts.attrs.get('stats_reset') or 'its last reset'}, "
                f"pg_stat_user_tables since {(info or {}).get('stats_reset') or 'their last reset'}.")

# %%
with pb.check(ctx, "slow queries (pg_stat_statements)"):
    stmts = postgres.require(stmts, "pg_stat_statements")
    pb.emit(ctx, database.statements_available(stmts))
    top, found = database.slow_queries(stmts, s)
    pb.table(top, f"Top {s.top_n} statements by total time")
    display(dbplots.top_queries_figure(top))
    pb.table(database.top_statements(stmts, "mean_ms", s.top_n), f"Top {s.top_n} statements by mean time")
    pb.details("SQL: pg_stat_statements", stmts.attrs.get("sql", ""), "sql")
    pb.emit(ctx, found)

# %% [markdown]
# ## 2. N+1 queries
#
# *Issue 2: N+1 Query Problem.* Two independent views:
#
# - **pg_stat_statements:** a key lookup (`SELECT … FROM categories WHERE id = $1`) called about once per row of a
#   list query that returns its key. The endpoint behind it comes from evidence: requests per endpoint from
#   Prometheus' `http_requests_total` over the statistics' interval (the run's window, or since the `--since-run`
#   snapshot; at least 60 s) (the list query runs at most about once per request of its
#   endpoint; its route names the list's table). Health and metrics routes (`/health*`, `/ready*`, `/metrics`) are
#   never blamed; when the evidence fits several endpoints equally, the finding says so and lists them. A lookup
#   called about once per request of some endpoint is a detail page, not an N+1.
# - **Query logs** (the runbook's "check logs for repeated similar queries"): the PostgreSQL statement log
#   (`targets.postgres_logs`) and Prisma `prisma:query` lines (`targets.app_logs`), streamed and fingerprinted
#   with pglast; a run of ≥ 5 back-to-back identical lookups in one session is an N+1 (Sentry's rule).

# %%
with pb.check(ctx, "requests per endpoint (Prometheus)"):
    requests = postgres.endpoint_requests(postgres.require(prom, "Prometheus (targets.prometheus)"),
                                          ctx.params, *window.interval(stmts, ctx.start, ctx.end))
    pb.table(requests, "Requests per endpoint in the window")
    pb.details("PromQL", requests.attrs["query"], "promql")

# %%
with pb.check(ctx, "N+1 from pg_stat_statements"):
    table, nplus1 = database.n_plus_one_from_statements(postgres.require(stmts, "pg_stat_statements"), s,
                                                        ctx.params.endpoints, requests)
    pb.table(table, "Key lookups issued once per row of a list")
    pb.emit(ctx, nplus1)

# %%
with pb.check(ctx, "N+1 from the query logs"):
    files = [*t.postgres_logs, *t.app_logs]
    limits = ctx.params.settings.limits
    analysis = querylog.analyze(logs.read(files, s.log_line_prefix, ctx.start, ctx.end, limits), s, limits)
    table, found = querylog.n_plus_one_from_log(analysis, ctx.params.endpoints, nplus1, files)
    pb.table(table, f"Runs of identical lookups in one session ({analysis.statements:,} statements read)")
    pb.table(analysis.top(s.top_n), "Top statements in the logs by total time")
    pb.emit(ctx, found)

# %% [markdown]
# ## 3. Missing indexes
#
# *Issue 2: Missing Indexes.* At every privilege level: tables read mostly by sequential scans (≥ 10k rows, ≥ 10
# sequential scans, < 95 % of scans by index), and the statements that read them, ranked by their share of all
# statement time (≥ `settings.database.index_candidate_min_share`, 5 %). Each statement is parsed with pglast: the
# columns its WHERE compares with a value — equality first, then ranges — then its ORDER BY columns with their
# direction (before the range columns under a LIMIT, so the index returns the rows in order) make the index
# candidate, unless an index already leads with them or the statement returns a large share of the table anyway.
# The runbook's `products(category_id, created_at DESC)`.
#
# With SELECT on the tables (`pg_read_all_data`), a plain `EXPLAIN (FORMAT JSON)` of each candidate's statement and
# of the top statements (a generic plan for `$n` texts: `EXPLAIN (GENERIC_PLAN)` on PostgreSQL 16+, `PREPARE` +
# `plan_cache_mode = force_generic_plan` before) verifies it: a scan with a filter on the large table confirms the
# candidate; a plan that reads the table otherwise refutes it, and the finding says what the plan does. Without
# that privilege the statement is not sent, and each candidate says "not verified by EXPLAIN". With the hypopg
# extension the index is created hypothetically (in this session's memory only) and kept only if the planner's
# cost at least halves (dexter's rule). A missing index is critical when its statement takes ≥
# `missing_index_critical_share` (50 %) of all statement time or is slow by the slow-query bar, at every level.

# %%
with pb.check(ctx, "missing indexes (table scans + EXPLAIN)"):
    cumulative_tables = tables = postgres.table_stats(db)
    if base is not None:
        tables, notes = window.tables_since(base, postgres.require(identity, "the server's identity"), tables)
        for line in notes:
            pb.note(line)
    indexes = postgres.index_stats(db)
    pb.table(database.seq_scan_tables(tables, s), "Tables read mostly by sequential scans")
    considered, from_text = database.index_candidates(postgres.require(stmts, "pg_stat_statements"), tables, indexes,
                                                      s)
    pb.table(considered, "Statements read for index candidates (statement text, pglast), largest share of time first")
    candidates = database.explain_candidates(stmts, tables, s, from_text, privileges)
    plans = postgres.explain_all(db, candidates)
    suggestions = database.index_suggestions(plans, tables, indexes, s)
    verified = postgres.verify_with_hypopg(db, database.hypopg_targets(from_text, suggestions, plans))
    table, found = database.missing_indexes(tables, suggestions, stmts, verified, settings=s, candidates=from_text,
                                            plans=plans, considered=considered, level=level)
    pb.table(table, "Suggested indexes")
    pb.details("SQL: pg_stat_user_tables", tables.attrs["sql"], "sql")
    pb.details("EXPLAIN plans (JSON)", database.plans_text(plans), "json")
    pb.emit(ctx, found)

# %%
with pb.check(ctx, "EXPLAIN ANALYZE of top SELECTs (settings.database.explain_analyze)"):
    analyzed = postgres.explain_analyze_top(db, postgres.require(candidates, "the top statements"), s.explain_analyze)
    pb.table(analyzed, "EXPLAIN ANALYZE (rolled back, under statement_timeout)")
    pb.note(analyzed.attrs.get("note", ""))

# %% [markdown]
# ## 4. Large result sets
#
# *Issue 2: Large Result Sets.* Statements returning more than `settings.database.large_result_rows` (1000) rows
# per call, or reading a large table with no LIMIT and no WHERE, judged by what they cost: a finding when called
# ≥ `large_result_calls` (10) times, or having returned ≥ `large_result_total_rows` (100,000) rows in all, or taking
# ≥ `large_result_time_share` (5 %) of all statement time — one export of 200k rows every 20 s is a finding. The fix
# is the runbook's pagination.

# %%
with pb.check(ctx, "large result sets"):
    table, found = database.large_results(postgres.require(stmts, "pg_stat_statements"), tables, s)
    pb.table(table, "Statements returning many rows, and what they cost")
    pb.emit(ctx, found)

# %% [markdown]
# ## 5. Table bloat and unused indexes
#
# The runbook's *Check table bloat*: dead tuples against live ones per table, with the last (auto)vacuum and analyze,
# and whether autovacuum is disabled for the table (`pg_class.reloptions`). Then indexes never scanned since the
# statistics were reset: they cost every write and their space (pghero's unused indexes).

# %%
with pb.check(ctx, "table bloat (dead tuples)"):
    table, found = database.bloat(postgres.require(tables, "pg_stat_user_tables"), s,
                                  autovacuum=(info or {}).get("autovacuum"))
    pb.table(table, "Dead tuples per table")
    pb.details("SQL: pg_stat_user_tables + pg_class.reloptions", tables.attrs["sql"], "sql")
    pb.emit(ctx, found)

# %%
with pb.check(ctx, "unused indexes"):
    table, found = database.unused_indexes(postgres.require(indexes, "pg_stat_user_indexes"), s,
                                           (info or {}).get("stats_reset"), (info or {}).get("now"))
    pb.table(table, "Indexes never scanned since the statistics reset")
    pb.details("SQL: pg_stat_user_indexes", indexes.attrs["sql"], "sql")
    pb.emit(ctx, found)

# %% [markdown]
# ## 6. Connections
#
# The runbook's `SELECT * FROM pg_stat_activity`, counted: client connections by state against its levels
# (Database Connections: warning 50, critical 80) and `max_connections`; statements running longer than
# `settings.database.long_running` (60 s) and transactions left idle as long; sessions waiting on locks, with the pid
# that blocks them. Then the application's own pool (Prisma's pool metrics from Prometheus): queries waiting for a
# connection mean the pool, not the database, is the bottleneck.

# %%
with pb.check(ctx, "connections (pg_stat_activity)"):
    activity = postgres.activity(db)
    table, found = database.connections(activity, info, ctx.params.thresholds.db_connections, s)
    pb.table(table, "Client connections by database, user and state")
    pb.details("SQL: pg_stat_activity", activity.attrs["sql"], "sql")
    pb.emit(ctx, found)

# %%
with pb.check(ctx, "long-running statements and idle transactions"):
    table, found = database.long_running(postgres.require(activity, "pg_stat_activity"), s)
    pb.table(table, f"Running or idle in transaction for more than {s.long_running:.0f} s")
    pb.emit(ctx, found)

# %%
with pb.check(ctx, "lock waits"):
    table, found = database.lock_waits(postgres.require(activity, "pg_stat_activity"), s)
    pb.table(table, "Sessions waiting on a lock, and who blocks them")
    pb.emit(ctx, found)

# %%
with pb.check(ctx, "application connection pool (Prometheus)"):
    pool = postgres.pool_usage(postgres.require(prom, "Prometheus (targets.prometheus)"), ctx.params, ctx.start, ctx.end)
    table, found = database.pool_saturation(pool, s)
    pb.table(table, "Connection pool per instance over the window")
    pb.details("PromQL", database.promql_text(pool.attrs.get("queries", {})), "promql")
    pb.emit(ctx, found)

# %% [markdown]
# ## Snapshot for later runs
#
# pg_stat_statements (the top statements by total time, and every statement a finding above names) and
# pg_stat_user_tables as they stand now, cumulative, stored with the run as `snapshots/database.json`: a later
# `perfbook run database --since-run RUN`, and `perfbook compare RUN LATER`, count from here.

# %%
with pb.check(ctx, "snapshot for later runs"):
    snap = window.snapshot(postgres.require(identity, "the server's identity"), cumulative_stmts, cumulative_tables,
                           top=ctx.params.settings.limits.snapshot_statements, keep=window.named_queryids(ctx.findings),
                           limit=postgres.STATEMENTS_LIMIT)
    pb.record(ctx, "database", snap, f"Snapshot stored with this run (snapshots/database.json): "
                                     f"{len(snap['statements'])} statements, {len(snap['tables'])} tables, "
                                     f"taken {snap['taken_at']}.")

# %% [markdown]
# ## Summary

# %%
postgres.close(db)
pb.summary(ctx)
