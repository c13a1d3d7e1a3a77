"""PromQL text and time grids, pure: what every part of perfbook that writes or sends a
query shares (the sources that run queries, the checks that explain them, the notebook
figures that draw them).

- the params' label matchers in a query: :data:`SELECTOR_PLACEHOLDER` (``__SEL__``),
  :func:`normalize_selector`, :func:`with_selector`, :func:`render`;
- an alert rule's expression from the params (``${name}`` placeholders, the
  ``${memory_ratio}`` template, the comparison): :func:`render_expr`,
  :func:`alert_expr`, :func:`same_promql`, :func:`prom_duration`;
- steps and windows: :func:`auto_step`, :func:`range_step`, :func:`rate_window`,
  :func:`split_range`, :func:`evaluation_ticks`, :func:`lookback_start`;
- the rewrites sent to VictoriaMetrics so it answers as Prometheus does:
  :func:`explicit_subquery_step`, :func:`prometheus_counters`;
- the monitoring section's checklist queries: :func:`checklist_queries`, :data:`KEY_METRICS`.

No I/O here: :class:`perfbook.sources.prometheus.PromClient` runs the queries.
"""
from __future__ import annotations

import decimal
import math
import re
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from perfbook.params import PLACEHOLDER

__all__ = [
    "SELECTOR_PLACEHOLDER", "MAX_POINTS_PER_SERIES", "normalize_selector", "with_selector", "render",
    "memory_ratio_template", "memory_ratio_basis", "render_expr", "same_promql", "alert_expr", "prom_duration",
    "auto_step", "range_step", "rate_window", "split_range", "evaluation_ticks", "lookback_start",
    "duration_seconds", "has_subquery_without_step", "explicit_subquery_step", "prometheus_counters", "number_literal",
    "utc", "unix_ms", "unix_seconds", "step_seconds", "PLACEHOLDER", "checklist_queries", "KEY_METRICS",
]

#: Prometheus refuses a range query with more than 11,000 points per series.
MAX_POINTS_PER_SERIES = 11_000

_EMPTY_MATCHERS = re.compile(r"(?<=[A-Za-z0-9_:])\{\s*\}")


# ---------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------

SELECTOR_PLACEHOLDER = "__SEL__"


def normalize_selector(selector: str | None) -> str:
    """Label matchers without braces: ``'{app="api"}'`` and ``'app="api"'`` both give
    ``'app="api"'``; ``None``/empty give ``''``."""
    text = (selector or "").strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return text.strip().strip(",").strip()


def with_selector(metric: str, selector: str | None) -> str:
    """Add the params' label matchers to one metric selector.

    ``with_selector('http_requests_total{status_code=~"5.."}', 'app="api"')`` gives
    ``'http_requests_total{status_code=~"5..",app="api"}'``; ``with_selector('up', '')``
    gives ``'up'``. For a whole PromQL expression use :func:`render`.
    """
    sel = normalize_selector(selector)
    metric = metric.strip()
    if not sel:
        return metric
    if metric.endswith("}") and "{" in metric:
        head, inner = metric[:-1].split("{", 1)
        inner = inner.strip().rstrip(",").strip()
        return f"{head}{{{inner},{sel}}}" if inner else f"{head}{{{sel}}}"
    return f"{metric}{{{sel}}}"


def render(template: str, selector: str | None) -> str:
    """Fill the ``__SEL__`` placeholder of a PromQL template with the params' matchers.

    Templates put ``__SEL__`` where matchers go, alone or after others::

        sum by (le, route) (rate(http_request_duration_seconds_bucket{__SEL__}[5m]))
        sum(rate(http_requests_total{status_code=~"5..",__SEL__}[5m]))

    With selector ``app="api"`` every ``__SEL__`` becomes ``app="api"``; with no selector
    it disappears with its comma (``x{__SEL__}`` → ``x{}``, valid PromQL).
    """
    sel = normalize_selector(selector)
    if sel:
        return template.replace(SELECTOR_PLACEHOLDER, sel)
    out = re.sub(r",\s*" + SELECTOR_PLACEHOLDER, "", template)
    out = re.sub(SELECTOR_PLACEHOLDER + r"\s*,\s*", "", out)
    return out.replace(SELECTOR_PLACEHOLDER, "")


_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
               21600, 43200, 86400)


def auto_step(start: Any, end: Any, max_points: int = 300, scrape_interval: float = 15) -> int:
    """A range-query step in whole seconds: the smallest "nice" step (1 s, 2, 5, 10, 15,
    30 s, 1 min, 2, 5, 10, 15, 30 min, 1 h...) giving at most ``max_points`` points
    between ``start`` and ``end``, and never shorter than ``scrape_interval`` (a finer
    step only repeats samples)."""
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    span = unix_seconds(end) - unix_seconds(start)
    if span < 0:
        raise ValueError("end is before start")
    raw = span / (max_points - 1)
    step = next((s for s in _NICE_STEPS if s >= raw), None)
    if step is None:
        step = int(math.ceil(raw / 86400) * 86400)
    return int(max(step, math.ceil(scrape_interval)))


def split_range(start: Any, end: Any, step: Any,
                max_points: int = MAX_POINTS_PER_SERIES) -> list[tuple[float, float]]:
    """Cut ``[start, end]`` into consecutive ``(start, end)`` unix-second pairs on the
    same ``step`` grid, each with at most ``max_points`` evaluation points
    (``floor((end-start)/step) + 1``). Chunk *k* starts at ``start + k*max_points*step``,
    so chunks neither overlap nor leave a gap."""
    t0, t1, dt = unix_seconds(start), unix_seconds(end), step_seconds(step)
    if dt <= 0:
        raise ValueError("step must be positive")
    if t1 < t0:
        raise ValueError("end is before start")
    if max_points < 1:
        raise ValueError("max_points must be positive")
    total = int(math.floor((t1 - t0) / dt + 1e-9)) + 1
    chunks = []
    for first in range(0, total, max_points):
        last = min(first + max_points, total) - 1
        chunk_start = t0 + first * dt
        chunk_end = t1 if last == total - 1 else t0 + last * dt
        chunks.append((chunk_start, chunk_end))
    return chunks


def unix_seconds(t: Any) -> float:
    """Unix seconds from a number, datetime, pandas Timestamp, ISO string, ``"now"`` or
    ``"-1h"``/``"now-1h"`` (relative to now). Naive datetimes are taken as UTC."""
    if isinstance(t, bool):
        raise TypeError("a time, not a bool")
    if isinstance(t, (int, float, np.integer, np.floating)):
        return float(t)
    if isinstance(t, str):
        text = t.strip()
        if text == "now":
            return time.time()
        if text.startswith("now-") or text.startswith("-"):
            return time.time() - pd.Timedelta(text.split("-", 1)[1]).total_seconds()
    return utc(t).timestamp()


def step_seconds(step: Any) -> float:
    if isinstance(step, (int, float, np.integer, np.floating)) and not isinstance(step, bool):
        return float(step)
    if isinstance(step, (timedelta, pd.Timedelta)):
        return pd.Timedelta(step).total_seconds()
    if isinstance(step, str):
        return pd.Timedelta(step).total_seconds()
    raise TypeError(f"step: seconds, a timedelta or a duration like '30s', not {step!r}")


def range_step(start: datetime, end: datetime) -> int:
    """Step of the range queries: about 200 points over the window, at least 1 s."""
    return auto_step(start, end, max_points=200, scrape_interval=1)


def rate_window(step: int) -> int:
    """``rate()`` range: four steps, and never under 30 s (two scrapes at the common 15 s)."""
    return max(4 * step, 30)


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
    return (f'label_replace(${{resident_memory}}{{__SEL__}} / {number_literal(limit)}, "basis", "rss/memory_limit", '
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

    text = PLACEHOLDER.sub(metric, template)
    if selector is None:
        prom = params.targets.prometheus
        selector = prom.selector if prom is not None else ""
    text = render(text, selector)
    return _EMPTY_MATCHERS.sub("", text)


def number_literal(x: float) -> str:
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
    _sign, digits, exp = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
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
    return f"{lhs} {rule.op} {number_literal(rule.threshold)}"


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


# ---------------------------------------------------------------------------------
# Evaluation ticks
# ---------------------------------------------------------------------------------


def utc(t: Any) -> pd.Timestamp:
    """UTC timestamp from a datetime, a pandas Timestamp, ISO text or unix seconds."""
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        return pd.Timestamp(float(t), unit="s", tz="UTC")
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def unix_ms(t: Any) -> int:
    return int(round(utc(t).timestamp() * 1000))


def lookback_start(start: Any, for_s: float, interval_s: float) -> pd.Timestamp:
    """Where to begin evaluating so that the state at ``start`` is right: ``for`` plus
    one interval earlier (an alert already firing when the window opens is firing at
    its first tick, as on the server)."""
    return utc(start) - pd.Timedelta(seconds=float(for_s) + float(interval_s))


def evaluation_ticks(start: Any, end: Any, interval_s: float) -> pd.DatetimeIndex:
    """The evaluation times in ``[start, end]``: multiples of the interval since the
    epoch (as a server's ticks are, up to its per-group offset), UTC."""
    step = int(round(float(interval_s) * 1000))
    if step <= 0:
        raise ValueError("the evaluation interval must be positive")
    first = -(-unix_ms(start) // step) * step
    last = unix_ms(end)
    if last < first:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.to_datetime(np.arange(first, last + 1, step, dtype="int64"), unit="ms", utc=True)


# ---------------------------------------------------------------------------------
# VictoriaMetrics rewrites
# ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float | None:
    """Seconds of a PromQL duration (``90s``, ``1m30s``, ``1.5h`` in MetricsQL); None if it is not one."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def _code_spans(expr: str) -> list[tuple[int, int]]:
    """(start, end) of the parts of ``expr`` outside string literals (label values)."""
    spans, i, start, quote = [], 0, 0, None
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\" and quote != "`":
                i += 2
                continue
            if c == quote:
                quote, start = None, i + 1
        elif c in "\"'`":
            spans.append((start, i))
            quote = c
        i += 1
    if quote is None:
        spans.append((start, len(expr)))
    return spans


def _in_code(expr: str) -> list[bool]:
    mask = [False] * len(expr)
    for a, b in _code_spans(expr):
        for k in range(a, b):
            mask[k] = True
    return mask


_SUBQUERY_NO_STEP = re.compile(r"\[\s*([0-9][0-9a-z.]*)\s*:\s*\]")
_COUNTER_FUNC = re.compile(r"(?<![A-Za-z0-9_:])(rate|increase|delta)\s*\(")


def has_subquery_without_step(expr: str) -> bool:
    """True when ``expr`` has a subquery without a resolution (``x[10m:]``)."""
    return bool(_SUBQUERY_NO_STEP.search(expr))


def explicit_subquery_step(expr: str, step_s: float) -> str:
    """``x[10m:]`` → ``x[10m:15s]``: a subquery's resolution spelled out (outside strings)."""
    code = _in_code(expr)
    res = f"{step_s:g}s"
    return _SUBQUERY_NO_STEP.sub(lambda m: f"[{m.group(1)}:{res}]" if code[m.start()] else m.group(0), expr)


def prometheus_counters(expr: str) -> str:
    """PromQL ``rate``/``increase``/``delta`` as VictoriaMetrics computes them the Prometheus
    way (see the module docstring). ``increase(x[5m])`` →
    ``(increase_prometheus(x[5m]) * count_over_time(x[5m]) / (count_over_time(x[5m]) - 1))``:
    the change between the range's own first and last samples, scaled from the n - 1
    intervals they span to the n intervals of the range, as PromQL's extrapolation to the
    range's edges does (one average interval in all: half on each side of a series that
    starts inside the range, the gaps to the edges of one that does not). ``rate`` is that
    divided by the range's seconds, ``delta`` the same with ``delta_prometheus``. A range
    with one sample gives no result, as in PromQL. A ``rate`` whose range is not a plain
    duration is left as it is.

    Without the scaling a range of four scrapes (the CPU rate) read a quarter low: CPU
    70.8 % on VictoriaMetrics against 88.5 % on Prometheus from the same samples."""
    code = _in_code(expr)
    for m in reversed(list(_COUNTER_FUNC.finditer(expr))):
        if not code[m.start()]:
            continue
        name, open_at = m.group(1), m.end() - 1
        depth, close_at = 0, None
        for k in range(open_at, len(expr)):
            if not code[k]:
                continue
            if expr[k] == "(":
                depth += 1
            elif expr[k] == ")":
                depth -= 1
                if depth == 0:
                    close_at = k
                    break
        if close_at is None:
            return expr
        arg = expr[open_at + 1:close_at]
        scaled = (f"{'delta' if name == 'delta' else 'increase'}_prometheus({arg}) * count_over_time({arg})"
                  f" / (count_over_time({arg}) - 1)")
        if name == "rate":
            ranges = [r for r in re.finditer(r"\[\s*([^\]:]+?)\s*(?::[^\]]*)?\]", arg)
                      if code[open_at + 1 + r.start()]]
            seconds = duration_seconds(ranges[-1].group(1)) if ranges else None
            if not seconds:
                continue
            scaled += f" / {seconds:g}"
        expr = expr[:m.start()] + f"({scaled})" + expr[close_at + 1:]
        code = _in_code(expr)
    return expr


# ---------------------------------------------------------------------------------
# What the monitoring notebook asks Prometheus for the checklist
# ---------------------------------------------------------------------------------

def checklist_queries(params: Any, window_s: float, step_s: int = 15, rate_s: int = 60) -> dict[str, str]:
    """PromQL (templates for :func:`render_expr`) of the measured
    items, each an instant query at the window's end over the window ``W``:

    cache hits/misses and rate-limit rejections (increase over W); per instance the median
    over W of the event-loop lag p99 (the typical delay) and the
    ``settings.diagnostics.sustained_quantile`` (0.9) quantile over W of the worst
    event-loop delay per scrape (prom-client's max gauge, else its p99 gauge: stalls in at
    least a tenth of the scrapes, not one spike), the p95 over W of CPU %
    (``rate(process_cpu_seconds_total)``) and of memory used over its limit
    (``${memory_ratio}``: RSS / targets.memory_limit, or heap used / the heap-limit gauge
    where exported); the pool gauges' peaks and the share of scrapes with queries waiting
    for a connection; instances up; and whether each key metric has a sample in W (and
    RSS, which stands in for the heap limit stock prom-client does not export).
    """
    w, st, r = f"{max(1, int(math.ceil(window_s)))}s", f"{max(1, int(step_s))}s", f"{max(1, int(rate_s))}s"
    inst = "${instance_label}"
    wait_hist = getattr(params.settings.database, "pool_wait_histogram", "prisma_client_queries_wait_histogram_ms")
    lag_q = params.settings.diagnostics.sustained_quantile
    q = {
        "cache_hits": f"sum(increase(${{cache_hits}}{{__SEL__}}[{w}]))",
        "cache_misses": f"sum(increase(${{cache_misses}}{{__SEL__}}[{w}]))",
        "ratelimit_hits": f"sum(increase(${{rate_limit_hits}}{{__SEL__}}[{w}]))",
        "http_429": f'sum(increase(${{http_requests}}{{${{status_label}}="429",__SEL__}}[{w}]))',
        "lag_typical": f"max by ({inst}) (quantile_over_time(0.5, ${{eventloop_lag_p99}}{{__SEL__}}[{w}]))",
        "lag_stalls": f"max by ({inst}) (quantile_over_time({lag_q:g}, ${{eventloop_lag_max}}{{__SEL__}}[{w}]) or "
                      f"quantile_over_time({lag_q:g}, ${{eventloop_lag_p99}}{{__SEL__}}[{w}]))",
        "cpu_p95": f"quantile_over_time(0.95, (100 * sum by ({inst}) (rate(${{cpu_seconds}}{{__SEL__}}[{r}])))[{w}:{st}])",
        "memory_p95": f"quantile_over_time(0.95, (100 * max by ({inst}) (${{memory_ratio}}))[{w}:{st}])",
        "pool_open_max": f"max by ({inst}) (max_over_time(${{db_pool_open}}{{__SEL__}}[{w}]))",
        "pool_busy_max": f"max by ({inst}) (max_over_time(${{db_pool_busy}}{{__SEL__}}[{w}]))",
        "pool_waiting_share": f"max by ({inst}) (avg_over_time((${{db_pool_wait}}{{__SEL__}} > bool 0)[{w}:{st}]))",
        "pool_waiting_max": f"max by ({inst}) (max_over_time(${{db_pool_wait}}{{__SEL__}}[{w}]))",
        # Prisma's wait-time histogram (ms), named in the database settings.
        "pool_wait_p95_ms": f"histogram_quantile(0.95, sum by ({inst}, le) "
                            f"(increase({wait_hist}_bucket{{__SEL__}}[{w}])))",
        "instances_up": f"count(max_over_time(up{{__SEL__}}[{w}]) > 0)",
    }
    for name in KEY_METRICS:
        q[f"present:{name}"] = f"count(last_over_time(${{{name}}}{KEY_METRICS[name]}{{__SEL__}}[{w}]))"
    q["fallback:resident_memory"] = f"count(last_over_time(${{resident_memory}}{{__SEL__}}[{w}]))"
    return q


#: The ten key metrics' series (the metrics field, and the suffix of the series queried).
KEY_METRICS = {
    "http_duration": "_bucket", "http_requests": "", "cpu_seconds": "", "heap_used": "", "heap_limit": "",
    "eventloop_lag": "", "db_query_duration": "_bucket", "external_duration": "_bucket",
    "cache_hits": "", "http_connections": "",
}
