"""histogram_quantile in Python, for snapshot mode (no Prometheus server at hand).

:func:`histogram_quantile` follows Prometheus's ``bucketQuantile`` (promql/quantile.go)
step by step, so a p95 computed here from two scrapes of /metrics is the number
``histogram_quantile(0.95, ...)`` would give on the same bucket values:

1. ``q`` is NaN → NaN; ``q < 0`` → -Inf; ``q > 1`` → +Inf.
2. Buckets are sorted by upper bound; without a ``+Inf`` bucket the answer is NaN.
3. Buckets with the same upper bound are merged (``le="1"`` and ``le="1.0"``).
4. Float noise is removed: a count that differs from the previous one by a relative
   1e-12 or less is set equal to it (``correctPrecisionErrors`` of recent Prometheus).
5. Monotonicity is forced: a bucket whose count is below a lower bucket's count is
   raised to it (``ensureMonotonic``; happens with rates of partially updated buckets).
6. Fewer than 2 buckets, or 0 observations (the ``+Inf`` count) → NaN.
7. ``rank = q * count``; the first bucket whose cumulative count is ≥ rank holds the
   quantile. In the ``+Inf`` bucket → the upper bound of the second-highest bucket.
   In the lowest bucket and its upper bound is ≤ 0 → that upper bound. Otherwise
   linear interpolation inside the bucket, the lowest bucket starting at 0. Division
   is IEEE 754 as in Go: ``q = 0`` stopping at an empty lowest bucket gives NaN (0/0).

Step 4 changes nothing for integer counts below 10^12, so results equal those of
servers that predate it (the integration test runs Prometheus 2.42).

Pure functions, no I/O.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["histogram_quantile", "bucket_quantile", "quantiles_by", "quantile_label"]

#: Relative tolerance of Prometheus's correctPrecisionErrors.
PRECISION_TOLERANCE = 1e-12


def _div(a: float, b: float) -> float:
    """IEEE 754 division, as in Go: x/0 is ±Inf and 0/0 is NaN instead of an exception."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _le(value: object) -> float:
    """An ``le`` label value ("0.25", "+Inf", 0.25) as a float."""
    if isinstance(value, str):
        return float(value.strip())  # float() reads "+Inf", "Inf", "inf", "NaN"
    return float(value)


def bucket_quantile(q: float, buckets: Iterable[tuple[object, float]]) -> tuple[float, bool, bool]:
    """Prometheus's ``bucketQuantile``: ``(quantile, forced_monotonic, fixed_precision)``.

    ``buckets`` are ``(upper_bound, cumulative_count)`` pairs in any order; the upper
    bound may be the ``le`` label's text. The counts may be raw cumulative counts or
    their rates/increases. The two flags say whether step 5 (monotonicity forced) or
    step 4 (precision corrected) changed anything — Prometheus turns the first into an
    annotation ("input to histogram_quantile needed to be fixed for monotonicity").
    """
    q = float(q)
    if math.isnan(q):
        return math.nan, False, False
    if q < 0:
        return -math.inf, False, False
    if q > 1:
        return math.inf, False, False
    pairs = sorted(((_le(ub), float(c)) for ub, c in buckets), key=lambda b: b[0])
    if not pairs or not (math.isinf(pairs[-1][0]) and pairs[-1][0] > 0):
        return math.nan, False, False

    # coalesceBuckets: merge buckets with the same upper bound.
    bounds: list[float] = []
    counts: list[float] = []
    for ub, c in pairs:
        if bounds and ub == bounds[-1]:
            counts[-1] += c
        else:
            bounds.append(ub)
            counts.append(c)

    # correctPrecisionErrors(buckets, 1e-12)
    fixed_precision = False
    prev = counts[0]
    for i in range(1, len(counts)):
        curr = counts[i]
        delta = abs(curr - prev)
        if delta == 0:
            continue
        if _div(delta, curr) <= PRECISION_TOLERANCE:
            counts[i] = prev
            fixed_precision = True
        else:
            prev = curr

    # ensureMonotonic: the envelope of the counts.
    forced = False
    top = counts[0]
    for i in range(1, len(counts)):
        if counts[i] > top:
            top = counts[i]
        elif counts[i] < top:
            counts[i] = top
            forced = True

    if len(counts) < 2:
        return math.nan, False, False
    observations = counts[-1]
    if observations == 0:
        return math.nan, False, False
    rank = q * observations
    # sort.Search(len-1, counts[i] >= rank): first index among all but the +Inf bucket.
    b = bisect.bisect_left(counts, rank, 0, len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2], forced, fixed_precision
    if b == 0 and bounds[0] <= 0:
        return bounds[0], forced, fixed_precision
    bucket_start = 0.0
    bucket_end = bounds[b]
    count = counts[b]
    if b > 0:
        bucket_start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    # 0/0 when q == 0 and the bucket is empty: NaN, as Prometheus answers.
    return bucket_start + (bucket_end - bucket_start) * _div(rank, count), forced, fixed_precision


def histogram_quantile(q: float, buckets: Iterable[tuple[object, float]]) -> float:
    """The ``q``-quantile of a classic histogram, exactly as PromQL's ``histogram_quantile``.

    ``buckets``: ``(upper_bound, cumulative_count)`` pairs, e.g.
    ``[("0.1", 40), ("0.25", 48), ("+Inf", 50)]``; counts may be rates or increases.
    See the module docstring for the algorithm and its special cases (NaN without a
    ``+Inf`` bucket or without observations; the second-highest bound when the rank
    falls in ``+Inf``).
    """
    return bucket_quantile(q, buckets)[0]


def quantile_label(q: float) -> str:
    """Column name for a quantile: 0.5 → ``p50``, 0.95 → ``p95``, 0.999 → ``p99.9``."""
    return "p" + f"{q * 100:.6f}".rstrip("0").rstrip(".")


_NOT_LABELS = {"le", "value", "timestamp", "metric", "metric_type", "increase", "seconds", "reset"}


def quantiles_by(
    df_buckets: pd.DataFrame,
    q: float | Sequence[float],
    by: Sequence[str] | None = ("route",),
    *,
    histogram: str | None = None,
    value: str = "value",
) -> pd.DataFrame:
    """Quantiles per group, as ``histogram_quantile(q, sum by (le, <by>) (<buckets>))``.

    ``df_buckets`` has one row per bucket series: an ``le`` column, a ``value`` column
    (cumulative counts, or their rates/increases from
    :func:`perfbook.sources.prometheus.rates` or a PromQL ``rate()``), and label columns.
    Rows of the same group and ``le`` are summed first (over instances, methods,
    status codes...), which is what ``sum by (le, route)`` does.

    ``by``: the label columns to keep (add ``"timestamp"`` for range data). ``None``
    keeps every label column, like a bare ``histogram_quantile(q, buckets)``.
    ``histogram``: if given, only rows whose ``metric`` is ``<histogram>_bucket`` are used
    (so a whole scrape can be passed in).

    Returns one row per group: the ``by`` columns, ``count`` (the ``+Inf`` bucket's
    value: observations, or observations per second when given rates) and the quantile — in a column ``value`` for a single ``q``,
    or ``p50``/``p95``/``p99``... for a list. Groups without a ``+Inf`` bucket or
    without observations get NaN, as in PromQL.
    """
    df = df_buckets
    if histogram is not None and "metric" in df.columns:
        df = df[df["metric"] == f"{histogram}_bucket"]
    if "le" in df.columns:
        df = df[df["le"].notna()]
    qs = [q] if isinstance(q, (int, float)) else list(q)
    names = ["value"] if isinstance(q, (int, float)) else [quantile_label(x) for x in qs]
    if by is None:  # every label, and each evaluation time for range data
        by = [c for c in df.columns if (c not in _NOT_LABELS and c != value) or c == "timestamp"]
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, "count", *names])

    le = df["le"].map(_le)
    text = [col for col in by if _is_text(df[col])]
    work = pd.DataFrame({col: df[col].fillna("") if col in text else df[col] for col in by})
    work["__le"] = le.values
    work["__v"] = pd.to_numeric(df[value], errors="coerce").values
    summed = work.groupby([*by, "__le"], dropna=False, sort=True)["__v"].sum(min_count=1).reset_index()

    rows = []
    groups = summed.groupby(by, dropna=False, sort=True) if by else [((), summed)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        pairs = list(zip(g["__le"].tolist(), g["__v"].fillna(0.0).tolist()))
        inf = [c for ub, c in pairs if math.isinf(ub) and ub > 0]
        row = dict(zip(by, key))
        row["count"] = inf[0] if inf else math.nan
        for name, x in zip(names, qs):
            row[name] = histogram_quantile(x, pairs)
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, "count", *names])
    for col in text:  # give absent labels back as NaN, as they came in
        out[col] = out[col].mask(out[col] == "")
    return out


def _is_text(column: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column))
