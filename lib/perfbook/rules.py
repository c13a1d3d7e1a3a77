"""Prometheus's alerting-rule evaluation, reproduced (pure): per label set of a rule's
result, the inactive → pending → firing state machine of ``rules/alerting.go``
(``AlertingRule.Eval``) at each evaluation tick (:func:`series_states`,
:func:`alert_spans`, :func:`evaluate` → :class:`RuleEvaluation`), and the same spans
read from the server's own ``ALERTS`` series (:func:`server_spans`).

Shared by :mod:`perfbook.sources.monitoring` (which runs the range queries and hands
back evaluations) and :mod:`perfbook.checks.alerts` (which turns them into findings and
compares them with the server's). The module docstring of :mod:`perfbook.checks.alerts`
describes the semantics.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfbook.promql import evaluation_ticks, lookback_start, unix_ms, utc

__all__ = ["ALERT_META_LABELS", "STATE_COLUMNS", "SPAN_COLUMNS", "series_name", "series_states", "alert_spans",
           "RuleEvaluation", "evaluate", "server_spans", "union_seconds"]

_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}

#: Labels Prometheus adds to ALERTS series and to the alerts it reports, besides the
#: result's own labels and the rule's labels.
ALERT_META_LABELS = ("alertname", "alertstate", "metric")

STATE_COLUMNS = ["series", "timestamp", "value", "holds", "state", "active_at"]
SPAN_COLUMNS = ["series", "state", "start", "end", "duration_s", "ongoing", "active_at", "peak"]


def _label_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c not in ("timestamp", "value", "metric"))


def series_name(labels: dict[str, Any]) -> str:
    """``{instance="127.0.0.1:8101"}``; ``{}`` for a result without labels."""
    parts = [f'{k}="{v}"' for k, v in sorted(labels.items()) if v is not None and v == v and v != ""]
    return "{" + ", ".join(parts) + "}"


def _series_keys(frame: pd.DataFrame, drop: Iterable[str] = ()) -> pd.Series:
    cols = [c for c in _label_columns(frame) if c not in set(drop)]
    if frame.empty:
        return pd.Series([], dtype=object)
    records = frame[cols].to_dict("records") if cols else [{} for _ in range(len(frame))]
    return pd.Series([series_name(r) for r in records], index=frame.index, dtype=object)


def series_states(samples: pd.DataFrame, ticks: Sequence[Any], threshold: float, for_s: float,
                  op: str = ">") -> pd.DataFrame:
    """Each result series' alert state at each tick, by Prometheus's rules (module doc).

    ``samples``: the rule's expression (without the comparison) evaluated at the ticks:
    a tidy frame with label columns, ``timestamp`` and ``value`` (what
    ``PromClient.query_range(expr, first_tick, last_tick, interval)`` returns). A tick
    where a series has no sample is a tick where the expression had no result for it.
    NaN never satisfies a comparison (as in PromQL).

    Returns one row per (series, tick) from the series' first sample on: ``series``
    (``{instance="..."}``), ``timestamp``, ``value`` (NaN when absent), ``holds``
    (comparison true), ``state`` (inactive/pending/firing), ``active_at``.
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(_OPS)}")
    tick_ms = np.array(sorted({unix_ms(t) for t in ticks}), dtype="int64")
    if samples.empty or not len(tick_ms):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATE_COLUMNS})
    frame = samples.copy()
    frame["series"] = _series_keys(frame)
    frame["ms"] = [unix_ms(t) for t in frame["timestamp"]]
    hold_ms = int(round(float(for_s) * 1000))
    compare = _OPS[op]
    out = []
    for name, part in frame.groupby("series", sort=True):
        values = dict(zip(part["ms"], part["value"].astype(float)))
        first = min(values)
        state, active_at = "inactive", None
        for t in tick_ms[tick_ms >= first]:
            v = values.get(int(t), math.nan)
            holds = bool(not math.isnan(v) and compare(v, threshold))
            if not holds:
                state, active_at = "inactive", None
            else:
                if state == "inactive":
                    state, active_at = "pending", int(t)
                if state == "pending" and int(t) - active_at >= hold_ms:
                    state = "firing"
            out.append((name, int(t), v, holds, state, active_at))
    df = pd.DataFrame(out, columns=["series", "ms", "value", "holds", "state", "active_ms"])
    df["timestamp"] = pd.to_datetime(df["ms"], unit="ms", utc=True)
    df["active_at"] = pd.to_datetime(df["active_ms"], unit="ms", utc=True)
    return df[STATE_COLUMNS]


def alert_spans(states: pd.DataFrame, op: str = ">") -> pd.DataFrame:
    """Runs of pending and of firing per series, from :func:`series_states`.

    ``start``: the first tick in the state; ``end``: the first tick out of it (the tick
    the alert fired, or resolved), or the last tick when it still held (``ongoing``);
    ``duration_s`` = end - start; ``active_at`` of the alert; ``peak``: the largest
    value during the run (smallest for ``<`` rules).
    """
    rows = []
    if not states.empty:
        for name, part in states.groupby("series", sort=True):
            part = part.sort_values("timestamp")
            times = list(part["timestamp"])
            st = list(part["state"])
            vals = list(part["value"])
            act = list(part["active_at"])
            i = 0
            while i < len(st):
                if st[i] == "inactive":
                    i += 1
                    continue
                j = i
                while j + 1 < len(st) and st[j + 1] == st[i] and act[j + 1] == act[i]:
                    j += 1
                ongoing = j + 1 >= len(st)
                end = times[j] if ongoing else times[j + 1]
                run = [v for v in vals[i:j + 1] if not math.isnan(v)]
                peak = (min(run) if op.startswith("<") else max(run)) if run else math.nan
                rows.append({"series": name, "state": st[i], "start": times[i], "end": end,
                             "duration_s": (end - times[i]).total_seconds(), "ongoing": ongoing,
                             "active_at": act[i], "peak": peak})
                i = j + 1
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SPAN_COLUMNS})
    return pd.DataFrame(rows, columns=SPAN_COLUMNS)


@dataclass
class RuleEvaluation:
    """One rule evaluated over a window: its states per tick and its spans, clipped to
    ``[start, end]`` (ticks before ``start`` only prime the state machine)."""

    rule: Any
    expr: str                      # rendered, without the comparison
    interval_s: float
    start: pd.Timestamp
    end: pd.Timestamp
    states: pd.DataFrame
    spans: pd.DataFrame
    samples: int = 0
    error: str = ""                # the server refused the query (its message)

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def firing(self) -> pd.DataFrame:
        return self.spans[self.spans["state"] == "firing"]

    @property
    def fired(self) -> bool:
        return not self.firing.empty

    @property
    def first_fired_at(self) -> pd.Timestamp | None:
        return self.firing["start"].min() if self.fired else None

    def firing_seconds(self) -> float:
        """Time at least one series was firing (union over series), in seconds."""
        return union_seconds(self.firing)

    def peak(self) -> float:
        vals = self.states["value"].dropna() if not self.states.empty else pd.Series(dtype=float)
        if vals.empty:
            return math.nan
        return float(vals.min() if self.rule.op.startswith("<") else vals.max())

    def state_at_end(self) -> str:
        if self.states.empty:
            return "no data"
        last = self.states[self.states["timestamp"] == self.states["timestamp"].max()]
        for s in ("firing", "pending"):
            if (last["state"] == s).any():
                return s
        return "inactive"


def union_seconds(spans: pd.DataFrame) -> float:
    if spans.empty:
        return 0.0
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(zip(spans["start"], spans["end"])):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += (cur_e - cur_s).total_seconds()
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    total += (cur_e - cur_s).total_seconds()
    return total


def _clip(spans: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    if spans.empty:
        return spans
    s = spans[(spans["end"] > start) | (spans["ongoing"] & (spans["end"] >= start))].copy()
    s["start"] = s["start"].where(s["start"] >= start, start)
    s["end"] = s["end"].where(s["end"] <= end, end)
    s["duration_s"] = (s["end"] - s["start"]).dt.total_seconds()
    return s.reset_index(drop=True)


def evaluate(rule: Any, samples: pd.DataFrame, start: Any, end: Any, interval_s: float,
             expr: str = "", prime: bool = True) -> RuleEvaluation:
    """Evaluate one rule over ``[start, end]``.

    ``samples``: the rule's expression evaluated every ``interval_s`` on the
    :func:`evaluation_ticks` grid, from :func:`lookback_start` (so ``for`` can already
    have elapsed at ``start``) to ``end``. ``prime=False`` starts the state machine at
    ``start`` instead, as a server does when its rules were loaded at ``start``.
    """
    start, end = utc(start), utc(end)
    first = lookback_start(start, rule.for_, interval_s) if prime else start
    ticks = evaluation_ticks(first, end, interval_s)
    states = series_states(samples, ticks, rule.threshold, rule.for_, rule.op)
    spans = _clip(alert_spans(states, rule.op), start, end)
    window_states = states[states["timestamp"] >= start] if not states.empty else states
    return RuleEvaluation(rule, expr, float(interval_s), start, end, window_states.reset_index(drop=True),
                          spans, samples=int(len(samples)))


# ---------------------------------------------------------------------------------
# What the server says
# ---------------------------------------------------------------------------------

def server_spans(alerts_series: pd.DataFrame, ticks: Sequence[Any], rule_labels: Iterable[str] = ("severity",)
                 ) -> pd.DataFrame:
    """Pending and firing spans from the server's own ``ALERTS`` series.

    ``alerts_series``: ``ALERTS{alertname=~"..."}`` as a range query at ``ticks``
    (columns ``alertname``, ``alertstate``, the alert's labels, ``timestamp``,
    ``value``). The server writes ALERTS at each of its evaluations and marks it stale
    when the alert ends, so a tick shows the state of the server's latest evaluation.
    Returns :data:`SPAN_COLUMNS` plus ``alertname``; ``series`` names the labels the
    alert got from the expression (the rule's own labels, ``rule_labels``, left out) so
    they match perfbook's series.
    """
    cols = SPAN_COLUMNS + ["alertname"]
    if alerts_series is None or alerts_series.empty or "alertname" not in alerts_series.columns:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    frame = alerts_series.copy()
    frame["series"] = _series_keys(frame, drop=[*ALERT_META_LABELS, *rule_labels])
    frame["ms"] = [unix_ms(t) for t in frame["timestamp"]]
    tick_ms = sorted({unix_ms(t) for t in ticks})
    out = []
    for (alertname, name), part in frame.groupby(["alertname", "series"], sort=True):
        firing = set(part.loc[part["alertstate"] == "firing", "ms"])
        pending = set(part.loc[part["alertstate"] == "pending", "ms"])
        first = min(part["ms"])
        rows = []
        for t in tick_ms:
            if t < first:
                continue
            state = "firing" if t in firing else "pending" if t in pending else "inactive"
            rows.append((name, t, math.nan, state != "inactive", state, None))
        states = pd.DataFrame(rows, columns=["series", "ms", "value", "holds", "state", "active_at"])
        states["timestamp"] = pd.to_datetime(states["ms"], unit="ms", utc=True)
        # A new alert starts each time the state leaves inactive: mark it with its start.
        act, current = [], None
        for st, ts in zip(states["state"], states["timestamp"]):
            current = None if st == "inactive" else (current or ts)
            act.append(current)
        states["active_at"] = act
        spans = alert_spans(states[STATE_COLUMNS])
        spans["alertname"] = alertname
        out.append(spans)
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    return pd.concat(out, ignore_index=True)[cols]
