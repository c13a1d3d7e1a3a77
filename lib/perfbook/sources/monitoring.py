"""I/O of the monitoring section: the Prometheus client, the rule evaluations and the
server's own rules/alerts, the key-metric panels, and the checklist's evidence (a few
PromQL queries and one HTTP request per probed endpoint).

The PromQL is rendered by :mod:`perfbook.promql` and the rules' states computed by
:mod:`perfbook.rules` (both pure, shared); the analysis these feed lives in
:mod:`perfbook.checks.alerts` and :mod:`perfbook.checks.checklist` (pure); the figures in
:mod:`perfbook.plots.monitoring`.
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..promql import checklist_queries, evaluation_ticks, lookback_start, render_expr
from ..rules import RuleEvaluation, evaluate, server_spans
from ..web import RATELIMIT_HEADERS

# --- alert rules: range queries on the evaluation grid, the server's view

def prometheus_client(params: Any, secret: Any = None):
    """A :class:`~perfbook.sources.prometheus.PromClient` for ``targets.prometheus``
    (``secret(env_name)`` reads the bearer token, e.g. a notebook context's
    ``ctx.secret``). Raises :class:`~perfbook.sources.SourceUnreachable` when the params
    name no Prometheus: alert rules need time series."""
    from perfbook.sources import SourceUnreachable
    from perfbook.sources.prometheus import PromClient

    p = params.targets.prometheus
    if p is None:
        raise SourceUnreachable("prometheus", "(none configured)",
                                "targets.prometheus is not set; alert rules and the key-metric history need a "
                                "Prometheus (or compatible) server")
    token = secret(p.bearer_token_env) if (secret and p.bearer_token_env) else None
    return PromClient(p.url, bearer_token=token, timeout=p.timeout, selector=p.selector, token_env=p.bearer_token_env,
                      max_response_bytes=params.settings.limits.max_response_bytes)


def fetch_evaluations(query_range: Any, params: Any, start: Any, end: Any, prime: bool = True
                      ) -> list[RuleEvaluation]:
    """Evaluate every rule of the params over ``[start, end]``: one range query per rule
    (``query_range(expr, first_tick, last_tick, interval)``, a ``PromClient``'s) on the
    evaluation-interval grid, from ``for`` + one interval before ``start``. A query the
    server refuses gives an evaluation with ``error`` set; an unreachable server raises."""
    from perfbook.sources import SourceError

    interval = params.settings.monitoring.evaluation_interval
    out = []
    for rule in params.settings.monitoring.alerts:
        expr = render_expr(rule.expr, params)
        first = lookback_start(start, rule.for_, interval) if prime else start
        ticks = evaluation_ticks(first, end, interval)
        try:
            frame = query_range(expr, ticks[0], ticks[-1], interval) if len(ticks) else pd.DataFrame()
            out.append(evaluate(rule, frame, start, end, interval, expr=expr, prime=prime))
        except SourceError as exc:
            empty = pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float)})
            ev = evaluate(rule, empty, start, end, interval, expr=expr, prime=prime)
            ev.error = exc.reason
            out.append(ev)
    return out


@dataclass
class ServerView:
    """What the server says: its rules and active alerts now, and its ALERTS over the window."""

    rules: pd.DataFrame | None = None
    alerts: pd.DataFrame | None = None
    spans: pd.DataFrame | None = None
    problem: str = ""              # why some of it is missing (no rules API, ...)

    def describe(self) -> str:
        if self.rules is None:
            return f"The server's rules API is not available: {self.problem}"
        text = f"The server has {len(self.configured or ())} alerting rule(s)"
        return text + (f"; its ALERTS series could not be read: {self.problem}." if self.problem else ".")

    @property
    def configured(self) -> set[str] | None:
        if self.rules is None:
            return None
        return set(self.rules.loc[self.rules["type"] == "alerting", "name"]) if not self.rules.empty else set()


def alerts_query(params: Any) -> str:
    """The server's ALERTS series for the params' rule names."""
    names = "|".join(re.escape(r.name) for r in params.settings.monitoring.alerts)
    return f'ALERTS{{alertname=~"{names}"}}'


def fetch_server(prom: Any, params: Any, start: Any, end: Any) -> ServerView:
    """``/api/v1/rules``, ``/api/v1/alerts`` and ``ALERTS`` over the window (at the
    evaluation interval, on perfbook's tick grid). A server without a rules API
    (VictoriaMetrics without vmalert) gives a view with ``problem`` set; an unreachable
    server raises."""
    from perfbook.sources import SourceError

    view = ServerView()
    try:
        view.rules = prom.rules()
        view.alerts = prom.alerts()
    except SourceError as exc:
        view.problem = exc.reason
        return view
    interval = params.settings.monitoring.evaluation_interval
    ticks = evaluation_ticks(start, end, interval)
    if len(ticks):
        try:
            series = prom.query_range(alerts_query(params), ticks[0], ticks[-1], interval)
            view.spans = server_spans(series, ticks)
        except SourceError as exc:
            view.problem = exc.reason
    return view


# --- key-metric panels

def fetch_panels(query_range: Callable[..., pd.DataFrame], queries: dict[tuple[str, str], str],
                 start: Any, end: Any, step: int) -> tuple[dict[tuple[str, str], pd.DataFrame], dict[tuple[str, str], str]]:
    """Run each query with ``query_range(expr, start, end, step)`` (a ``PromClient``'s).

    Returns the frames and, apart, the queries the server refused (its message): one bad
    panel leaves the others drawn. A server that does not answer at all raises
    :class:`~perfbook.sources.SourceUnreachable` at the first query, as usual.
    """
    from perfbook.sources import SourceError

    data, errors = {}, {}
    for key, expr in queries.items():
        try:
            data[key] = query_range(expr, start, end, step)
        except SourceError as exc:
            errors[key] = exc.reason
    return data, errors


# --- checklist evidence

_PAGING_KEYS = ("page", "limit", "per_page", "page_size", "pageSize", "offset", "cursor", "next", "next_cursor",
                "nextCursor", "total", "count", "has_more", "hasMore")


def _items(body: Any) -> tuple[int | None, list[str]]:
    """Items in a JSON answer: a top-level list, or the longest list among the top-level
    values ({"data": [...], "page": 1}); and the paging fields present."""
    if isinstance(body, list):
        return len(body), []
    if isinstance(body, dict):
        lists = [len(v) for v in body.values() if isinstance(v, list)]
        paging = [k for k in _PAGING_KEYS if k in body]
        return (max(lists) if lists else None), paging
    return None, []


def _path_only(route: str) -> bool:
    return ":" not in route and "{" not in route and "*" not in route


def probe_http(params: Any, timeout: float = 5.0, max_bytes: int = 20_000_000) -> list[dict]:
    """The checklist's HTTP probes against ``targets.base_url`` (one request each):

    - ``compression``: every GET endpoint's ``probe_path`` with ``Accept-Encoding: gzip,
      br``; the Content-Encoding and the bytes on the wire (and decoded, for gzip);
    - ``rate_limit``: every GET endpoint's ``probe_path``, and each expensive endpoint's
      route without a body (a GET: no side effect; limiters answer before routing, so
      the RateLimit headers show even on a 404/405);
    - ``pagination``: each GET endpoint whose route has no path parameter, without query
      string: how many items the JSON answer lists.

    Returns dicts: ``purpose``, ``endpoint``, ``path``, ``status`` (None when no answer),
    ``headers`` (lower-cased, only the ones that matter), ``wire_bytes``, ``body_bytes``,
    ``items``, ``paging``, ``expensive``, ``error``. Raises
    :class:`~perfbook.sources.SourceUnreachable` when no request got an answer.
    """
    import requests

    from perfbook.sources import SourceUnreachable, safe_target
    from perfbook.sources.http import UrlRefused, build_url

    base = params.targets.base_url
    if not base:
        return []
    plan: list[tuple[str, Any, str, dict]] = []
    for e in params.endpoints:
        if e.method == "GET" and e.probe_path:
            plan.append(("compression", e, e.probe_path, {"Accept-Encoding": "gzip, br"}))
            plan.append(("rate_limit", e, e.probe_path, {"Accept-Encoding": "identity"}))
        elif e.expensive and _path_only(e.route):
            plan.append(("rate_limit", e, e.route, {"Accept-Encoding": "identity"}))
        if e.method == "GET" and _path_only(e.route) and e.route not in ("/health", "/healthz", "/metrics"):
            plan.append(("pagination", e, e.route, {"Accept-Encoding": "gzip"}))
    keep = ("content-encoding", "content-length", "content-type", "retry-after", "link", *RATELIMIT_HEADERS)
    out, errors = [], []
    with requests.Session() as s:
        s.headers["User-Agent"] = "perfbook"
        for purpose, e, path, headers in plan:
            row = {"purpose": purpose, "endpoint": e.name, "path": path, "status": None, "headers": {},
                   "wire_bytes": None, "body_bytes": None, "items": None, "paging": [], "expensive": e.expensive,
                   "error": ""}
            try:
                url = build_url(base, path)
            except UrlRefused as exc:
                row["error"] = f"refused: {exc}"
                errors.append(row["error"])
                out.append(row)
                continue
            try:
                r = s.get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False)
                raw = r.raw.read(max_bytes, decode_content=False)
                r.close()
            except requests.RequestException as exc:
                row["error"] = type(exc).__name__
                errors.append(row["error"])
                out.append(row)
                continue
            row["status"] = r.status_code
            row["headers"] = {k.lower(): v for k, v in r.headers.items() if k.lower() in keep}
            row["wire_bytes"] = len(raw)
            body = raw
            enc = row["headers"].get("content-encoding", "").lower()
            try:
                if enc == "gzip":
                    body = gzip.decompress(raw)
                elif enc == "deflate":
                    body = zlib.decompress(raw)
                elif enc not in ("", "identity"):
                    body = None   # br/zstd: no decoder needed here, the header is the evidence
            except (OSError, zlib.error):
                body = None
            if body is not None:
                row["body_bytes"] = len(body)
                if purpose == "pagination" and r.status_code == 200:
                    try:
                        row["items"], row["paging"] = _items(json.loads(body))
                    except ValueError:
                        pass
            out.append(row)
    if plan and all(r["status"] is None for r in out):
        raise SourceUnreachable("http", safe_target(base), errors[0] if errors else "no answer")
    return out


def run_queries(query: Callable[..., pd.DataFrame], queries: dict[str, str], at: Any
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """Run each (rendered) query with ``query(expr, at=at)`` (a ``PromClient``'s).

    Values: a float for a result without labels, ``{label value: float}`` for one row per
    instance, None for an empty result. Refused queries go to the second dict (the
    server's message); an unreachable server raises as usual.
    """
    from perfbook.sources import SourceError

    values, errors = {}, {}
    for key, expr in queries.items():
        try:
            frame = query(expr, at=at)
        except SourceError as exc:
            errors[key] = exc.reason
            continue
        values[key] = _reduce(frame)
    return values, errors


def _reduce(frame: pd.DataFrame) -> Any:
    if frame is None or frame.empty:
        return None
    labels = [c for c in frame.columns if c not in ("timestamp", "value", "metric")]
    if not labels:
        return float(frame["value"].iloc[0])
    return {" ".join(str(v) for v in row[labels] if v == v): float(row["value"]) for _, row in frame.iterrows()}


@dataclass
class Evidence:
    """What the monitoring notebook gathered for the checklist (:func:`gather`)."""

    values: dict[str, Any] = field(default_factory=dict)      # run_queries of checklist_queries
    query_errors: dict[str, str] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)           # probe_http
    rules: pd.DataFrame | None = None                          # /api/v1/rules
    rules_problem: str | None = None
    fly: Any = None                                            # perfbook.sources.flytoml.FlyConfig
    fly_problem: str | None = None
    unreachable: list[Any] = field(default_factory=list)      # SourceProblem per dead source


def gather(prom: Any, params: Any, start: Any, end: Any, step: int = 15, rate_s: int = 60,
           params_file: str | None = None) -> Evidence:
    """Everything the checklist measures, each source on its own: the Prometheus queries
    (``prom``: a ``PromClient``, or None when the params name none), the rules API, the
    HTTP probes, fly.toml (a relative path is taken from ``params_file``'s folder). A
    source that cannot be reached is recorded in ``unreachable`` (its items stay
    unknown) and does not stop the others."""
    from perfbook.sources import SourceError, SourceProblem

    ev = Evidence()
    window_s = (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()
    if prom is not None:
        try:
            queries = {k: render_expr(q, params) for k, q in checklist_queries(params, window_s, step, rate_s).items()}
            ev.values, ev.query_errors = run_queries(prom.query, queries, at=end)
            try:
                ev.rules = prom.rules()
            except SourceError as exc:
                ev.rules_problem = exc.reason
        except SourceProblem as exc:
            ev.unreachable.append(exc)
            ev.rules_problem = str(exc)
    else:
        ev.rules_problem = "no Prometheus in the params (targets.prometheus)"
    try:
        ev.probes = probe_http(params, timeout=params.settings.probes.timeout)
    except SourceProblem as exc:
        ev.unreachable.append(exc)
    try:
        from pathlib import Path

        from perfbook.sources import flytoml
        base = Path(params_file).resolve().parent if params_file else None
        ev.fly = flytoml.read_optional(params.targets.fly_toml, base)
    except SourceProblem as exc:
        ev.fly_problem = exc.reason
    return ev
