"""Compare a run's findings.json with a demo scenario's ground truth.

    from groundtruth import compare
    result = compare(run_dir / "findings.json", "incident", sections=["database"])
    assert result.ok, str(result)

Per section that the run covers: *misses* are expected findings (``Expect``) that no
finding matches; *false alarms* are warning/critical findings that are neither
expected nor allowed as a consequence (``Allow``). ``error`` findings (a check could
not run) are listed apart: they are neither a pass nor a false alarm, and make
``ok`` false unless ``allow_errors``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from perfbook.demo.scenarios import SECTIONS, Expect, get

ALARM = {"warning", "critical"}


@dataclass
class SectionResult:
    section: str
    expected: list[Expect] = field(default_factory=list)
    matched: list[tuple[Expect, dict]] = field(default_factory=list)
    misses: list[Expect] = field(default_factory=list)
    false_alarms: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.misses and not self.false_alarms


@dataclass
class Result:
    scenario: str
    sections: dict[str, SectionResult]
    allow_errors: bool = False

    @property
    def misses(self) -> list[Expect]:
        return [m for s in self.sections.values() for m in s.misses]

    @property
    def false_alarms(self) -> list[dict]:
        return [f for s in self.sections.values() for f in s.false_alarms]

    @property
    def errors(self) -> list[dict]:
        return [f for s in self.sections.values() for f in s.errors]

    @property
    def ok(self) -> bool:
        return not self.misses and not self.false_alarms and (self.allow_errors or not self.errors)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"scenario {self.scenario}: {'OK' if self.ok else 'FAILED'} "
                 f"({len(self.misses)} missed, {len(self.false_alarms)} false alarms, {len(self.errors)} errors)"]
        for name, s in self.sections.items():
            mark = "ok" if s.ok and not s.errors else "!!"
            lines.append(f"  [{mark}] {name}: {len(s.matched)}/{len(s.expected)} expected found")
            for e in s.misses:
                lines.append(f"       MISSED      {e}")
                if e.evidence:
                    lines.append(f"                   (evidence: {e.evidence})")
            for f in s.false_alarms:
                lines.append(f"       FALSE ALARM {_fmt(f)}")
            for f in s.errors:
                lines.append(f"       ERROR       {_fmt(f)}")
        return "\n".join(lines)


def _fmt(f: dict) -> str:
    subj = f" [{f.get('subject')}]" if f.get("subject") else ""
    return f"{f.get('severity')} {f.get('code')}{subj}: {f.get('title', '')}"


def load_findings(path: Path | str) -> list[dict]:
    """Findings as dicts, from a findings.json holding a list or ``{"findings": [...]}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("findings", [])
    return [dict(f) for f in data]


def _section_name(name: str) -> str | None:
    stem = re.sub(r"\.ipynb$", "", Path(str(name)).name)
    stem = re.sub(r"^\d+[-_]", "", stem)
    return stem if stem in SECTIONS else None


def sections_of_run(findings_path: Path | str, findings: list[dict]) -> list[str]:
    """The sections a run covered: from manifest.json beside findings.json when it lists
    the notebooks, else the sections that have findings."""
    manifest = Path(findings_path).with_name("manifest.json")
    found: list[str] = []
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            m = {}
        nbs = m.get("notebooks", []) if isinstance(m, dict) else []
        items = nbs.items() if isinstance(nbs, dict) else enumerate(nbs)
        for key, val in items:
            cands = [key] if isinstance(key, str) else []
            if isinstance(val, dict):
                cands += [val.get(k) for k in ("section", "name", "notebook", "path") if val.get(k)]
            elif isinstance(val, str):
                cands.append(val)
            for c in cands:
                s = _section_name(c)
                if s and s not in found:
                    found.append(s)
                    break
    if not found:
        found = [s for s in SECTIONS if any(f.get("section") == s for f in findings)]
    return found


def compare(findings_json_path: Path | str, scenario_name: str, sections: Iterable[str] | None = None,
            allow_errors: bool = False) -> Result:
    """Misses and false alarms of a run against ``scenario_name``'s ground truth, for
    ``sections`` (default: the sections the run covered)."""
    scenario = get(scenario_name)
    findings = load_findings(findings_json_path)
    covered = list(sections) if sections is not None else sections_of_run(findings_json_path, findings)
    unknown = [s for s in covered if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; sections are {', '.join(SECTIONS)}")
    allows = scenario.allows
    result = Result(scenario_name, {}, allow_errors)
    for sec in covered:
        sf = [f for f in findings if f.get("section") == sec]
        sr = SectionResult(sec, expected=[e for e in scenario.expects if e.section == sec])
        used: set[int] = set()
        for e in sr.expected:
            hit = next((f for f in sf if e.matches(f)), None)
            if hit is None:
                sr.misses.append(e)
            else:
                sr.matched.append((e, hit))
                used.add(id(hit))
        for f in sf:
            sev = f.get("severity")
            if sev == "error":
                sr.errors.append(f)
                continue
            if sev not in ALARM or id(f) in used:
                continue
            if any(e.matches(f) for e in scenario.expects) or any(a.matches(f) for a in allows):
                continue
            sr.false_alarms.append(f)
        result.sections[sec] = sr
    return result
