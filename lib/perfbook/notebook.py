"""What a section notebook calls: set-up, guarded checks, findings shown and recorded.

A notebook does::

    from perfbook import notebook as pb
    ctx = pb.start("quick-diagnostics", params_file, since=since, until=until, incident=incident)

    with pb.check(ctx, "latency from probes"):
        ...                       # fetch through perfbook.sources, analyse through perfbook.checks
        pb.emit(ctx, findings)    # shows callouts and records them for the runner

A check that raises does not fail the notebook (papermill fails a run on any error
output): :func:`check` turns a dead source into a ``source.unreachable`` finding and any
other exception into a ``check.failed`` finding, shows them, and the notebook goes on.
"""
from __future__ import annotations

import html
import json
import os
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .findings import MIME_TYPE, Finding, severity_rank
from .params import Params, env_value, load, resolve_time
from .params.loading import load_resolved
from .report import CLIP, Redactor, clip, use_redactor
from .tables import NO_MATH

DEFAULT_PARAMS = "../params/demo.yaml"

COLOURS = {  # background, border, label
    "ok": ("#eef8ee", "#2e7d32", "OK"),
    "info": ("#eef4fb", "#1565c0", "INFO"),
    "warning": ("#fff6e0", "#e08a00", "WARNING"),
    "critical": ("#fdecea", "#c62828", "CRITICAL"),
    "error": ("#f3e8fd", "#6a1b9a", "CHECK DID NOT RUN"),
}


@dataclass
class Context:
    section: str
    params: Params
    params_file: str
    start: datetime
    end: datetime
    incident: str | None
    findings: list[Finding] = field(default_factory=list)
    _current_check: str = ""

    def secret(self, env_name: str | None) -> str | None:
        """A secret's value, read from the environment inside the kernel (never a parameter)."""
        return env_value(env_name)

    def probe_options(self) -> dict[str, Any]:
        s = self.params.settings.probes
        return {"count": s.count, "timeout": s.timeout, "retries": s.retries,
                "max_bytes": self.params.settings.limits.max_response_bytes}

    @property
    def window_seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _display(bundle: dict[str, Any]) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python (tests): print the text form
        print(bundle.get("text/plain", ""))
        return
    html_out = bundle.get("text/html")
    if isinstance(html_out, str) and NO_MATH not in html_out[:200]:
        # Never typeset as math in JupyterLab (``$1 … $2`` in SQL is text, not LaTeX).
        bundle = {**bundle, "text/html": f"<div class='{NO_MATH}'>{html_out}</div>"}
    display(bundle, raw=True)


def _git_revision() -> str:
    from .report import git_revision
    return git_revision()


def start(section: str, params_file: str, since: str | None = None, until: str | None = None,
          incident: str | None = None, overrides: str | dict | None = None,
          show_header: bool = True, resolved_params: str | None = None) -> Context:
    """Load the params, resolve the window, configure display, show the report header.

    ``resolved_params`` (a batch run): the file the runner wrote with the params it
    validated, ``-P`` overrides applied, loaded as it is; ``params_file`` then only names
    the file they came from. Without it (JupyterLab, a person running the notebook) the
    params file is loaded here, with ``overrides`` (the JSON of ``-P key.path=value``).
    """
    params, params_file = _load_params(params_file, overrides, resolved_params)
    # clip() redacts before it cuts, with this file's secrets (in JupyterLab too, not only in batch).
    use_redactor(Redactor.for_env(params.env_names()))
    now = datetime.now(timezone.utc)
    p_since, p_until = params.window.resolve(now)
    start_t = resolve_time(since, now) if since else p_since
    end_t = resolve_time(until, now) if until else p_until
    if start_t >= end_t:
        raise ValueError(f"window is empty: since {start_t.isoformat()} is not before until {end_t.isoformat()}")
    ctx = Context(section, params, str(params_file), start_t, end_t, incident or None)
    _configure_display()
    if show_header:
        _display({"text/html": header_html(ctx), "text/plain": header_text(ctx)})
    return ctx


def _load_params(params_file: str, overrides: str | dict | None,
                 resolved_params: str | None) -> tuple[Params, str]:
    """The section's params and the params file they came from (see :func:`start`)."""
    ov = json.loads(overrides) if isinstance(overrides, str) and overrides else (overrides or {})
    if resolved_params:
        if ov:  # the runner applied them already: a second time could change them (relative paths)
            raise ValueError("overrides are already applied in resolved_params; give one or the other")
        return load_resolved(resolved_params), params_file
    demo = os.environ.get("PERFBOOK_DEMO_PARAMS")
    if demo and params_file == DEFAULT_PARAMS and os.path.exists(demo):
        # `make lab` against a stack left up by `perfbook demo --keep`: use its ports.
        params_file = demo
    return load(params_file, ov), params_file


def _configure_display() -> None:
    try:
        import matplotlib
        matplotlib.rcParams.update({"figure.figsize": (9, 3.4), "figure.dpi": 90,
                                    "axes.grid": True, "grid.alpha": 0.3,
                                    "axes.spines.top": False, "axes.spines.right": False})
        import pandas as pd
        pd.set_option("display.max_rows", 60)
        pd.set_option("display.max_colwidth", 120)
        pd.set_option("display.html.use_mathjax", False)  # a DataFrame shown as is: `$` stays text
    except ImportError:
        pass


def header_text(ctx: Context) -> str:
    p = ctx.params
    return (f"perfbook {ctx.section} — {p.service} ({p.environment}) — window "
            f"{ctx.start:%Y-%m-%d %H:%M:%S} → {ctx.end:%Y-%m-%d %H:%M:%S} UTC"
            + (f" — incident {ctx.incident}" if ctx.incident else ""))


def header_html(ctx: Context) -> str:
    p, e = ctx.params, html.escape
    rows = [("service", p.service), ("environment", p.environment),
            ("window (UTC)", f"{ctx.start:%Y-%m-%d %H:%M:%S} → {ctx.end:%Y-%m-%d %H:%M:%S} "
                             f"({ctx.window_seconds / 60:.1f} min)"),
            ("incident", ctx.incident or "—"),
            ("run at (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")),
            ("perfbook", f"{__version__} ({_git_revision()})"),
            ("params", os.path.abspath(ctx.params_file))]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{e(k)}</th><td>{e(clip(v, CLIP['header']))}</td></tr>"
                    for k, v in rows)
    return (f"<div class='perfbook-header' style='border-left:4px solid #455a64;padding:4px 12px;"
            f"background:#f5f7f8'><b>perfbook · {e(ctx.section)}</b><table>{cells}</table></div>")


# --------------------------------------------------------------------------- findings


#: A callout shows at most this many evidence items (the notebook's finding record keeps all).
MAX_EVIDENCE_ITEMS = 30


def callout_html(f: Finding) -> str:
    bg, border, label = COLOURS[f.severity]
    e = html.escape
    items = [(k, v) for k, v in f.evidence.items() if not _missing(v)]
    ev = "".join(f"<li><code>{e(clip(k, CLIP['key']))}</code>: {e(_fmt(v, k))}</li>"
                 for k, v in items[:MAX_EVIDENCE_ITEMS])
    if len(items) > MAX_EVIDENCE_ITEMS:
        ev += f"<li><i>{len(items) - MAX_EVIDENCE_ITEMS} more evidence items not shown</i></li>"
    rec = (f"<div><b>What to do:</b><pre style='white-space:pre-wrap;margin:2px 0'>"
           f"{e(clip(f.recommendation, CLIP['recommendation']))}</pre></div>" if f.recommendation else "")
    subject = f" — <code>{e(clip(f.subject, CLIP['subject']))}</code>" if f.subject else ""
    return (f"<div class='perfbook-finding sev-{f.severity}' data-code='{e(f.code)}' "
            f"style='background:{bg};border-left:6px solid {border};padding:6px 12px;margin:6px 0'>"
            f"<div><span style='color:{border};font-weight:bold'>{label}</span> "
            f"<code>{e(f.code)}</code>{subject}</div>"
            f"<div style='font-size:1.05em;margin:2px 0'><b class='perfbook-title'>{e(clip(f.title, CLIP['title']))}</b></div>"
            + (f"<ul style='margin:2px 0'>{ev}</ul>" if ev else "")
            + rec
            + f"<div style='color:#555;font-size:0.85em'>runbook: {e(f.runbook_ref)}</div></div>")


def _missing(v: Any) -> bool:
    from .tables import _missing as missing
    return missing(v)


def _fmt(v: Any, key: str = "") -> str:
    from .tables import value
    if isinstance(v, (list, dict)):
        return clip(json.dumps(v, default=str), CLIP["value"])
    return clip(value(v, key), CLIP["value"])


def emit(ctx: Context, *findings: Finding | Iterable[Finding]) -> list[Finding]:
    """Show each finding as a callout and record it (machine-readable) in the notebook."""
    flat: list[Finding] = []
    for item in findings:
        flat.extend([item] if isinstance(item, Finding) else list(item))
    flat.sort(key=lambda f: -severity_rank(f.severity))
    for f in flat:
        f.section = f.section or ctx.section
        f.check = f.check or ctx._current_check
        ctx.findings.append(f)
        _display({"text/html": callout_html(f),
                  "text/plain": f"[{f.severity.upper()}] {f.code} {f.subject or ''}: {f.title}",
                  MIME_TYPE: f.to_dict()})
    return flat


def unreachable_finding(exc: Any, name: str, partial: bool = False) -> Finding:
    """The ``source.unreachable`` finding for a source that did not answer (or answered
    with an error) while check ``name`` needed it; ``partial``: the check went on with the
    other sources of the same kind (one instance's /metrics of several)."""
    from .sources import SourceUnreachable

    what = "unreachable" if isinstance(exc, SourceUnreachable) else "answered with an error"
    title = (f"{exc.source} {what} at {exc.target}: '{name}' ran on the other sources only" if partial
             else f"{exc.source} {what}: '{name}' could not be checked")
    return Finding(
        "source.unreachable", "error", title,
        subject=exc.source,
        evidence={"target": exc.target, "reason": exc.reason, "check": name},
        recommendation=f"Check that {exc.source} at {exc.target} is up and reachable from here, "
                       f"and the params file points at it; then re-run this section.",
        check=name)


def present_only_finding(exc: Any, name: str) -> Finding:
    """The ``source.present_only`` finding: check ``name`` reads the present, and this run
    looks back in time (``perfbook batch --baseline -7d``), so it did not run; said, not guessed."""
    return Finding("source.present_only", "info",
                   f"'{name}' reads the present ({exc.source}): not checked in a run that looks back in time",
                   subject=exc.source, evidence={"check": name, "reason": exc.reason},
                   check=name)


def emit_unreachable(ctx: Context, problems: Iterable[Any], name: str | None = None) -> None:
    """One ``source.unreachable`` finding per source that did not answer while the check went
    on with the others (e.g. one instance's /metrics of several): the check's findings
    cover only the sources that answered."""
    name = name or ctx._current_check or ctx.section
    for exc in problems:
        emit(ctx, unreachable_finding(exc, name, partial=True))


@contextmanager
def check(ctx: Context, name: str) -> Iterator[None]:
    """Run a check; a dead source or an exception becomes an error finding, never a crash."""
    from .sources import PresentOnly, SourceError, SourceUnreachable

    previous, ctx._current_check = ctx._current_check, name
    try:
        yield
    except PresentOnly as exc:
        emit(ctx, present_only_finding(exc, name))
    except (SourceUnreachable, SourceError) as exc:
        emit(ctx, unreachable_finding(exc, name))
    except Exception as exc:  # noqa: BLE001 - a check must never take the report down
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
        emit(ctx, Finding(
            "check.failed", "error", f"'{name}' failed: {type(exc).__name__}: {str(exc)[:300]}",
            evidence={"exception": type(exc).__name__, "message": str(exc)[:1000], "check": name},
            recommendation="This is a perfbook bug or an unexpected input; the traceback is in the "
                           "executed notebook. The rest of the report is unaffected.",
            check=name))
        _display({"text/html": f"<details><summary>traceback</summary><pre>{html.escape(clip(''.join(tb), CLIP['text']))}</pre></details>",
                  "text/plain": "".join(tb)})
    finally:
        ctx._current_check = previous


def metrics_window(ctx: Context, without: str) -> Any:
    """The section's metrics (a :class:`~perfbook.sources.window_metrics.WindowMetrics`),
    or None: the Prometheus server of the params, checked once ("metrics source"); when it
    is down or not configured, the instances' own ``/metrics`` ("metrics source (fallback
    to /metrics)"). A metrics URL of several that does not answer is named once; the note
    says where the numbers come from, or ``without``: what runs with no metrics at all."""
    from .sources import resources as src

    wm = None
    with check(ctx, "metrics source"):
        wm = src.open_window(ctx)
    with check(ctx, "metrics source (fallback to /metrics)"):
        wm = wm or src.snapshot_fallback(ctx)
    if wm:
        emit_unreachable(ctx, wm.new_dead(), "metrics source")
    note(f"Metrics: {wm.basis}." if wm else "No metrics source answered or none is in the params "
         f"(targets.prometheus, targets.metrics_urls): {without}")
    return wm


class Metrics:
    """What a section's metrics source has (:func:`metrics_present`): ``present`` (the
    configured metric names the source exports; None when it could not be told, and then
    every metric is tried) and :meth:`gauge`."""

    def __init__(self, wm: Any, params: Any, present: Any):
        self.wm, self.params, self.present = wm, params, present

    def exists(self, name: str) -> bool:
        from .checks.resources import metric_exists

        return metric_exists(name, self.present)

    def gauge(self, name: str) -> Any:
        """A gauge's samples over the window, or None when the source does not have it (no
        query is sent for a metric the source lacks)."""
        from .sources.resources import gauge

        return gauge(self.wm, self.params, name) if self.wm and self.exists(name) else None


def metrics_present(ctx: Context, wm: Any, fields: Any) -> Metrics:
    """The check "which metrics exist": which of the params' metrics (``fields``, e.g.
    :data:`perfbook.sources.resources.QUICK_FIELDS`) the source ``wm`` exports, the table of
    those it lacks with what stands in, and a ``metrics.missing`` finding for each."""
    from .checks.resources import metric_coverage
    from .sources.resources import discover

    present = None
    if wm:
        with check(ctx, "which metrics exist"):
            present = discover(wm, ctx.params, fields)
            coverage, found = metric_coverage(present, ctx.params, fields, wm.basis)
            table(coverage[~coverage["present"]], "Configured metrics the source does not have, and what stands in")
            emit(ctx, found)
    return Metrics(wm, ctx.params, present)


def instance_series(wm: Any, m: Any) -> Any:
    """Per-instance series over the window (load balancing, scaling): fetched through
    ``wm`` (:meth:`~perfbook.sources.window_metrics.WindowMetrics.instance_frame`, the I/O)
    and read by :func:`perfbook.checks.balance.series_from` (pure). ``m``: the params'
    metrics section."""
    from .checks.balance import series_from

    return series_from(*wm.instance_frame(m), m)


# --------------------------------------------------------------------------- display helpers


def table(df: Any, caption: str = "", max_rows: int = 200, lead: list[str] | tuple = ()) -> None:
    """Show a DataFrame readably (:func:`perfbook.tables.render`): evidence columns first, fits a
    1280 px window (the rest in a details block), long text clipped with the whole on hover,
    numbers, durations and times formatted, escaped and never typeset as math."""
    from .tables import render

    body, text = render(df, caption, max_rows=max_rows, lead=lead)
    _display({"text/html": body, "text/plain": text})


def details(summary: str, text: str, language: str = "") -> None:
    """Collapsed block, e.g. the SQL or PromQL a table came from."""
    _display({"text/html": f"<details><summary>{html.escape(clip(summary, CLIP['title']))}</summary>"
                           f"<pre class='{html.escape(language[:40])}'>{html.escape(clip(text, CLIP['text']))}</pre></details>",
              "text/plain": f"{summary}:\n{text}"})


def note(text: str) -> None:
    """A short paragraph of escaped text (a conclusion with its numbers)."""
    _display({"text/html": f"<p>{html.escape(clip(text, CLIP['text']))}</p>", "text/plain": text})


def record(ctx: Context, name: str, data: dict[str, Any], text: str) -> None:
    """Keep ``data`` (JSON-safe) with the run for later runs: the runner writes it as
    ``snapshots/<name>.json`` in the run folder (e.g. the database snapshot a later
    ``--since-run`` or ``perfbook compare`` computes its window from). ``text``: the line
    the page shows instead of the data."""
    from .findings import RECORD_MIME_TYPE

    _display({"text/html": f"<p class='perfbook-record'>{html.escape(clip(text, CLIP['text']))}</p>",
              "text/plain": text, RECORD_MIME_TYPE: {"name": name, "section": ctx.section, "data": data}})


def load_record(path: str | Path) -> dict[str, Any]:
    """A record a run stored (``<run>/snapshots/<name>.json``), for a notebook run by hand with
    ``since_snapshot=...`` (the runner checks it before any kernel starts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


MAX_SUMMARY_ITEMS = 100


def summary(ctx: Context) -> None:
    """The section's conclusion: counts by severity and the worst findings first."""
    counts: dict[str, int] = {}
    for f in ctx.findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    bad = [f for f in ctx.findings if f.severity in ("warning", "critical", "error")]
    bad.sort(key=lambda f: -severity_rank(f.severity))
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -severity_rank(kv[0])))
    items = "".join(f"<li><b>{html.escape(f.severity.upper())}</b> <code>{html.escape(f.code)}</code> "
                    f"{html.escape(clip(f.title, CLIP['title']))}</li>" for f in bad[:MAX_SUMMARY_ITEMS])
    if len(bad) > MAX_SUMMARY_ITEMS:
        items += f"<li><i>{len(bad) - MAX_SUMMARY_ITEMS} more not listed here; see above</i></li>"
    verdict = "Nothing above normal in this section." if not bad else f"{len(bad)} finding(s) need attention:"
    _display({"text/html": f"<div class='perfbook-summary'><p><b>Summary:</b> {html.escape(parts or 'no findings')}. "
                           f"{html.escape(verdict)}</p><ul>{items}</ul></div>",
              "text/plain": f"Summary: {parts}. {verdict}"})
