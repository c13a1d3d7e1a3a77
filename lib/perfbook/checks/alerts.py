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

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import yaml

from perfbook.findings import Finding
from perfbook.promql import (
    PLACEHOLDER,
    alert_expr,
    evaluation_ticks,
    lookback_start,
    memory_ratio_basis,
    memory_ratio_template,
    number_literal,
    prom_duration,
    render_expr,
    same_promql,
)
from perfbook.rules import (
    ALERT_META_LABELS,
    SPAN_COLUMNS,
    STATE_COLUMNS,
    RuleEvaluation,
    alert_spans,
    evaluate,
    series_name,
    series_states,
    server_spans,
    union_seconds,
)

__all__ = [
    "render_expr", "same_promql", "memory_ratio_template", "memory_ratio_basis", "export_notes", "alert_expr", "prom_duration", "rules_yaml", "rules_table",
    "evaluation_ticks", "lookback_start", "series_states", "alert_spans", "RuleEvaluation", "evaluate",
    "alert_findings", "server_spans", "compare_with_server", "server_rules_table", "STATE_COLUMNS",
    "SPAN_COLUMNS", "ALERT_META_LABELS", "series_name",
]


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
                "summary": rule.summary or f"{rule.name}: {_op_words(rule.op)} {number_literal(rule.threshold)}{unit}",
                "description": (f"{rule.name}{{{{ with $labels.{params.metrics.instance_label} }}}} on "
                                f"{{{{ . }}}}{{{{ end }}}}: value {{{{ $value | printf \"%.4g\" }}}} is "
                                f"{_op_words(rule.op)} {number_literal(rule.threshold)}{unit} for at least "
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
        names = set(PLACEHOLDER.findall(rule.expr))
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
                       server_firing_s=union_seconds(srv_firing) if s_fired else 0.0,
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
