"""The report folder: dated run folders, atomic writes, redaction, HTML export, index page.

Layout of one run::

    outputs/YYYY-MM-DD/HHMMSS-<incident or params name>/
        <section>.ipynb  <section>.html   (per notebook)
        index.html  findings.json  manifest.json

Guarantees: a run folder is created with ``mkdir`` (never reused: two batches in the
same second get ``-2``, ``-3``); every file is written to a temporary name and linked
into place, so a reader never sees half a file and nothing is ever overwritten; every
object is redacted on structure (:class:`Redactor`) before it is serialised, and every
file is checked for secrets before it is written.

The package's parts, all re-exported here (``from perfbook.report import Redactor``):
:mod:`.redaction` (redaction, size caps), :mod:`.files` (run folders, atomic writes,
versions), :mod:`.pages` (HTML export, index page, findings.json) and :mod:`.comparison`
(two runs compared).
"""
from __future__ import annotations

from .comparison import (
    STATUS_STYLE,
    Figures,
    NotARun,
    compare_html,
    compare_runs,
    comparison_name,
    comparisons_in,
    previous_run,
    read_run,
    refresh_index,
    run_redactor,
    write_comparison,
)
from .files import git_revision, make_run_dir, replace_file, slug, versions, write_new
from .pages import (
    MAX_INDEX_FINDINGS,
    MAX_OUTPUT_CHARS,
    SEV_STYLE,
    STATUS_TEXT,
    TEMPLATES,
    checklist_index_html,
    error_html,
    findings_json,
    index_html,
    notebook_html,
    redact_findings,
)
from .redaction import (
    CLIP,
    COMMON_WORDS,
    MIN_SAFE_SECRET,
    Redactor,
    SecretLeak,
    active_redactor,
    clip,
    redact_notebook,
    secret_weakness,
    use_redactor,
)

__all__ = [
    "TEMPLATES", "SecretLeak", "COMMON_WORDS", "MIN_SAFE_SECRET", "secret_weakness", "Redactor", "redact_notebook", "use_redactor", "active_redactor", "CLIP", "clip", "slug", "make_run_dir", "write_new", "replace_file", "git_revision", "versions", "notebook_html", "MAX_OUTPUT_CHARS", "error_html", "SEV_STYLE", "MAX_INDEX_FINDINGS", "STATUS_TEXT", "redact_findings", "index_html", "checklist_index_html", "findings_json", "NotARun", "read_run", "run_redactor", "STATUS_STYLE", "Figures", "compare_html", "comparison_name", "write_comparison", "comparisons_in", "previous_run", "refresh_index",
    "compare_runs",
]
