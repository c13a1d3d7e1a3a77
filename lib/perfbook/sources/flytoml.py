"""fly.toml: the capacity settings a Fly.io app runs with, read with :mod:`tomllib`.

What the capacity sections compare with observed load:

- ``[[services]]`` → ``[services.concurrency]`` (``type`` = ``connections`` or ``requests``,
  ``soft_limit``, ``hard_limit``): above the soft limit Fly's proxy prefers other machines;
  at the hard limit it stops sending this machine new work (queues, then errors).
  The newer ``[http_service]`` block with ``[http_service.concurrency]`` is read the same way.
- ``[scaling]`` ``min_machines`` / ``max_machines`` (the runbook's auto-scaling block) and
  ``[http_service]`` ``min_machines_running`` (Fly's autostop/autostart floor).
- ``[[metrics]]`` ``type`` / ``target`` (the runbook's scaling targets: cpu 70, memory 80,
  requests 1000). A single ``[metrics]`` table with ``port`` / ``path`` is Fly's way to say
  where the app exposes Prometheus metrics; it is returned as ``metrics_endpoint``.
- ``[[vm]]`` / ``[vm]`` ``cpus``, ``memory``: the machine size, when given.

I/O only; the comparison lives in :mod:`perfbook.checks.balance` and
:mod:`perfbook.checks.scaling`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from perfbook.sources import SourceError, SourceUnreachable

__all__ = ["FlyConfig", "FlyService", "read", "read_optional", "parse", "describe"]


@dataclass
class FlyService:
    """One ``[[services]]`` (or ``[http_service]``) block."""
    internal_port: int | None = None
    protocol: str = "tcp"
    ports: list[int] = field(default_factory=list)
    concurrency_type: str = "connections"  # Fly's default
    soft_limit: int | None = None
    hard_limit: int | None = None
    kind: str = "services"                 # services | http_service


@dataclass
class FlyConfig:
    path: str = ""
    app: str | None = None
    primary_region: str | None = None
    services: list[FlyService] = field(default_factory=list)
    min_machines: int | None = None
    max_machines: int | None = None
    min_machines_running: int | None = None
    scaling_targets: dict[str, float] = field(default_factory=dict)  # cpu/memory/requests -> target
    metrics_endpoint: dict[str, Any] = field(default_factory=dict)
    vm_cpus: int | None = None
    vm_memory: str | None = None

    @property
    def concurrency(self) -> FlyService | None:
        """The service whose limits govern HTTP traffic: the first with a concurrency block."""
        for s in self.services:
            if s.soft_limit is not None or s.hard_limit is not None:
                return s
        return self.services[0] if self.services else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _service(block: dict[str, Any], kind: str) -> FlyService:
    conc = block.get("concurrency") or {}
    ports = [p.get("port") for p in block.get("ports", []) if isinstance(p, dict) and p.get("port")]
    return FlyService(
        internal_port=_int(block.get("internal_port")),
        protocol=str(block.get("protocol", "tcp")),
        ports=[int(p) for p in ports],
        concurrency_type=str(conc.get("type", "connections")),
        soft_limit=_int(conc.get("soft_limit")),
        hard_limit=_int(conc.get("hard_limit")),
        kind=kind,
    )


def parse(text: str, path: str = "") -> FlyConfig:
    """Parse fly.toml text. Raises ``tomllib.TOMLDecodeError`` on bad TOML."""
    data = tomllib.loads(text)
    cfg = FlyConfig(path=path, app=data.get("app"), primary_region=data.get("primary_region"))
    for block in data.get("services", []) or []:
        if isinstance(block, dict):
            cfg.services.append(_service(block, "services"))
    http = data.get("http_service")
    if isinstance(http, dict):
        svc = _service(http, "http_service")
        svc.protocol = "http"
        cfg.services.append(svc)
        cfg.min_machines_running = _int(http.get("min_machines_running"))
    scaling = data.get("scaling") or {}
    cfg.min_machines = _int(scaling.get("min_machines"))
    cfg.max_machines = _int(scaling.get("max_machines"))
    metrics = data.get("metrics")
    if isinstance(metrics, list):
        for m in metrics:
            if isinstance(m, dict) and "type" in m and "target" in m:
                try:
                    cfg.scaling_targets[str(m["type"])] = float(m["target"])
                except (TypeError, ValueError):
                    pass
            elif isinstance(m, dict) and ("port" in m or "path" in m):
                cfg.metrics_endpoint = {k: m[k] for k in ("port", "path") if k in m}
    elif isinstance(metrics, dict):
        cfg.metrics_endpoint = {k: metrics[k] for k in ("port", "path") if k in metrics}
    vm = data.get("vm")
    vm = vm[0] if isinstance(vm, list) and vm else vm
    if isinstance(vm, dict):
        cfg.vm_cpus = _int(vm.get("cpus"))
        mem = vm.get("memory") or vm.get("memory_mb")
        cfg.vm_memory = None if mem is None else str(mem)
    return cfg


def read(path: str | Path, base: str | Path | None = None) -> FlyConfig:
    """Read a fly.toml. A relative ``path`` is taken from ``base`` (e.g. the params file's
    folder) when given.

    Raises :class:`SourceUnreachable` (source ``"fly.toml"``) when the file cannot be read
    and :class:`SourceError` when it is not valid TOML.
    """
    p = Path(path)
    if not p.is_absolute() and base is not None:
        candidate = Path(base) / p
        p = candidate if candidate.exists() or not p.exists() else p
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceUnreachable("fly.toml", str(p), "no such file") from None
    except OSError as e:
        raise SourceUnreachable("fly.toml", str(p), e.strerror or str(e)) from None
    try:
        return parse(text, str(p))
    except tomllib.TOMLDecodeError as e:
        raise SourceError("fly.toml", str(p), f"not valid TOML: {e}") from None


def read_optional(path: str | Path | None, base: str | Path | None = None) -> FlyConfig | None:
    """:func:`read` when the params name a fly.toml (``targets.fly_toml``), else None."""
    return None if not path else read(path, base)


def describe(cfg: FlyConfig | None) -> str:
    """One paragraph saying what the fly.toml sets (or that there is none)."""
    if cfg is None:
        return ("No fly.toml in the params (targets.fly_toml): the [services.concurrency] limits and "
                "[scaling] bounds cannot be compared with the observed load.")
    svc = cfg.concurrency
    conc = (f"[{svc.kind}.concurrency] type = \"{svc.concurrency_type}\", soft_limit = {svc.soft_limit}, "
            f"hard_limit = {svc.hard_limit}" if svc is not None else "no [[services]] / [http_service] block")
    scaling = (f"[scaling] min_machines = {cfg.min_machines}, max_machines = {cfg.max_machines}"
               if cfg.min_machines is not None or cfg.max_machines is not None else "no [scaling] block")
    targets = ", ".join(f"{k} {v:g}" for k, v in cfg.scaling_targets.items()) or "none"
    return (f"{cfg.path}: app {cfg.app or '?'} (primary region {cfg.primary_region or '?'}); {conc}; {scaling}; "
            f"[[metrics]] scaling targets: {targets}.")
