"""A private time-series database scraping the demo instances, with its own config and
data folder under ``state_dir``: :class:`PrometheusServer` (the installed binary, Debian
package ``prometheus``) here, :class:`~perfbook.demo.victoriametrics.VictoriaMetricsServer`
(Debian package ``victoria-metrics``) beside it. Both read the same Prometheus-format
scrape config and share the start, readiness and stop code of :class:`ScrapingServer`."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from perfbook.demo import processes
from perfbook.demo.processes import LOOPBACK, ProcInfo

INSTALL_HINT = "Prometheus not found. On Debian/Ubuntu: apt-get install prometheus"
JOB = "demo-api"


def find_binary(name: str = "prometheus", hint: str | None = None, env: str | None = None) -> Path:
    """``$PERFBOOK_<NAME>`` (``env`` overrides the variable's name), PATH, /usr/bin,
    /usr/local/bin. FileNotFoundError with ``hint`` (what to install) when none is there."""
    override = os.environ.get(env or f"PERFBOOK_{name.upper().replace('-', '_')}")
    if override:
        return Path(override)
    for cand in (shutil.which(name), f"/usr/bin/{name}", f"/usr/local/bin/{name}"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    raise FileNotFoundError(hint or (INSTALL_HINT if name == "prometheus" else
                                     f"{name} not found (Debian: apt-get install prometheus)"))


def find_promtool() -> Path:
    """The ``promtool`` binary (checks rule files, runs rule unit tests)."""
    return find_binary("promtool")


class ScrapingServer:
    """A server on 127.0.0.1:``port`` scraping ``targets`` (host:port strings) as job
    ``job`` every ``scrape_interval``, from a Prometheus-format scrape config written to
    ``state_dir``. Subclasses give :attr:`name`, :meth:`argv` and :attr:`ready_path`."""

    name = "tsdb"
    ready_path = "/-/ready"

    def __init__(self, state_dir: Path | str, port: int | None = None, targets: list[str] | None = None,
                 scrape_interval: str = "1s", job: str = JOB,
                 target_labels: dict[str, dict[str, str]] | None = None):
        self.state_dir = Path(state_dir).resolve()
        self.port = port or processes.free_port()
        self.targets = list(targets or [])
        self.scrape_interval = scrape_interval
        self.job = job
        self.target_labels = target_labels or {}
        self.config_path = self.state_dir / f"{self.name}.yml"
        self.data_dir = self.state_dir / f"{self.name}-data"
        self.log_path = self.state_dir / "logs" / f"{self.name}.log"
        self.proc: ProcInfo | None = None
        self._popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def scrape_configs(self) -> list[dict]:
        static = [{"targets": [t], "labels": {"instance": t, **self.target_labels.get(t, {})}}
                  for t in self.targets]
        return [{"job_name": self.job, "metrics_path": "/metrics", "static_configs": static}]

    def config(self) -> dict:
        return {"global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval},
                "scrape_configs": self.scrape_configs()}

    def write_config(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        return self.config_path

    def argv(self) -> list[str]:
        raise NotImplementedError

    def spawn(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._popen, self.proc = processes.spawn(self.name, self.argv(), self.log_path, cwd=self.state_dir)

    def wait_ready(self, timeout: float = 30.0) -> float:
        try:
            return processes.wait_for(lambda: processes.http_ok(f"{self.url}{self.ready_path}"), timeout,
                                      f"{self.name} on port {self.port}",
                                      alive=lambda: self._popen is None or self._popen.poll() is None)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{processes.tail(self.log_path)}") from exc

    def start(self, timeout: float = 30.0) -> float:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            processes.stop(self.proc, timeout=timeout, popen=self._popen)
        self.proc = None
        self._popen = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PrometheusServer(ScrapingServer):
    """``prometheus`` scraping the targets; also evaluates ``rule_files`` every
    ``evaluation_interval`` (the demo's alert rules)."""

    name = "prometheus"

    def __init__(self, state_dir: Path | str, port: int | None = None, targets: list[str] | None = None,
                 scrape_interval: str = "1s", rule_files: list[Path | str] | None = None,
                 evaluation_interval: str = "1s", job: str = JOB,
                 target_labels: dict[str, dict[str, str]] | None = None, remote_write: list[str] | None = None,
                 alertmanagers: list[str] | None = None):
        super().__init__(state_dir, port, targets, scrape_interval, job, target_labels)
        self.evaluation_interval = evaluation_interval
        #: host:port of Alertmanagers the firing alerts are sent to (perfbook listen's tests)
        self.alertmanagers = list(alertmanagers or [])
        self.rule_files = [str(Path(p).resolve()) for p in (rule_files or [])]
        #: URLs every scraped sample is also sent to (e.g. VictoriaMetrics' /api/v1/write)
        self.remote_write = list(remote_write or [])

    def config(self) -> dict:
        out = super().config()
        out["global"]["evaluation_interval"] = self.evaluation_interval
        config = {"global": out["global"], "rule_files": self.rule_files, "scrape_configs": out["scrape_configs"]}
        if self.alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]}
        if self.remote_write:
            config["remote_write"] = [{"url": u, "queue_config": {"batch_send_deadline": "1s"}}
                                      for u in self.remote_write]
        return config

    def argv(self) -> list[str]:
        return [str(find_binary()), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}", "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={LOOPBACK}:{self.port}", "--web.enable-lifecycle",
                "--log.level=warn"]

    def reload(self) -> None:
        """Re-read the config (``POST /-/reload``), e.g. after adding rule files."""
        import requests
        self.write_config()
        requests.post(f"{self.url}/-/reload", timeout=5).raise_for_status()
