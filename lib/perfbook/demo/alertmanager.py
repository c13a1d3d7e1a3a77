"""A private Prometheus Alertmanager on 127.0.0.1 (Debian: ``prometheus-alertmanager``) that
sends every alert to one webhook — ``perfbook listen`` in its tests — after a short
``group_wait``, so an alert firing on the demo stack reaches perfbook in seconds."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from perfbook.demo import processes
from perfbook.demo.processes import LOOPBACK, ProcInfo
from perfbook.demo.prometheus import find_binary

HINT = "Alertmanager not found (Debian: apt-get install prometheus-alertmanager; or set PERFBOOK_ALERTMANAGER)"


def find_alertmanager() -> Path:
    try:
        return find_binary("prometheus-alertmanager", HINT, env="PERFBOOK_ALERTMANAGER")
    except FileNotFoundError:
        return find_binary("alertmanager", HINT, env="PERFBOOK_ALERTMANAGER")


class AlertmanagerServer:
    """``webhook_url`` receives every alert; ``token_env``-free: the token, when given, is
    written to a file beside the config (``credentials_file``), never on a command line."""

    name = "alertmanager"

    def __init__(self, state_dir: Path | str, webhook_url: str, *, port: int | None = None,
                 token: str | None = None, group_wait: str = "1s", group_interval: str = "5s",
                 repeat_interval: str = "1h"):
        self.state_dir = Path(state_dir).resolve()
        self.port = port or processes.free_port()
        self.webhook_url = webhook_url
        self.token = token
        self.timing = {"group_wait": group_wait, "group_interval": group_interval, "repeat_interval": repeat_interval}
        self.config_path = self.state_dir / "alertmanager.yml"
        self.log_path = self.state_dir / "logs" / "alertmanager.log"
        self.proc: ProcInfo | None = None
        self._popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def config(self) -> dict:
        hook: dict = {"url": self.webhook_url, "send_resolved": True, "max_alerts": 0}
        if self.token:
            token_file = self.state_dir / "alertmanager.token"
            token_file.write_text(self.token, encoding="utf-8")
            token_file.chmod(0o600)
            hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
        return {"route": {"receiver": "perfbook", "group_by": ["alertname"], **self.timing},
                "receivers": [{"name": "perfbook", "webhook_configs": [hook]}]}

    def start(self, timeout: float = 30.0) -> float:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        data = self.state_dir / "alertmanager-data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [str(find_alertmanager()), f"--config.file={self.config_path}", f"--storage.path={data}",
                f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=warn"]
        self._popen, self.proc = processes.spawn(self.name, argv, self.log_path, cwd=self.state_dir)
        try:
            return processes.wait_for(lambda: processes.http_ok(f"{self.url}/-/ready"), timeout,
                                      f"alertmanager on port {self.port}", alive=lambda: self._popen.poll() is None)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{processes.tail(self.log_path)}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            processes.stop(self.proc, timeout=timeout, popen=self._popen)
        self.proc = None
        self._popen = None

    def __enter__(self) -> AlertmanagerServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
