"""Prometheus metrics, two ways: scraping a /metrics endpoint, and the PromQL HTTP API.

**Scrape ("snapshot mode").** When no Prometheus server is configured, :func:`scrape`
reads a service's /metrics and :func:`rates` turns two snapshots into per-second rates:
:mod:`perfbook.sources.exposition` (the text formats, scraping), re-exported here.

**PromQL API.** :class:`PromClient` runs instant and range queries against a Prometheus
server or a compatible endpoint, returning tidy DataFrames with tz-aware UTC timestamps.
Range queries are split into chunks of at most 11,000 points per series (Prometheus
refuses more). The API's error envelope becomes :class:`~perfbook.sources.SourceError`
with the server's own message; a connection failure or timeout becomes
:class:`~perfbook.sources.SourceUnreachable`.

Fly.io's managed endpoint (``https://api.fly.io/prometheus/<org>``, bearer token from
``fly auth token``) is VictoriaMetrics, not Prometheus. :class:`PromClient` makes every
query perfbook sends give the same verdict there as on Prometheus for the same samples
(docs/fly.md; measured side by side in tests/integration/test_victoriametrics.py):

- MetricsQL's ``rate()``/``increase()`` start from the last sample *before* the window
  and count a series born inside it from 0, so a route whose first requests fall in the
  window weighs more than in PromQL (the runbook's p95 alert peaked at 4.2 s on
  VictoriaMetrics against 2.5 s on Prometheus over the same samples). On
  VictoriaMetrics they are sent as ``increase_prometheus()``, which reads only the
  window's samples as PromQL does, scaled by n / (n - 1) for the n samples in the range
  as PromQL's extrapolation to the range's edges does (:func:`perfbook.promql.prometheus_counters`;
  ``rate`` divides that by the range).
- A subquery without a resolution (``x[10m:]``) runs at Prometheus's evaluation
  interval but at VictoriaMetrics' query ``step`` — 5 min for an instant query, one
  point for a 1 min window (the pool's waiting share read 0 %). Both are sent with an
  explicit resolution: the scrape interval (:meth:`PromClient.scrape_interval`).
- ``nocache=1`` on every query: VictoriaMetrics otherwise moves an instant query's
  time back by ``-search.latencyOffset`` (30 s) when it is that close to now, and
  aligns a range query's start and end to its step.
- A range query's points within ``-search.latencyOffset`` of now are replaced by the
  last older point even with ``nocache=1``; the client waits until the query's end is
  that old (at most ``latency_offset`` + 1 s, once per client) and says so in
  :attr:`PromClient.notes`.
- ``/api/v1/rules`` answers an empty list unless ``-vmalert.proxyURL`` is set (rules live
  in vmalert): on VictoriaMetrics an empty answer is "not known here", not "no rules".
- HTTP 429 (the managed endpoint's rate limit): waits ``Retry-After`` (bounded) and asks
  again; still refused after ``rate_limit_retries`` → :class:`SourceUnreachable`.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

from perfbook.promql import (
    MAX_POINTS_PER_SERIES,
    SELECTOR_PLACEHOLDER,
    auto_step,
    duration_seconds,
    explicit_subquery_step,
    has_subquery_without_step,
    normalize_selector,
    prometheus_counters,
    render,
    split_range,
    step_seconds,
    unix_seconds,
    with_selector,
)
from perfbook.sources import SourceError, SourceUnreachable, error_reason, safe_target
from perfbook.sources.bounded import limits_of, read_body
from perfbook.sources.exposition import (
    _USER_AGENT,
    _auth_reason,
    _request,
    _session,
    parse_exposition,
    rates,
    scrape,
    scrape_all,
    scrape_twice,
)

__all__ = [
    "parse_exposition", "scrape", "scrape_all", "scrape_twice", "rates",
    "PromClient", "split_range", "auto_step",
    "normalize_selector", "with_selector", "render",
    "MAX_POINTS_PER_SERIES", "SELECTOR_PLACEHOLDER", "duration_seconds", "explicit_subquery_step",
    "prometheus_counters",
]


# ---------------------------------------------------------------------------------
# PromQL helpers
# ---------------------------------------------------------------------------------

def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


# ---------------------------------------------------------------------------------
# PromQL HTTP API client
# ---------------------------------------------------------------------------------

def _label_order(columns: Iterable[str]) -> list[str]:
    cols = sorted(set(columns))
    return (["metric"] if "metric" in cols else []) + [c for c in cols if c != "metric"]


def _rename_labels(labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, val in labels.items():
        if key == "__name__":
            out["metric"] = val
        elif key in ("metric", "value", "timestamp"):
            out[f"exported_{key}"] = val
        else:
            out[key] = val
    return out


def _to_utc(seconds: np.ndarray) -> pd.Series:
    millis = np.round(np.asarray(seconds, dtype="float64") * 1000.0).astype("int64")
    return pd.Series(pd.to_datetime(millis, unit="ms", utc=True))


def _empty_result() -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                         "value": pd.Series(dtype="float64")})


def _frame_from_result(data: dict[str, Any]) -> pd.DataFrame:
    """A tidy frame from the ``data`` of a query/query_range answer."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind in ("scalar", "string"):
        ts, val = result
        frame = pd.DataFrame({"timestamp": _to_utc(np.array([float(ts)])),
                              "value": [float(val) if kind == "scalar" else math.nan]})
        if kind == "string":
            frame["string"] = val
        return frame
    if not result:
        return _empty_result()
    parts: list[pd.DataFrame] = []
    label_cols: set[str] = set()
    for series in result:
        labels = _rename_labels(series.get("metric", {}))
        label_cols.update(labels)
        if "values" in series or "value" in series:
            points = series["values"] if "values" in series else [series["value"]]
            arr = np.array(points, dtype=object).reshape(-1, 2)
            part = pd.DataFrame({"timestamp": _to_utc(arr[:, 0].astype("float64")),
                                 "value": arr[:, 1].astype("float64")})
        else:  # native histograms ("histogram"/"histograms"): no single value to show
            continue
        for key, val in labels.items():
            part[key] = val
        parts.append(part)
    if not parts:
        return _empty_result()
    frame = pd.concat(parts, ignore_index=True)
    return frame[_label_order(label_cols) + ["timestamp", "value"]]


def _retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return default


class PromClient:
    """The Prometheus HTTP API (``/api/v1/...``) as tidy DataFrames.

    ``url``: the server's base URL (``http://127.0.0.1:9090``; for Fly.io
    ``https://api.fly.io/prometheus/<org>``). ``bearer_token``: the token *value*, read
    from the environment by the caller; sent as ``Authorization: Bearer <token>``, never
    logged, never in an exception or ``repr``. ``token_env``: the variable's *name*, quoted
    in the message of an HTTP 401/403. ``timeout``: seconds per request; connection
    attempts are retried ``retries`` times. ``selector``: the params' label matchers
    (``app="shop-api"``), applied by :meth:`render` to query templates.

    Errors: nothing answers → :class:`SourceUnreachable`; the API's error envelope
    (``{"status":"error","errorType":"bad_data","error":"..."}``), HTTP 401/403 or a
    non-API page → :class:`SourceError` with the server's message. Warnings the server
    returns along with data are kept in ``df.attrs["warnings"]`` and :attr:`last_warnings`.

    Works against Prometheus and against VictoriaMetrics (Fly.io's managed endpoint):
    ``flavor`` (the params' ``targets.prometheus.flavor``) says which; "prometheus"
    (the params' default) is checked once (:attr:`flavor`), so a VictoriaMetrics named
    as Prometheus is still asked the VictoriaMetrics way. ``latency_offset``: its
    ``-search.latencyOffset`` (30 s unless changed). ``subquery_step``: the resolution of
    subqueries without one (default: :meth:`scrape_interval`). ``rate_limit_retries``
    and ``max_retry_after``: how often and how long to wait on HTTP 429. See the module
    docstring; :attr:`notes` lists what the client did that a reader should know.
    """

    source = "prometheus"

    def __init__(
        self,
        url: str,
        bearer_token: str | None = None,
        timeout: float = 10,
        selector: str | None = None,
        *,
        token_env: str | None = None,
        retries: int = 1,
        max_points_per_series: int = MAX_POINTS_PER_SERIES,
        max_chunks: int = 100,
        session: requests.Session | None = None,
        max_response_bytes: int | None = None,
        flavor: str | None = None,
        latency_offset: float = 30.0,
        subquery_step: float | None = None,
        rate_limit_retries: int = 3,
        max_retry_after: float = 30.0,
    ) -> None:
        base = url.strip().rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.url = base
        self.target = safe_target(base)
        self.timeout = float(timeout)
        self.selector = normalize_selector(selector)
        self.token_env = token_env
        self.max_points_per_series = int(max_points_per_series)
        self.max_chunks = int(max_chunks)
        self.max_response_bytes = int(max_response_bytes or limits_of().max_response_bytes)
        self.last_warnings: list[str] = []
        self._has_token = bool(bearer_token)
        self._session = session or _session(retries)
        self._headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._flavor: str | None = flavor if flavor == "victoriametrics" else None
        self.latency_offset = float(latency_offset)
        self._subquery_step = subquery_step
        self.rate_limit_retries = int(rate_limit_retries)
        self.max_retry_after = float(max_retry_after)
        #: what the client did that a reader of the numbers should know (waits, rate limits)
        self.notes: list[str] = []
        self._settled_until = 0.0

    @classmethod
    def from_env(cls, url: str, token_env: str | None = None, **kwargs: Any) -> PromClient:
        """A client whose bearer token is read from the environment variable ``token_env``
        (the name the params file gives, e.g. ``FLY_API_TOKEN``). An unset or empty variable
        means no token; a server that wants one then answers 401, reported as a
        :class:`SourceError` naming the variable."""
        token = os.environ.get(token_env, "") if token_env else ""
        return cls(url, bearer_token=token or None, token_env=token_env, **kwargs)

    def __repr__(self) -> str:
        token = f", token from {self.token_env}" if self._has_token and self.token_env else (
            ", with token" if self._has_token else "")
        return f"PromClient({self.target!r}{token})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PromClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------
    def _api(self, path: str, params: dict[str, str] | None = None, *, expr: str | None = None) -> Any:
        """GET (POST for long queries) ``/api/v1/<path>``; the answer's ``data``."""
        url = f"{self.url}/api/v1/{path}"
        params = params or {}
        if path in ("query", "query_range"):
            params = {**params, "nocache": "1"}  # VictoriaMetrics: no time shift or step alignment (module doc)
        long = sum(len(v) for v in params.values()) > 1500
        kwargs = {"data": params} if long else {"params": params}
        for attempt in range(self.rate_limit_retries + 1):
            response = _request(self._session, "POST" if long else "GET", url, source=self.source,
                                target=self.target, timeout=self.timeout, headers=self._headers, stream=True,
                                **kwargs)
            if response.status_code != 429:
                break
            wait = min(self.max_retry_after, _retry_after(response.headers.get("Retry-After"), 2.0 * 2 ** attempt))
            response.close()
            if attempt == self.rate_limit_retries:
                raise SourceUnreachable(self.source, self.target,
                                        f"HTTP 429 Too Many Requests: the endpoint's rate limit refused "
                                        f"{attempt + 1} tries (Retry-After honoured up to {self.max_retry_after:g} s)")
            time.sleep(wait)
            self.notes.append(f"rate limited (HTTP 429): waited {wait:.0f} s and asked again")
        status = response.status_code
        if status in (401, 403):
            raise SourceError(self.source, self.target, _auth_reason(status, self._has_token, self.token_env))
        try:
            raw = read_body(response, self.max_response_bytes, source=self.source, target=self.target,
                            what=f"the answer to /api/v1/{path}" + (f" ({expr[:80]})" if expr else ""))
        except requests.RequestException as exc:
            raise SourceUnreachable(self.source, self.target, error_reason(exc, self.timeout)) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            if status in (502, 503, 504):
                raise SourceUnreachable(self.source, self.target, f"HTTP {status} from a proxy or load balancer")
            kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
            raise SourceError(self.source, self.target,
                              f"HTTP {status} to /api/v1/{path} is not a Prometheus API answer ({kind}); "
                              f"the URL should be the server's base, e.g. http://host:9090")
        self.last_warnings = [str(w) for w in (body.get("warnings") or [])]
        if body.get("status") != "success":
            reason = f"{body.get('errorType') or 'error'}: {body.get('error') or 'no message'}"
            if expr:
                reason += f" — query: {expr if len(expr) <= 300 else expr[:297] + '...'}"
            raise SourceError(self.source, self.target, reason)
        return body.get("data")

    # -- queries ------------------------------------------------------------------
    def render(self, template: str) -> str:
        """:func:`render` with this client's selector."""
        return render(template, self.selector)

    def query(self, expr: str, at: Any = None) -> pd.DataFrame:
        """Instant query at ``at`` (default: the server's now).

        Columns: ``metric`` (the ``__name__`` label, if the result keeps it), the other
        labels (NaN where a series lacks one), ``timestamp`` (UTC), ``value`` (float).
        A scalar result is one row; a range-vector result (``x[5m]``) one row per sample.
        """
        sent = self.prepare(expr)
        params = {"query": sent}
        if at is not None:
            params["time"] = _fmt_time(unix_seconds(at))
        frame = _frame_from_result(self._api("query", params, expr=sent))
        frame.attrs.update(query=expr, warnings=list(self.last_warnings))
        return frame

    def query_range(self, expr: str, start: Any, end: Any, step: Any) -> pd.DataFrame:
        """Range query over ``[start, end]`` every ``step`` (seconds, timedelta or "30s").

        Long tidy frame: label columns (``metric`` first if kept), ``timestamp`` (UTC),
        ``value``. The range is split (:func:`split_range`) so no request asks for more
        than ``max_points_per_series`` points per series; chunks share one step grid, so
        the result is what a single unlimited query would give.
        """
        chunks = split_range(start, end, step, self.max_points_per_series)
        if len(chunks) > self.max_chunks:
            raise ValueError(f"{len(chunks)} requests needed for this range at step {step}: "
                             f"use a coarser step (see auto_step)")
        step_s = step_seconds(step)
        sent = self.prepare(expr)
        self._settle(chunks[-1][1])
        frames, warnings = [], []
        for chunk_start, chunk_end in chunks:
            params = {"query": sent, "start": _fmt_time(chunk_start), "end": _fmt_time(chunk_end),
                      "step": f"{step_s:g}"}
            frames.append(_frame_from_result(self._api("query_range", params, expr=sent)))
            warnings.extend(self.last_warnings)
        frames = [f for f in frames if len(f)] or [frames[0]]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        labels = [c for c in frame.columns if c not in ("timestamp", "value")]
        frame = frame[_label_order(labels) + ["timestamp", "value"]]
        if len(frames) > 1:
            frame = frame.sort_values([*_label_order(labels), "timestamp"], kind="stable",
                                      na_position="first").reset_index(drop=True)
        frame.attrs.update(query=expr, warnings=warnings, requests=len(chunks))
        return frame

    def rules(self) -> pd.DataFrame:
        """``/api/v1/rules``: one row per rule — ``group``, ``file``, ``name``, ``type``
        (alerting/recording), ``query``, ``duration`` (s), ``labels``, ``annotations``
        (dicts), ``health``, ``state`` (alerting rules: inactive/pending/firing),
        ``active_alerts``, ``last_error``. VictoriaMetrics serves rules only behind vmalert;
        elsewhere this raises :class:`SourceError`."""
        data = self._api("rules") or {}
        if not data.get("groups") and self.flavor == "victoriametrics":
            raise SourceError(self.source, self.target,
                              "VictoriaMetrics keeps no alerting rules: they live in vmalert, and /api/v1/rules "
                              "answers an empty list unless -vmalert.proxyURL points to it; which rules exist "
                              "is not known from this endpoint")
        rows = []
        for group in data.get("groups", []):
            for rule in group.get("rules", []):
                rows.append({
                    "group": group.get("name"), "file": group.get("file"),
                    "name": rule.get("name"), "type": rule.get("type"), "query": rule.get("query"),
                    "duration": float(rule.get("duration", 0) or 0),
                    "labels": dict(rule.get("labels") or {}),
                    "annotations": dict(rule.get("annotations") or {}),
                    "health": rule.get("health"), "state": rule.get("state"),
                    "active_alerts": len(rule.get("alerts") or []),
                    "last_error": rule.get("lastError") or "",
                })
        cols = ["group", "file", "name", "type", "query", "duration", "labels", "annotations",
                "health", "state", "active_alerts", "last_error"]
        return pd.DataFrame(rows, columns=cols)

    def alerts(self) -> pd.DataFrame:
        """``/api/v1/alerts``: one row per active (pending or firing) alert — its labels as
        columns (``alertname`` first), ``state``, ``active_at`` (UTC), ``value``,
        ``annotations`` (dict)."""
        data = self._api("alerts") or {}
        rows, label_cols = [], set()
        for alert in data.get("alerts", []):
            labels = {k: v for k, v in (alert.get("labels") or {}).items()
                      if k not in ("state", "active_at", "value", "annotations")}
            label_cols.update(labels)
            try:
                value = float(alert.get("value"))
            except (TypeError, ValueError):
                value = math.nan
            rows.append({**labels, "state": alert.get("state"), "active_at": alert.get("activeAt"),
                         "value": value, "annotations": dict(alert.get("annotations") or {})})
        order = sorted(label_cols)
        if "alertname" in order:
            order.remove("alertname")
            order.insert(0, "alertname")
        frame = pd.DataFrame(rows, columns=[*order, "state", "active_at", "value", "annotations"])
        frame["active_at"] = pd.to_datetime(frame["active_at"], utc=True, format="ISO8601")
        return frame

    @property
    def flavor(self) -> str:
        """``"prometheus"``, ``"victoriametrics"`` or ``"unknown"`` (checked once).

        Fly.io's endpoint is VictoriaMetrics by its host; otherwise
        ``/api/v1/status/buildinfo`` tells Prometheus (it reports its ``revision``) from
        the rest. Only informational: queries are the same for both.
        """
        if self._flavor is None:
            host = (urlsplit(self.url).hostname or "").lower()
            if host == "fly.io" or host.endswith(".fly.io"):
                self._flavor = "victoriametrics"
            else:
                try:
                    info = self._api("status/buildinfo") or {}
                except SourceUnreachable:
                    # not answered (a timeout on a busy server): ask again next time, never
                    # settle on "unknown" for the client's lifetime because of one slow reply
                    return "unknown"
                except SourceError:
                    info = {}
                if "revision" in info and "goVersion" in info:
                    self._flavor = "prometheus"
                elif "victoria" in str(info).lower() or self._scalar_is_vector():
                    self._flavor = "victoriametrics"
                else:
                    self._flavor = "unknown"
        return self._flavor

    def _scalar_is_vector(self) -> bool:
        """MetricsQL answers the scalar ``1`` as a one-series vector (VictoriaMetrics
        1.79's buildinfo is empty); PromQL as a scalar."""
        try:
            data = self._api("query", {"query": "1"}) or {}
        except (SourceError, SourceUnreachable):
            return False
        return data.get("resultType") == "vector"

    def prepare(self, expr: str) -> str:
        """The expression as sent: subqueries with an explicit resolution (both flavors),
        and on VictoriaMetrics Prometheus-style counters (see the module docstring)."""
        if has_subquery_without_step(expr):
            expr = explicit_subquery_step(expr, self.scrape_interval())
        if self.flavor == "victoriametrics":
            expr = prometheus_counters(expr)
        return expr

    def scrape_interval(self, default: float = 15.0) -> float:
        """The scrape interval of the selected targets (seconds, from the spacing of
        ``up``'s samples over the last 5 min; ``default`` — Fly.io's 15 s — when unknown),
        or the ``subquery_step`` given. Asked once."""
        if self._subquery_step is None:
            self._subquery_step = default
            try:
                frame = _frame_from_result(self._api("query", {"query": with_selector("up", self.selector) + "[5m]"}))
            except (SourceError, SourceUnreachable):
                frame = _empty_result()
            if len(frame) > 2:
                keys = [c for c in frame.columns if c not in ("timestamp", "value")]
                gaps = (frame.sort_values([*keys, "timestamp"]).groupby(keys, dropna=False)["timestamp"]
                        .diff().dt.total_seconds().dropna()) if keys else frame["timestamp"].diff().dt.total_seconds()
                gaps = gaps[gaps > 0]
                if len(gaps):
                    self._subquery_step = float(max(1, round(gaps.median())))
        return float(self._subquery_step)

    def _settle(self, end: Any) -> None:
        """VictoriaMetrics: wait until ``end`` is older than ``-search.latencyOffset`` (a range
        query's newer points come back as copies of the last older one; module docstring)."""
        t = unix_seconds(end)
        if t <= self._settled_until or self.flavor != "victoriametrics":
            return
        wait = t + self.latency_offset + 1.0 - time.time()
        if wait > 0:
            wait = min(wait, self.latency_offset + 1.0)
            time.sleep(wait)
            self.notes.append(f"waited {wait:.0f} s for VictoriaMetrics to show the window's newest "
                              f"{self.latency_offset:g} s (-search.latencyOffset)")
        self._settled_until = t


# ---------------------------------------------------------------------------------
# Which metrics exist (discovery, before judging)
# ---------------------------------------------------------------------------------

def metric_names(client: PromClient, start: Any = None, end: Any = None,
                 candidates: Iterable[str] | None = None) -> set[str]:
    """The metric (sample) names with series under the client's selector in ``[start,
    end]``: ``/api/v1/label/__name__/values?match[]={<selector>}`` — one request, served by
    Prometheus (2.24+) and VictoriaMetrics alike. Where that is refused (an old server, a
    proxy that allows only queries), ``/api/v1/series`` for ``candidates`` (the configured
    names, histograms' ``_bucket``/``_count`` included), and last an instant query
    ``count by (__name__) ({__name__=~"..."})`` at ``end`` (series seen in its last 5 min).

    Raises :class:`SourceUnreachable` when the server does not answer, and
    :class:`SourceError` when every way is refused.
    """
    window = {}
    if start is not None:
        window["start"] = _fmt_time(unix_seconds(start))
    if end is not None:
        window["end"] = _fmt_time(unix_seconds(end))
    sel = client.selector
    try:
        data = client._api("label/__name__/values", {**({"match[]": "{" + sel + "}"} if sel else {}), **window})
        return {str(n) for n in (data or [])}
    except SourceError as first:
        if not candidates:
            raise
        refused = first
    names = sorted(set(candidates))
    regex = "|".join(re.escape(n) for n in names)
    matcher = "{" + ",".join([f'__name__=~"{regex}"', *([sel] if sel else [])]) + "}"
    try:
        data = client._api("series", {"match[]": matcher, **window})
        return {str(s.get("__name__")) for s in (data or []) if s.get("__name__")}
    except SourceError:
        pass
    try:
        frame = client.query(f"count by (__name__) ({matcher})", at=end)
    except SourceError:
        raise refused from None
    return set(frame["metric"].astype(str)) if "metric" in frame.columns else set()
