"""Helpers shared by the tests: config for a test daemon, bad input files, HTTP, a still simulated node,
a real Prometheus server."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.sim.state import load_profile, make_devices
from gputuned.daemon.app.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return bytes(r.read())


def config(**sections: dict[str, Any]) -> Config:
    """A Config for tests: loopback, any free port, simulated GPUs, plus overrides."""
    data: dict[str, Any] = {
        "exporter": {"listen_address": "127.0.0.1", "listen_port": 0},
        "gpu": {"backend": "sim"},
        "collectors": {"peers": {"enabled": False}},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, "test config")


def load_error(load: Callable[[Path], object], path: Path, text: str, error: type[Exception] = ValueError) -> str:
    """Write ``text`` to ``path`` and load it: the message of the ``error`` that loading must raise."""
    path.write_text(text)
    with pytest.raises(error) as info:
        load(path)
    return str(info.value)


class StillNode:
    """The simulated NVML's backend: four H100s that nothing moves; tests script their fields."""

    def __init__(self) -> None:
        self.devices = make_devices(load_profile("h100-sxm5-80gb"), 4)
        self.driver_version = "550.54.15"

    def sync(self) -> None:
        """Scripted: nothing moves."""

    def is_privileged(self) -> bool:
        return True


class Prometheus:
    """A real Prometheus server (Debian's package) on loopback, scraping given targets."""

    def __init__(self, workdir: Path, targets: list[str], *, scrape_interval: str = "1s", rule_files: list[Path] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(p) for p in (rule_files or [])],
            "scrape_configs": [{"job_name": "gputuned", "static_configs": [{"targets": targets}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(cfg))  # JSON is valid YAML
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if http_get(f"{self.url}/-/ready", 1.0):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector."""
        q = urllib.parse.urlencode({"query": expr})
        body = json.loads(http_get(f"{self.url}/api/v1/query?{q}"))
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns data."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def targets_up(self) -> list[dict[str, Any]]:
        body = json.loads(http_get(f"{self.url}/api/v1/targets"))
        return list(body["data"]["activeTargets"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
