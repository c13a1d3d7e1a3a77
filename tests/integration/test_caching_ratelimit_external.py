"""Caching, rate-limiting and external-API sections on the real demo stack.

Uses the session fixtures of conftest.py: ``incident_run`` and ``healthy_run`` (each a
private PostgreSQL, a Prometheus server, two demo-service instances and the external-API
stand-in on 127.0.0.1, driven with traffic, then ``perfbook batch`` through papermill).
The Redis tests start their own redis-server on a free loopback port.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from groundtruth import compare
from runs import free_port

pytestmark = pytest.mark.integration

SECTIONS = ["caching", "rate-limiting", "external-apis"]


# --------------------------------------------------------------------------- incident


def test_low_cache_hit_rate_found(incident_run):
    found = incident_run.find("cache.low_hit_rate", section="caching")
    assert found, incident_run.section("caching")
    assert {"overall", "products"} <= {f["subject"] for f in found}
    overall = next(f for f in found if f["subject"] == "overall")
    assert overall["evidence"]["hit_rate"] < 0.6 and overall["recommendation"]


def test_rate_limit_rejections_on_products_listing(incident_run):
    found = incident_run.find("ratelimit.rejections", "GET /api/products", section="rate-limiting")
    assert found, incident_run.section("rate-limiting")
    assert all(f["evidence"]["rejected_429"] > 0 and f["evidence"]["limiters"] for f in found)


def test_generate_route_has_no_rate_limit(incident_run):
    [f] = incident_run.find("ratelimit.missing", "POST /api/content/generate", section="rate-limiting")
    assert f["severity"] == "warning" and f["evidence"]["sent"] > 0
    assert "expensiveLimiter" in f["recommendation"]


@pytest.mark.parametrize("code", ["external.slow", "external.errors", "external.circuit_open"])
def test_ai_api_slow_failing_with_breaker_open(incident_run, code):
    found = incident_run.find(code, "ai-api", section="external-apis")
    assert found, [f"{f['severity']} {f['code']} {f['subject']}: {f['title']}" for f in incident_run.section("external-apis")]
    assert all(f["subject"] == "ai-api" for f in found)


def test_incident_matches_ground_truth_in_these_sections(incident_run):
    result = compare(incident_run.run_dir / "findings.json", "incident", sections=SECTIONS)
    assert result.ok, str(result)


def test_pages_render_with_figures(incident_run):
    for section in SECTIONS:
        page = incident_run.html(section)
        assert "data:image/png;base64" in page, f"{section}: no figure"
        assert "Traceback" not in page


# --------------------------------------------------------------------------- healthy


def test_healthy_stack_raises_nothing_in_these_sections(healthy_run):
    for section in SECTIONS:
        bad = [f for f in healthy_run.section(section) if f["severity"] in ("warning", "critical", "error")]
        assert not bad, [f"{f['severity']} {f['code']} {f['subject']}: {f['title']}" for f in bad]
        assert healthy_run.section(section), f"{section}: no finding at all (did it run?)"


def test_healthy_generate_route_is_limited(healthy_run):
    found = healthy_run.find("ratelimit.missing", "POST /api/content/generate", severities=("ok",))
    assert found and found[0]["evidence"]["announced_limit"] == 60


# --------------------------------------------------------------------------- Redis


def test_redis_down_is_source_unreachable_and_the_rest_renders(healthy_run):
    port = free_port()  # nothing listens here
    res, run_dir, findings = healthy_run.run_section(
        "caching", "-P", "targets.redis_env=PERFBOOK_TEST_REDIS_URL",
        env={"PERFBOOK_TEST_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert run_dir is not None, res.stdout + res.stderr
    dead = [f for f in findings if f["code"] == "source.unreachable"]
    assert dead and all(f["subject"] == "redis" for f in dead)
    assert any(f["code"] == "cache.low_hit_rate" and f["subject"] == "overall" for f in findings)
    assert "source.unreachable" in (run_dir / "caching.html").read_text(encoding="utf-8")


@pytest.fixture
def redis_server(tmp_path):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server not installed (Debian: apt-get install redis-server; `make test` does it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path), "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_source_reads_info_and_a_bounded_ttl_sample(redis_server):
    import redis

    from perfbook.checks import caching
    from perfbook.sources import redis as redis_source

    r = redis.Redis.from_url(redis_server)
    for i in range(120):
        r.set(f"product:{i}", "x" * 50, ex=30)
    r.set("products:all", "y", ex=3600)
    for i in range(200):
        r.get(f"product:{i}")  # 120 hits, 80 misses
    info = redis_source.info(redis_server)
    facts = caching.redis_facts(info)
    assert facts["keyspace_hits"] == 120 and facts["keyspace_misses"] == 80 and facts["keys"] == 121
    sample = redis_source.sample_ttls(redis_server, max_keys=50)
    assert len(sample) == 50 and not sample.attrs["complete"] and sample.attrs["added_keyspace_hits"] == 50
    full = caching.ttl_by_prefix(redis_source.sample_ttls(redis_server, max_keys=1000)).set_index("prefix")
    assert full.loc["product", "keys"] == 120 and full.loc["product", "ttl_p50_s"] <= 30
    assert any("'product:*'" in a for a in caching.cache_advice(ttls=full.reset_index()))


def test_caching_notebook_reads_redis(healthy_run, redis_server):
    import redis

    r = redis.Redis.from_url(redis_server)
    for i in range(10):
        r.set(f"product:{i}", "x", ex=20)
    for i in range(100):
        r.get(f"product:{i}")  # 10 hits of 100: far under 60 %
    res, run_dir, findings = healthy_run.run_section(
        "caching", "-P", "targets.redis_env=PERFBOOK_TEST_REDIS_URL", env={"PERFBOOK_TEST_REDIS_URL": redis_server})
    assert run_dir is not None, res.stdout + res.stderr
    [f] = [f for f in findings if f["code"] == "cache.low_hit_rate" and f["subject"] == "redis"]
    assert f["severity"] == "critical" and "'product:*'" in f["recommendation"]
    page = (run_dir / "caching.html").read_text(encoding="utf-8")
    assert redis_server not in page  # the URL is a secret value: redacted
