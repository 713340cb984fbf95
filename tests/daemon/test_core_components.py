"""What the daemon attaches from its config."""

from __future__ import annotations

import time
from pathlib import Path

from testkit import config

from gputuned.daemon.app.components import attach_configured, tuner_enabled
from gputuned.daemon.app.daemon import Daemon


def test_simulated_node_runs_job_forecaster_and_tuner(tmp_path: Path) -> None:
    cfg = config(
        daemon={"interval_seconds": 0.2, "state_file": str(tmp_path / "state.json")},
        control={"socket_path": str(tmp_path / "control.sock")},
        sim={"gpus": 2, "workload": "cifar100-shufflenetv2"},
        forecast={"prophet": False},
    )
    daemon = Daemon(cfg)
    attach_configured(daemon)
    assert [c.name for c in daemon.components][-4:] == ["forecast", "rootcause", "sim-job", "tuner"]
    assert tuner_enabled(daemon)
    daemon.start()
    try:
        deadline = time.monotonic() + 20
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = {n for n, _, _ in daemon.store.latest()}
            if {"gputuned_trainer_samples_per_second", "gputuned_anomaly_score", "gputuned_tuner_paused"} <= names:
                break
            time.sleep(0.2)
        assert "gputuned_trainer_samples_per_second" in names  # the job reported over the socket
        assert "gputuned_anomaly_score" in names
        assert any(n.startswith("gputuned_tuner_") for n in names)
    finally:
        daemon.stop()


def test_tuner_is_off_by_default_without_simulated_gpus(tmp_path: Path) -> None:
    cfg = config(gpu={"backend": "nvml"}, daemon={"state_file": str(tmp_path / "s.json")},
                 control={"socket_path": str(tmp_path / "c.sock")}, forecast={"prophet": False})
    daemon = Daemon(cfg, serve=False)
    attach_configured(daemon)
    assert not tuner_enabled(daemon)
    assert "tuner" not in [c.name for c in daemon.components]
