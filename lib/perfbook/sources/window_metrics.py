"""Counters and gauges over the report's window, from Prometheus or from /metrics.

The caching, rate-limiting and external-API sections ask the same three questions of
their metrics, and the PromQL for them lives here, once:

- :meth:`WindowMetrics.increase` — how much a counter (or histogram bucket) grew over
  the window, summed by some labels: ``sum by (...) (increase(m{...}[W]))`` at the
  window's end;
- :meth:`WindowMetrics.rate_series` — the same counter's per-second rate over time
  (a range query), for plots and per-minute peaks;
- :meth:`WindowMetrics.samples` — a gauge's raw samples over the window (each scrape,
  ``m{...}[W]``), so no state change between two plot points is lost (a circuit breaker
  that opened for five seconds).

With a Prometheus server in the params (``targets.prometheus``) the window is the
report's window. Without one ("snapshot mode"), every ``targets.metrics_urls`` is
scraped once and a counter's *increase* is its value since the process started (what
the runbook's ``curl /metrics | grep`` shows); series over time are not available and
come back as ``None``. :attr:`WindowMetrics.basis` says which of the two a number is.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from perfbook.promql import SELECTOR_PLACEHOLDER, range_step, rate_window
from perfbook.sources import SourceProblem, SourceUnreachable, prometheus as prom
from perfbook.sources.bounded import limits_of

__all__ = ["WindowMetrics", "range_step", "rate_window", "instance_query"]

# The PromQL, once. ``{m}`` metric, ``{by}`` labels, ``{sel}`` matchers incl. __SEL__.
INCREASE = "sum by ({by}) (increase({m}{{{sel}}}[{w}s]))"
RATE = "sum by ({by}) (rate({m}{{{sel}}}[{r}s]))"
SAMPLES = "{m}{{{sel}}}[{w}s]"
LAST = "last_over_time({m}{{{sel}}}[{w}s])"

#: Raw samples are fetched for windows up to this long; beyond it, a range query.
MAX_RAW_WINDOW_S = 6 * 3600


def instance_query(m: Any, rate_s: int) -> str:
    """One PromQL expression for every per-instance series the load-balancing section (and scaling)
    needs, each tagged with a ``measure`` label, joined with ``or``. ``m`` is the params'
    :class:`~perfbook.params.Metrics`; ``__SEL__`` is where the params' selector goes."""
    i, r, sel = m.instance_label, f"{rate_s}s", "__SEL__"
    parts = {
        "rps": f"sum by ({i}) (rate({m.http_requests}{{{sel}}}[{r}]))",
        "err_rps": f'sum by ({i}) (rate({m.http_requests}{{{m.status_label}=~"5..",{sel}}}[{r}]))',
        "cpu": f"100 * sum by ({i}) (rate({m.cpu_seconds}{{{sel}}}[{r}]))",
        "memory": f"sum by ({i}) ({m.resident_memory}{{{sel}}})",
        "p95": f"histogram_quantile(0.95, sum by ({i}, le) (rate({m.http_duration}_bucket{{{sel}}}[{r}])))",
        "latency_mean": (f"sum by ({i}) (rate({m.http_duration}_sum{{{sel}}}[{r}])) / "
                         f"sum by ({i}) (rate({m.http_duration}_count{{{sel}}}[{r}]))"),
        "connections": f"sum by ({i}) ({m.http_connections}{{{sel}}})",
        "route_p95": (f"histogram_quantile(0.95, sum by ({m.method_label}, {m.route_label}, le) "
                      f"(rate({m.http_duration}_bucket{{{sel}}}[{r}])))"),
        "route_rps": f"sum by ({m.method_label}, {m.route_label}) (rate({m.http_duration}_count{{{sel}}}[{r}]))",
    }
    return "\n or ".join(f'label_replace({expr}, "measure", "{name}", "", "")' for name, expr in parts.items())


def _matchers(match: Mapping[str, str] | None) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in (match or {}).items()]
    return ",".join([*parts, SELECTOR_PLACEHOLDER])


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _sum_by(frame: pd.DataFrame, metric: str, by: list[str], match: Mapping[str, str] | None) -> pd.DataFrame:
    """Snapshot mode: ``metric``'s rows of a scrape (or of its rates) matching ``match``,
    summed by the ``by`` labels: label columns + ``value`` (a missing label is NaN)."""
    df = frame[frame["metric"] == metric]
    for k, v in (match or {}).items():
        df = df[df[k].astype(str) == str(v)] if k in df.columns else df.iloc[0:0]
    df = _ensure_columns(df.copy(), by)
    if df.empty:
        return pd.DataFrame({**{c: pd.Series(dtype=object) for c in by}, "value": pd.Series(dtype=float)})
    keys = {c: df[c].astype(object).where(df[c].notna(), "") for c in by}
    out = pd.DataFrame(keys).assign(value=df["value"].to_numpy())
    out = out.groupby(by, sort=True, dropna=False)["value"].sum().reset_index() if by else \
        pd.DataFrame({"value": [out["value"].sum()]})
    for c in by:
        out[c] = out[c].mask(out[c] == "")
    return out


def _ensure_columns(frame: pd.DataFrame, by: Iterable[str]) -> pd.DataFrame:
    for col in by:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    return frame


class WindowMetrics:
    """A section's view of the metrics over ``[start, end]``.

    ``params``: the loaded :class:`perfbook.params.Params`; ``bearer_token``: the token
    value (read from the environment by the caller, never stored in a report).
    ``client`` replaces the :class:`~perfbook.sources.prometheus.PromClient` (tests).
    :attr:`queries` lists ``(title, PromQL)`` of everything run, for ``pb.details``.
    """

    def __init__(self, params: Any, start: datetime, end: datetime, bearer_token: str | None = None,
                 client: Any = None, scrape_timeout: float = 5.0) -> None:
        self.params, self.start, self.end = params, start, end
        self.queries: list[tuple[str, str]] = []
        self._scraped: pd.DataFrame | None = None
        self._scrape_pair: tuple[pd.DataFrame, pd.DataFrame] | None = None  # snapshot_rates()
        self._scrape_timeout = scrape_timeout
        #: snapshot mode: the metrics URLs that did not answer (one error each, in order)
        self.dead: list[SourceProblem] = []
        self._dead_told = 0
        p = params.targets.prometheus
        if client is not None or p is not None:
            self.mode = "prometheus"
            self.client = client or prom.PromClient(p.url, bearer_token=bearer_token, timeout=p.timeout,
                                                    selector=p.selector, token_env=p.bearer_token_env,
                                                    max_response_bytes=limits_of(params).max_response_bytes,
                                                    flavor=p.flavor)
        elif params.targets.metrics_urls:
            self.mode, self.client = "snapshot", None
        else:  # every question will raise SourceUnreachable (see _snapshot_frame)
            self.mode, self.client = "none", None
        self.window_s = max(1, int(math.ceil((end - start).total_seconds())))
        self.step = range_step(start, end)

    @classmethod
    def from_context(cls, ctx: Any) -> WindowMetrics:
        """From a notebook's context: its params, window and bearer token."""
        p = ctx.params.targets.prometheus
        token = ctx.secret(p.bearer_token_env) if p is not None else None
        return cls(ctx.params, ctx.start, ctx.end, bearer_token=token)

    @property
    def basis(self) -> str:
        """What an "increase" means here, for table captions and evidence."""
        if self.mode == "prometheus":
            server = "VictoriaMetrics" if getattr(self.client, "_flavor", None) == "victoriametrics" else "Prometheus"
            return f"{server}, increase over the window ({self.window_s / 60:.1f} min)"
        if self.mode == "none":
            return "no metrics source configured"
        return "/metrics snapshot, totals since each process started (no Prometheus configured)"

    # ------------------------------------------------------------------ snapshot mode
    def scrape(self) -> pd.DataFrame:
        """Every metrics URL scraped once (concurrently), cached for this object."""
        if self.mode == "none":
            raise SourceUnreachable("metrics", "(none configured)",
                                    "the params file names neither targets.prometheus nor targets.metrics_urls")
        if self._scraped is None:
            self._scraped = self._scrape_all()
        return self._scraped

    def _scrape_all(self) -> pd.DataFrame:
        """One round of every metrics URL (:func:`prom.scrape_all`): the instances that
        answered; each URL that did not is kept in :attr:`dead` (once). Raises only when
        none answered."""
        return prom.scrape_all(list(self.params.targets.metrics_urls), self._scrape_timeout, self._dead_url,
                               max_bytes=limits_of(self.params).max_response_bytes)

    def _dead_url(self, exc: SourceProblem) -> None:
        if exc.target not in {e.target for e in self.dead}:
            self.dead.append(exc)

    def new_dead(self) -> list[SourceProblem]:
        """The metrics URLs found dead since the last call (each is told once)."""
        out = self.dead[self._dead_told:]
        self._dead_told = len(self.dead)
        return out

    def _snapshot(self, metric: str, by: list[str], match: Mapping[str, str] | None) -> pd.DataFrame:
        return _sum_by(self.scrape(), metric, by, match)

    def uptime_seconds(self) -> float | None:
        """Snapshot mode: the youngest instance's uptime (from process_start_time_seconds)."""
        if self.mode != "snapshot":
            return None
        try:
            df = self.scrape()
        except SourceProblem:  # already reported by the check that needed the scrape
            return None
        starts = df[df["metric"] == "process_start_time_seconds"]
        if starts.empty:
            return None
        now = df["timestamp"].max().timestamp()
        return float(now - starts["value"].max())

    # ------------------------------------------------------------------ the questions
    def increase(self, metric: str, by: Iterable[str], match: Mapping[str, str] | None = None,
                 title: str = "") -> pd.DataFrame:
        """Increase of ``metric`` over the window, summed by ``by``: label columns + ``value``."""
        by = list(by)
        if self.mode != "prometheus":
            return self._snapshot(metric, by, match)
        expr = self.client.render(INCREASE.format(by=", ".join(by), m=metric, sel=_matchers(match), w=self.window_s))
        self.queries.append((title or f"increase of {metric}", expr))
        df = self.client.query(expr, at=self.end)
        return _ensure_columns(df, by)[[*by, "value"]]

    def rate_series(self, metric: str, by: Iterable[str], match: Mapping[str, str] | None = None,
                    title: str = "") -> pd.DataFrame | None:
        """Per-second rate over time: ``timestamp``, label columns, ``value``; None in snapshot mode."""
        if self.mode != "prometheus":
            self.scrape()  # raises when no source is configured at all
            return None
        by = list(by)
        expr = self.client.render(RATE.format(by=", ".join(by), m=metric, sel=_matchers(match),
                                              r=rate_window(self.step)))
        self.queries.append((title or f"rate of {metric} over time (step {self.step} s)", expr))
        df = self.client.query_range(expr, self.start, self.end, self.step)
        return _ensure_columns(df, by)[["timestamp", *by, "value"]]

    def snapshot_rates(self, metric: str, by: Iterable[str], match: Mapping[str, str] | None = None,
                       interval_s: float = 5.0) -> pd.DataFrame | None:
        """Snapshot mode: a counter's per-second rate *now*, between two scrapes of every
        metrics URL ``interval_s`` apart (the runbook's ``curl /metrics``, twice):
        ``timestamp``, label columns, ``value``, one row per label set.

        The two scrapes are taken once per object and shared by every metric asked for
        (so CPU and request rates describe the same seconds); the second one becomes the
        snapshot :meth:`scrape` returns, so gauges read afterwards are from the same moment.
        None in Prometheus mode (use :meth:`rate_series`). Added for the quick-diagnostics
        and bottlenecks sections (CPU % needs a rate even without Prometheus).
        """
        if self.mode != "snapshot":
            return None
        by = list(by)
        if self._scrape_pair is None:
            before, after = prom.scrape_twice(list(self.params.targets.metrics_urls), interval_s,
                                              self._scrape_timeout, self._dead_url,
                                              max_bytes=limits_of(self.params).max_response_bytes)
            self._scrape_pair = (after, prom.rates(before, after))
            self._scraped = after
        rates = self._scrape_pair[1]
        out = _sum_by(rates, metric, by, match)
        when = rates["timestamp"].max() if len(rates) else pd.Timestamp.now(tz="UTC")
        out.insert(0, "timestamp", pd.Series([when] * len(out), index=out.index, dtype="datetime64[ns, UTC]"))
        return out

    def samples(self, metric: str, match: Mapping[str, str] | None = None, title: str = "") -> pd.DataFrame:
        """A gauge's samples over the window: label columns, ``timestamp``, ``value``.

        Prometheus: every stored sample (``m[W]``) for windows up to 6 h, else a range
        query at the plot step. Snapshot mode: the current value, one row per series.
        """
        if self.mode != "prometheus":
            df = self.scrape()
            df = df[df["metric"] == metric]
            for k, v in (match or {}).items():
                df = df[df[k].astype(str) == str(v)] if k in df.columns else df.iloc[0:0]
            return df.dropna(axis=1, how="all").drop(columns=["metric_type"], errors="ignore")
        if self.window_s <= MAX_RAW_WINDOW_S:
            expr = self.client.render(SAMPLES.format(m=metric, sel=_matchers(match), w=self.window_s))
            self.queries.append((title or f"samples of {metric}", expr))
            return self.client.query(expr, at=self.end)
        expr = self.client.render(f"{metric}{{{_matchers(match)}}}")
        self.queries.append((title or f"{metric} every {self.step} s", expr))
        return self.client.query_range(expr, self.start, self.end, self.step)

    def last(self, metric: str, match: Mapping[str, str] | None = None, title: str = "") -> pd.DataFrame:
        """A gauge's last value in the window, one row per series."""
        if self.mode != "prometheus":
            return self.samples(metric, match)
        expr = self.client.render(LAST.format(m=metric, sel=_matchers(match), w=self.window_s))
        self.queries.append((title or f"last value of {metric}", expr))
        return self.client.query(expr, at=self.end)

    def instance_frame(self, m: Any) -> tuple[str, pd.DataFrame]:
        """Every per-instance series of the load-balancing and scaling sections (``m``: the
        params' :class:`~perfbook.params.Metrics`): ``("prometheus", frame)`` with the
        :func:`instance_query` range query's answer (recorded in :attr:`queries`), else
        ``("snapshot", frame)`` with one scrape per metrics URL. Turned into series by
        :func:`perfbook.checks.balance.series_from`."""
        if self.mode == "prometheus":
            expr = self.client.render(instance_query(m, rate_window(self.step)))
            self.queries.append((f"per-instance load (step {self.step} s)", expr))
            return "prometheus", self.client.query_range(expr, self.start, self.end, self.step)
        return "snapshot", self.scrape()

    def promql_text(self) -> str:
        """Everything run so far, for a collapsed ``pb.details`` block."""
        if not self.queries:
            return "(no PromQL: " + self.basis + ")"
        notes = [f"# note: {n}" for n in dict.fromkeys(getattr(self.client, "notes", None) or [])]
        return "\n\n".join([*notes, *(f"# {t}\n{q}" for t, q in self.queries)])
