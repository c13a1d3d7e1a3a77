"""Prometheus metrics, two ways: scraping a /metrics endpoint, and the PromQL HTTP API.

**Scrape ("snapshot mode").** When no Prometheus server is configured, :func:`scrape`
reads a service's /metrics (Prometheus text format 0.0.4, or OpenMetrics when the
``Content-Type`` says ``application/openmetrics-text``) with ``prometheus_client``'s
parsers into one tidy DataFrame. :func:`scrape_twice` takes two snapshots a set interval
apart and :func:`rates` turns them into per-second rates of every counter-like series
(counters, histogram buckets/counts/sums), handling counter resets the way PromQL does.
The bucket rates feed :func:`perfbook.checks.quantile.quantiles_by`, which computes
p50/p95/p99 exactly as ``histogram_quantile`` would.

Two parser details handled here so a scrape names series as Prometheus stores them:

- ``prometheus_client`` strips ``_total`` from a counter's *family* name
  (``http_requests``); the samples keep it (``http_requests_total``). Rows here carry the
  sample name, the name PromQL uses.
- The text parser appends ``_total`` to the samples of a counter declared without it
  (``# TYPE jobs counter`` / ``jobs 3`` becomes ``jobs_total``). Prometheus stores
  ``jobs``, so the suffix is taken off again.

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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as _parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as _parse_text
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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
    utc,
    with_selector,
)
from perfbook.sources import SourceError, SourceProblem, SourceUnreachable, error_reason, safe_target
from perfbook.sources.bounded import limits_of, read_body, read_text

__all__ = [
    "parse_exposition", "scrape", "scrape_all", "scrape_twice", "rates",
    "PromClient", "split_range", "auto_step",
    "normalize_selector", "with_selector", "render",
    "MAX_POINTS_PER_SERIES", "SELECTOR_PLACEHOLDER", "duration_seconds", "explicit_subquery_step",
    "prometheus_counters",
]

#: Columns of a scrape frame that are not labels. A label with one of these names
#: is renamed ``exported_<name>``, as Prometheus does for ``instance``.
RESERVED_COLUMNS = ("metric", "metric_type", "value", "timestamp", "instance")

# Prefer the plain text format (laxer parser); take OpenMetrics if that is all there is.
_ACCEPT = ("text/plain;version=0.0.4;q=1,"
           "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1")
_USER_AGENT = "perfbook"

# ---------------------------------------------------------------------------------
# Scraping /metrics
# ---------------------------------------------------------------------------------

_DECLARED_COUNTER = re.compile(r"^[ \t]*#[ \t]*TYPE[ \t]+(\S+)[ \t]+counter[ \t]*$", re.M)


def _is_openmetrics(content_type: str | None) -> bool:
    return bool(content_type) and "application/openmetrics-text" in content_type.lower()


def parse_exposition(
    text: str,
    *,
    content_type: str | None = None,
    instance: str | None = None,
    scraped_at: Any = None,
) -> pd.DataFrame:
    """Parse a Prometheus text (or OpenMetrics) exposition into a tidy DataFrame.

    One row per sample, columns:

    - ``metric``: the sample name as Prometheus stores it (``http_requests_total``,
      ``http_request_duration_seconds_bucket``);
    - one column per label (``le``, ``route``, ``method``...), NaN where a sample lacks
      it; a label named like a reserved column becomes ``exported_<name>``;
    - ``instance``: the given ``host:port`` (NaN if none);
    - ``value`` (float; prom-client's ``Nan`` reads as NaN);
    - ``metric_type``: the family's type (counter, gauge, histogram, summary, untyped...);
    - ``timestamp``: the sample's own timestamp if it has one, else ``scraped_at``
      (default: now), tz-aware UTC.

    ``content_type`` containing ``application/openmetrics-text`` selects the
    OpenMetrics parser. Raises ``ValueError`` on text neither parser accepts.
    """
    openmetrics = _is_openmetrics(content_type)
    when = utc(scraped_at if scraped_at is not None else pd.Timestamp.now(tz="UTC"))
    # Counters the text parser will have renamed (declared without _total, see module doc).
    renamed = set() if openmetrics else set(_DECLARED_COUNTER.findall(text))

    names: list[str] = []
    values: list[float] = []
    types: list[str] = []
    labels: list[dict[str, str]] = []
    stamps: list[float | None] = []
    own_stamps = False
    families = _parse_openmetrics(text) if openmetrics else _parse_text(text)
    for family in families:
        undo = family.type == "counter" and family.name in renamed
        for sample in family.samples:
            if sample.value is None:  # a native histogram: no classic value to tabulate
                continue
            name = sample.name
            if undo and name == family.name + "_total":
                name = family.name
            names.append(name)
            values.append(sample.value)
            types.append(family.type)
            labels.append(sample.labels)
            if sample.timestamp is not None:
                own_stamps = True
                stamps.append(float(sample.timestamp))
            else:
                stamps.append(None)

    frame = pd.DataFrame.from_records(labels, index=range(len(labels))) if labels else pd.DataFrame()
    frame = frame.rename(columns={c: f"exported_{c}" for c in frame.columns if c in RESERVED_COLUMNS})
    frame.insert(0, "metric", pd.Series(names))
    frame["instance"] = instance if instance is not None else np.nan
    frame["value"] = pd.Series(values, dtype="float64")
    frame["metric_type"] = pd.Series(types)
    if own_stamps:
        own = pd.to_datetime(pd.Series(stamps, dtype="float64") * 1000, unit="ms", utc=True)
        frame["timestamp"] = own.fillna(when)
    else:
        frame["timestamp"] = pd.DatetimeIndex([when]).repeat(len(names))
    frame.attrs["format"] = "openmetrics" if openmetrics else "prometheus"
    return frame


def _instance_of(url: str) -> str:
    """``host:port`` of a URL, the default port spelled out (as Prometheus's instance label)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{host}:{port}" if port else host


def _session(retries: int) -> requests.Session:
    """A session that retries refused/failed *connections* only (never a sent request)."""
    session = requests.Session()
    # read=False: a read timeout is raised as such (not retried, not a "ConnectionError").
    retry = Retry(total=retries, connect=retries, read=False, status=0, other=0,
                  backoff_factor=0.2, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _request(session: requests.Session, method: str, url: str, *, source: str, target: str,
             timeout: float, **kwargs: Any) -> requests.Response:
    try:
        return session.request(method, url, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise SourceUnreachable(source, target, error_reason(exc, timeout)) from None


def _auth_reason(status: int, has_token: bool, token_env: str | None) -> str:
    where = f"the environment variable {token_env}" if token_env else "the environment variable the params file names"
    if has_token:
        return (f"HTTP {status}: the bearer token was refused; check the token in {where} "
                f"(expired, or without access to these metrics?)")
    return f"HTTP {status}: authentication required; set a bearer token in {where}"


def scrape(
    url: str,
    timeout: float = 5,
    *,
    bearer_token: str | None = None,
    token_env: str | None = None,
    retries: int = 1,
    session: requests.Session | None = None,
    max_bytes: int | None = None,
) -> pd.DataFrame:
    """GET a /metrics URL and parse it (see :func:`parse_exposition` for the columns).

    ``instance`` is the URL's ``host:port``. ``bearer_token`` (value read from the
    environment by the caller) is sent as ``Authorization: Bearer``; ``token_env`` is only
    the variable's *name*, used in messages. ``df.attrs`` holds ``url`` (credentials
    removed), ``format`` (``prometheus`` or ``openmetrics``) and ``seconds`` (request time).

    Raises :class:`SourceUnreachable` (source ``"metrics"``) when nothing answers within
    ``timeout`` seconds (connection attempts retried ``retries`` times), and
    :class:`SourceError` for an HTTP error status or a body that is not an exposition, or
    one larger than ``max_bytes`` (``settings.limits.max_response_bytes``; read no further).
    """
    target = safe_target(url)
    max_bytes = max_bytes or limits_of().max_response_bytes
    headers = {"Accept": _ACCEPT, "User-Agent": _USER_AGENT}
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    own = session is None
    session = session or _session(retries)
    started = time.monotonic()
    scraped_at = pd.Timestamp.now(tz="UTC")
    try:
        response = _request(session, "GET", url, source="metrics", target=target,
                            timeout=timeout, headers=headers, stream=True)
        try:
            text = read_text(response, max_bytes, source="metrics", target=target, what="the /metrics page")
        except requests.RequestException as exc:
            raise SourceUnreachable("metrics", target, error_reason(exc, timeout)) from None
    finally:
        if own:
            session.close()
    seconds = time.monotonic() - started
    if response.status_code in (401, 403):
        raise SourceError("metrics", target, _auth_reason(response.status_code, bool(bearer_token), token_env))
    if response.status_code in (502, 503, 504):
        raise SourceUnreachable("metrics", target, f"HTTP {response.status_code} from a proxy or the service")
    if response.status_code != 200:
        raise SourceError("metrics", target, f"HTTP {response.status_code} {response.reason}")
    content_type = response.headers.get("Content-Type", "")
    try:
        frame = parse_exposition(text, content_type=content_type,
                                 instance=_instance_of(url), scraped_at=scraped_at)
    except (ValueError, IndexError, KeyError) as exc:
        raise SourceError("metrics", target,
                          f"not a Prometheus exposition ({content_type or 'no Content-Type'}): "
                          f"{str(exc)[:200]}") from None
    frame.attrs.update(url=target, seconds=seconds)
    return frame


def scrape_all(
    urls: Sequence[str],
    timeout: float = 5,
    on_failure: Callable[[SourceProblem], None] | None = None,
    **scrape_kwargs: Any,
) -> pd.DataFrame:
    """Every URL scraped once, concurrently, the frames concatenated (the ``instance``
    column tells them apart).

    Without ``on_failure``, raises what :func:`scrape` raises for the first URL that
    fails. With it, each URL that fails is passed to it and the others' answers are
    returned — one instance down of several is the usual bad day — and only when none
    answered is the first failure raised.
    """
    def one(url: str) -> pd.DataFrame | SourceProblem:
        try:
            return scrape(url, timeout, **scrape_kwargs)
        except SourceProblem as exc:  # unreachable, or an error answer
            return exc

    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        results = list(pool.map(one, urls))
    failed = [r for r in results if isinstance(r, SourceProblem)]
    frames = [r for r in results if not isinstance(r, SourceProblem)]
    if failed and (on_failure is None or not frames):
        raise failed[0]
    for exc in failed:
        on_failure(exc)
    return _concat(frames)


def scrape_twice(
    urls: str | Iterable[str],
    interval_s: float,
    timeout: float = 5,
    on_failure: Callable[[SourceProblem], None] | None = None,
    **scrape_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two snapshots of one or more /metrics URLs (:func:`scrape_all`), ``interval_s``
    seconds apart: the second round starts ``interval_s`` after the first started. Pass
    both to :func:`rates`. ``on_failure``: as in :func:`scrape_all`, for each round.

    Note: prom-client resets its event-loop delay histogram at every collect, so in the
    second snapshot ``nodejs_eventloop_lag_p50/p90/p99_seconds`` describe the interval
    between the two scrapes — which is what snapshot mode wants.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("scrape_twice needs at least one URL")
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    started = time.monotonic()
    before = scrape_all(url_list, timeout, on_failure, **scrape_kwargs)
    time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    after = scrape_all(url_list, timeout, on_failure, **scrape_kwargs)
    return before, after


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    out = pd.concat(frames, ignore_index=True)
    out.attrs = dict(frames[0].attrs)
    return out


def _counter_like(frame: pd.DataFrame) -> pd.Series:
    """Rows whose value only goes up between resets: what rate() applies to."""
    metric = frame["metric"].astype(str)
    kind = frame["metric_type"]
    return (((kind == "counter") & ~metric.str.endswith("_created"))
            | ((kind == "histogram") & metric.str.endswith(("_bucket", "_count", "_sum")))
            | ((kind == "summary") & metric.str.endswith(("_count", "_sum"))))


def _label_columns(*frames: pd.DataFrame) -> list[str]:
    skip = {"value", "timestamp", "metric_type"}
    cols: list[str] = []
    for frame in frames:
        cols.extend(c for c in frame.columns if c not in skip and c not in cols)
    return cols


def rates(before: pd.DataFrame, after: pd.DataFrame, seconds: float | None = None) -> pd.DataFrame:
    """Per-second rates of counter-like series between two scrapes.

    Counter-like: counters (not their ``_created``), histogram ``_bucket``/``_count``/
    ``_sum``, summary ``_count``/``_sum``. Gauges are left out (read them from ``after``).

    A series is matched on ``metric``, ``instance`` and its labels (absent = empty, as in
    Prometheus). ``increase = after - before``; when the value went down the counter was
    reset (process restart) and, as PromQL's ``rate()`` does, the increase is the new value.
    A series present only in ``after`` (prom-client creates label sets on first use) counts
    from 0. ``seconds`` defaults to each series' own time between the scrapes.

    Columns: ``metric``, label columns, ``instance``, ``value`` (per second), ``increase``,
    ``seconds``, ``reset`` (bool), ``metric_type``, ``timestamp`` (of ``after``). Unlike
    Prometheus's ``rate()`` over a window, nothing is extrapolated: this is the exact
    increase between two scrapes.
    """
    keys = _label_columns(before, after)
    b = before[_counter_like(before)].reset_index(drop=True)
    a = after[_counter_like(after)].reset_index(drop=True)

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for col in keys:
            out[col] = frame[col].astype(object).where(frame[col].notna(), "") if col in frame else ""
        return out

    left = keyed(a)
    left["value"] = a["value"]
    left["metric_type"] = a["metric_type"]
    left["timestamp"] = a["timestamp"]
    right = keyed(b)
    right["value_before"] = b["value"]
    right["timestamp_before"] = b["timestamp"]
    right = right.drop_duplicates(subset=keys, keep="last")
    merged = left.merge(right, on=keys, how="left")

    prev = merged["value_before"].fillna(0.0)
    reset = merged["value"] < prev
    increase = np.where(reset, merged["value"], merged["value"] - prev)
    if seconds is not None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        elapsed = pd.Series(float(seconds), index=merged.index)
    else:
        elapsed = (merged["timestamp"] - merged["timestamp_before"]).dt.total_seconds()
        # New series: the time between the two scrapes of the same instance.
        per_instance = elapsed.groupby(merged["instance"]).transform("median")
        elapsed = elapsed.fillna(per_instance).fillna(elapsed.median())
        if elapsed.isna().any() or (elapsed <= 0).any():
            raise ValueError("cannot tell the time between the scrapes; pass seconds=")

    out = merged[keys].copy()
    for col in keys:
        out[col] = out[col].mask(out[col] == "")
    out["value"] = increase / elapsed.to_numpy()
    out["increase"] = increase
    out["seconds"] = elapsed.to_numpy()
    out["reset"] = reset.to_numpy()
    out["metric_type"] = merged["metric_type"]
    out["timestamp"] = merged["timestamp"]
    out.attrs["format"] = "rates"
    return out.reset_index(drop=True)


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
