"""What changed since normal: two runs' findings compared (pure: no I/O, no HTML).

``perfbook compare BASELINE INCIDENT`` reads two run folders (see
:func:`perfbook.report.read_run`), calls :func:`compare` on what they hold, and writes the
result as ``compare.json`` and ``compare.html`` into the incident's folder
(:func:`perfbook.report.write_comparison`). This module only decides; it reads no file.

Matching
    Findings are grouped by ``(code, subject)`` in each run (one check may report the same
    code and subject several times: latency per percentile and per source, cpu.saturation
    in quick-diagnostics and in bottlenecks). A group's severity is its worst finding's; its
    key number (:data:`KEY_NUMBERS`) is the worst value its findings carry. A *problem* is a
    group at warning, critical or error (:data:`PROBLEM`); ``ok`` and ``info`` are not.

Status of a group (:data:`STATUSES`, in the order reports list them)
    ``new``       a problem in the incident, none in the baseline (absent, ok or info)
    ``worse``     a problem in both; the severity is higher, or it is equal and the key
                  number moved the bad way beyond the tolerance (:func:`moved`)
    ``resolved``  a problem in the baseline, none in the incident (ok, info, or no longer
                  reported by a section that ran)
    ``better``    a problem in both; severity lower, or the key number moved the good way
    ``unchanged`` a problem in both, within the tolerance
    ``unknown``   a problem in the baseline whose section did not run (ok) in the incident, or
                  a problem in the incident whose check a time-shifted baseline could not run
                  (it reads the present: ``source.present_only``)
    ``quiet``     no problem in either run (counted, not listed on the page)

Tolerance (:data:`TOLERANCE`)
    A number has *moved* when it changed by more than ``relative`` (20 %) of the baseline
    value *and* by more than the unit's absolute floor (``floors``: 20 ms, 1 percentage
    point of a ratio, 5 points of a percentage...), so that 2 ms → 3 ms is not "50 % worse".

compare.json (``schema`` 1)::

    {"schema": 1, "kind": "perfbook.compare",
     "baseline": RUN, "incident": RUN,                # RUN: folder, run_dir, service,
                                                      #      environment, started, status
     "tolerance": {"relative": 0.2, "floors": {unit: number}},
     "counts": {status: n},                          # every status of STATUSES
     "headline": "3 new critical, 2 worse, 1 resolved vs baseline ...",
     "changes": [CHANGE, ...],                        # every group, new and worse first
     "key_numbers": [KEY, ...],                       # side by side
     "notes": [str, ...]}                             # e.g. environments differ
    CHANGE: {"status", "code", "subject", "sections": [..], "severity": {"baseline", "incident"},
             "title": {"baseline", "incident"}, "findings": {"baseline": n, "incident": n},
             "key": {"name", "unit", "higher_is_worse", "baseline", "incident", "delta",
                     "relative"} | null}
    KEY: {"group", "metric", "subject", "code", "unit", "higher_is_worse", "baseline", "incident",
          "delta", "relative", "change": "worse"|"better"|"same"|"only baseline"|
          "only incident"}
    Ratios are fractions (0.13 = 13 %), ``s`` seconds, ``ms`` milliseconds; ``subject`` null is
    a run-wide row (the worst instance: instance names differ between runs). Throughput counts
    as worse when it falls (the service served less).

Exit status of ``perfbook compare`` (:func:`exit_status`): 0 nothing new or worse; 1 a
group is new or worse at warning, critical or error (as ``batch``, a check that could not
run is never read as healthy); 2 bad input (a folder that is not a finished run, or two
runs of different services), from the CLI.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .findings import severity_rank

SCHEMA = 1

#: Severities that make a group a problem.
PROBLEM = frozenset({"warning", "critical", "error"})

#: Statuses in the order they are listed (new and worse first).
STATUSES = ("new", "worse", "resolved", "better", "unchanged", "unknown", "quiet")

#: When a number has moved (see :func:`moved`). One place; compare.json repeats it.
TOLERANCE: dict[str, Any] = {
    "relative": 0.20,
    "floors": {"ms": 20.0, "s": 0.02, "ratio": 0.01, "%": 5.0, "MB/min": 1.0, "count": 2.0,
               "req/s": 2.0, "x": 0.2},
    "default_floor": 0.0,
}


def moved(before: float | None, after: float | None, unit: str,
          tolerance: dict[str, Any] | None = None) -> int:
    """+1 when ``after`` is above ``before`` beyond the tolerance, -1 below, 0 within (or unknown)."""
    if before is None or after is None:
        return 0
    tol = tolerance or TOLERANCE
    floor = tol["floors"].get(unit, tol["default_floor"])
    delta = after - before
    if abs(delta) <= floor or abs(delta) <= tol["relative"] * abs(before):
        return 0
    return 1 if delta > 0 else -1


# --------------------------------------------------------------------------- key numbers


@dataclass(frozen=True)
class KeyNumber:
    """Which evidence value of a code's findings is its key number."""

    name: str
    unit: str
    higher_is_worse: bool
    value: Callable[[dict[str, Any]], float | None]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _key(*names: str) -> Callable[[dict[str, Any]], float | None]:
    def get(ev: dict[str, Any]) -> float | None:
        for n in names:
            if (v := _num(ev.get(n))) is not None:
                return v
        return None
    return get


def _percentile(label: str) -> Callable[[dict[str, Any]], float | None]:
    """Latency: ``p95_ms`` of a within-target finding, ``observed_ms`` of a breach of that percentile."""
    def get(ev: dict[str, Any]) -> float | None:
        if (v := _num(ev.get(f"{label}_ms"))) is not None:
            return v
        return _num(ev.get("observed_ms")) if ev.get("percentile") == label else None
    return get


def _observed_in(unit: str) -> Callable[[dict[str, Any]], float | None]:
    """``observed`` of the resources checks, when its unit is ``unit`` (pool-wait shares are ratios)."""
    def get(ev: dict[str, Any]) -> float | None:
        return _num(ev.get("observed")) if ev.get("unit", unit) == unit else None
    return get


#: code → its key number (read from each finding's ``evidence``, by the checks' keys).
KEY_NUMBERS: dict[str, KeyNumber] = {
    "latency.slo_breach": KeyNumber("p95", "ms", True, _percentile("p95")),
    "errors.high_rate": KeyNumber("5xx share", "ratio", True, _key("observed")),
    "cpu.saturation": KeyNumber("CPU", "%", True, _observed_in("%")),
    "memory.pressure": KeyNumber("memory", "%", True, _observed_in("%")),
    "memory.growth": KeyNumber("growth", "MB/min", True, _observed_in("MB/min")),
    "eventloop.lag": KeyNumber("event-loop lag", "s", True, _observed_in("s")),
    "db.connections": KeyNumber("connections", "count", True, _observed_in("count")),
    "cache.low_hit_rate": KeyNumber("hit rate", "ratio", False, _key("hit_rate")),
    "external.slow": KeyNumber("p95", "ms", True, _key("p95_ms")),
    "external.errors": KeyNumber("failure rate", "ratio", True, _key("failure_rate")),
    "ratelimit.rejections": KeyNumber("429 share", "ratio", True, _key("share_429")),
    "balance.uneven": KeyNumber("max/mean", "x", True, _key("max_over_mean", "cpu_max_over_mean")),
    "db.slow_query": KeyNumber("mean", "ms", True, _key("mean_ms", "slowest_mean_ms")),
    "db.bloat": KeyNumber("dead tuples", "%", True, _key("dead_pct", "max_dead_pct")),
}


# --------------------------------------------------------------------------- the runs


@dataclass
class Run:
    """What a run folder holds, as :func:`perfbook.report.read_run` read it."""

    folder: str                     # the folder's name (HHMMSS-label)
    run_dir: str                    # its path
    service: str | None
    environment: str | None
    started: str | None
    status: str | None
    findings: list[dict[str, Any]]
    sections_ok: frozenset[str] = frozenset()  # sections whose notebook ran (status ok)
    snapshots: dict[str, Any] = field(default_factory=dict)  # snapshots/<name>.json: name → data
    time_shift: str | None = None   # "-7d": a run of an earlier window (batch --baseline -7d)

    def summary(self) -> dict[str, Any]:
        return {"folder": self.folder, "run_dir": self.run_dir, "service": self.service,
                "environment": self.environment, "started": self.started, "status": self.status,
                "time_shift": self.time_shift}


def service_identity(manifest: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(service, environment)`` of a run's manifest: the top-level ``service`` and
    ``environment`` (written since issue 15), else the header's, else the params'."""
    head = manifest.get("header") or {}
    params = manifest.get("params") or {}

    def pick(name: str) -> str | None:
        for v in (manifest.get(name), head.get(name), params.get(name)):
            if isinstance(v, str) and v.strip() and v.strip() != "—":
                return v.strip()
        return None

    return pick("service"), pick("environment")


class Mismatch(ValueError):
    """The two runs cannot be compared (different services)."""


def check_comparable(baseline: Run, incident: Run) -> list[str]:
    """Notes for the page; :class:`Mismatch` (one line) when the services differ or are unknown."""
    if baseline.service is None or incident.service is None:
        which = baseline if baseline.service is None else incident
        raise Mismatch(f"{which.run_dir}: its manifest.json names no service; cannot tell it is the same service")
    if baseline.service != incident.service:
        raise Mismatch(f"{incident.run_dir}: service {incident.service!r} is not the baseline's "
                       f"{baseline.service!r} ({baseline.run_dir}); compare runs of one service")
    notes = []
    if baseline.environment != incident.environment:
        notes.append(f"environments differ: baseline {baseline.environment!r}, incident {incident.environment!r}")
    if baseline.time_shift:
        notes.append(f"the baseline is the same window shifted {baseline.time_shift}, read from Prometheus; checks "
                     f"that read the present (probes, pg_stat_statements, Redis, the load test) could not look "
                     f"back: what they find now is listed as unknown, not new")
    elif _later(baseline.started, incident.started):
        notes.append("the baseline run is later than the incident run (BASELINE comes first: arguments swapped?)")
    for r, what in ((baseline, "baseline"), (incident, "incident")):
        if r.status not in (None, "complete"):
            notes.append(f"the {what} run is {r.status}: its findings are incomplete")
    return notes


def _later(a: str | None, b: str | None) -> bool:
    """``a`` is a later ISO-8601 time than ``b`` (False when either is unknown or naive)."""
    from datetime import datetime
    try:
        ta, tb = datetime.fromisoformat(str(a)), datetime.fromisoformat(str(b))
        return ta > tb
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- groups


@dataclass
class Group:
    code: str
    subject: str | None
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return max((f.get("severity", "ok") for f in self.findings), key=severity_rank, default="ok")

    @property
    def problem(self) -> bool:
        return self.severity in PROBLEM

    @property
    def worst(self) -> dict[str, Any]:
        return max(self.findings, key=lambda f: severity_rank(f.get("severity", "ok")))

    def key_value(self) -> float | None:
        spec = KEY_NUMBERS.get(self.code)
        if spec is None:
            return None
        # The problem findings' numbers when there are any (an ok finding of the same group
        # may measure something milder), the worst of them.
        pool = [f for f in self.findings if f.get("severity") in PROBLEM] or self.findings
        vals = [v for f in pool if (v := spec.value(f.get("evidence") or {})) is not None]
        if not vals:
            return None
        return max(vals) if spec.higher_is_worse else min(vals)


def group(findings: Iterable[dict[str, Any]]) -> dict[tuple[str, str | None], Group]:
    out: dict[tuple[str, str | None], Group] = {}
    for f in findings:
        k = (str(f.get("code")), f.get("subject"))
        out.setdefault(k, Group(*k)).findings.append(f)
    return out


def _change(before: float | None, after: float | None) -> tuple[float | None, float | None]:
    if before is None or after is None:
        return None, None
    delta = after - before
    return round(delta, 6), (round(delta / before, 4) if before else None)


def classify(b: Group | None, i: Group | None, incident_sections_ok: frozenset[str],
             tolerance: dict[str, Any] | None = None, baseline_blind: frozenset[str] = frozenset()) -> str:
    """The status of one (code, subject) group (see the module docstring). ``baseline_blind``:
    the checks a time-shifted baseline could not run (they read the present)."""
    bp, ip = bool(b and b.problem), bool(i and i.problem)
    if ip and not bp:
        if b is None and i.findings and all(f.get("check") in baseline_blind for f in i.findings):
            return "unknown"
        return "new"
    if bp and not ip:
        if i is None and not any(f.get("section") in incident_sections_ok for f in b.findings):
            return "unknown"
        return "resolved"
    if not bp and not ip:
        return "quiet"
    rb, ri = severity_rank(b.severity), severity_rank(i.severity)
    if ri != rb:
        return "worse" if ri > rb else "better"
    spec = KEY_NUMBERS.get(b.code)
    if spec is None:
        return "unchanged"
    way = moved(b.key_value(), i.key_value(), spec.unit, tolerance)
    if way == 0:
        return "unchanged"
    return "worse" if (way > 0) == spec.higher_is_worse else "better"


def _change_record(status: str, b: Group | None, i: Group | None) -> dict[str, Any]:
    g = i or b
    spec = KEY_NUMBERS.get(g.code)
    key = None
    if spec is not None:
        before = b.key_value() if b else None
        after = i.key_value() if i else None
        if before is not None or after is not None:
            delta, rel = _change(before, after)
            key = {"name": spec.name, "unit": spec.unit, "higher_is_worse": spec.higher_is_worse,
                   "baseline": before, "incident": after, "delta": delta, "relative": rel}
    sections = sorted({f.get("section", "") for x in (b, i) if x for f in x.findings})
    return {"status": status, "code": g.code, "subject": g.subject, "sections": sections,
            "severity": {"baseline": b.severity if b else None, "incident": i.severity if i else None},
            "title": {"baseline": b.worst.get("title") if b else None, "incident": i.worst.get("title") if i else None},
            "findings": {"baseline": len(b.findings) if b else 0, "incident": len(i.findings) if i else 0},
            "key": key}


#: Sections that restate other sections' findings (alerts fired, checklist items): listed after
#: the findings they follow from, at the same status and severity.
SUMMARY_SECTIONS = frozenset({"monitoring"})


def _order(c: dict[str, Any]) -> tuple:
    sev = c["severity"]["incident"] or c["severity"]["baseline"] or "ok"
    derived = bool(c["sections"]) and set(c["sections"]) <= SUMMARY_SECTIONS
    return (STATUSES.index(c["status"]), -severity_rank(sev), derived, c["code"], str(c["subject"] or ""))


# --------------------------------------------------------------------------- key numbers side by side

#: The groups of the side-by-side table: (group, metric, code, subject filter or None for
#: "worst over the run", how to read the value). Per-subject rows are made for every subject
#: either run reports; a ``None`` subject row takes the worst value of the run (the worst
#: instance: instance names differ between runs, "all instances" on a healthy one).
@dataclass(frozen=True)
class Metric:
    group: str
    metric: str
    code: str
    unit: str
    higher_is_worse: bool
    value: Callable[[dict[str, Any]], float | None]
    per_subject: bool
    source: str | None = None   # latency: prefer this source (its first word), e.g. "Prometheus"
    sections: tuple[str, ...] = ()  # only findings of these sections (empty: any)


def _sum_of(key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(ev: dict[str, Any]) -> float | None:
        d = ev.get(key)
        if not isinstance(d, dict) or not d:
            return None
        vals = [_num(v) for v in d.values()]
        return sum(v for v in vals if v is not None) if any(v is not None for v in vals) else None
    return get


METRICS: tuple[Metric, ...] = (
    Metric("latency", "p50", "latency.slo_breach", "ms", True, _percentile("p50"), True, "Prometheus"),
    Metric("latency", "p95", "latency.slo_breach", "ms", True, _percentile("p95"), True, "Prometheus"),
    Metric("latency", "p99", "latency.slo_breach", "ms", True, _percentile("p99"), True, "Prometheus"),
    Metric("errors", "5xx share", "errors.high_rate", "ratio", True, _key("observed"), True),
    Metric("throughput", "requests/s (demand)", "scaling.scale_out", "req/s", False, _key("demand_rps"), False),
    Metric("throughput", "requests/s (all instances)", "balance.uneven", "req/s", False, _sum_of("rps_by_instance"), False),
    Metric("resources", "CPU, worst instance", "cpu.saturation", "%", True, _observed_in("%"), False),
    Metric("resources", "memory, worst instance", "memory.pressure", "%", True, _observed_in("%"), False),
    Metric("resources", "memory growth, worst instance", "memory.growth", "MB/min", True, _observed_in("MB/min"), False),
    Metric("resources", "event-loop lag, worst instance", "eventloop.lag", "s", True, _observed_in("s"), False),
    Metric("database", "connections (server)", "db.connections", "count", True, _observed_in("count"), False),
    Metric("database", "connections used", "db.connections", "%", True, _key("used_pct"), False),
    Metric("database", "pool wait p95", "db.connections", "ms", True, _key("wait_p95_ms"), False),
    Metric("cache", "hit rate", "cache.low_hit_rate", "ratio", False, _key("hit_rate"), True),
    Metric("external", "p95", "external.slow", "ms", True, _key("p95_ms"), True),
    Metric("external", "failure rate", "external.errors", "ratio", True, _key("failure_rate"), True),
    Metric("rate limits", "429 share", "ratelimit.rejections", "ratio", True, _key("share_429"), True),
)


def _source_word(ev: dict[str, Any]) -> str:
    return str(ev.get("source") or "").split(",")[0].strip()


def _metric_values(m: Metric, findings: list[dict[str, Any]]) -> dict[str | None, float]:
    """subject (None for a run-wide row) → value, the worst when several findings carry one."""
    chosen = [f for f in findings if f.get("code") == m.code and (not m.sections or f.get("section") in m.sections)]
    if m.source is not None:
        # Prefer the named source per subject (Prometheus covers every request of the window;
        # probes are a sample); fall back to any source for subjects it does not cover.
        by_subject: dict[Any, list[dict[str, Any]]] = {}
        for f in chosen:
            by_subject.setdefault(f.get("subject"), []).append(f)
        chosen = []
        for fs in by_subject.values():
            preferred = [f for f in fs if _source_word(f.get("evidence") or {}).lower() == m.source.lower()]
            chosen += preferred or fs
    out: dict[str | None, float] = {}
    pick = max if m.higher_is_worse else min
    for f in chosen:
        v = m.value(f.get("evidence") or {})
        if v is None:
            continue
        k = f.get("subject") if m.per_subject else None
        out[k] = pick(out[k], v) if k in out else v
    return out


def key_numbers(baseline: list[dict[str, Any]], incident: list[dict[str, Any]],
                tolerance: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for m in METRICS:
        b, i = _metric_values(m, baseline), _metric_values(m, incident)
        subjects = sorted(set(b) | set(i), key=lambda s: str(s or ""))
        for s in subjects:
            before, after = b.get(s), i.get(s)
            if before is None:
                change = "only incident"
            elif after is None:
                change = "only baseline"
            else:
                way = moved(before, after, m.unit, tolerance)
                change = "same" if way == 0 else ("worse" if (way > 0) == m.higher_is_worse else "better")
            delta, rel = _change(before, after)
            rows.append({"group": m.group, "metric": m.metric, "subject": s, "code": m.code, "unit": m.unit,
                         "higher_is_worse": m.higher_is_worse, "baseline": before, "incident": after,
                         "delta": delta, "relative": rel, "change": change})
    return rows


# --------------------------------------------------------------------------- the comparison


def headline(counts: dict[str, int], changes: list[dict[str, Any]], baseline: Run) -> str:
    new = [c for c in changes if c["status"] == "new"]
    parts = []
    for sev in ("critical", "error", "warning"):
        n = sum(1 for c in new if c["severity"]["incident"] == sev)
        if n:
            parts.append(f"{n} new {sev if sev != 'error' else 'could not run'}")
    for st in ("worse", "resolved", "better"):
        if counts.get(st):
            parts.append(f"{counts[st]} {st}")
    what = ", ".join(parts) or "nothing new or worse"
    when = f" ({baseline.started[:19].replace('T', ' ')})" if baseline.started else ""
    return f"{what} vs baseline {baseline.folder}{when}"


def compare(baseline: Run, incident: Run, tolerance: dict[str, Any] | None = None,
            database: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison of two runs of one service (:class:`Mismatch` otherwise), as compare.json holds it.
    ``database``: where the database time went between them (:func:`perfbook.report.compare_runs`
    computes it from the runs' snapshots; None: not known)."""
    tol = tolerance or TOLERANCE
    notes = check_comparable(baseline, incident)
    gb, gi = group(baseline.findings), group(incident.findings)
    blind = frozenset(str((f.get("evidence") or {}).get("check")) for f in baseline.findings
                      if f.get("code") == "source.present_only")
    changes = []
    for k in list(gb) + [k for k in gi if k not in gb]:
        b, i = gb.get(k), gi.get(k)
        changes.append(_change_record(classify(b, i, incident.sections_ok, tol, blind), b, i))
    changes.sort(key=_order)
    counts = {s: sum(1 for c in changes if c["status"] == s) for s in STATUSES}
    return {"schema": SCHEMA, "kind": "perfbook.compare", "baseline": baseline.summary(),
            "incident": incident.summary(), "tolerance": tol, "counts": counts,
            "headline": headline(counts, changes, baseline), "changes": changes,
            "key_numbers": key_numbers(baseline.findings, incident.findings, tol), "notes": notes,
            "database": database}


def needs_attention(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The new and worse groups at warning, critical or error in the incident."""
    return [c for c in comparison["changes"]
            if c["status"] in ("new", "worse") and c["severity"]["incident"] in PROBLEM]


def exit_status(comparison: dict[str, Any]) -> int:
    """0: nothing new or worse; 1: something new or worse at warning/critical/error."""
    return 1 if needs_attention(comparison) else 0


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "ratio":
        return f"{v:.1%}"
    if unit == "%":
        return f"{v:.0f} %"
    if unit in ("s", "ms"):
        ms = v * 1000 if unit == "s" else v
        if abs(ms) >= 600_000:
            return f"{ms / 60_000:.1f} min"
        if abs(ms) >= 10_000:   # 20 s, not "20000 ms"
            return f"{ms / 1000:.1f} s"
        return f"{ms:.0f} ms" if abs(ms) >= 10 else f"{ms:.1f} ms"
    return f"{v:.3g} {unit}"


fmt = _fmt


def describe(c: dict[str, Any]) -> str:
    """One line of a change: code [subject] severity, and the key number before → after."""
    sev = c["severity"]
    s = f"{c['code']} [{c['subject'] if c['subject'] is not None else '—'}]"
    if c["status"] == "new":
        s += f" {sev['incident']}"
    elif c["status"] == "resolved":
        s += f" was {sev['baseline']}"
    else:
        s += f" {sev['baseline']} → {sev['incident']}"
    k = c.get("key")
    if k and (k["baseline"] is not None or k["incident"] is not None):
        s += f": {k['name']} {_fmt(k['baseline'], k['unit'])} → {_fmt(k['incident'], k['unit'])}"
    return s


def summary_lines(comparison: dict[str, Any], limit: int = 60, others: int = 10) -> list[str]:
    """The CLI's short summary: the headline, then every new and worse group (up to ``limit``),
    then resolved, better and unknown (up to ``others``), one line each."""
    lines = [comparison["headline"]]
    for note in comparison.get("notes", []):
        lines.append(f"  note: {note}")
    left = 0
    for statuses, cap in ((("new", "worse"), limit), (("resolved", "better", "unknown"), others)):
        shown = [c for c in comparison["changes"] if c["status"] in statuses]
        lines += [f"  {c['status']:<9} {describe(c)}" for c in shown[:cap]]
        left += max(0, len(shown) - cap)
    if left:
        lines.append(f"  … {left} more in compare.html / compare.json")
    db = comparison.get("database")
    if db:
        lines.append(f"  database: {db['headline']}" if db.get("headline") else
                     f"  database: no window between the two runs: {db.get('reason') or 'no statement ran'}")
        if db.get("statements_reset"):
            lines.append(f"  database: pg_stat_statements was reset at {db['statements_reset']}, between the runs: "
                         f"the numbers count from the reset")
    return lines
