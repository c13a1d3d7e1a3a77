"""Presenting and recording the checklist (part of :mod:`perfbook.checks.checklist`): the
table, the ``checklist.unmet`` findings, and :func:`combine`, which merges the answers with
the other sections' findings of the same run (:data:`FROM_FINDINGS`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from perfbook.findings import Finding

from .items import _BY_KEY, _BY_TEXT, ITEMS, RUNBOOK_REF, STATUSES, UNKNOWN_REASONS, Answer

# ---------------------------------------------------------------------------------
# Presenting and recording
# ---------------------------------------------------------------------------------

MARKS = {"met": "✔", "unmet": "✘", "unknown": "?"}


def checklist_table(answers: Sequence[Answer]) -> pd.DataFrame:
    """The checklist as a table in the runbook's order: level, item, answer, why, source."""
    rows = [{"level": a.item.level, "item": a.item.text, "answer": f"{MARKS[a.status]} {a.status}",
             "evidence / reason": a.why, "source": a.source} for a in answers]
    return pd.DataFrame(rows, columns=["level", "item", "answer", "evidence / reason", "source"])


def checklist_findings(answers: Sequence[Answer]) -> list[Finding]:
    """``checklist.unmet`` per item: warning when unmet, ok when met, info when unknown."""
    sev = {"unmet": "warning", "met": "ok", "unknown": "info"}
    out = []
    for a in answers:
        title = {"unmet": f"Checklist unmet: {a.item.text} — {a.why}",
                 "met": f"Checklist met: {a.item.text} — {a.why}",
                 "unknown": f"Checklist unknown: {a.item.text} — {a.why}"}[a.status]
        out.append(Finding("checklist.unmet", sev[a.status], title, subject=a.item.text,
                           evidence={"status": a.status, "level": a.item.level, "item": a.key, "why": a.why,
                                     "source": a.source, **a.evidence},
                           recommendation=a.recommendation, runbook_ref=f"{RUNBOOK_REF} ({a.item.level} Level)"))
    return out


#: Other sections' findings that answer checklist items: code → (item, status when the
#: finding is a warning/critical, status when it is ``ok`` (the check ran, nothing found)).
FROM_FINDINGS: dict[str, tuple[str, str, str | None]] = {
    "eventloop.lag": ("async", "unmet", "met"),
    "cache.low_hit_rate": ("caching", "unmet", "met"),
    "ratelimit.missing": ("rate_limiting", "unmet", "met"),
    "db.large_result": ("pagination", "unmet", "met"),
    "db.missing_index": ("indexes", "unmet", "met"),
    "db.n_plus_one": ("no_n_plus_one", "unmet", "met"),
    "db.slow_query": ("no_n_plus_one", "unmet", None),
    "db.connections": ("db_pooling", "unmet", None),
    "db.bloat": ("vacuum", "unmet", "met"),
    "db.lock_waits": ("row_locking", "unmet", None),
    "cpu.saturation": ("instance_size", "unmet", None),
    "memory.pressure": ("instance_size", "unmet", None),
    "balance.uneven": ("load_balancing", "unmet", "met"),
}
_RANK = {"unknown": 0, "met": 1, "unmet": 2}


def combine(findings: Iterable[Finding]) -> list[Answer]:
    """One answer per item from a batch's findings: the monitoring section's checklist
    findings, overruled by other sections' evidence (:data:`FROM_FINDINGS`) — unmet beats
    met beats unknown; each answer lists where its evidence comes from."""
    best: dict[str, Answer] = {}
    seen: dict[str, list[Answer]] = {}

    def offer(a: Answer) -> None:
        cur = best.get(a.key)
        if cur is None or _RANK[a.status] > _RANK[cur.status]:
            best[a.key] = a
        seen.setdefault(a.key, []).append(a)

    for f in findings:
        if f.code == "checklist.unmet" and f.severity != "error":
            item = _BY_TEXT.get(f.subject or "") or _BY_KEY.get(str(f.evidence.get("item")))
            status = f.evidence.get("status") or {"ok": "met", "info": "unknown"}.get(f.severity, "unmet")
            if item is not None and status in STATUSES:
                offer(Answer(item.key, status, str(f.evidence.get("why") or f.title),
                             source=str(f.evidence.get("source") or f.section or "monitoring"),
                             recommendation=f.recommendation))
        elif f.code in FROM_FINDINGS and f.severity != "error":
            key, bad, good = FROM_FINDINGS[f.code]
            status = bad if f.severity in ("warning", "critical") else good if f.severity == "ok" else None
            if status:
                what = f.title if status == "unmet" else f"{f.code}: {f.title}"
                offer(Answer(key, status, what, source=f.section or "?", recommendation=f.recommendation))
    out = []
    for item in ITEMS:
        a = best.get(item.key)
        if a is None:
            out.append(Answer(item.key, "unknown", UNKNOWN_REASONS.get(
                item.key, "Not measured in this batch (the monitoring section did not run)."), source="—"))
            continue
        also = [f"{x.source}: {x.why}" for x in seen.get(item.key, [])
                if x is not a and x.status == a.status and a.status != "unknown"]
        if also:
            a = Answer(a.key, a.status, a.why + " Also " + " · ".join(dict.fromkeys(also)), a.evidence, a.source,
                       a.recommendation)
        out.append(a)
    return out


def on_checklist(findings: Iterable[Finding]) -> bool:
    """True when a finding bears on the checklist (the monitoring section's, or a mapped code)."""
    return any(f.code == "checklist.unmet" or f.code in FROM_FINDINGS for f in findings)


def source_findings(ev: Any) -> list[Finding]:
    """A ``source.unreachable`` finding per source :func:`perfbook.sources.monitoring.gather` could not reach."""
    return [Finding("source.unreachable", "error",
                    f"{exc.source} unreachable: the checklist items that need it stay unknown",
                    subject=exc.source, evidence={"target": exc.target, "reason": exc.reason},
                    recommendation=f"Check that {exc.source} at {exc.target} is up and reachable, then re-run.")
            for exc in ev.unreachable]
