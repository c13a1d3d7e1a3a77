"""The demo service's /metrics against a real prom-client 15 service's (the recorded fixture
in tests/fixtures/promclient, written by a real Node process with collectDefaultMetrics()):
the same default families with the same types and label names, plus the application
metrics the runbook names — and nothing a Node service would not have (no
nodejs_process_cpu_percent, no nodejs_heap_size_limit_bytes, no prometheus_client
`_created` series). In-process: the demo's metrics registry rendered as the service does."""
from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from perfbook.checks.resources import PROM_CLIENT_DEFAULT_FAMILIES
from perfbook.demo.metrics import APPLICATION_FAMILIES, ServiceMetrics

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "promclient"


def families(text: str) -> dict[str, tuple[str, set[str] | None]]:
    """name (as the TYPE line spells it) → (type, label names of its samples, None without samples)."""
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
    out = {}
    for fam in text_string_to_metric_families(text):
        name = next(n for n in (fam.name, fam.name + "_total") if n in types)
        labels = {k for s in fam.samples for k in s.labels if k != "le"} if fam.samples else None
        out[name] = (types[name], labels)
    return out


def demo_exposition() -> str:
    m = ServiceMetrics()

    async def run():
        m.monitor.start()
        await asyncio.sleep(0.05)
        await m.monitor.stop()
    asyncio.run(run())
    m.http_duration.labels(method="GET", route="/api/products", status_code="200").observe(0.05)
    m.http_requests.labels(method="GET", route="/api/products", status_code="200").inc()
    m.gc_duration.labels(kind="minor").observe(0.002)
    return generate_latest(m.registry).decode()


def test_demo_exports_exactly_prom_client_default_families_plus_the_application_ones():
    real = families((FIX / "metrics.txt").read_text())
    demo = families(demo_exposition())
    real_defaults = {k: v for k, v in real.items() if not k.startswith("http_")}
    assert {k: t for k, (t, _) in real_defaults.items()} == PROM_CLIENT_DEFAULT_FAMILIES
    demo_defaults = {k: v for k, v in demo.items() if k in PROM_CLIENT_DEFAULT_FAMILIES}
    assert set(demo_defaults) == set(real_defaults), set(real_defaults) ^ set(demo_defaults)
    for name, (kind, labels) in real_defaults.items():
        d_kind, d_labels = demo_defaults[name]
        assert d_kind == kind, name
        if labels is not None:   # families the recorded process had samples of: the same label names
            assert d_labels == labels, (name, d_labels, labels)
    rest = {k: t for k, (t, _) in demo.items() if k not in PROM_CLIENT_DEFAULT_FAMILIES}
    assert rest == APPLICATION_FAMILIES
    assert not [k for k in rest if k.startswith(("nodejs_", "process_", "python_"))]
    # the HTTP metrics carry prom-client's usual labels, as in the recorded service
    assert demo["http_request_duration_seconds"][1] == real["http_request_duration_seconds"][1] == \
        {"method", "route", "status_code"}


def test_nothing_a_node_service_would_not_have():
    text = demo_exposition()
    for name in ("nodejs_process_cpu_percent", "nodejs_heap_size_limit_bytes", "_created", "python_"):
        assert name not in text, name


def test_event_loop_gauges_reset_at_every_scrape_like_prom_client():
    m = ServiceMetrics()

    def gauge(text, name):
        return next(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " "))

    async def run():
        m.monitor.start()
        await asyncio.sleep(0.1)
        first = generate_latest(m.registry).decode()
        import time
        time.sleep(0.25)                       # the loop blocked 250 ms
        await asyncio.sleep(0.05)
        blocked = generate_latest(m.registry).decode()
        await asyncio.sleep(0.3)
        after = generate_latest(m.registry).decode()
        await m.monitor.stop()
        return first, blocked, after
    first, blocked, after = asyncio.run(run())
    assert gauge(first, "nodejs_eventloop_lag_min_seconds") >= 0.0099    # the 10 ms resolution, as Node reports
    assert gauge(blocked, "nodejs_eventloop_lag_max_seconds") >= 0.25
    assert gauge(after, "nodejs_eventloop_lag_max_seconds") < 0.2         # reset by the previous scrape
