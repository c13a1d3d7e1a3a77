"""The params model: valid files load; each malformed file gives one line naming file and field."""
import textwrap
from pathlib import Path

import pytest

from perfbook.params import ParamsError, load, parse_duration

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
service: api
environment: production
"""

# (name, file content, expected field path, expected words in the message)
MALFORMED = [
    ("unknown_top_key", "service: a\nservise: b\n", "servise", "unknown key"),
    ("unknown_nested_key", "service: a\ntargets: {base_urll: http://x}\n", "targets.base_urll", "unknown key"),
    ("missing_service", "environment: prod\n", "service", "required"),
    ("empty_service", "service: ''\n", "service", "at least 1"),
    ("service_wrong_type", "service: [1, 2]\n", "service", "string"),
    ("bad_base_url_scheme", "service: a\ntargets: {base_url: ftp://x}\n", "targets.base_url", "http(s) URL"),
    ("base_url_no_host", "service: a\ntargets: {base_url: 'http://'}\n", "targets.base_url", "http(s) URL"),
    ("base_url_not_url", "service: a\ntargets: {base_url: localhost:8080}\n", "targets.base_url", "http(s) URL"),
    ("base_url_bad_port", "service: a\ntargets: {base_url: 'http://x:99999'}\n", "targets.base_url", "port"),
    ("url_with_password", "service: a\ntargets: {base_url: 'http://u:hunter2@x'}\n", "targets.base_url", "password"),
    ("metrics_url_bad", "service: a\ntargets: {metrics_urls: [nope]}\n", "targets.metrics_urls[0]", "http(s) URL"),
    ("prometheus_missing_url", "service: a\ntargets: {prometheus: {selector: '{a=\"b\"}'}}\n", "targets.prometheus.url", "required"),
    ("prometheus_bad_selector", "service: a\ntargets: {prometheus: {url: 'http://p', selector: 'app=x'}}\n", "targets.prometheus.selector", "label selector"),
    ("inline_bearer_token", "service: a\ntargets: {prometheus: {url: 'http://p', bearer_token: abcdef123}}\n", "targets.prometheus.bearer_token", "secret value written inline"),
    ("token_in_env_field", "service: a\ntargets: {prometheus: {url: 'http://p', bearer_token_env: 'FlyV1 fm2_abc=='}}\n", "targets.prometheus.bearer_token_env", "environment variable"),
    ("dsn_in_database_env", "service: a\ntargets: {database_env: 'postgres://u:p@db/x'}\n", "targets.database_env", "secret value written inline"),
    ("password_key", "service: a\ndatabase: {password: s3cret}\n", "database.password", "secret value written inline"),
    ("redis_url_inline", "service: a\ntargets: {redis_env: 'redis://:pw@h:6379'}\n", "targets.redis_env", "secret value written inline"),
    ("token_in_health_url_query", "service: a\ntargets: {external_health_urls: {x: 'https://h/health?api_key=Zz9tok'}}\n", "targets.external_health_urls.x", "secret in its query string"),
    ("token_in_base_url_query", "service: a\ntargets: {base_url: 'https://h/?a=1&access_token=Zz9tok'}\n", "targets.base_url", "secret in its query string"),
    ("signature_in_metrics_url", "service: a\ntargets: {metrics_urls: ['http://h/metrics?X-Amz-Signature=Zz9tok']}\n", "targets.metrics_urls[0]", "secret in its query string"),
    ("inverted_window", "service: a\nwindow: {since: now, until: -30m}\n", "window", "inverted"),
    ("inverted_iso_window", "service: a\nwindow: {since: '2025-10-31T15:00:00Z', until: '2025-10-31T14:00:00Z'}\n", "window", "inverted"),
    ("bad_since", "service: a\nwindow: {since: yesterday}\n", "window.since", "relative time"),
    ("bad_until_type", "service: a\nwindow: {until: 12}\n", "window.until", "relative time"),
    ("endpoint_no_targets", "service: a\nendpoints: [{route: /x}]\n", "endpoints[0].targets", "required"),
    ("endpoint_bad_route", "service: a\nendpoints: [{route: x, targets: {p50: 1s, p95: 2s, p99: 3s}}]\n", "endpoints[0].route", "start with '/'"),
    ("endpoint_bad_method", "service: a\nendpoints: [{method: FETCH, route: /x, targets: {p50: 1s, p95: 2s, p99: 3s}}]\n", "endpoints[0].method", "GET"),
    ("endpoint_bad_duration", "service: a\nendpoints: [{route: /x, targets: {p50: fast, p95: 2s, p99: 3s}}]\n", "endpoints[0].targets.p50", "duration"),
    ("endpoint_negative_duration", "service: a\nendpoints: [{route: /x, targets: {p50: -1, p95: 2s, p99: 3s}}]\n", "endpoints[0].targets.p50", "negative"),
    ("endpoint_targets_unordered", "service: a\nendpoints: [{route: /x, targets: {p50: 3s, p95: 2s, p99: 1s}}]\n", "endpoints[0].targets", "p50 <= p95 <= p99"),
    ("endpoint_duplicate", "service: a\nendpoints: [{route: /x, targets: {p50: 1s, p95: 2s, p99: 3s}}, {route: /x, targets: {p50: 1s, p95: 2s, p99: 3s}}]\n", "endpoints", "listed twice"),
    ("threshold_inverted", "service: a\nthresholds: {cpu_percent: {warning: 90, critical: 80}}\n", "thresholds.cpu_percent", "warning must not be above critical"),
    ("threshold_wrong_type", "service: a\nthresholds: {cpu_percent: {warning: high, critical: 80}}\n", "thresholds.cpu_percent.warning", "number"),
    ("hit_rate_above_one", "service: a\nthresholds: {cache_hit_rate: 60}\n", "thresholds.cache_hit_rate", "less than or equal to 1"),
    ("bad_metric_name", "service: a\nmetrics: {http_duration: 'http-duration'}\n", "metrics.http_duration", "metric or label name"),
    ("probe_count_zero", "service: a\nsettings: {probes: {count: 0}}\n", "settings.probes.count", "greater than or equal to 1"),
    ("load_users_over_cap", "service: a\nsettings: {load_test: {users: 900, max_users: 100, mode: load}}\n", "settings.load_test", "max_users"),
    ("bad_k6_threshold", "service: a\nsettings: {load_test: {thresholds: ['p95 < 1s']}}\n", "settings.load_test.thresholds", "k6-style"),
    ("bad_memory_limit", "service: a\ntargets: {memory_limit: lots}\n", "targets.memory_limit", "size"),
    ("bad_allowed_host", "service: a\ntargets: {allowed_hosts: ['http://x/']}\n", "targets.allowed_hosts", "host"),
    ("yaml_syntax_error", "service: a\ntargets: {base_url: [unclosed\n", "line", "YAML syntax error"),
    ("yaml_tab_indent", "service: a\ntargets:\n\tbase_url: http://x\n", "line", "YAML syntax error"),
    ("top_level_list", "- service: a\n", "(top level)", "mapping"),
    ("empty_file", "", "(top level)", "empty"),
    ("endpoints_not_list", "service: a\nendpoints: {route: /x}\n", "endpoints", "list"),
    ("alert_missing_for", "service: a\nsettings: {monitoring: {alerts: [{name: X, expr: up, threshold: 1}]}}\n", "settings.monitoring.alerts[0].for", "required"),
]


@pytest.mark.parametrize("name,text,field,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_params_give_one_line_naming_file_and_field(tmp_path, name, text, field, words):
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError) as ei:
        load(f)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}: "), msg
    assert ei.value.field.startswith(field), msg
    assert words.lower() in msg.lower(), msg


def test_at_least_thirty_malformed_cases():
    assert len(MALFORMED) >= 30


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ParamsError) as ei:
        load(tmp_path / "nope.yaml")
    assert str(ei.value) == f"{tmp_path / 'nope.yaml'}: (file): no such file"


def test_defaults_come_from_the_runbook_tables(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    p = load(f)
    products = p.endpoint("GET", "/api/products")
    assert (products.targets.p50, products.targets.p95, products.targets.p99) == (0.5, 1.0, 2.0)
    assert p.endpoint("GET", "/health").targets.p95 == 0.2
    assert p.endpoint("POST", "/api/content/generate").targets.p99 == 120
    assert (p.thresholds.cpu_percent.warning, p.thresholds.cpu_percent.critical) == (70, 85)
    assert (p.thresholds.eventloop_lag_seconds.warning, p.thresholds.eventloop_lag_seconds.critical) == (0.05, 0.1)
    assert (p.thresholds.db_connections.warning, p.thresholds.db_connections.critical) == (50, 80)
    assert p.thresholds.cache_hit_rate == 0.6
    assert p.metrics.http_duration == "http_request_duration_seconds"


@pytest.mark.parametrize("path", ["params/demo.yaml", "params/production.example.yaml"])
def test_committed_params_files_are_valid(path):
    p = load(ROOT / path)
    assert p.service


def test_overrides_apply_dotted_keys(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    p = load(f, {"settings.probes.count": 7, "window.since": "-1h"})
    assert p.settings.probes.count == 7 and p.window.since == "-1h"


@pytest.mark.parametrize("text,seconds", [("200ms", 0.2), ("1s", 1), ("5m", 300), (2, 2.0), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_env_names_are_the_secrets(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent("""
        service: a
        targets:
          database_env: DATABASE_URL
          redis_env: REDIS_URL
          prometheus: {url: 'https://api.fly.io/prometheus/x', bearer_token_env: FLY_API_TOKEN}
    """))
    assert sorted(load(f).env_names()) == ["DATABASE_URL", "FLY_API_TOKEN", "REDIS_URL"]


def test_a_token_in_a_query_string_is_refused_without_echoing_it(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("service: a\ntargets: {external_health_urls: {ai: 'https://h/health?api_key=Zz9SecretTok'}}\n")
    with pytest.raises(ParamsError) as ei:
        load(f)
    assert "Zz9SecretTok" not in str(ei.value) and "api_key=" in str(ei.value)
    f.write_text("service: a\ntargets: {external_health_urls: {ai: 'https://h/health?verbose=1&page=2'}}\n")
    assert load(f).targets.external_health_urls["ai"].endswith("page=2")  # ordinary queries are fine


@pytest.mark.parametrize("value,why", [("postgresql://app:postgres@db/shop", "common word"),
                                       ("host=db password='abc' dbname=x", "shorter than 8"),
                                       ("administrator", "common word")])
def test_check_params_warns_about_a_secret_that_cannot_be_redacted_safely(tmp_path, monkeypatch, capsys,
                                                                            value, why):
    from perfbook import cli

    f = tmp_path / "p.yaml"
    f.write_text("service: a\ntargets: {database_env: PB_T_DB}\n")
    monkeypatch.setenv("PB_T_DB", value)
    assert cli.main(["check-params", str(f)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and str(f) in err[0] and "targets.database_env" in err[0] and why in err[0], err
    assert "postgres" not in err[0].replace("postgresql", "") and "abc" not in err[0]  # never the secret itself
    monkeypatch.setenv("PB_T_DB", "postgresql://app:Zq9xLm2kPw7@db/shop")
    assert cli.main(["check-params", str(f)]) == 0
    assert "warning" not in capsys.readouterr().err
