"""N+1 queries from pg_stat_statements (runbook Issue 2 "N+1 Query Problem"; part of
:mod:`perfbook.checks.database`).

A lookup statement called about once per row of a parent statement, attributed to the
endpoint that runs it, and the fix (a join or ``IN`` / eager load) in
:func:`n_plus_one_fix`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ...findings import Finding
from ...params import Database
from .shapes import Shape, _norm_col, _qualified, _queries, query_shape, quote_ident, short_query, singular

# --------------------------------------------------------------------------- N+1 (pg_stat_statements)


#: Infrastructure routes — health checks, readiness and liveness probes, metrics scrapes.
#: They are requested often and never the "parent" of an N+1 without direct evidence.
INFRA_ROUTE = re.compile(r"^(?:[A-Za-z]+\s+)?/*(?:_?health\w*|ready\w*|live|livez|liveness|metrics|ping)(?:[/?#.]|$)",
                         re.I)


def is_infra_route(endpoint: str) -> bool:
    """``GET /health``, ``/health/services``, ``/healthz``, ``/ready``, ``/readyz``,
    ``/livez``, ``/metrics``, ``/ping``: not application endpoints."""
    return bool(INFRA_ROUTE.match(str(endpoint or "").strip()))


def _segments(route: str) -> list[str]:
    return [s.lower() for s in str(route).split("?", 1)[0].strip("/").split("/") if s]


def _is_param(seg: str) -> bool:
    return seg.startswith((":", "{", "<", "[")) or seg == "*"


def _names_table(route: str, table: str | None) -> bool:
    """The route's resource — its last segment that is not a parameter — names ``table``
    (``/api/products`` and ``/api/products/:id`` name products; ``/api/products/:id/clicks``
    names clicks)."""
    if not table:
        return False
    static = [s for s in _segments(route) if not _is_param(s)]
    return bool(static) and static[-1] in {table.lower(), singular(table)}


def _is_item_route(route: str) -> bool:
    segs = _segments(route)
    return bool(segs) and _is_param(segs[-1])


def endpoint_for_table(table: str | None, endpoints: Sequence[Any], many_rows: bool = True) -> str | None:
    """The params' endpoint whose route names ``table`` (``products`` → ``GET
    /api/products``); list routes (no trailing parameter) first when ``many_rows``.
    Health and metrics routes (:func:`is_infra_route`) are never named."""
    if not table:
        return None
    names = {table.lower(), singular(table)}
    hits = []
    for e in endpoints:
        if is_infra_route(e.name):
            continue
        segs = _segments(e.route)
        if any(s in names for s in segs):
            is_item = _is_item_route(e.route)
            hits.append((not _names_table(e.route, table), is_item if many_rows else not is_item,
                         e.method != "GET", len(segs), e.name))
    return sorted(hits)[0][-1] if hits else None


def attribute_endpoint(lookup_calls: float, lookup_table: str, parent: tuple[float, str | None, float] | None,
                       requests: dict[str, float] | None, endpoints: Sequence[Any] = (), *,
                       min_ratio: float) -> dict[str, Any]:
    """Which endpoint issues an N+1, from evidence only.

    ``parent`` is the list query's (calls, table, rows per call), or None; ``requests`` the
    requests per endpoint over the window (Prometheus), or None.

    - With request counts and a parent: the candidates are the application endpoints
      (never a health or metrics route, :func:`is_infra_route`) with at least as many
      requests as the list query has calls (÷ 1.2: a list query runs at most about once
      per request of its endpoint). Each candidate scores its evidence: the list query runs
      about once per request (0.5-1.2 calls per request), its route's resource names the
      list query's table, and it is a list route (not ``/x/:id``) for a list query. The
      best score wins only when no other candidate has it; otherwise the attribution is
      *ambiguous* and the candidates are listed, best first.
    - With request counts and no parent: an N+1 only when the lookups are ≥ ``min_ratio``
      per request of all application requests together (some endpoint then issues that
      many per request); the candidates are the endpoints with ≥ ``min_ratio`` lookups per
      request of their own; one is named only when it is the only one.
    - Without request counts: the endpoint whose route names the list query's table (else
      the lookup's), said to rest on route names only.

    Returns ``{"endpoint", "requests", "ambiguous", "basis", "candidates": [...]}``;
    ``endpoint`` is None when ambiguous or unknown; ``n_plus_one`` is False when the
    request counts do not show an N+1 at all (no parent, too few lookups per request).
    """
    out: dict[str, Any] = {"endpoint": None, "requests": None, "ambiguous": False, "basis": "",
                           "candidates": [], "n_plus_one": True}
    ptable = parent[1] if parent else None
    if not requests:
        name = endpoint_for_table(ptable, endpoints, many_rows=True) if ptable else None
        name = name or endpoint_for_table(lookup_table, endpoints)
        out.update(endpoint=name, candidates=[{"endpoint": name}] if name else [],
                   basis=(f"the route naming {ptable or lookup_table} (no request counts to confirm it)" if name
                          else "no request counts, and no route names the tables"))
        if not parent:
            out.update(n_plus_one=False, basis="no list query found, and no request counts")
        return out
    app = {e: n for e, n in requests.items() if n > 0 and not is_infra_route(e)}
    infra = sorted(e for e in requests if is_infra_route(e))
    if parent:
        pcalls = float(parent[0])
        fits = {e: n for e, n in app.items() if pcalls <= n * 1.2}
        scored = []
        for e, n in fits.items():
            route = e.split(" ", 1)[-1]
            once = 0.5 <= pcalls / n <= 1.2
            named = _names_table(route, ptable)
            listed = not _is_item_route(route) and (parent[2] or 0) > 1.5
            why = [w for ok, w in ((once, f"the list query runs {pcalls / n:.2f}× per request"),
                                   (named, f"the route names {ptable}"),
                                   (listed, "a list route for a list query")) if ok]
            scored.append((1.0 * once + 1.0 * named + 0.5 * listed, n, e, why))
        scored.sort(key=lambda x: (-x[0], -x[1]))
        out["candidates"] = [{"endpoint": e, "requests": n, "lookups_per_request": lookup_calls / n,
                              "evidence": why} for _, n, e, why in scored]
        if not scored:
            out.update(ambiguous=True, basis=f"no application endpoint had as many requests as the list query had "
                                             f"calls ({pcalls:,.0f})" + (f"; {', '.join(infra)} not counted "
                                                                         f"(health/metrics routes)" if infra else ""))
        elif len(scored) == 1 or scored[0][0] > scored[1][0]:
            best = scored[0]
            out.update(endpoint=best[2], requests=best[1],
                       basis="; ".join(best[3]) if best[3] else
                       "the only application endpoint with as many requests as the list query has calls")
        else:
            tied = [c for c in scored if c[0] == scored[0][0]]
            out.update(ambiguous=True, basis=f"{len(tied)} endpoints fit the request counts equally well")
        return out
    total = sum(app.values())
    out["overall_per_request"] = lookup_calls / total if total else None
    if not total or lookup_calls / total < min_ratio:
        out.update(n_plus_one=False, basis="no list query found, and fewer than "
                                            f"{min_ratio:g} lookups per application request overall")
        return out
    cands = sorted(((n, e) for e, n in app.items() if lookup_calls / n >= min_ratio), reverse=True)
    out["candidates"] = [{"endpoint": e, "requests": n, "lookups_per_request": lookup_calls / n,
                          "evidence": [f"{lookup_calls / n:.0f} lookups per request"]} for n, e in cands]
    if len(cands) == 1:
        out.update(endpoint=cands[0][1], requests=cands[0][0],
                   basis=f"the only application endpoint with ≥ {min_ratio:g} lookups per request")
    else:
        out.update(ambiguous=True, basis=f"{lookup_calls / total:.1f} lookups per application request overall, "
                                         f"but no list query ties them to one endpoint")
    return out


def request_count_query(params: Any, window_seconds: float) -> str:
    """The PromQL for requests per endpoint over the window (for reading, not running)."""
    m = params.metrics
    return (f"sum by ({m.method_label}, {m.route_label}) "
            f"(increase({m.http_requests}{{__SEL__}}[{max(60, int(window_seconds))}s]))")


def n_plus_one_from_statements(stmts: pd.DataFrame, settings: Database, endpoints: Sequence[Any] = (),
                               requests: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """Key lookups issued once per row of a list: the N+1 pattern, from pg_stat_statements.

    A *lookup* is a single-table SELECT whose WHERE is only ``col = $n`` (Prisma's
    ``findUnique``), about one row per call, called ≥ ``min_calls``
    (``settings.n_plus_one_min_calls``) times. Its *parent* is
    a statement returning several rows per call that carries the lookup's key (selects
    ``category_id`` when the lookup is ``categories WHERE id = $1``), with lookups per
    parent call between ``min_ratio`` (``settings.n_plus_one_min_repeats``; Sentry's N+1
    detector: 5 repeats) and the parent's
    rows per call; of several, the one called most (the first listed on a tie). A lookup
    called about once per request (0.5–2×) of some application endpoint is a detail page
    (``GET /api/products/{id}`` reading its product's category) and never counts. With
    ``requests`` and no parent, a lookup counts when it is called ≥ ``min_ratio`` times per
    application request overall. The endpoint comes from evidence (:func:`attribute_endpoint`):
    request counts per endpoint over the window (Prometheus), the route naming the list's
    table; never a health or metrics route; when several endpoints fit equally the finding
    says so and lists them.

    Near-linear in the number of statements: only statements that can be a lookup or a
    parent are parsed (parsing is most of the time), and parents are indexed once by the
    key they carry, so a lookup looks only at the list queries that carry its key,
    most-called first (10,000 statements: 1.2 s, was 6.4 s; benchmarks/large_inputs.py).
    """
    min_ratio, min_calls = settings.n_plus_one_min_repeats, settings.n_plus_one_min_calls
    q = _queries(stmts)
    cols = ["query", "calls", "rows_per_call", "parent_query", "parent_calls", "lookups_per_parent_call",
            "endpoint", "endpoint_requests", "lookups_per_request"]
    if q.empty:
        return pd.DataFrame(columns=cols), []
    reqs = None
    if requests is not None and not requests.empty:
        reqs = requests[requests["requests"] > 0].set_index("endpoint")["requests"].to_dict()
    rows, found, near = [], [], []
    records = q.to_dict("records")
    shape = _shapes_by_queryid(records)
    parents = None  # indexed on the first lookup: with none, list queries need no parsing
    for r in records:
        if r["calls"] < min_calls or (r["rows_per_call"] or 0) > 1.5:
            continue
        sh = shape(r["queryid"])
        if sh.kind != "select" or not sh.key_columns or len(sh.from_tables) != 1:
            continue
        table, key = sh.from_tables[0], sh.key_columns[0]
        if parents is None:
            parents = _ParentIndex(records, shape, min_ratio)
        parent = parents.best(r, table, key, min_ratio)
        detail = detail_pages(r, reqs, records, shape, has_parent=parent is not None)
        if detail:
            # About one lookup per request of an item route, and its own read beside it when a list
            # query could pass for the parent: a detail page (GET /x/:id), not N+1.
            near.append({"query": short_query(r["query"]), "calls": r["calls"],
                         "why_not": f"about one per request of {detail[0]} (a detail page)"})
            continue
        pinfo = None
        if parent is not None:
            p, ps, _k = parent
            ptable = ps.from_tables[0] if ps.from_tables else (ps.tables[0] if ps.tables else None)
            pinfo = (float(p["calls"]), ptable, float(p["rows_per_call"] or 0))
        attr = attribute_endpoint(float(r["calls"]), table, pinfo, reqs, endpoints, min_ratio=min_ratio)
        if parent is None and not attr["n_plus_one"]:
            near.append({"query": short_query(r["query"]), "calls": r["calls"], "why_not": attr["basis"]})
            continue
        endpoint, ep_requests = attr["endpoint"], attr["requests"]
        per_request = r["calls"] / ep_requests if ep_requests else None
        names = [c["endpoint"] for c in attr["candidates"]]
        row = {"query": short_query(r["query"]), "calls": r["calls"], "rows_per_call": r["rows_per_call"],
               "parent_query": short_query(parent[0]["query"]) if parent else None,
               "parent_calls": parent[0]["calls"] if parent else None,
               "lookups_per_parent_call": parent[2] if parent else None,
               "endpoint": endpoint if endpoint else ("ambiguous: " + ", ".join(names[:4]) if names else None),
               "endpoint_requests": ep_requests, "lookups_per_request": per_request}
        rows.append(row)
        per = parent[2] if parent else (per_request or attr.get("overall_per_request"))
        if endpoint:
            where = f" of {endpoint}"
        elif names:
            where = (f"; the endpoint is ambiguous ({attr['basis']}): "
                     + ", ".join(names[:4]) + (f" or {len(names) - 4} more" if len(names) > 4 else ""))
        else:
            where = f"; the endpoint is unknown ({attr['basis']})"
        found.append(Finding(
            "db.n_plus_one", "critical" if per and per >= settings.n_plus_one_critical_repeats else "warning",
            f"N+1: {int(r['calls'])} single-row lookups on {table}, ~{per:.0f} per "
            + ("list query" if parent else "application request") + where,
            subject=short_query(r["query"]),
            evidence={"queryid": r["queryid"], "query": r["query"], "table": table, "key_column": key,
                      "calls": r["calls"], "rows_per_call": r["rows_per_call"], "total_ms": r["total_ms"],
                      "parent_query": parent[0]["query"] if parent else None,
                      "parent_calls": parent[0]["calls"] if parent else None,
                      "lookups_per_parent_call": parent[2] if parent else None,
                      "endpoint": endpoint, "endpoint_requests": ep_requests, "lookups_per_request": per_request,
                      "endpoint_ambiguous": bool(attr["ambiguous"]), "endpoint_basis": attr["basis"],
                      "endpoint_candidates": attr["candidates"][:8],
                      "source": "pg_stat_statements"},
            recommendation=n_plus_one_fix(table, key, parent[1].from_tables[0] if parent and parent[1].from_tables
                                          else None)))
    if not found:
        near.sort(key=lambda x: -x["calls"])
        found.append(Finding("db.n_plus_one", "ok",
                             f"No single-row lookup called ≥ {min_calls} times is issued ≥ {min_ratio:g}× per call of "
                             f"a list query" + (" or per application request" if reqs else "")
                             + f" ({len(q)} statements checked"
                             + (f"; {len(near)} frequent lookup(s) looked at, none is" if near else "") + ")",
                             subject="pg_stat_statements",
                             evidence={"statements": len(q), "min_ratio": min_ratio, "min_calls": min_calls,
                                       "requests_known": reqs is not None, "lookups_looked_at": near[:5]}))
    return pd.DataFrame(rows, columns=cols), found


def _shapes_by_queryid(records: list[dict]) -> Any:
    """``shape(queryid)``: the :func:`query_shape` of that queryid's statement, parsed on
    first use. Where pg_stat_statements lists one queryid more than once (one row per
    user and database), the last row's text is the one that counts."""
    last = {r["queryid"]: r["query"] for r in records}
    cache: dict[Any, Shape] = {}

    def shape(queryid: Any) -> Shape:
        sh = cache.get(queryid)
        if sh is None:
            sh = cache[queryid] = query_shape(last[queryid])
        return sh
    return shape


def detail_pages(lookup: dict, reqs: dict[str, float] | None, records: list[dict], shape: Any, *,
                 has_parent: bool) -> list[str]:
    """The detail pages that explain a lookup instead of an N+1: item routes (``GET
    /api/products/:id``: the last segment a parameter; never a list route, whose requests count
    cache hits and 429s too) requested about once per lookup (½–2×). When a list query fits
    as the lookup's parent as well, request counts alone cannot tell the two apart (a mix where
    the item route is asked about as often happens by chance); the item route then explains the
    lookup only when the database shows its own read: a by-id SELECT of the table the route
    names, called about as often as the lookup (the detail page reads its product, then the
    product's category)."""
    n = lookup["calls"]
    items = [e for e, c in (reqs or {}).items() if 0.5 <= n / c <= 2.0 and not is_infra_route(e)
             and _is_item_route(e)]
    if not items or not has_parent:
        return items

    def item_read(sh: Shape, endpoint: str) -> bool:
        return (sh.kind == "select" and len(sh.from_tables) == 1 and _names_table(endpoint, sh.from_tables[0])
                and any(_norm_col(k) == "id" for k in sh.key_columns))

    def read_alongside(endpoint: str) -> bool:
        if item_read(shape(lookup["queryid"]), endpoint):
            return True  # the lookup is the item page's own read (GET /api/products/:id reading products)
        for s in records:
            if s["queryid"] == lookup["queryid"] or (s["rows_per_call"] or 0) > 1.5 or not s["calls"]:
                continue
            if 0.5 <= n / s["calls"] <= 2.0 and item_read(shape(s["queryid"]), endpoint):
                return True
        return False

    return [e for e in items if read_alongside(e)]


class _ParentIndex:
    """The statements that could be a lookup's parent (SELECTs returning ≥ ``min_ratio``
    rows per call), indexed once by the key they carry. A parent of lookups on
    ``table.id`` returns the foreign key (selects ``category_id`` / ``categoryId`` for
    ``categories.id``); a parent of lookups on ``table.key`` for another key reads the
    table that key points to (``products`` for ``clicks.product_id``). Column names
    compare through :func:`_norm_col` (quotes, underscores and case ignored)."""

    def __init__(self, records: list[dict], shape: Any, min_ratio: float) -> None:
        self.parents: list[tuple[dict, Shape]] = []
        self.by_target: dict[str, list[int]] = {}
        self.by_from: dict[str, list[int]] = {}
        self._cands: dict[tuple[str, str], tuple[list[tuple[dict, Shape]], list[float]]] = {}
        for p in records:
            if (p["rows_per_call"] or 0) < min_ratio:
                continue
            ps = shape(p["queryid"])
            if ps.kind != "select":
                continue
            i = len(self.parents)
            self.parents.append((p, ps))
            for c in {_norm_col(c) for c in ps.target_columns}:
                self.by_target.setdefault(c, []).append(i)
            for c in {_norm_col(singular(t) + "_id") for t in ps.from_tables}:
                self.by_from.setdefault(c, []).append(i)

    def candidates(self, table: str, key: str) -> tuple[list[tuple[dict, Shape]], list[float]]:
        """The parents that carry ``table.key``, most calls first, in statement order on a
        tie; and their calls."""
        got = self._cands.get((table, key))  # many lookups share a table and key: sort once
        if got is None:
            if key.lower() == "id":
                fks = {_norm_col(singular(table) + "_id"), _norm_col(table + "_id")}
                idx = set().union(*(self.by_target.get(fk, ()) for fk in fks))
            else:
                idx = set(self.by_from.get(_norm_col(key), ()))
            order = sorted(idx, key=lambda i: (-self.parents[i][0]["calls"], i))
            got = self._cands[(table, key)] = ([self.parents[i] for i in order],
                                                [self.parents[i][0]["calls"] for i in order])
        return got

    def best(self, r: dict, table: str, key: str, min_ratio: float) -> tuple[dict, Shape, float] | None:
        """``(parent, its shape, lookups per parent call)`` for the lookup ``r``: the parent
        with the most calls such that ``min_ratio ≤ r.calls / parent.calls ≤ parent's rows
        per call × 1.2``, the first in statement order on a tie; ``None`` when none fits."""
        cands, calls = self.candidates(table, key)
        n = r["calls"]
        # calls descend, so n / calls ascends: skip (binary search) the parents called too
        # often for min_ratio lookups per call, then take the first whose rows per call fit.
        lo, hi = 0, len(calls)
        while lo < hi:
            mid = (lo + hi) // 2
            if n / calls[mid] >= min_ratio:
                hi = mid
            else:
                lo = mid + 1
        for i in range(lo, len(cands)):
            p, ps = cands[i]
            if p["queryid"] == r["queryid"]:
                continue
            k = n / p["calls"]
            if min_ratio <= k <= (p["rows_per_call"] or 0) * 1.2:
                return p, ps, k
        return None


def _model(table: str) -> str:
    s = singular(table)
    parts = s.split("_")
    return parts[0] + "".join(p.title() for p in parts[1:])


def n_plus_one_fix(table: str, key: str, parent_table: str | None) -> str:
    """The runbook's fix, with the tables' names: Prisma ``include``, or one batched query."""
    child = _model(table)
    parent = _model(parent_table) if parent_table else "item"
    fk = f"{child}Id" if key.lower() == "id" else key
    return (f"// Bad: one {table} query per {parent} row (N+1)\n"
            f"for (const {parent} of {parent}s) {{\n"
            f"  const {child} = await prisma.{child}.findUnique({{ where: {{ {key}: {parent}.{fk} }} }});\n"
            f"}}\n\n"
            f"// Good: one query with a join\n"
            f"const {parent}s = await prisma.{parent}.findMany({{\n"
            f"  include: {{ {child}: true }},\n"
            f"}});\n\n"
            f"-- or in SQL: fetch all of a page's {table} in one statement\n"
            f"SELECT * FROM {_qualified(table)} WHERE {quote_ident(key)} = ANY($1);  -- $1 = array of keys")
