"""Database checks (runbook Issue 1 §4 and Issue 2), one small function per check.

Pure: each takes the frames :mod:`perfbook.sources.postgres` returns (the SQL that made
them lives there, beside the function that runs it) plus thresholds, and returns
``(table, findings)``. Every check that ran emits at least one finding: the problems
it found, or one ``ok`` saying what was checked. Thresholds come from
``params.settings.database`` and ``params.thresholds``; where a number is a convention
(pghero, dexter, Sentry, the PostgreSQL docs) the docstring says so.

Subjects: the table (``"products"``) for missing indexes and bloat; the statement's
short text (``"SELECT … FROM categories WHERE id = $1"``) for query findings.

The checks live in submodules along the runbook's parts; every name is re-exported here,
so ``from perfbook.checks import database; database.slow_queries(...)`` works:

- :mod:`.shapes` — text helpers, statement shapes (pglast), pg_stat_statements health,
  slow queries (Issue 2 "Slow Queries")
- :mod:`.n_plus_one` — N+1 from pg_stat_statements and the fix (Issue 2 "N+1 Query Problem")
- :mod:`.privileges` — the privilege levels and what the next one adds
- :mod:`.plans` — sequential-scan tables, EXPLAIN candidates and index suggestions read
  from plans (Issue 2 "Missing Indexes")
- :mod:`.predicates` — which columns a statement filters, joins and sorts on (pglast)
- :mod:`.indexes` — index candidates from the statement text, hypopg targets and the
  ``db.missing_index`` findings (Issue 2 "Missing Indexes")
- :mod:`.tables` — large result sets, bloat and unused indexes (Issue 2 "Large Result
  Sets", Issue 1 §4)
- :mod:`.activity` — connections, long-running statements, lock waits, pool saturation
  (Issue 1 §4)
"""
from __future__ import annotations

from .activity import connection_states, connections, lock_waits, long_running, pool_saturation, promql_text
from .indexes import hypopg_targets, index_candidates, missing_indexes
from .n_plus_one import (
    INFRA_ROUTE,
    attribute_endpoint,
    endpoint_for_table,
    is_infra_route,
    n_plus_one_fix,
    n_plus_one_from_statements,
    request_count_query,
)
from .plans import (
    IndexSuggestion,
    explain_candidates,
    filter_columns,
    index_columns,
    index_key,
    index_suggestions,
    plans_text,
    seq_scan_tables,
)
from .predicates import RelationUse, statement_predicates
from .privileges import LEVELS, NEXT_LEVEL, privilege_level
from .shapes import (
    UTILITY,
    Shape,
    _norm_col as _norm_col,
    _queries as _queries,
    display_table,
    explain_recipe,
    query_shape,
    quote_ident,
    short_query,
    singular,
    slow_queries,
    statements_available,
    top_statements,
)
from .tables import bloat, large_results, pagination_fix, unused_indexes

__all__ = [
    "UTILITY",
    "quote_ident",
    "short_query",
    "singular",
    "display_table",
    "Shape",
    "query_shape",
    "statements_available",
    "top_statements",
    "slow_queries",
    "explain_recipe",
    "INFRA_ROUTE",
    "is_infra_route",
    "endpoint_for_table",
    "attribute_endpoint",
    "request_count_query",
    "n_plus_one_from_statements",
    "n_plus_one_fix",
    "LEVELS",
    "NEXT_LEVEL",
    "privilege_level",
    "seq_scan_tables",
    "explain_candidates",
    "filter_columns",
    "index_columns",
    "index_key",
    "IndexSuggestion",
    "index_suggestions",
    "plans_text",
    "RelationUse",
    "statement_predicates",
    "index_candidates",
    "hypopg_targets",
    "missing_indexes",
    "large_results",
    "pagination_fix",
    "bloat",
    "unused_indexes",
    "connection_states",
    "connections",
    "long_running",
    "lock_waits",
    "pool_saturation",
    "promql_text",
]
