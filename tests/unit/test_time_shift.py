"""`perfbook batch --baseline -7d`: the same window earlier (issue 15, point 2). Recorded inputs."""
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from perfbook import notebook as pb
from perfbook.baseline import BadBaseline, TimeShift, resolve, since_snapshot, time_shift
from perfbook.compare import Run, compare, service_identity
from perfbook.report import previous_run
from perfbook.sources import HISTORICAL_ENV, PresentOnly, http, present_only, redis as redis_source

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "healthy"


@pytest.mark.parametrize("spec, seconds", [("-7d", 7 * 86400), ("-1h", 3600), ("-90m", 5400), ("-2w", 14 * 86400),
                                           ("-30s", 30), ("-1.5h", 5400)])
def test_a_time_shift_is_parsed(spec, seconds):
    shift = time_shift(spec)
    assert shift == TimeShift(spec, seconds)
    t = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    w0, w1 = shift.window(t, t.replace(hour=13))
    assert (t - w0).total_seconds() == seconds and (w1 - w0).total_seconds() == 3600
    assert resolve(spec, "svc", "prod", "/nonexistent") == shift      # chosen before anything runs, no folder read


@pytest.mark.parametrize("spec", ["7d", "+7d", "-0h"])
def test_a_shift_that_does_not_look_back_is_one_line(spec):
    with pytest.raises(BadBaseline, match=r"^--baseline .*: a time shift looks back"):
        time_shift(spec)


def test_not_a_shift_is_a_folder():
    assert time_shift("previous") is None and time_shift("outputs/2026-12-06/100000-x") is None
    with pytest.raises(BadBaseline, match="give a run folder or 'previous'"):
        since_snapshot("-7d", "svc", "prod", "/nonexistent")


def test_live_sources_refuse_in_a_run_that_looks_back(monkeypatch):
    monkeypatch.setenv(HISTORICAL_ENV, "-7d")
    with pytest.raises(PresentOnly, match=r"looks back in time \(-7d\)"):
        present_only("HTTP probe", "the endpoints")
    with pytest.raises(PresentOnly):
        http.probe([http.ProbeSpec("GET /", "GET", "http://127.0.0.1:9/")], count=1)
    with pytest.raises(PresentOnly) as exc:
        redis_source.info("redis://:hunter2secret@127.0.0.1:9/0")
    assert "hunter2secret" not in str(exc.value)                          # its target is still made safe
    monkeypatch.delenv(HISTORICAL_ENV)
    present_only("HTTP probe", "the endpoints")                           # the present: nothing happens


def test_a_check_that_reads_the_present_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(HISTORICAL_ENV, "-1h")
    ctx = pb.Context.__new__(pb.Context)
    ctx.section, ctx.findings, ctx._current_check = "quick-diagnostics", [], None
    with pb.check(ctx, "response-time probes"):
        present_only("HTTP probe", "the endpoints")
        raise AssertionError("not reached")
    (f,) = ctx.findings
    assert (f.code, f.severity, f.check, f.subject) == ("source.present_only", "info", "response-time probes",
                                                         "HTTP probe")
    assert "not checked in a run that looks back in time" in f.title


def _run(folder, findings, shift=None):
    return Run(folder=folder, run_dir=f"/o/{folder}", service="demo-api", environment="demo",
               started="2026-12-06T12:00:00+00:00", status="complete", findings=findings,
               sections_ok=frozenset({"quick-diagnostics", "scaling"}), time_shift=shift)


def _f(code, severity, check, subject="x", section="quick-diagnostics", **evidence):
    return {"code": code, "severity": severity, "check": check, "subject": subject, "section": section,
            "title": code, "evidence": evidence}


def test_what_a_shifted_baseline_could_not_check_is_unknown_not_new():
    blind = _f("source.present_only", "info", "response-time probes", "HTTP probe")
    blind["evidence"] = {"check": "response-time probes", "reason": "this run looks back in time (-7d)"}
    base = _run("b", [blind, _f("cpu.saturation", "ok", "cpu", "overall")], shift="-7d")
    inc = _run("i", [_f("latency.slo_breach", "critical", "response-time probes", "GET /"),
                     _f("cpu.saturation", "critical", "cpu", "overall")])
    result = compare(base, inc)
    status = {c["code"]: c["status"] for c in result["changes"]}
    assert status["latency.slo_breach"] == "unknown" and status["cpu.saturation"] == "new"
    assert any("shifted -7d" in n for n in result["notes"])
    assert not any("arguments swapped" in n for n in result["notes"])
    assert result["baseline"]["time_shift"] == "-7d"
    # The same incident against an ordinary baseline: new.
    assert {c["code"]: c["status"] for c in compare(_run("b", []), inc)["changes"]}["latency.slo_breach"] == "new"


def test_previous_never_picks_a_time_shifted_run(tmp_path):
    out = tmp_path / "outputs"
    manifest = json.loads((FIX / "manifest.json").read_text())
    for rel, started, extra in (("2026-12-01/100000-normal", "2026-12-01T10:00:00+00:00", {}),
                                ("2026-12-02/100000-x-baseline-7d", "2026-12-02T10:00:00+00:00",
                                 {"time_shift": "-7d"})):
        d = out / rel
        d.mkdir(parents=True)
        shutil.copy(FIX / "findings.json", d / "findings.json")
        (d / "manifest.json").write_text(json.dumps({**manifest, "started": started, **extra}))
    service, env = service_identity(manifest)
    assert previous_run(out, service, env).folder == "100000-normal"


def test_the_command_line_takes_a_shift_after_baseline_as_its_value():
    from perfbook.cli import _shift_values, build_parser
    a = build_parser().parse_args(_shift_values(["batch", "-p", "x.yaml", "--baseline", "-7d", "--incident", ""]))
    assert a.baseline == "-7d" and a.incident == "" and a.params == ["x.yaml"]   # -p: once per service
    assert _shift_values(["batch", "--baseline", "previous"]) == ["batch", "--baseline", "previous"]
