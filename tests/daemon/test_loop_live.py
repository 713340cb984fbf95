"""The tuner inside a running daemon, a simulated job on the socket, and ``status --watch``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from testkit import config

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.trainer import connect
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.daemon.commands.cli import main
from gputuned.trainer_plugin.client import DaemonClient
from gputuned.tuner.decision.config import TuningConfig


class FastClock:
    """Real time, 20 times faster (a simulated minute passes in three seconds)."""

    def __init__(self, speed: float = 20.0) -> None:
        self.t0, self.speed = time.monotonic(), speed

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speed


def test_daemon_tunes_a_live_job_and_watch_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "control.sock"
    cfg = config(daemon={"interval_seconds": 0.1, "state_file": str(tmp_path / "state.json")},
                 control={"socket_path": str(sock)}, collectors={"host": {"enabled": False}})
    backend = build_sim_node("a100", 2, "imagenet-resnet50", None, FastClock(), seed=1)
    default = backend.devices[0].power_limit_mw
    daemon = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    events: list[dict] = []
    assert daemon.control is not None
    tuner = TuningComponent(daemon.store, daemon.actuator, daemon.control, [0, 1],
                            TuningConfig(interval_s=0.5, chooser="climber"),
                            on_event=events.append)
    daemon.attach(tuner)
    stop = threading.Event()
    try:
        daemon.start()
        reporter = connect(backend, str(sock), job_name="live-job", make_client=DaemonClient)
        pump = threading.Thread(target=reporter.run, args=(stop, 0.05), daemon=True)
        pump.start()
        deadline = time.monotonic() + 20
        # the tuner's event comes after the limits are set: wait for both (a loaded host widens the gap)
        while time.monotonic() < deadline and not (
                all(d.power_limit_mw < default for d in backend.devices)
                and any(e["kind"] == "action" and e["knob"] == "power_limit" for e in events)):
            time.sleep(0.05)
        assert all(d.power_limit_mw < default for d in backend.devices), [(e["kind"], e["knob"], e["value"], e.get("reason"), e.get("goodput"), e.get("eps_j")) for e in events]
        assert any(e["kind"] == "action" and e["knob"] == "power_limit" for e in events)
        assert daemon.server is not None
        for _ in range(20):  # the exporter serves the lowered limit from the next collection on
            code = main(["status", "--watch", "--watch-count", "1", "--socket", str(sock),
                         "--metrics-url", daemon.server.url])
            out = capsys.readouterr().out
            if "/ 400 W" in out:
                break
            time.sleep(0.1)
        assert code == 0
        assert "GPUs" in out and "live-job" in out
        assert "/ 400 W" in out  # a lowered limit is shown against its original
        assert "power_limit" in out  # the tuner's action counts
    finally:
        stop.set()
        daemon.stop()
        sim_nvml.attach(None)
    assert [d.power_limit_mw for d in backend.devices] == [default, default]
    assert not (tmp_path / "state.json").exists()
