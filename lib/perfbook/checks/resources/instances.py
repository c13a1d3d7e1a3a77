"""Instances up (part of :mod:`perfbook.checks.resources`): outages as consecutive failed
scrapes, and scrapes every instance missed at once as a monitoring gap.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...findings import Finding, severity_rank
from .levels import _clean_series

# --------------------------------------------------------------------------- instances up

DOWN_ADVICE = ("`flyctl status` and `flyctl logs -i <machine>`: did it crash (OOM: memory section), fail its health "
               "check, or get stopped? While it is down the others carry its traffic: check their CPU and latency "
               "here, and `flyctl machine restart <id>` if it does not come back.")


def _down_runs(t: np.ndarray, failed: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) positions of each run of consecutive failed scrapes."""
    runs, start = [], None
    for i, f in enumerate(failed):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(failed) - 1))
    return runs


def _dur(seconds: float) -> str:
    """``800 ms``, ``5 s``, ``2.5 min``."""
    if seconds is None or seconds != seconds:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt_span(first: pd.Timestamp, last: pd.Timestamp) -> str:
    return f"{first:%H:%M:%S}–{last:%H:%M:%S} UTC" if first != last else f"{first:%H:%M:%S} UTC"


def instances_down(up: pd.DataFrame | None, *, down_for: float) -> tuple[pd.DataFrame, list[Finding]]:
    """``instance.down`` and ``monitoring.gap`` from Prometheus's ``up`` series over the window.

    An instance is *down* only after an outage: at least two consecutive failed scrapes
    (``up == 0``) spanning at least ``down_for`` seconds (``settings.diagnostics.down_for``;
    each scrape stands for one scrape interval, so 15 failed one-second scrapes are 15 s) —
    critical when the outage lasts to the end of the window, warning when it came back.
    Shorter runs of failed scrapes are flaps: named in the ``ok`` finding, no alarm (an
    info finding when the instance has not answered its last scrapes yet).

    A failed scrape that *every* instance missed at the same time (each within one of its
    scrape intervals), when there are two instances or more, is not an instance's outage:
    the scraper or the machine it runs on stalled (a busy machine times out every scrape
    at once). A run of failed scrapes made only of such shared misses is a
    ``monitoring.gap`` (info; a warning when it lasts ``down_for`` or more: a blind spot
    that long — or the whole service down at once — needs a look), never
    ``instance.down``; an instance's own outage that overlaps a shared miss is still
    judged on its whole run.

    Nothing in snapshot mode (no ``up`` series there; a metrics URL that does not answer is
    ``source.unreachable``). Table: per instance the scrapes, failed and shared failed
    scrapes, its longest own run of failures (s) and the verdict.
    """
    df = _clean_series(up)
    cols = ["instance", "scrapes", "failed", "shared_failed", "longest_outage_s", "down_s", "first_down",
            "last_down", "up_at_end", "verdict"]
    if df.empty or "timestamp" not in df.columns:
        return pd.DataFrame(columns=cols), []
    df = df.assign(timestamp=pd.to_datetime(df["timestamp"], utc=True)).sort_values("timestamp")
    per: dict[str, dict[str, Any]] = {}
    for inst, g in df.groupby("instance"):
        t = g["timestamp"].to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
        interval = float(np.median(np.diff(t))) if len(t) > 1 else float("nan")
        per[str(inst)] = {"t": t, "failed": (g["value"] < 0.5).to_numpy(), "interval": interval}
    names = sorted(per)

    def step_of(inst: str) -> float:
        i = per[inst]["interval"]
        return i if i == i else 0.0

    def shared(inst: str, ts: float) -> bool:
        """Every other instance scraped around ``ts`` failed then too (two instances at least)."""
        others = 0
        for o in names:
            if o == inst:
                continue
            d = per[o]
            # one and a half scrape intervals: the targets' scrapes are out of phase, and a
            # failed scrape stands for the time until its timeout
            tol = 1.5 * max(d["interval"] if d["interval"] == d["interval"] else 0.0, step_of(inst))
            near = (d["t"] >= ts - tol - 1e-6) & (d["t"] <= ts + tol + 1e-6)
            if not near.any():
                if d["t"][0] <= ts <= d["t"][-1]:   # scraped before and after, not around: no evidence
                    return False
                continue                            # not scraped yet / any more: not part of the comparison
            if not d["failed"][near].any():
                return False
            others += 1
        return others >= 1

    rows, found, flaps, gaps = [], [], [], []
    for inst in names:
        d = per[inst]
        t, failed, interval = d["t"], d["failed"], d["interval"]
        step = interval if interval == interval else 0.0
        is_shared = np.array([bool(f) and shared(inst, ts) for ts, f in zip(t, failed)])
        longest, verdict, worst_run = 0.0, "ok", None
        for a, b in _down_runs(t, failed):
            span = float(t[b] - t[a] + step)
            first, last = (pd.Timestamp(t[a], unit="s", tz="UTC"), pd.Timestamp(t[b], unit="s", tz="UTC"))
            run = {"instance": inst, "scrapes": b - a + 1, "span_s": span, "first": first, "last": last,
                   "at_end": b == len(t) - 1, "step": step}
            if is_shared[a:b + 1].all():
                gaps.append(run)
                continue
            longest = max(longest, span)
            if b > a and span >= down_for - 1e-9:
                sev = "critical" if run["at_end"] else "warning"
                if worst_run is None or severity_rank(sev) > severity_rank(verdict) or span > worst_run["span_s"]:
                    worst_run = run
                verdict = sev if severity_rank(sev) > severity_rank(verdict) else verdict
            else:
                flaps.append(run)
        rows.append({"instance": inst, "scrapes": len(t), "failed": int(failed.sum()),
                     "shared_failed": int(is_shared.sum()), "longest_outage_s": longest,
                     "down_s": float(failed.sum() * step) if step else float("nan"),
                     "first_down": pd.Timestamp(t[failed][0], unit="s", tz="UTC") if failed.any() else None,
                     "last_down": pd.Timestamp(t[failed][-1], unit="s", tz="UTC") if failed.any() else None,
                     "up_at_end": bool(not failed[-1]), "verdict": verdict})
        if worst_run is not None:
            r = worst_run
            still = r["at_end"]
            found.append(Finding(
                "instance.down", "critical" if still else "warning",
                f"{inst} did not answer {r['scrapes']} consecutive scrapes (~{_dur(r['span_s'])} down, "
                f"{_fmt_span(r['first'], r['last'])})" + ("; still down at the end of the window" if still
                                                         else "; back up since"),
                subject=inst,
                evidence={"instance": inst, "failed_scrapes": r["scrapes"], "scrapes": len(t),
                          "failed_in_window": int(failed.sum()), "down_s": r["span_s"],
                          "first_down": r["first"].isoformat(), "last_down": r["last"].isoformat(),
                          "down_at_end": still, "down_for": down_for, "scrape_interval_s": interval,
                          "statistic": f"consecutive failed scrapes (up == 0) spanning ≥ {down_for:g} s, "
                                       f"not missed by every instance at once"},
                recommendation=DOWN_ADVICE))
    table = pd.DataFrame(rows, columns=cols)
    gap_findings = _gap_findings(gaps, len(names), down_for)
    ongoing = [f for f in flaps if f["at_end"]]
    for r in ongoing:
        found.append(Finding(
            "instance.down", "info",
            f"{r['instance']} did not answer its last {r['scrapes']} scrape(s) (~{_dur(r['span_s'])}, "
            f"{_fmt_span(r['first'], r['last'])}): shorter than settings.diagnostics.down_for "
            f"({down_for:g} s) — not called down yet; re-run to see whether it comes back",
            subject=r["instance"],
            evidence={"instance": r["instance"], "failed_scrapes": r["scrapes"], "down_s": r["span_s"],
                      "first_down": r["first"].isoformat(), "down_for": down_for, "down_at_end": True}))
    if not any(f.severity in ("warning", "critical") for f in found):
        short = [f for f in flaps if not f["at_end"]]
        if short:
            worst = max(short, key=lambda r: r["span_s"])
            flap = (f"; {len(short)} shorter run(s) of failed scrapes, the longest ~{_dur(worst['span_s'])} on "
                    f"{worst['instance']} (under down_for {down_for:g} s)")
        else:
            flap = ""
        gap = f"; {sum(g['scrapes'] for g in gaps)} scrape(s) every instance missed at once (monitoring gap)" \
            if gaps else ""
        clean = not short and not gaps and not ongoing
        title = (f"All {len(table)} instance(s) answered every scrape in the window (up == 1)" if clean else
                 f"No instance down for {down_for:g} s or more among {len(table)} instance(s){flap}{gap}")
        found.append(Finding("instance.down", "ok", title, subject="all instances",
                             evidence={"instances": len(table), "scrapes": int(table["scrapes"].sum()),
                                       "failed_scrapes": int(table["failed"].sum()), "down_for": down_for,
                                       "flaps": [{"instance": r["instance"], "scrapes": r["scrapes"],
                                                  "span_s": r["span_s"], "first": r["first"].isoformat()}
                                                 for r in short]}))
    return table, found + gap_findings


GAP_ADVICE = ("Every instance missed the same scrapes, so the cause is on the scraping side: Prometheus itself "
              "(its own CPU, a long GC or compaction, `prometheus_target_scrapes_exceeded_sample_limit_total`, "
              "`scrape_duration_seconds` near the scrape timeout) or the machine both run on (load, CPU steal). "
              "Numbers of the window have a hole there; the instances were not necessarily down. A gap as long "
              "as a real outage can also be the whole service down at once: compare process_start_time_seconds "
              "before and after.")


def _gap_findings(gaps: list[dict[str, Any]], instances: int, down_for: float) -> list[Finding]:
    """``monitoring.gap``: the runs of failed scrapes every instance shared, as episodes."""
    if not gaps:
        return []
    gaps = sorted(gaps, key=lambda r: r["first"])
    episodes: list[dict[str, Any]] = []
    for r in gaps:
        cur = episodes[-1] if episodes else None
        if cur is not None and r["first"] <= cur["last"] + pd.Timedelta(seconds=r["step"] + 1e-3):
            cur["last"] = max(cur["last"], r["last"])
            cur["step"] = max(cur["step"], r["step"])
            cur["missed"][r["instance"]] = cur["missed"].get(r["instance"], 0) + r["scrapes"]
        else:
            episodes.append({"first": r["first"], "last": r["last"], "step": r["step"],
                             "missed": {r["instance"]: r["scrapes"]}})
    missed: dict[str, int] = {}
    for e in episodes:
        e["span_s"] = (e["last"] - e["first"]).total_seconds() + e["step"]
        for k, v in e["missed"].items():
            missed[k] = missed.get(k, 0) + int(v)
    longest = max(e["span_s"] for e in episodes)
    sev = "warning" if longest >= down_for - 1e-9 else "info"
    first = episodes[0]
    when = ", ".join(_fmt_span(e["first"], e["last"]) for e in episodes[:3]) + (" …" if len(episodes) > 3 else "")
    title = (f"Monitoring gap: all {instances} instances missed the same scrapes {len(episodes)} time(s) "
             f"(longest ~{_dur(longest)}; {when}) — the scraper or the machine, not one instance")
    if sev == "warning":
        title += f"; {_dur(longest)} blind (or the whole service down at once)"
    return [Finding("monitoring.gap", sev, title, subject="prometheus",
                    evidence={"episodes": len(episodes), "longest_s": longest, "instances": instances,
                              "down_for": down_for, "first_gap": first["first"].isoformat(),
                              "missed_scrapes": missed,
                              "spans": [{"first": e["first"].isoformat(), "last": e["last"].isoformat(),
                                         "span_s": e["span_s"]} for e in episodes[:20]]},
                    recommendation=GAP_ADVICE)]
