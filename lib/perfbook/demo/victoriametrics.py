"""A private VictoriaMetrics single node (Debian package ``victoria-metrics``) scraping the
demo instances with the same Prometheus-format scrape config as the Prometheus server —
the engine under Fly.io's managed Prometheus. Started, checked and stopped by the code
shared with :class:`~perfbook.demo.prometheus.PrometheusServer`.

Its query defaults are VictoriaMetrics' own (``-search.latencyOffset`` 30 s: range
queries repeat the last point older than 30 s over the newest 30 s), so the demo and the
tests see what a user of the managed endpoint sees.
"""
from __future__ import annotations

from pathlib import Path

from perfbook.demo.processes import LOOPBACK
from perfbook.demo.prometheus import JOB, ScrapingServer, find_binary

INSTALL_HINT = "VictoriaMetrics not found. On Debian/Ubuntu: apt-get install victoria-metrics"
#: The Debian package installs ``victoria-metrics``; the upstream release binary is ``victoria-metrics-prod``.
BINARIES = ("victoria-metrics", "victoria-metrics-prod")


def find_victoriametrics() -> Path:
    """``$PERFBOOK_VICTORIAMETRICS``, else ``victoria-metrics`` or ``victoria-metrics-prod``
    on PATH, /usr/bin, /usr/local/bin."""
    for name in BINARIES:
        try:
            return find_binary(name, INSTALL_HINT, env="PERFBOOK_VICTORIAMETRICS")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(INSTALL_HINT)


class VictoriaMetricsServer(ScrapingServer):
    """``victoria-metrics`` with ``-promscrape.config`` scraping the targets.
    ``latency_offset``: its ``-search.latencyOffset`` (None keeps the default, 30 s).

    ``scrape=False``: no scraping of its own; it stores what a Prometheus server sends to
    :attr:`write_url` (``remote_write``). Two scrapers of one process do not read the same
    samples — prom-client resets its event-loop delay histogram at every collect and the
    demo's pool gauges report the peak since the previous scrape, so each scraper sees
    only the part of each second since the *other* one scraped — and comparing two
    backends needs the same data in both."""

    name = "victoriametrics"
    ready_path = "/health"

    def __init__(self, state_dir: Path | str, port: int | None = None, targets: list[str] | None = None,
                 scrape_interval: str = "1s", job: str = JOB,
                 target_labels: dict[str, dict[str, str]] | None = None, latency_offset: str | None = None,
                 scrape: bool = True):
        super().__init__(state_dir, port, targets, scrape_interval, job, target_labels)
        self.latency_offset = latency_offset
        self.scrape = scrape

    @property
    def write_url(self) -> str:
        """Where Prometheus's ``remote_write`` sends samples."""
        return f"{self.url}/api/v1/write"

    def argv(self) -> list[str]:
        argv = [str(find_victoriametrics()), *([f"-promscrape.config={self.config_path}"] if self.scrape else []),
                f"-storageDataPath={self.data_dir}", "-retentionPeriod=2d",
                f"-httpListenAddr={LOOPBACK}:{self.port}", "-loggerLevel=WARN",
                "-memory.allowedPercent=20"]
        if self.latency_offset:
            argv.append(f"-search.latencyOffset={self.latency_offset}")
        return argv


# --------------------------------------------------------------------------- comparing two batches

#: The checks whose verdict comes from the time-series database alone, by section (the
#: ``check`` field of a finding). Probes, load tests, PostgreSQL and the rules API are
#: live or backend-independent sources and answer differently from one moment to the next.
TSDB_CHECKS: dict[str, frozenset[str]] = {
    "quick-diagnostics": frozenset({"instances up", "latency per route (histogram)", "error rate (5xx)", "CPU %",
                                    "memory %", "event-loop lag", "DB connections"}),
    "bottlenecks": frozenset({"CPU saturation", "event-loop lag", "memory: heap, RSS, growth"}),
    "load-balancing": frozenset({"uneven load across instances"}),
    "scaling": frozenset({"scale out or in"}),
    "monitoring": frozenset({"alert rules evaluated over the window"}),
    "caching": frozenset({"hit rate vs the 60 % target"}),
    "rate-limiting": frozenset({"rate-limit rejections by route"}),
    "external-apis": frozenset({"dependency error rate", "dependency latency vs timeout", "circuit breaker state"}),
    "database": frozenset({"application connection pool (Prometheus)"}),
}


def tsdb_verdicts(findings: list[dict]) -> set[tuple[str, str, str, str]]:
    """``(section, code, subject, severity)`` of the findings :data:`TSDB_CHECKS` covers."""
    return {(f["section"], f["code"], f.get("subject") or "", f["severity"]) for f in findings
            if f.get("check") in TSDB_CHECKS.get(f.get("section"), ())}


#: How far apart two backends' numbers for one finding may be and still count as the same
#: data read two ways (relative). Both hold the same samples and :class:`PromClient` sends
#: counters to VictoriaMetrics the PromQL way (``increase_prometheus`` scaled by n / (n - 1),
#: :func:`~perfbook.sources.prometheus.prometheus_counters`), so what is left is subquery
#: step alignment and floating point: a few percent. A verdict on its threshold may flip
#: on that; a verdict one backend misses outright (a pool at 49 % vs 0 %) is far outside.
NEAR = 0.15

#: Verdicts known to differ on VictoriaMetrics, ``(section, code) -> the defect``: reported
#: as such by :func:`verdict_differences`, never hidden. None is known (the CPU % a quarter
#: low on a four-scrape rate window, issue 20, is fixed in the counter translation).
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}


def _numbers(f: dict) -> dict[str, float]:
    ev = f.get("evidence") or {}
    return {k: float(v) for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def near_threshold(a: dict, b: dict, tolerance: float = NEAR) -> bool:
    """Whether two findings of one check and subject that differ in severity carry the
    same numbers within ``tolerance`` (relative): a verdict on its threshold read through
    two backends' arithmetic, not a different diagnosis. Findings without shared numbers
    never qualify."""
    na, nb = _numbers(a), _numbers(b)
    shared = [k for k in na if k in nb]
    if not shared:
        return False
    return all(abs(na[k] - nb[k]) <= tolerance * max(abs(na[k]), abs(nb[k])) + 1e-9 for k in shared)


def verdict_differences(prometheus: list[dict], victoriametrics: list[dict],
                        tolerance: float = NEAR) -> tuple[list[str], list[str]]:
    """``(different, near)``: lines naming every time-series verdict one backend reached and
    the other did not, split into real differences and flips of a finding whose numbers agree
    within ``tolerance`` on both backends (:func:`near_threshold`)."""
    def keyed(findings):
        return {(f["section"], f["code"], f.get("subject") or ""): f for f in findings
                if f.get("check") in TSDB_CHECKS.get(f.get("section"), ())}
    a, b = keyed(prometheus), keyed(victoriametrics)
    different, near = [], []
    for key in sorted(set(a) | set(b)):
        fa, fb = a.get(key), b.get(key)
        if fa is not None and fb is not None and fa["severity"] == fb["severity"]:
            continue
        s, c, subj = key
        if (s, c) in KNOWN_DIFFERENCES:
            near.append(f"known difference: {s} {c} [{subj}] {fa['severity'] if fa else '-'} on Prometheus, "
                        f"{fb['severity'] if fb else '-'} on VictoriaMetrics: {KNOWN_DIFFERENCES[(s, c)]}")
            continue
        if fa is not None and fb is not None and near_threshold(fa, fb, tolerance):
            near.append(f"near its threshold: {s} {c} [{subj}] {fa['severity']} on Prometheus, "
                        f"{fb['severity']} on VictoriaMetrics (numbers within {tolerance:.0%})")
            continue
        if fa is not None:
            different.append(f"only on Prometheus:      {s} {c} [{subj}] {fa['severity']}")
        if fb is not None:
            different.append(f"only on VictoriaMetrics: {s} {c} [{subj}] {fb['severity']}")
    return different, near


def compare_verdicts(prometheus: list[dict], victoriametrics: list[dict]) -> list[str]:
    """Lines naming every time-series verdict that one backend reached and the other did
    not, beyond flips on a threshold (empty: the same diagnosis)."""
    return verdict_differences(prometheus, victoriametrics)[0]
