"""`perfbook listen --config FILE`: runs started by the alert itself.

An HTTP receiver for Prometheus Alertmanager's webhook (payload version 4). A firing
notification whose alert labels match a route of the config starts a batch of that route's
params file over ``[startsAt - lookback, now]``, with an incident id taken from the alert
(alertname, a hash of the group key, the date it started) — once per alert group and
firing episode: repeats and re-sends are deduplicated, and a resolved notification is
recorded in the run's manifest. Nothing a request sends chooses a file, a host to probe or
a command: those come from the config file alone; labels only select a route.

Answers: 200 accepted (or a duplicate, said so), 400 a payload that is not Alertmanager's
(one line why), 401 a missing or wrong bearer token, 413 a body over 1 MB, 503 a full
queue. ``GET /healthz`` and ``GET /`` (a small status page: runs in progress, last runs).
SIGTERM stops taking notifications, lets the running batches finish or mark themselves
interrupted (they get SIGTERM), and exits.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from .params import Duration, ParamsError, Strict, load_model
from .params.values import EnvName

MAX_BODY = 1 << 20
#: Alertmanager's webhook payload version this receiver reads.
PAYLOAD_VERSION = "4"
#: How far back a startsAt may lie (older: the window starts here, and the run says so).
MAX_LOOKBACK_S = 7 * 86400


class Route(Strict):
    match: dict[str, str] = Field(min_length=1, description="alert labels: exact values, or `=~regex` "
                                                            "(anchored, as Alertmanager's matchers)")
    params: str = Field(description="the params file of the service (relative to this config file)")
    lookback: Duration = Field(1800.0, gt=0, le=MAX_LOOKBACK_S, description="window = [startsAt - lookback, now]")
    sections: list[str] | None = Field(None, min_length=1, description="sections to run (default: all)")
    baseline: str | None = Field(None, description="perfbook batch --baseline: a run folder, previous, -7d, ...")

    @field_validator("match")
    @classmethod
    def _regexes_compile(cls, v: dict[str, str]) -> dict[str, str]:
        for label, value in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
                raise ValueError(f"{label!r} is not a label name")
            if value.startswith("=~"):
                try:
                    re.compile(value[2:])
                except re.error as exc:
                    raise ValueError(f"{label}: the regex {value[2:]!r} does not compile: {exc}") from None
        return v


class ListenConfig(Strict):
    bind: str = Field("127.0.0.1:9095", description="host:port to listen on (loopback unless this says otherwise)")
    token_env: EnvName | None = Field(None, description="environment variable holding the bearer token "
                                                        "Alertmanager must send (http_config.authorization)")
    max_concurrent: int = Field(1, ge=1, le=8, description="batches at once")
    queue: int = Field(10, ge=0, le=1000, description="notifications that may wait for a free slot; more get 503")
    outputs: str = Field("outputs", description="where the runs are written (relative to this config file)")
    routes: list[Route] = Field(min_length=1)

    @field_validator("bind")
    @classmethod
    def _host_port(cls, v: str) -> str:
        m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d{1,5})", v.strip())
        if not m or not 0 <= int(m.group(2)) < 65536:   # 0: any free port
            raise ValueError(f"expected host:port, got {v!r}")
        return v.strip()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.bind.rsplit(":", 1)
        return host.strip("[]"), int(port)


def load_config(path: str | Path) -> ListenConfig:
    """The config file, validated; paths made absolute against its folder. ParamsError (one
    line, naming the file and the field) otherwise, also for a params file or section that
    does not exist."""
    from .runner import available_sections

    path = Path(path)
    cfg: ListenConfig = load_model(path, ListenConfig, "params/listen.example.yaml")
    base = path.resolve().parent
    cfg.outputs = str((base / cfg.outputs).resolve())
    known = set(available_sections())
    for i, r in enumerate(cfg.routes):
        p = (base / r.params).resolve()
        if not p.is_file():
            raise ParamsError(path, f"routes[{i}].params", f"no such file: {p}")
        r.params = str(p)
        for s in r.sections or []:
            if s not in known:
                raise ParamsError(path, f"routes[{i}].sections", f"unknown section {s!r}; known: {', '.join(sorted(known))}")
    if cfg.token_env and not os.environ.get(cfg.token_env):
        raise ParamsError(path, "token_env", f"the environment variable {cfg.token_env} is not set")
    return cfg


# --------------------------------------------------------------------------- payloads


class BadPayload(ValueError):
    """Not an Alertmanager webhook payload this receiver reads (one line)."""


def parse_payload(body: bytes) -> dict[str, Any]:
    """The webhook payload (version 4), checked for what the receiver uses."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise BadPayload("expected a JSON object")
    if str(data.get("version")) != PAYLOAD_VERSION:
        raise BadPayload(f"payload version {str(data.get('version'))[:20]!r}, expected {PAYLOAD_VERSION!r} "
                         f"(Alertmanager's webhook)")
    if not isinstance(data.get("groupKey"), str) or not data["groupKey"]:
        raise BadPayload("no groupKey")
    if data.get("status") not in ("firing", "resolved"):
        raise BadPayload(f"status {str(data.get('status'))[:20]!r}, expected firing or resolved")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise BadPayload("no alerts")
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            raise BadPayload(f"alerts[{i}]: no labels")
        if a.get("status") not in ("firing", "resolved"):
            raise BadPayload(f"alerts[{i}]: status {str(a.get('status'))[:20]!r}")
        _time(a.get("startsAt"), f"alerts[{i}].startsAt")
    return data


def _time(value: Any, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadPayload(f"{where}: not an RFC 3339 time: {str(value)[:40]!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def matches(route: Route, labels: dict[str, Any]) -> bool:
    for name, want in route.match.items():
        have = str(labels.get(name, ""))
        if want.startswith("=~"):
            if not re.fullmatch(want[2:], have):
                return False
        elif have != want:
            return False
    return True


def incident_id(alertname: str, group_key: str, starts: datetime) -> str:
    """``<alertname>-<8 hex of the group key>-<YYYYMMDD>``: the same for every re-send of one
    firing episode, readable in the archive."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", alertname or "alert").strip("-")[:60] or "alert"
    return f"{name}-{hashlib.sha256(group_key.encode()).hexdigest()[:8]}-{starts:%Y%m%d}"


@dataclass
class Episode:
    """One alert group's firing episode, and the run it started."""
    key: str
    incident: str
    route: int
    since: datetime
    alertname: str
    group_key: str
    starts_at: str
    state: str = "queued"            # queued / running / done / failed
    run_dir: str | None = None
    exit_code: int | None = None
    resolved_at: str | None = None
    received: float = field(default_factory=time.time)


# --------------------------------------------------------------------------- the receiver


class Receiver:
    """Routing, deduplication, the bounded queue and the workers; HTTP-free (the handler
    below is a thin shell), so the rules are tested without sockets."""

    def __init__(self, cfg: ListenConfig, run: Callable[[Episode, Route, ListenConfig], tuple[int, str | None]]
                 | None = None, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.run = run or run_batch_process
        self.log = log or (lambda m: (sys.stderr.write(m + "\n"), sys.stderr.flush()))
        self.episodes: dict[str, Episode] = self._load_state()
        self.lock = threading.Lock()
        self.manifest_lock = threading.Lock()
        self.queue: queue.Queue[Episode | None] = queue.Queue(maxsize=cfg.queue)
        self.stopping = threading.Event()
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"listen-{i}")
                        for i in range(cfg.max_concurrent)]
        self.busy = threading.Semaphore(cfg.max_concurrent)
        self.running = 0
        for w in self.workers:
            w.start()

    def authorized(self, header: str | None) -> bool:
        if not self.cfg.token_env:
            return True
        token = os.environ.get(self.cfg.token_env, "")
        given = (header or "")[7:] if (header or "").startswith("Bearer ") else ""
        return bool(token) and hmac.compare_digest(given.encode(), token.encode())

    def notify(self, data: dict[str, Any]) -> tuple[int, str]:
        """Handle one parsed notification: (HTTP status, one line)."""
        group_key = data["groupKey"]
        said = []
        # Earliest first: a group's first alert opens the episode, the later ones join it (in the
        # payload's order, a later alert first would open an episode the earlier one does not join).
        for alert in sorted(data["alerts"], key=lambda a: _time(a["startsAt"], "startsAt")):
            labels = {**(data.get("commonLabels") or {}), **alert["labels"]}
            route_i = next((i for i, r in enumerate(self.cfg.routes) if matches(r, labels)), None)
            starts = _time(alert["startsAt"], "startsAt")
            key = hashlib.sha256(f"{group_key}\0{starts.isoformat()}".encode()).hexdigest()[:16]
            with self.lock:
                known = self.episodes.get(key) or self._episode_of_group(group_key, starts)
            if alert["status"] == "resolved":
                if known is not None and known.resolved_at is None:
                    known.resolved_at = str(alert.get("endsAt") or datetime.now(timezone.utc).isoformat())
                    self._record_resolved(known)
                    said.append(f"{known.incident}: resolved")
                continue
            if route_i is None:
                said.append(f"{labels.get('alertname', '?')}: no route matches its labels")
                continue
            if known is not None and known.state != "lost":   # lost: the receiver stopped mid-run; run it again
                said.append(f"{known.incident}: already {known.state} (same group and firing episode)")
                continue
            route = self.cfg.routes[route_i]
            earliest = datetime.now(timezone.utc) - timedelta(seconds=MAX_LOOKBACK_S)
            since = max(starts - timedelta(seconds=route.lookback), earliest)
            ep = Episode(key, incident_id(str(labels.get("alertname", "alert")), group_key, starts), route_i, since,
                         str(labels.get("alertname", "")), group_key, starts.isoformat())
            with self.lock:
                if self.stopping.is_set():
                    return 503, "shutting down: not taking new runs"
                try:
                    self.queue.put_nowait(ep)
                except queue.Full:
                    return 503, f"the queue is full ({self.cfg.queue} waiting, {self.cfg.max_concurrent} running)"
                self.episodes[key] = ep
                self._save_state()
            self.log(f"perfbook listen: {ep.incident}: queued (route {route_i}, window from {since:%Y-%m-%d %H:%M:%S} UTC)")
            said.append(f"{ep.incident}: queued")
        return 200, "; ".join(said) or "nothing to do"

    def _episode_of_group(self, group_key: str, starts: datetime) -> Episode | None:
        """A group's episode that is still open (not resolved) and began at or before ``starts``:
        another alert of the same group joining a firing episode does not start a second run."""
        open_ = [e for e in self.episodes.values() if e.group_key == group_key and e.resolved_at is None
                 and datetime.fromisoformat(e.starts_at) <= starts]
        return max(open_, key=lambda e: e.starts_at) if open_ else None

    def _work(self) -> None:
        while True:
            ep = self.queue.get()
            if ep is None:
                return
            with self.lock:
                ep.state = "running"
                self.running += 1
            route = self.cfg.routes[ep.route]
            state = "failed"
            try:
                ep.exit_code, ep.run_dir = self.run(ep, route, self.cfg)
                state = "done" if ep.run_dir else "failed"
            except Exception as exc:  # noqa: BLE001 - one run's failure never stops the receiver
                self.log(f"perfbook listen: {ep.incident}: the run failed: {str(exc)[:200]}")
            if ep.run_dir:
                self._record_alert(ep)
            with self.lock:
                ep.state = state          # said done once the alert is in the manifest
                self.running -= 1
                self._save_state()
            self.log(f"perfbook listen: {ep.incident}: {ep.state} (exit {ep.exit_code}) {ep.run_dir or ''}")

    def _record_alert(self, ep: Episode) -> None:
        """The alert that started the run, in its manifest (the run's own status file)."""
        from .report.files import replace_file
        path = Path(ep.run_dir) / "manifest.json"
        with self.manifest_lock:   # the worker and a resolved notification both write it
            self._write_alert(ep, path, replace_file)

    def _write_alert(self, ep: Episode, path: Path, replace_file: Callable) -> None:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifest["alert"] = {"alertname": ep.alertname, "group_key_sha256": hashlib.sha256(
                ep.group_key.encode()).hexdigest(), "starts_at": ep.starts_at, "resolved_at": ep.resolved_at,
                "route": ep.route, "received": datetime.fromtimestamp(ep.received, timezone.utc).isoformat()}
            replace_file(path, json.dumps(manifest, indent=2, ensure_ascii=False))
        except (OSError, ValueError) as exc:
            self.log(f"perfbook listen: {ep.incident}: could not record the alert in {path}: {exc}")

    def _record_resolved(self, ep: Episode) -> None:
        if ep.run_dir:
            self._record_alert(ep)   # else the worker records it when the run has finished
        with self.lock:
            self._save_state()

    # The episodes outlive a restart of the receiver (systemd, a deploy): Alertmanager re-sends a
    # firing group every repeat_interval, and a re-send after a restart must not start a second run.
    @property
    def state_path(self) -> Path:
        return Path(self.cfg.outputs) / ".perfbook-listen.json"

    def _load_state(self) -> dict[str, Episode]:
        try:
            rows = json.loads(self.state_path.read_text(encoding="utf-8"))
            out = {}
            for r in rows:
                r["since"] = datetime.fromisoformat(r["since"])
                if r.get("state") in ("queued", "running"):
                    r["state"] = "lost"   # the receiver stopped before this run finished
                out[r["key"]] = Episode(**r)
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self.log(f"perfbook listen: {self.state_path}: unreadable ({str(exc)[:120]}); starting without it")
            return {}

    def _save_state(self) -> None:
        """Under ``self.lock``: the newest 1,000 episodes, atomically."""
        from dataclasses import asdict

        from .report.files import replace_file
        keep = sorted(self.episodes.values(), key=lambda e: e.received)[-1000:]
        rows = [{**asdict(e), "since": e.since.isoformat()} for e in keep]
        try:
            Path(self.cfg.outputs).mkdir(parents=True, exist_ok=True)
            replace_file(self.state_path, json.dumps(rows, indent=1))
        except OSError as exc:
            self.log(f"perfbook listen: cannot save {self.state_path}: {exc}")

    def stop(self, timeout: float = 600.0) -> None:
        """No new runs; queued ones are dropped (said), running ones finish."""
        self.stopping.set()
        while True:
            try:
                ep = self.queue.get_nowait()
            except queue.Empty:
                break
            if ep is not None:
                ep.state = "dropped"
                self.log(f"perfbook listen: {ep.incident}: dropped (shutting down before it started)")
        for _ in self.workers:
            self.queue.put(None)
        for w in self.workers:
            w.join(timeout)

    def status_html(self) -> str:
        e = html.escape
        with self.lock:
            eps = sorted(self.episodes.values(), key=lambda x: x.received, reverse=True)[:50]
        rows = "".join(f"<tr><td>{e(ep.incident)}</td><td>{e(ep.state)}</td><td>{e(ep.starts_at)}</td>"
                       f"<td>{e(ep.resolved_at or '—')}</td><td>{e(ep.run_dir or '—')}</td></tr>" for ep in eps)
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
                "content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>perfbook listen</title></head><body>"
                f"<h1>perfbook listen</h1><p>{self.running} running, {self.queue.qsize()} waiting; runs under "
                f"{e(self.cfg.outputs)} (archive: {e(self.cfg.outputs)}/index.html)</p><table>"
                "<tr><th>incident</th><th>state</th><th>alert started</th><th>resolved</th><th>run folder</th></tr>"
                f"{rows or '<tr><td colspan=5>No alert yet.</td></tr>'}</table></body></html>")


_children: set[subprocess.Popen] = set()


def run_batch_process(ep: Episode, route: Route, cfg: ListenConfig) -> tuple[int, str | None]:
    """Run the batch as `perfbook batch` in a child process (its own signal handling and
    progress lines); (exit status, run folder or None)."""
    argv = [sys.executable, "-m", "perfbook.cli", "batch", "-p", route.params, "--outputs", cfg.outputs,
            "--incident", ep.incident, "--since", ep.since.isoformat(), "--until", "now"]
    if route.sections:
        argv += ["--sections", ",".join(route.sections)]
    if route.baseline:
        argv.append(f"--baseline={route.baseline}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None, text=True)
    _children.add(proc)
    try:
        out, _ = proc.communicate()
    finally:
        _children.discard(proc)
    lines = [ln for ln in out.splitlines() if ln.startswith("Report: ")]
    return proc.returncode, str(Path(lines[-1][8:]).parent) if lines else None


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver
    server_version = "perfbook-listen"

    def log_message(self, fmt: str, *args: Any) -> None:   # one line per request on stderr, no body
        sys.stderr.write(f"perfbook listen: {self.address_string()} {fmt % args}\n")

    def _answer(self, status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
        body = (text if text.endswith("\n") or ctype.startswith("text/html") else text + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, "ok")
        elif self.path in ("/", "/status"):
            self._answer(200, self.receiver.status_html(), "text/html; charset=utf-8")
        else:
            self._answer(404, "not found: POST Alertmanager's webhook to /, GET /healthz or /")

    def do_POST(self) -> None:
        if not self.receiver.authorized(self.headers.get("Authorization")):
            self._answer(401, "missing or wrong bearer token")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._answer(413 if length > MAX_BODY else 400, f"body of {length} bytes: at most {MAX_BODY}")
            return
        try:
            data = parse_payload(self.rfile.read(length))
        except BadPayload as exc:
            self._answer(400, str(exc))
            return
        status, line = self.receiver.notify(data)
        self._answer(status, line)


def serve(cfg: ListenConfig, receiver: Receiver | None = None) -> int:
    """Listen until SIGTERM or SIGINT; 0 on a clean stop."""
    receiver = receiver or Receiver(cfg)
    handler = type("Handler", (_Handler,), {"receiver": receiver})
    server = ThreadingHTTPServer(cfg.address, handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    receiver.log(f"perfbook listen: on http://{host}:{port}/ — {len(cfg.routes)} route(s), "
                 f"{cfg.max_concurrent} run(s) at once, runs under {cfg.outputs}")

    def _stop(signum: int, _frame: Any) -> None:
        receiver.log(f"perfbook listen: {signal.Signals(signum).name}: finishing the running batches")
        for p in list(_children):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)   # the batch marks itself interrupted and writes its report
        threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        receiver.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0
