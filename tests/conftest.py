"""Shared fixtures: a scripted or still simulated node, a control server, a real Prometheus server, promtool."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Prometheus, StillNode, config

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend, VirtualClock, scripted_from_spec
from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.store import Store


@pytest.fixture
def sim_node() -> Iterator[Callable[..., ScriptedBackend]]:
    """Factory attaching a scripted simulated node to the simulated NVML module."""

    def make(spec: dict[str, Any] | None = None, *, clock: Any = None, privileged: bool = True) -> ScriptedBackend:
        backend = scripted_from_spec(spec or {"profile": "h100", "gpus": 8}, clock=clock or VirtualClock(), privileged=privileged)
        sim_nvml.attach(backend)
        return backend

    yield make
    sim_nvml.attach(None)


@pytest.fixture
def still_node() -> Iterator[StillNode]:
    """Four still simulated H100s attached to the simulated NVML module, initialised."""
    be = StillNode()
    sim_nvml.attach(be)
    sim_nvml.nvmlInit()
    yield be
    sim_nvml.attach(None)


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[ControlServer]:
    """A started control server on tmp_path/control.sock with its own store."""
    server = ControlServer(ControlConfig(socket_path=tmp_path / "control.sock"), Store(60))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def small_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A started daemon in this process: 2 scripted H100s, its control socket and state file in tmp_path."""
    script = tmp_path / "node.toml"
    script.write_text('profile = "h100"\ngpus = 2\n')
    cfg = config(
        daemon={"state_file": str(tmp_path / "state.json"), "interval_seconds": 0.2},
        control={"socket_path": str(tmp_path / "control.sock")},
        sim={"gpus": 2, "script": str(script)},
        collectors={"infiniband": {"enabled": False}},
    )
    d = Daemon(cfg, serve=False)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder another uid may enter (0755; pytest's own tmp_path is not), removed after."""
    d = Path(tempfile.mkdtemp(prefix="gputuned-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """Factory starting real Prometheus servers; skipped where Debian's package is missing."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (make test installs Debian's package as root)")
    started: list[Prometheus] = []

    def start(targets: list[str], **kwargs: Any) -> Prometheus:
        p = Prometheus(tmp_path / f"prom{len(started)}", targets, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (make test installs Debian's package as root)")
    return path
