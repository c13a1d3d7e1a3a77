"""The runbook's "Performance Alerts", evaluated the way Prometheus evaluates them.

An alert rule (``params.settings.monitoring.alerts``) is PromQL whose value is compared
with a threshold, and a ``for`` duration. Prometheus evaluates each rule every
``evaluation_interval`` (``rules/alerting.go``, ``AlertingRule.Eval``); per label set of
the result:

- the comparison holds at a tick and the series has no active alert → the alert is
  *pending*, ``activeAt`` = that tick;
- pending and ``tick - activeAt >= for`` → *firing* (with ``for: 0`` at the first tick);
- the comparison does not hold, or the series is absent from the result, at a tick →
  back to *inactive* at once (no ``keep_firing_for``); holding again starts a new
  pending period with a new ``activeAt``.

:func:`series_states` applies exactly that state machine to the result of a range
query evaluated at the same ticks (a range query at step = evaluation interval gives,
at each tick, the instant-query value a rule evaluation at that tick sees). The only
difference from a server is the phase of the ticks: Prometheus offsets each group's
ticks by a hash of the group, so perfbook's and the server's ticks may differ by up to
one interval, and a fired-at time by as much.

:func:`rules_yaml` writes the same rules as a Prometheus rules file (``perfbook alerts
export``), so what perfbook evaluates and what the server fires can be compared
(:func:`compare_with_server`).

Everything here is pure: the range queries are run by the notebook through
:class:`perfbook.sources.prometheus.PromClient`.
"""
from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from perfbook.findings import Finding
from perfbook.sources.prometheus import render as _render_selector

__all__ = [
    "render_expr", "same_promql", "memory_ratio_template", "memory_ratio_basis", "export_notes", "alert_expr", "prom_duration", "rules_yaml", "rules_table",
    "evaluation_ticks", "lookback_start", "series_states", "alert_spans", "RuleEvaluation", "evaluate",
    "alert_findings", "server_spans", "compare_with_server", "server_rules_table", "STATE_COLUMNS",
    "SPAN_COLUMNS", 
]

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_EMPTY_MATCHERS = re.compile(r"(?<=[A-Za-z0-9_:])\{\s*\}")
_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}

#: Labels Prometheus adds to ALERTS series and to the alerts it reports, besides the
#: result's own labels and the rule's labels.
ALERT_META_LABELS = ("alertname", "alertstate", "metric")

STATE_COLUMNS = ["series", "timestamp", "value", "holds", "state", "active_at"]
SPAN_COLUMNS = ["series", "state", "start", "end", "duration_s", "ongoing", "active_at", "peak"]


# ---------------------------------------------------------------------------------
# The rules as PromQL
# ---------------------------------------------------------------------------------

def memory_ratio_template(params: Any) -> str:
    """What ``${memory_ratio}`` stands for in an alert or panel expression: memory used over
    its limit, per series, on stock prom-client 15 (which has no heap-limit gauge).

    With ``targets.memory_limit`` (the instance's memory, what the OOM killer compares):
    RSS over it, and heap used over the heap-limit gauge where the service exports one
    (``nodejs_heap_size_limit_bytes`` is not a prom-client metric; a service may add it
    from ``v8.getHeapStatistics()``), each tagged with a ``basis`` label so that an
    aggregation over them (``max by (instance)``) takes the higher. Without a memory
    limit, only the heap-limit ratio: a rule on it has data only where that gauge exists
    (``perfbook alerts export`` says so). The heap's committed size
    (``nodejs_heap_size_total_bytes``, the sum of the V8 heap spaces) is not a limit: V8
    grows it on demand, and heap used / committed is 80 % on an idle process.
    """
    heap = "${heap_used}{__SEL__} / ${heap_limit}{__SEL__}"
    limit = params.targets.memory_limit_bytes()
    if not limit:
        return heap
    return (f'label_replace(${{resident_memory}}{{__SEL__}} / {_number(limit)}, "basis", "rss/memory_limit", '
            f'"__name__", ".*") or label_replace({heap}, "basis", "heap/heap_limit", "__name__", ".*")')


def memory_ratio_basis(params: Any) -> str:
    """In words, what the memory ratio compares (for titles, captions and export notes)."""
    limit = params.targets.memory_limit_bytes()
    heap = f"heap used / {params.metrics.heap_limit} (where exported)"
    if not limit:
        return heap
    return f"RSS / targets.memory_limit ({limit / 1024 / 1024:.0f} MB), or {heap} when higher"


def render_expr(template: str, params: Any, selector: str | None = None) -> str:
    """A rule's expression with ``${name}`` replaced by ``params.metrics.<name>`` and
    ``__SEL__`` by the Prometheus selector's matchers (``selector`` overrides the params').
    ``${memory_ratio}`` is expanded first (:func:`memory_ratio_template`).

    An empty matcher list left behind (``metric{}``) is dropped, so the text is what one
    would write by hand.
    """
    template = template.replace("${memory_ratio}", memory_ratio_template(params))

    def metric(m: re.Match) -> str:
        name = m.group(1)
        if not hasattr(params.metrics, name):
            raise ValueError(f"${{{name}}} is not a field of the params' metrics section")
        return str(getattr(params.metrics, name))

    text = _PLACEHOLDER.sub(metric, template)
    if selector is None:
        prom = params.targets.prometheus
        selector = prom.selector if prom is not None else ""
    text = _render_selector(text, selector)
    return _EMPTY_MATCHERS.sub("", text)


def _number(x: float) -> str:
    """A PromQL number literal as Prometheus itself prints it (Go's ``%v``: the shortest
    digits, in exponent form from 1e+06 and under 1e-04): ``3``, ``0.9``, ``100000``,
    ``5.36870912e+08``, ``1e-05`` — so a rule the server reports back (``/api/v1/rules``)
    reads exactly as exported."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    sign, digits, exp = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    d = "".join(map(str, digits))
    e = len(d) + exp - 1                       # the decimal exponent of the first digit
    minus = "-" if x < 0 else ""
    if e < -4 or e >= 6:
        mant = d[0] + ("." + d[1:] if len(d) > 1 else "")
        return f"{minus}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if e >= len(d) - 1:
        return minus + d + "0" * (e - len(d) + 1)
    if e >= 0:
        return f"{minus}{d[:e + 1]}.{d[e + 1:]}"
    return f"{minus}0.{'0' * (-e - 1)}{d}"


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?![\w.])")


def same_promql(a: str, b: str) -> bool:
    """Two PromQL texts equal but for whitespace and the spelling of numbers
    (``536870912`` and ``5.36870912e+08``: how a server prints a rule is not how it was
    written)."""
    def canon(text: str) -> str:
        return _NUMBER.sub(lambda m: repr(float(m.group(1))), re.sub(r"\s+", "", text))
    return canon(a) == canon(b)


def _atomic(expr: str) -> bool:
    """True when ``expr`` is one function call or one selector, so a comparison can be
    appended without parentheses (``max(...) > 3``); anything else gets them."""
    e = expr.strip()
    if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*(\{[^{}]*\})?(\[[^\]]*\])?", e):
        return True
    m = re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(", e)
    if not m:
        return False
    depth, in_str, escaped = 0, None, False
    for i in range(m.end() - 1, len(e)):
        ch = e[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == in_str:
                in_str = None
            continue
        if ch in "\"'`":
            in_str = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                rest = e[i + 1:].strip()
                return rest == "" or bool(re.fullmatch(r"(by|without)\s*\([^)]*\)", rest))
    return False


def alert_expr(rule: Any, params: Any, selector: str | None = None) -> str:
    """The rule as Prometheus evaluates it: the rendered expression with the comparison
    (``histogram_quantile(...) > 3``)."""
    expr = render_expr(rule.expr, params, selector)
    lhs = expr if _atomic(expr) else f"({expr})"
    return f"{lhs} {rule.op} {_number(rule.threshold)}"


def prom_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``300`` → ``5m``, ``90`` → ``1m30s``,
    ``0.5`` → ``500ms``, ``0`` → ``0s``."""
    ms = int(round(float(seconds) * 1000))
    if ms < 0:
        raise ValueError("a duration cannot be negative")
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _op_words(op: str) -> str:
    return {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}[op]


def _group_name(params: Any) -> str:
    return f"perfbook-{re.sub(r'[^A-Za-z0-9_.-]+', '-', params.service).strip('-') or 'service'}"


def rules_yaml(params: Any) -> str:
    """The params' alert rules as a Prometheus rules file (``rule_files:``).

    One group named ``perfbook-<service>`` with ``interval`` = the params' evaluation
    interval (so the server evaluates at the same rate perfbook assumes). Each rule:
    ``alert``, ``expr`` (the rendered expression with its threshold comparison), ``for``,
    ``labels.severity``, ``annotations.summary`` and ``annotations.description`` (with
    ``{{ $value }}``), and the runbook section in ``annotations.runbook``. Check the file
    with ``promtool check rules``.
    """
    m = params.settings.monitoring
    rules = []
    for rule in m.alerts:
        unit = "%" if rule.unit == "%" else f" {rule.unit}" if rule.unit and rule.unit != "ratio" else ""
        rules.append({
            "alert": rule.name,
            "expr": alert_expr(rule, params),
            "for": prom_duration(rule.for_),
            "labels": {"severity": rule.severity},
            "annotations": {
                "summary": rule.summary or f"{rule.name}: {_op_words(rule.op)} {_number(rule.threshold)}{unit}",
                "description": (f"{rule.name}{{{{ with $labels.{params.metrics.instance_label} }}}} on "
                                f"{{{{ . }}}}{{{{ end }}}}: value {{{{ $value | printf \"%.4g\" }}}} is "
                                f"{_op_words(rule.op)} {_number(rule.threshold)}{unit} for at least "
                                f"{prom_duration(rule.for_)}."),
                "runbook": "Performance Degradation Runbook: Performance Monitoring / Performance Alerts",
            },
        })
    doc = {"groups": [{"name": _group_name(params), "interval": prom_duration(m.evaluation_interval),
                       "rules": rules}]}
    # The header is constant text: the service name (free text from the params file) goes
    # only through the YAML serializer (the group's name), never into a comment by string
    # formatting, where a newline in it would start new keys.
    head = ("# Prometheus alerting rules written by `perfbook alerts export`: the runbook's Performance\n"
            "# Alerts with this params file's thresholds and selector, on stock prom-client metrics.\n"
            "# Check with: promtool check rules <this file>\n")
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def export_notes(params: Any) -> list[str]:
    """What to know about the exported rules on a stock prom-client 15 service: a rule whose
    expression can have data only through a metric that ``collectDefaultMetrics()`` does
    not export (the heap-limit gauge, a ``nodejs_process_cpu_percent``...). One line each;
    empty when every rule evaluates on stock metrics."""
    from perfbook.checks.resources import PROM_CLIENT_DEFAULT_METRICS, is_runtime_metric

    notes = []
    m = params.metrics
    for rule in params.settings.monitoring.alerts:
        names = set(_PLACEHOLDER.findall(rule.expr))
        if "memory_ratio" in names and not params.targets.memory_limit_bytes():
            notes.append(f"{rule.name}: no targets.memory_limit in the params, so the rule compares heap used with "
                         f"{m.heap_limit}, which stock prom-client does not export: set targets.memory_limit (the "
                         f"instance's memory) so it compares RSS with it.")
        for name in sorted(n for n in names if hasattr(m, n)):
            metric = str(getattr(m, name))
            if is_runtime_metric(metric) and metric not in PROM_CLIENT_DEFAULT_METRICS:
                notes.append(f"{rule.name}: {metric} (metrics.{name}) is not a prom-client 15 default metric; the "
                             f"rule has data only where the service exports it.")
    return notes


def rules_table(params: Any) -> pd.DataFrame:
    """The configured rules, one row each: what is evaluated, against what, for how long."""
    rows = [{"alert": r.name, "expr": alert_expr(r, params), "for": prom_duration(r.for_),
             "severity": r.severity, "summary": r.summary}
            for r in params.settings.monitoring.alerts]
    return pd.DataFrame(rows, columns=["alert", "expr", "for", "severity", "summary"])


# ---------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------

def _ts(t: Any) -> pd.Timestamp:
    """UTC timestamp from a datetime, a pandas Timestamp, ISO text or unix seconds."""
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        return pd.Timestamp(float(t), unit="s", tz="UTC")
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ms(t: Any) -> int:
    return int(round(_ts(t).timestamp() * 1000))


def lookback_start(start: Any, for_s: float, interval_s: float) -> pd.Timestamp:
    """Where to begin evaluating so that the state at ``start`` is right: ``for`` plus
    one interval earlier (an alert already firing when the window opens is firing at
    its first tick, as on the server)."""
    return _ts(start) - pd.Timedelta(seconds=float(for_s) + float(interval_s))


def evaluation_ticks(start: Any, end: Any, interval_s: float) -> pd.DatetimeIndex:
    """The evaluation times in ``[start, end]``: multiples of the interval since the
    epoch (as a server's ticks are, up to its per-group offset), UTC."""
    step = int(round(float(interval_s) * 1000))
    if step <= 0:
        raise ValueError("the evaluation interval must be positive")
    first = -(-_ms(start) // step) * step
    last = _ms(end)
    if last < first:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.to_datetime(np.arange(first, last + 1, step, dtype="int64"), unit="ms", utc=True)


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
    tick_ms = np.array(sorted({_ms(t) for t in ticks}), dtype="int64")
    if samples.empty or not len(tick_ms):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATE_COLUMNS})
    frame = samples.copy()
    frame["series"] = _series_keys(frame)
    frame["ms"] = [_ms(t) for t in frame["timestamp"]]
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
        return _union_seconds(self.firing)

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


def _union_seconds(spans: pd.DataFrame) -> float:
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
    start, end = _ts(start), _ts(end)
    first = lookback_start(start, rule.for_, interval_s) if prime else start
    ticks = evaluation_ticks(first, end, interval_s)
    states = series_states(samples, ticks, rule.threshold, rule.for_, rule.op)
    spans = _clip(alert_spans(states, rule.op), start, end)
    window_states = states[states["timestamp"] >= start] if not states.empty else states
    return RuleEvaluation(rule, expr, float(interval_s), start, end, window_states.reset_index(drop=True),
                          spans, samples=int(len(samples)))


def _fmt_time(t: pd.Timestamp | None) -> str | None:
    return None if t is None or pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_s(seconds: float) -> str:
    seconds = float(seconds)
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def _fmt_value(v: float, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "%":
        return f"{v:.1f} %"
    if unit == "ratio":
        return f"{v:.2f}"
    return f"{v:.4g}{(' ' + unit) if unit else ''}"


def alert_findings(ev: RuleEvaluation) -> list[Finding]:
    """One finding per rule: ``alert.firing`` at the rule's severity when it fired in the
    window (when first, for how long, the peak, the series that fired); ``info`` when it
    only went pending, or when its expression returned nothing (the metric may be
    missing: the rule can never fire); ``ok`` otherwise."""
    rule = ev.rule
    unit = rule.unit
    thr = f"{rule.op} {_fmt_value(rule.threshold, unit)}"
    base = {"threshold": rule.threshold, "op": rule.op, "for_s": rule.for_, "expr": ev.expr,
            "evaluation_interval_s": ev.interval_s}
    if ev.error:
        return [Finding(
            "alert.firing", "error", f"{rule.name} could not be evaluated: the server refused its expression",
            subject=rule.name, evidence={**base, "error": ev.error},
            recommendation="Fix the rule's expr in the params (settings.monitoring.alerts); the server's message "
                           "says what is wrong.")]
    if ev.states.empty or ev.states["value"].dropna().empty:
        return [Finding(
            "alert.firing", "info", f"{rule.name}: its expression returned no data in the window, so it cannot fire",
            subject=rule.name, evidence={**base, "samples": ev.samples},
            recommendation=("Check that the metrics in the expression exist under the params' selector "
                            "(targets.prometheus.selector) and names (metrics:); a rule on a missing metric "
                            "is silent, not healthy."))]
    peak = ev.peak()
    if ev.fired:
        firing = ev.firing
        last = firing.sort_values("end").iloc[-1]
        still = bool(firing["ongoing"].any())
        fired_at = ev.first_fired_at
        duration = ev.firing_seconds()
        series = sorted(set(firing["series"]))
        peak_fire = float(firing["peak"].max() if not rule.op.startswith("<") else firing["peak"].min())
        title = (f"{rule.name} fired at {fired_at:%H:%M:%S} UTC and was firing for {_fmt_s(duration)}"
                 f"{' (still firing at the window end)' if still else ''}: peak {_fmt_value(peak_fire, unit)} "
                 f"(threshold {thr} for {prom_duration(rule.for_)})")
        return [Finding(
            "alert.firing", rule.severity, title, subject=rule.name,
            evidence={**base, "fired_at": _fmt_time(fired_at),
                      "resolved_at": None if still else _fmt_time(last["end"]),
                      "still_firing": still, "duration_s": duration, "peak": peak_fire,
                      "firing_spans": int(len(firing)), "series": series},
            recommendation=(f"{rule.summary or rule.name}: open the section that explains it "
                            + _RULE_HINTS.get(rule.name, "(see the runbook's Issue sections)") + "."))]
    pending = ev.spans[ev.spans["state"] == "pending"]
    if not pending.empty:
        longest = float(pending["duration_s"].max())
        return [Finding(
            "alert.firing", "info",
            f"{rule.name} went pending (longest {_fmt_s(longest)}) but never held for {prom_duration(rule.for_)}: "
            f"peak {_fmt_value(peak, unit)}, threshold {thr}",
            subject=rule.name,
            evidence={**base, "peak": peak, "pending_spans": int(len(pending)), "longest_pending_s": longest,
                      "first_pending_at": _fmt_time(pending["start"].min())})]
    return [Finding(
        "alert.firing", "ok", f"{rule.name} did not fire: peak {_fmt_value(peak, unit)}, threshold {thr}",
        subject=rule.name, evidence={**base, "peak": peak})]


_RULE_HINTS = {
    "HighResponseTime": "(quick-diagnostics for which endpoint, then bottlenecks for where the time goes)",
    "HighCPU": "(bottlenecks, Issue 1 §2 CPU Bottleneck; scaling, Issue 4)",
    "HighMemory": "(bottlenecks, Issue 1 §3 Memory Bottleneck: growth means a leak)",
    "EventLoopLag": "(bottlenecks, Issue 1 §2: synchronous work on the event loop)",
}


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
    frame["ms"] = [_ms(t) for t in frame["timestamp"]]
    tick_ms = sorted({_ms(t) for t in ticks})
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


def compare_with_server(evaluations: Sequence[RuleEvaluation], server: pd.DataFrame | None,
                        configured: Iterable[str] | None = None, tolerance_s: float | None = None) -> pd.DataFrame:
    """perfbook's evaluation beside the server's, one row per rule.

    ``server``: :func:`server_spans` over the same window (None when the server was not
    asked). ``configured``: alert names the server has (``/api/v1/rules``); a rule the
    server does not have is "not on the server", not a disagreement. Two evaluations
    agree when both fired or both did not, and the first fired-at times differ by at
    most ``tolerance_s`` (default: three evaluation intervals, at least 5 s — the two
    tick grids are offset by up to one interval; a server evaluates before a slow
    scrape's sample is stored, while perfbook, after the fact, sees it at its scrape
    time; and a rate() computed one interval apart can cross the threshold a tick
    earlier or later).
    """
    configured = set(configured) if configured is not None else None
    rows = []
    for ev in evaluations:
        tol = tolerance_s if tolerance_s is not None else max(3 * ev.interval_s, 5.0)
        srv = server[(server["alertname"] == ev.name)] if server is not None and not server.empty else None
        srv_firing = srv[srv["state"] == "firing"] if srv is not None else None
        on_server = (configured is None and srv is not None and not srv.empty) or \
            (configured is not None and ev.name in configured)
        p_at = ev.first_fired_at
        s_at = srv_firing["start"].min() if srv_firing is not None and not srv_firing.empty else None
        verdict = "fired" if ev.fired else "no data" if ev.state_at_end() == "no data" else "did not fire"
        row = {"alert": ev.name, "perfbook": verdict,
               "perfbook_fired_at": _fmt_time(p_at), "perfbook_firing_s": ev.firing_seconds(),
               "perfbook_series": ", ".join(sorted(set(ev.firing["series"]))) if ev.fired else ""}
        if server is None:
            row.update(server="not asked", server_fired_at=None, server_firing_s=None, delta_s=None, agree=None)
        elif not on_server:
            row.update(server="not configured on the server", server_fired_at=None, server_firing_s=None,
                       delta_s=None, agree=None)
        else:
            s_fired = s_at is not None
            delta = (p_at - s_at).total_seconds() if (p_at is not None and s_at is not None) else None
            agree = (ev.fired == s_fired) and (delta is None or abs(delta) <= tol)
            row.update(server="fired" if s_fired else "did not fire", server_fired_at=_fmt_time(s_at),
                       server_firing_s=_union_seconds(srv_firing) if s_fired else 0.0,
                       delta_s=delta, agree=agree)
        rows.append(row)
    return pd.DataFrame(rows, columns=["alert", "perfbook", "perfbook_fired_at", "perfbook_firing_s", "perfbook_series",
                                       "server", "server_fired_at", "server_firing_s", "delta_s", "agree"])


def server_rules_table(params: Any, rules: pd.DataFrame | None, alerts: pd.DataFrame | None) -> pd.DataFrame:
    """What the server has configured (``/api/v1/rules``) and says is active now
    (``/api/v1/alerts``), beside perfbook's rules: one row per alerting rule of either.

    Columns: ``alert``, ``in_params`` (perfbook evaluates it), ``on_server``,
    ``server_expr``, ``server_for``, ``same_expr`` (the server's query is the exported
    one, whitespace aside), ``health``, ``server_state_now``, ``active_now``.
    """
    mine = {r.name: r for r in params.settings.monitoring.alerts}
    server_rules = rules[rules["type"] == "alerting"] if rules is not None and not rules.empty else None
    by_name = {r["name"]: r for _, r in server_rules.iterrows()} if server_rules is not None else {}
    active: dict[str, list[str]] = {}
    if alerts is not None and not alerts.empty and "alertname" in alerts.columns:
        for _, a in alerts.iterrows():
            active.setdefault(a["alertname"], []).append(str(a["state"]))
    rows = []
    for name in list(mine) + [n for n in by_name if n not in mine]:
        srv = by_name.get(name)
        ours = alert_expr(mine[name], params) if name in mine else None
        same = None if srv is None or ours is None else same_promql(str(srv["query"]), ours)
        states = active.get(name, [])
        rows.append({
            "alert": name, "in_params": name in mine, "on_server": srv is not None,
            "server_expr": None if srv is None else srv["query"],
            "server_for": None if srv is None else prom_duration(srv["duration"]),
            "same_expr": same,
            "health": None if srv is None else srv["health"],
            "server_state_now": None if srv is None else srv["state"],
            "active_now": ", ".join(f"{states.count(s)} {s}" for s in ("firing", "pending") if s in states) or "none",
        })
    return pd.DataFrame(rows, columns=["alert", "in_params", "on_server", "server_expr", "server_for", "same_expr",
                                       "health", "server_state_now", "active_now"])
