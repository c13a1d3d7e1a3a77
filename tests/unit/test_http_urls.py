"""Every URL an HTTP prober sends to is built by one function and stays on base_url's host
(issue 14, point 2): hostile probe paths are refused at check-params and by build_url."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfbook.params import Endpoint, ParamsError, load as load_params
from perfbook.sources import burst, http, loadgen, monitoring

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "/https://other.example/x",
    "/http://other.example/x",
    "//other/x",
    "//other.example:8080/",
    "/\\other.example/x",
    "/\\\\other.example/x",
    "/x\r\nHost: other.example",
    "/ http://other/",
    "/x\t",
    "/mailto:a@b/http://other/",
    "/HTTPS://OTHER.example",
]
TARGETS = {"p50": "100ms", "p95": "200ms", "p99": "300ms"}


@pytest.mark.parametrize("path", HOSTILE)
def test_build_url_refuses_paths_that_leave_the_host(path):
    with pytest.raises(http.UrlRefused):
        http.build_url("http://127.0.0.1:8080", path)


@pytest.mark.parametrize("base, path, url", [
    ("http://127.0.0.1:8080", "/api/products?limit=20", "http://127.0.0.1:8080/api/products?limit=20"),
    ("http://127.0.0.1:8080/", "/health", "http://127.0.0.1:8080/health"),
    ("https://api.example.com/v1", "/items/1", "https://api.example.com/v1/items/1"),
    ("http://[::1]:9000", "/x", "http://[::1]:9000/x"),
    # a path that merely *mentions* another host stays on ours
    ("http://h:1", "/redirect?to=https://other.example/x", "http://h:1/redirect?to=https://other.example/x"),
    ("http://h:1", "/@other.example/x", "http://h:1/@other.example/x"),
    ("http://h:1", "/../../etc", "http://h:1/../../etc"),
    ("http://h:1", "/%2F%2Fother.example", "http://h:1/%2F%2Fother.example"),
])
def test_build_url_appends_the_path_to_the_base(base, path, url):
    assert http.build_url(base, path) == url


@pytest.mark.parametrize("base", ["ftp://h/", "http://", "not a url", "http://h:1\\@other/"])
def test_build_url_refuses_a_base_without_one_clear_http_host(base):
    with pytest.raises(http.UrlRefused):
        http.build_url(base, "/x")


@pytest.mark.parametrize("path", HOSTILE)
def test_probe_path_refused_at_validation(path):
    with pytest.raises(ValueError, match=r"targets\.base_url's host"):
        Endpoint(method="GET", route="/x", probe_path=path, targets=TARGETS)


def test_check_params_names_file_and_field(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("service: s\ntargets: {base_url: 'http://127.0.0.1:8080'}\n"
                 "endpoints:\n  - {method: GET, route: /x, probe_path: '/https://other.example/x',\n"
                 "     targets: {p50: 100ms, p95: 200ms, p99: 300ms}}\n", encoding="utf-8")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(f)) and "endpoints[0].probe_path" in msg
    res = subprocess.run([sys.executable, "-m", "perfbook.cli", "check-params", str(f)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode != 0
    err = [ln for ln in (res.stderr + res.stdout).splitlines() if "probe_path" in ln]
    assert err and str(f) in err[0] and "endpoints[0].probe_path" in err[0], res.stdout + res.stderr


def _params(probe_path: str, route: str = "/x", expensive: bool = True):
    """A params-like object that skipped validation (as a notebook knob or a hand-built model could)."""
    ep = SimpleNamespace(name=f"GET {route}", method="GET", route=route, probe_path=probe_path,
                         expensive=expensive)
    return SimpleNamespace(targets=SimpleNamespace(base_url="http://127.0.0.1:8080", allowed_hosts=["127.0.0.1"]),
                           endpoints=[ep])


@pytest.mark.parametrize("path", HOSTILE)
def test_probes_refuse_without_a_request(path):
    with pytest.raises(http.UrlRefused):
        http.specs_from_params(_params(path))


@pytest.mark.parametrize("path", HOSTILE[:4])
def test_bursts_refuse_without_a_request(path):
    [t] = burst.targets_from_params(_params(path))
    assert t.url == "" and t.refused
    with pytest.raises(burst.BurstRefused):
        burst.burst(t, ["127.0.0.1", "other.example", "other"])


def test_checklist_probe_refuses_without_a_request():
    from perfbook.sources import SourceUnreachable

    p = _params("/https://other.example/x")
    p.endpoints[0].expensive = False
    with pytest.raises(SourceUnreachable) as e:  # every probe refused before sending: none answered
        monitoring.probe_http(p, timeout=1)
    assert "refused" in str(e.value) and "other.example" in str(e.value)


def test_load_test_plan_refuses_a_mix_path_off_the_host():
    from perfbook.params import Params

    params = Params(service="s", targets={"base_url": "http://127.0.0.1:8080"},
                    settings={"load_test": {"mix": {"GET /ok": 1}}})
    assert loadgen.plan_from_params(params).refused is None
    params.settings.load_test.mix = {"GET /https://other.example/x": 1}
    plan = loadgen.plan_from_params(params)
    assert plan.refused and "other.example" in plan.refused and "build" not in plan.refused
