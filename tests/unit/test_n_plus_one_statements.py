"""``n_plus_one_from_statements`` (N+1 from pg_stat_statements) is near-linear and gives
exactly what the quadratic version it replaced gave.

``_quadratic_n_plus_one`` below is that version (lib/perfbook/checks/database.py as of
commit c2e4aba, with the detail-page rule of that commit), kept here only as the oracle:
every lookup against every statement, O(n²): 6.4 s at 10,000 statements where the
indexed one takes 1.2 s (benchmarks/large_inputs.py, case ``pgss``).
"""
from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from perfbook.checks import database as D
from perfbook.checks.database import n_plus_one
from perfbook.findings import Finding
from perfbook.params import DEFAULT_ENDPOINTS, Endpoint, Params

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "postgres"
ENDPOINTS = [Endpoint(**e) for e in DEFAULT_ENDPOINTS]
SETTINGS = Params(service="x").settings.database


def settings(min_ratio: float | None = None, min_calls: int | None = None) -> Any:
    """The database settings with the oracle's bars (``min_ratio``, ``min_calls``) where given."""
    bars = {"n_plus_one_min_repeats": min_ratio, "n_plus_one_min_calls": min_calls}
    return SETTINGS.model_copy(update={k: v for k, v in bars.items() if v is not None})


# --------------------------------------------------------------------------- the oracle (old code)


def _is_parent(lookup_table: str, key: str, parent: D.Shape) -> bool:
    if key.lower() == "id":
        fks = {D._norm_col(D.singular(lookup_table) + "_id"), D._norm_col(lookup_table + "_id")}
        return any(D._norm_col(c) in fks for c in parent.target_columns)
    return any(D._norm_col(D.singular(t) + "_id") == D._norm_col(key) for t in parent.from_tables)


def _quadratic_n_plus_one(stmts: pd.DataFrame, endpoints: Sequence[Any] = (),
                          requests: pd.DataFrame | None = None, min_ratio: float = 5.0,
                          min_calls: int = 100) -> tuple[pd.DataFrame, list[Finding]]:
    q = D._queries(stmts)
    cols = ["query", "calls", "rows_per_call", "parent_query", "parent_calls", "lookups_per_parent_call",
            "endpoint", "endpoint_requests", "lookups_per_request"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    shapes = {r["queryid"]: D.query_shape(r["query"]) for r in q.to_dict("records")}
    reqs = None
    if requests is not None and not requests.empty:
        reqs = requests[requests["requests"] > 0].set_index("endpoint")["requests"].to_dict()
    rows, found = [], []
    records = q.to_dict("records")
    for r in records:
        sh = shapes[r["queryid"]]
        if sh.kind != "select" or not sh.key_columns or len(sh.from_tables) != 1:
            continue
        if r["calls"] < min_calls or (r["rows_per_call"] or 0) > 1.5:
            continue
        table, key = sh.from_tables[0], sh.key_columns[0]
        parent = None
        for p in records:
            ps = shapes[p["queryid"]]
            if p["queryid"] == r["queryid"] or ps.kind != "select" or (p["rows_per_call"] or 0) < min_ratio:
                continue
            k = r["calls"] / p["calls"]
            if not (min_ratio <= k <= (p["rows_per_call"] or 0) * 1.2):
                continue
            if _is_parent(table, key, ps) and (parent is None or p["calls"] > parent[0]["calls"]):
                parent = (p, ps, k)
        # The detail-page rule is not what this oracle checks (the parent search is); it is the same function.
        if n_plus_one.detail_pages(r, reqs, records, lambda qid: shapes[qid], has_parent=parent is not None):
            continue
        # Endpoint attribution is not what this oracle checks (issue 13 made it evidence-based:
        # D.attribute_endpoint, tested in test_database_checks.py); it is applied the same way here.
        pinfo = None
        if parent is not None:
            p, ps, k = parent
            ptable = ps.from_tables[0] if ps.from_tables else (ps.tables[0] if ps.tables else None)
            pinfo = (float(p["calls"]), ptable, float(p["rows_per_call"] or 0))
        attr = D.attribute_endpoint(float(r["calls"]), table, pinfo, reqs, endpoints, min_ratio=min_ratio)
        if parent is None and not attr["n_plus_one"]:
            continue
        endpoint, ep_requests = attr["endpoint"], attr["requests"]
        per_request = r["calls"] / ep_requests if ep_requests else None
        row = {"query": D.short_query(r["query"]), "calls": r["calls"], "rows_per_call": r["rows_per_call"],
               "parent_query": D.short_query(parent[0]["query"]) if parent else None,
               "parent_calls": parent[0]["calls"] if parent else None,
               "lookups_per_parent_call": parent[2] if parent else None,
               "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request}
        rows.append(row)
        per = parent[2] if parent else (per_request or attr.get("overall_per_request"))
        found.append(Finding(
            "db.n_plus_one", "critical" if per and per >= 50 else "warning",
            f"N+1: {int(r['calls'])} single-row lookups on {table}, ~{per:.0f} per "
            + ("list query" if parent else "request") + (f" of {endpoint}" if endpoint else ""),
            subject=D.short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "key_column": key,
                      "calls": r["calls"], "rows_per_call": r["rows_per_call"], "total_ms": r["total_ms"],
                      "parent_query": parent[0]["query"] if parent else None,
                      "parent_calls": parent[0]["calls"] if parent else None,
                      "lookups_per_parent_call": parent[2] if parent else None,
                      "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request,
                      "source": "pg_stat_statements"},
            recommendation=D.n_plus_one_fix(table, key, parent[1].from_tables[0] if parent and parent[1].from_tables
                                            else None)))
    if not found:
        found.append(Finding("db.n_plus_one", "ok",
                             "No key lookup is issued once per row of a list query (pg_stat_statements)",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "min_ratio": min_ratio, "min_calls": min_calls,
                                       "requests_known": reqs is not None}))
    return pd.DataFrame(rows, columns=cols), found


# --------------------------------------------------------------------------- generated input

TABLES = ["categories", "products", "users", "orders", "clicks", "order_items", "addresses", "boxes", "sessions",
          "companies", "people", "stock"]
NAN = float("nan")


def _fk(table: str, rng: random.Random) -> str:
    s = D.singular(table)
    return rng.choice([f"{s}_id", f"{table}_id", '"' + s.split("_")[0] + "".join(
        p.title() for p in s.split("_")[1:]) + 'Id"', f"{s}_ref"])


def _statement(i: int, rng: random.Random) -> tuple[str, float, float]:
    """(query, calls, rows_per_call): lookups, list queries that may be their parents,
    writes, transaction control, hidden and unparsable texts, with few distinct call counts
    (ties) and rows per call around every threshold (1.5, min_ratio, NaN)."""
    t, t2 = rng.choice(TABLES), rng.choice(TABLES)
    calls = float(rng.choice([1, 2, 5, 20, 35, 50, 86, 87, 100, 150, 257, 300, 1000, 1740, 5000, 20000])
                  * rng.choice([1, 1, 2, 3]))
    kind = rng.random()
    if kind < 0.35:  # lookups
        q = rng.choice([f"SELECT id, name FROM {t} WHERE id = $1",
                        f"SELECT * FROM {t} WHERE {_fk(t2, rng)} = $1",
                        f'SELECT "id", "name" FROM "{t}" WHERE "id" = $1 AND 1 = 1',
                        f"SELECT * FROM {t} WHERE id IN ($1)",
                        f"SELECT * FROM {t} WHERE id = $1 AND tenant_id = $2",
                        f"SELECT {t}.id FROM {t} JOIN {t2} ON {t2}.id = {t}.id WHERE {t}.id = $1"])
        rpc = rng.choice([0.0, 1.0, 1.0, 1.0, 1.2, 1.5, 1.6, 3.0, NAN])
    elif kind < 0.75:  # list queries
        q = rng.choice([f"SELECT p.id, p.{_fk(t2, rng)} FROM {t} p WHERE p.created_at > $1 LIMIT $2",
                        f"SELECT * FROM {t} WHERE created_at > $1",
                        f"SELECT x.id, x.{_fk(t2, rng)} AS ref FROM {t} x JOIN {t2} y ON y.id = x.id",
                        f"SELECT id, {_fk(t2, rng)} FROM {t} ORDER BY id DESC LIMIT 100",
                        f"SELECT count(*) AS n, {_fk(t2, rng)} FROM {t} GROUP BY 2",
                        f"WITH top AS (SELECT {_fk(t2, rng)} FROM {t}) SELECT * FROM top"])
        rpc = rng.choice([1.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 2450.0, NAN])
    elif kind < 0.85:
        q = rng.choice([f"INSERT INTO {t} (id) VALUES ($1)", f"UPDATE {t} SET n = n + 1 WHERE id = $1",
                        f"DELETE FROM {t} WHERE id = $1"])
        rpc = 1.0
    elif kind < 0.92:
        q, rpc = rng.choice(["BEGIN", "COMMIT", "SET search_path = public"]), 0.0
    else:
        q = rng.choice(["<insufficient privilege>", "SELEC id FROM broken WHERE", "SELECT 1; SELECT 2"])
        rpc = rng.choice([1.0, 20.0])
        calls = rng.choice([calls, 0.0])
    # Distinct texts, as pg_stat_statements keeps them: vary a constant of the SELECT list.
    if q.startswith("SELECT "):
        q = q.replace("SELECT ", f"SELECT {i} AS q{i}, ", 1) if i % 3 else q + f" /* {i} */"
    return q, calls, rpc


def generated(n: int = 2000, seed: int = 1) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q, calls, rpc = _statement(i, rng)
        qid = rows[rng.randrange(len(rows))]["queryid"] if rows and rng.random() < 0.02 else 7_000_000 + i
        total = calls * rng.choice([0.1, 1.0, 12.5])
        rows.append({"queryid": qid, "username": "app", "query": q, "calls": calls, "total_ms": total,
                     "mean_ms": total / calls if calls else 0.0, "rows": calls * rpc if rpc == rpc else NAN,
                     "rows_per_call": rpc})
    return pd.DataFrame(rows)


def requests_frame(scale: float = 1.0) -> pd.DataFrame:
    recs = [("GET /api/products/:id", 275.5), ("GET /api/products", 257.6), ("GET /api/analytics/summary", 45.0),
            ("GET /health", 34.7), ("POST /api/content/generate", 22.5), ("GET /api/orders", 1000.0),
            ("GET /api/idle", 0.0)]
    return pd.DataFrame([{"endpoint": e, "requests": n * scale} for e, n in recs])


#: What the oracle and the indexed version must agree on: which lookups, their parents, the
#: numbers, and the endpoint (the wording of titles and of the ok finding is the new code's own).
_TABLE_COLS = ["query", "calls", "rows_per_call", "parent_query", "parent_calls", "lookups_per_parent_call",
               "endpoint_requests", "lookups_per_request"]
_EVIDENCE = ["queryid", "query", "table", "key_column", "calls", "rows_per_call", "total_ms", "parent_query",
             "parent_calls", "lookups_per_parent_call", "endpoint", "endpoint_requests", "lookups_per_request"]


def _canon(result: tuple[pd.DataFrame, list[Finding]]) -> tuple[pd.DataFrame, list[str]]:
    table, found = result
    return (table.reindex(columns=_TABLE_COLS),
            [repr((f.code, f.severity, f.subject, f.recommendation, {k: f.evidence.get(k) for k in _EVIDENCE}))
             if f.severity != "ok" else repr((f.code, f.severity)) for f in found])  # repr: NaN == NaN


def _same(new, old) -> None:
    (t_new, f_new), (t_old, f_old) = _canon(new), _canon(old)
    pd.testing.assert_frame_equal(t_new, t_old)
    assert f_new == f_old


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def stmts():
    return generated(2000)


@pytest.mark.parametrize("requests,kw", [
    (None, {}),
    ("requests", {}),
    ("requests", {"min_ratio": 2.0, "min_calls": 50}),
    ("scaled", {"min_ratio": 10.0}),
    (None, {"min_ratio": 1.0, "min_calls": 1}),
], ids=["no-prometheus", "with-requests", "low-thresholds", "scaled-requests", "min-ratio-1"])
def test_same_as_quadratic_version_on_2k_generated_statements(stmts, requests, kw):
    reqs = {"requests": requests_frame(), "scaled": requests_frame(7.3), None: None}[requests]
    new = D.n_plus_one_from_statements(stmts, settings(**kw), ENDPOINTS, reqs)
    old = _quadratic_n_plus_one(stmts, ENDPOINTS, reqs, **kw)
    _same(new, old)
    table, found = new
    if kw.get("min_ratio") != 10.0:  # the input exercises what it is meant to
        assert len(found) > 20 and table["parent_query"].notna().any()
    if requests == "requests" and not kw:
        assert table["parent_query"].isna().any()  # lookups per request with no parent


def test_generated_input_has_ties_duplicates_and_detail_pages(stmts):
    """The generator really makes the cases where a careless index would differ."""
    assert stmts["queryid"].duplicated().any()
    assert stmts["rows_per_call"].isna().any()
    q = D._queries(stmts)
    assert q["calls"].duplicated().sum() > 1000
    reqs = requests_frame().set_index("endpoint")["requests"]
    detail = [c for c in q["calls"] if any(0.5 <= c / n <= 2.0 for e, n in reqs.items()
                                           if n > 0 and n_plus_one._is_item_route(e))]
    assert detail


@pytest.mark.parametrize("name", ["incident", "healthy"])
def test_same_as_quadratic_version_on_recorded_statements(name):
    d = json.loads((FIX / f"{name}.json").read_text())
    stmts = pd.DataFrame(d["statements"]["records"], columns=d["statements"]["columns"])
    reqs = pd.DataFrame(d["requests"]["records"], columns=d["requests"]["columns"])
    for r in (None, reqs):
        _same(D.n_plus_one_from_statements(stmts, SETTINGS, ENDPOINTS, r), _quadratic_n_plus_one(stmts, ENDPOINTS, r))


def test_empty_and_all_utility_inputs():
    empty = generated(0)
    assert D.n_plus_one_from_statements(empty.reindex(columns=["queryid", "query", "calls", "rows_per_call"]),
                                        SETTINGS)[1] == []
    only_tx = pd.DataFrame({"queryid": [1, 2], "query": ["BEGIN", "COMMIT"], "calls": [5.0, 5.0],
                            "total_ms": [1.0, 1.0], "rows_per_call": [0.0, 0.0]})
    _same(D.n_plus_one_from_statements(only_tx, SETTINGS), _quadratic_n_plus_one(only_tx))


def test_parent_ties_go_to_the_first_listed_statement():
    rows = [("SELECT id, name FROM categories WHERE id = $1", 2000.0, 1.0),
            ("SELECT id, category_id FROM products WHERE a = $1", 100.0, 20.0),
            ("SELECT id, category_id FROM listings WHERE b = $1", 100.0, 20.0),
            ("SELECT id, category_id FROM offers WHERE c = $1", 50.0, 40.0)]
    df = pd.DataFrame([{"queryid": i, "query": q, "calls": c, "total_ms": c, "rows_per_call": rpc}
                       for i, (q, c, rpc) in enumerate(rows)])
    table, [f] = D.n_plus_one_from_statements(df, SETTINGS, ENDPOINTS)
    assert "FROM products" in f.evidence["parent_query"] and f.evidence["lookups_per_parent_call"] == 20.0
    _same((table, [f]), _quadratic_n_plus_one(df, ENDPOINTS))


def test_a_list_endpoint_served_about_once_per_lookup_is_no_detail_page():
    """Issue 15 (--since-run): over a short window the list endpoint GET /api/products was asked about once
    per lookup (its cache mostly hit, or its requests got 429), yet each list query ran 20 lookups: N+1, not
    a detail page. Only an item route (its last segment a parameter) is a detail page."""
    rows = [("SELECT id, name, slug FROM categories WHERE id = $1", 1500.0, 1.0),
            ("SELECT p.id, p.category_id FROM products p WHERE p.category_id = $1 ORDER BY p.id", 76.0, 2429.0)]
    df = pd.DataFrame([{"queryid": i, "query": q, "calls": c, "total_ms": c, "rows_per_call": rpc}
                       for i, (q, c, rpc) in enumerate(rows)])
    reqs = pd.DataFrame([{"endpoint": "GET /api/products", "requests": 1552.0},
                         {"endpoint": "GET /api/products/:id", "requests": 5000.0}])
    _, found = D.n_plus_one_from_statements(df, SETTINGS, ENDPOINTS, reqs)
    assert [f.severity for f in found] in (["warning"], ["critical"]), found
    assert found[0].evidence["parent_calls"] == 76.0
    # The item route asked about once per lookup, and a list query that could be the parent: the detail
    # page explains the lookups only when its own by-id read runs about as often (it reads the product, then
    # its category); here the product reads are few (cached), so it is the list's N+1.
    reqs = pd.DataFrame([{"endpoint": "GET /api/products/:id", "requests": 768.0}])
    few = pd.concat([df, pd.DataFrame([{"queryid": 9, "query": "SELECT stock, price FROM products WHERE id = $1",
                                        "calls": 55.0, "total_ms": 1.0, "rows_per_call": 1.0}])])
    assert [f.severity for f in D.n_plus_one_from_statements(few, SETTINGS, ENDPOINTS, reqs)[1]] != ["ok"]
    alongside = few.assign(calls=[1500.0, 76.0, 1400.0])
    _, found = D.n_plus_one_from_statements(alongside, SETTINGS, ENDPOINTS, reqs)
    assert [f.severity for f in found] == ["ok"] and "detail page" in found[0].title + str(found[0].evidence), found
    # The lookup is the item page's own read (products by id, about once per GET /api/products/:id), though a
    # list returning product_id (a top-10 report) could pass for its parent: a detail page (fc9, read_all run).
    own = pd.DataFrame([{"queryid": 1, "query": "SELECT stock, price FROM products WHERE id = $1", "calls": 155.0,
                         "total_ms": 1.0, "rows_per_call": 1.0},
                        {"queryid": 2, "query": "SELECT product_id, count(*) AS clicks FROM clicks GROUP BY product_id "
                                                "ORDER BY clicks DESC LIMIT $1", "calls": 31.0, "total_ms": 1.0,
                         "rows_per_call": 10.0}])
    reqs_own = pd.DataFrame([{"endpoint": "GET /api/products/:id", "requests": 150.0}])
    assert [f.severity for f in D.n_plus_one_from_statements(own, SETTINGS, ENDPOINTS, reqs_own)[1]] == ["ok"]
    # With no list query to be the parent, the request counts alone make it a detail page.
    _, found = D.n_plus_one_from_statements(df.iloc[:1], SETTINGS, ENDPOINTS, reqs)
    assert [f.severity for f in found] == ["ok"], found


def test_each_statement_is_parsed_at_most_once_on_10k_statements(monkeypatch):
    """10,000 statements: the quadratic version parsed candidate statements again for every
    lookup (6.4 s). Parsing is most of the cost, so the bound is on parses, not on seconds (a
    timed assertion fails on a busy machine; benchmarks/large_inputs.py measures the time)."""
    big = generated(10_000, seed=2)
    calls = []
    real = D.query_shape
    # patched where n_plus_one_from_statements looks it up (the package only re-exports it)
    monkeypatch.setattr(n_plus_one, "query_shape", lambda q: calls.append(q) or real(q))
    D.n_plus_one_from_statements(big, SETTINGS, ENDPOINTS, requests_frame())
    assert calls and len(calls) <= len(big)
