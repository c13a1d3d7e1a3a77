"""Prometheus metrics read straight from a service: scraping a /metrics endpoint
("snapshot mode") and the text formats. :mod:`perfbook.sources.prometheus` re-exports
every public name here; the PromQL HTTP API is there.

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

The HTTP session helpers (retries, bearer-token refusals explained) are shared with
:class:`~perfbook.sources.prometheus.PromClient`.
"""
from __future__ import annotations

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
    utc,
)
from perfbook.sources import SourceError, SourceProblem, SourceUnreachable, error_reason, present_only, safe_target
from perfbook.sources.bounded import limits_of, read_text

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
    present_only("/metrics", "the instances")
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
    present_only("/metrics", "the instances")
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
