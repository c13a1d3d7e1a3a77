"""The load test's plan (:mod:`perfbook.sources.loadgen` runs it): stages, the request mix
and the caps, built from the params by :func:`plan_from_params`, which also applies the
safety rules before any request is sent: the target's host must be listed *literally* in
``targets.allowed_hosts`` (loopback by default) or opted in by
``settings.load_test.allow_hosts``; users and total duration are capped by ``max_users``
and ``max_duration``; mix paths must be relative. A refused plan carries the reason.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from perfbook.sources.http import UrlRefused, build_url, host_listed, host_of, normalize_host

#: A stage spends at most this share of its duration spawning users.
MAX_RAMP_SHARE = 0.25

USER_AGENT = "perfbook-loadtest"



@dataclass
class MixEntry:
    method: str
    path: str
    name: str            # the stats name: the params endpoint it exercises, e.g. "GET /api/products"
    weight: float
    json: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "name": self.name, "weight": self.weight,
                **({"json": self.json} if self.json is not None else {})}


@dataclass
class Stage:
    label: str           # "10 users", "recovery (10 users)", "load (10 users)"
    users: int
    duration: float      # seconds
    kind: str = "stage"  # stage | recovery | load


@dataclass
class Plan:
    host: str
    mode: str                              # load | stress | off
    stages: list[Stage]
    mix: list[MixEntry]
    spawn_rate: float = 50.0
    think_time: float = 1.0
    request_timeout: float = 10.0
    workers: int = 0
    stop_on_break: bool = True
    expected_users: int | None = None
    max_users: int = 500
    max_duration: float = 1800.0
    refused: str | None = None

    @property
    def total_duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def peak_users(self) -> int:
        return max((s.users for s in self.stages), default=0)

    def table(self) -> pd.DataFrame:
        """The plan as a table: one row per stage."""
        return pd.DataFrame([{"stage": s.label, "kind": s.kind, "users": s.users, "duration_s": s.duration,
                              "spawn_rate": spawn_rate_for(s, self.spawn_rate)} for s in self.stages],
                            columns=["stage", "kind", "users", "duration_s", "spawn_rate"])

    def mix_table(self) -> pd.DataFrame:
        total = sum(m.weight for m in self.mix) or 1
        return pd.DataFrame([{"request": f"{m.method} {m.path}", "stats name": m.name, "weight": m.weight,
                              "share": m.weight / total} for m in self.mix])

    def summary(self) -> dict[str, Any]:
        return {"host": self.host, "mode": self.mode, "stages": len(self.stages), "peak_users": self.peak_users,
                "total_duration_s": self.total_duration, "think_time_s": self.think_time,
                "workers": self.workers, "refused": self.refused}

    def config_json(self) -> str:
        return json.dumps({"mix": [m.as_dict() for m in self.mix], "think_time": self.think_time,
                           "request_timeout": self.request_timeout,
                           "headers": {"User-Agent": USER_AGENT, "X-Load-Test": "perfbook"}})


def spawn_rate_for(stage: Stage, spawn_rate: float) -> float:
    """Users per second: the configured rate, raised so spawning takes at most a quarter
    of the stage (else a short stage would be measured mostly while ramping up)."""
    return float(max(spawn_rate, stage.users / max(stage.duration * MAX_RAMP_SHARE, 0.001)))


def host_allowed(url: str, allowed: Iterable[str], opted_in: Iterable[str] = ()) -> str | None:
    """None when ``url``'s host is listed (literally, case-insensitive) in ``allowed`` or
    ``opted_in``; else the reason for refusing. No name is resolved and nothing is sent:
    a name that merely *resolves* to an allowed address is not allowed (127.0.0.2 is
    loopback but not in the default list)."""
    try:
        host = normalize_host(host_of(url))
    except ValueError as e:
        return str(e)
    if host_listed(url, allowed, opted_in):
        return None
    return (f"host {host!r} is not in targets.allowed_hosts {sorted(normalize_host(h) for h in allowed)} "
            f"and not opted in by settings.load_test.allow_hosts; refused before any request. "
            f"To load-test it on purpose, add it to settings.load_test.allow_hosts in the params file.")


_PATH_RE = re.compile(r"^\s*(GET|POST|PUT|PATCH|DELETE|HEAD)\s+(\S+)\s*$", re.I)


def _route_regex(route: str) -> re.Pattern[str]:
    parts = [("[^/]+" if p.startswith(":") or (p.startswith("{") and p.endswith("}")) else re.escape(p))
             for p in route.split("/")]
    return re.compile("^" + "/".join(parts) + "/?$")


def parse_mix(mix: dict[str, float], endpoints: Iterable[Any] = ()) -> list[MixEntry]:
    """``{"GET /api/products?limit=20": 6, ...}`` → entries named after the params endpoint
    each path exercises (by probe path, else by route pattern: ``/api/products/:id``
    matches ``/api/products/1``), so per-endpoint latency can be held to its targets.
    Raises ValueError for a malformed entry or a path that is not relative to the host."""
    eps = list(endpoints)
    out: list[MixEntry] = []
    for key, weight in mix.items():
        m = _PATH_RE.match(key)
        if not m:
            raise ValueError(f"mix entry {key!r}: expected 'METHOD /path'")
        method, path = m.group(1).upper(), m.group(2)
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError(f"mix entry {key!r}: the path must be relative to the host (start with one '/')")
        if float(weight) < 0:
            raise ValueError(f"mix entry {key!r}: negative weight")
        bare = path.split("?", 1)[0]
        name = f"{method} {bare}"
        for e in eps:
            if e.method == method and (e.probe_path == path or _route_regex(e.route).match(bare)):
                name = e.name
                break
        out.append(MixEntry(method, path, name, float(weight),
                            json={} if method in ("POST", "PUT", "PATCH") else None))
    if not any(e.weight > 0 for e in out):
        raise ValueError("the request mix has no entry with a positive weight")
    return out


_STAGE_RE = re.compile(r"^\s*(\d+)\s*(?:(?:x|@|\*)\s*(\d+(?:\.\d+)?\s*(?:ms|s|m|h)?))?\s*$")


def parse_stages(spec: str | Iterable[Any], default_duration: float | None = None) -> list[tuple[int, float]]:
    """Stages from a notebook knob: ``"5,10,20,40"`` (each ``default_duration``), or
    ``"5x5s, 10x5s, 20x10s"``, or a list of ``{"users": n, "duration": "5s"}`` /
    ``(users, seconds)``. Returns ``[(users, seconds), ...]``."""
    from perfbook.params import parse_duration

    out: list[tuple[int, float]] = []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    for item in items:
        if isinstance(item, dict):
            users, dur = int(item["users"]), parse_duration(item.get("duration", default_duration))
        elif isinstance(item, (tuple, list)):
            users, dur = int(item[0]), parse_duration(item[1])
        elif isinstance(item, int):
            users, dur = item, default_duration
        else:
            m = _STAGE_RE.match(str(item))
            if not m:
                raise ValueError(f"stage {item!r}: expected USERS or USERSxDURATION (e.g. 10x30s)")
            users = int(m.group(1))
            dur = parse_duration(m.group(2)) if m.group(2) else default_duration
        if dur is None:
            raise ValueError(f"stage {item!r}: no duration (give USERSxDURATION or a stage duration)")
        if users < 1 or dur <= 0:
            raise ValueError(f"stage {item!r}: users and duration must be positive")
        out.append((users, float(dur)))
    if not out:
        raise ValueError("no stages")
    return out


def plan_from_params(params: Any, *, mode: str | None = None, stages: Any = None,
                     stage_duration: Any = None, users: int | None = None, duration: Any = None,
                     host: str | None = None, think_time: Any = None, recovery: Any = None) -> Plan:
    """The load test the params (and the notebook's knobs) ask for, with every safety
    check applied. Never raises: a plan that will not run — host not allowed, over a cap,
    a malformed knob, mode off — has ``refused`` saying why, and :func:`run` sends nothing."""
    lt = params.settings.load_test
    target = (host or params.targets.base_url or "").rstrip("/")
    plan = Plan(host=target, mode=mode or lt.mode, stages=[], mix=[], spawn_rate=lt.spawn_rate,
                think_time=lt.think_time, request_timeout=lt.request_timeout, workers=lt.workers,
                stop_on_break=lt.stop_on_break, expected_users=lt.expected_users,
                max_users=lt.max_users, max_duration=lt.max_duration)
    try:
        _fill(plan, params, stages, stage_duration, users, duration, think_time, recovery)
    except (ValueError, TypeError) as e:
        plan.refused = f"invalid load-test settings: {e}"
        return plan
    if plan.mode == "off":
        plan.refused = "settings.load_test.mode is off: no load test was run"
        return plan
    if not target:
        plan.refused = "no target: set targets.base_url in the params file (or the notebook's host knob)"
        return plan
    reason = host_allowed(target, params.targets.allowed_hosts, lt.allow_hosts)
    if reason:
        plan.refused = reason
        return plan
    for m in plan.mix:  # the locustfile builds each URL with the same function
        try:
            build_url(target, m.path)
        except UrlRefused as exc:
            plan.refused = f"settings.load_test.mix entry '{m.method} {m.path}': {exc}; refused before any request"
            return plan
    if plan.peak_users > lt.max_users:
        plan.refused = (f"{plan.peak_users} users is above settings.load_test.max_users ({lt.max_users}); "
                        f"refused before any request")
    elif plan.total_duration > lt.max_duration:
        plan.refused = (f"{plan.total_duration:.0f} s of load is above settings.load_test.max_duration "
                        f"({lt.max_duration:.0f} s); refused before any request")
    return plan


def _fill(plan: Plan, params: Any, stages: Any, stage_duration: Any, users: Any, duration: Any,
          think_time: Any, recovery: Any) -> None:
    """The mix and the stages from the params and the knobs (ValueError when malformed)."""
    from perfbook.params import parse_duration

    lt = params.settings.load_test
    if plan.mode not in ("load", "stress", "off"):
        raise ValueError(f"mode must be load, stress or off, not {plan.mode!r}")
    plan.mix = parse_mix(lt.mix, params.endpoints)
    if think_time is not None:
        plan.think_time = parse_duration(think_time)
    rec = lt.recovery if recovery is None else parse_duration(recovery)
    if plan.mode == "load":
        u = int(users or lt.users)
        d = parse_duration(duration) if duration is not None else lt.duration
        if u < 1 or d <= 0:
            raise ValueError("users and duration must be positive")
        plan.stages = [Stage(f"load ({u} users)", u, d, "load")]
    elif plan.mode == "stress":
        sd = parse_duration(stage_duration) if stage_duration is not None else None
        if stages is not None:
            pairs = parse_stages(stages, sd)
        else:
            pairs = [(s.users, sd if sd is not None else s.duration) for s in lt.stages]
        plan.stages = [Stage(f"{u} users", u, d) for u, d in pairs]
        if rec > 0:
            low = plan.stages[0].users
            plan.stages.append(Stage(f"recovery ({low} users)", low, rec, "recovery"))
    if plan.expected_users is None and plan.stages:
        plan.expected_users = plan.stages[0].users
