"""What the daemon attaches from its config, and the root-cause hint on trainer alerts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from testkit import config

from gputuned.daemon.app.components import ProfileOnAlert, attach_configured, tuner_enabled
from gputuned.daemon.app.daemon import Daemon
from gputuned.tuner.forecast.alerts import Alert


class ScriptedControl:
    """The two ControlServer calls the hint uses, answering as a job's leader would."""

    def __init__(self, jobs: set[str]) -> None:
        self.jobs = jobs
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.profile_results: dict[str, dict[str, Any]] = {}

    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        if job not in self.jobs:
            raise LookupError(f"no leader of job {job!r} is connected")
        self.sent.append((job, payload))
        return f"d-{len(self.sent)}"


def _alert(series: str, job: str | None, since: float) -> Alert:
    labels = (("job", job), ("rank", "0")) if job else (("gpu", "0"),)
    return Alert("anomaly", series, labels, since, 0.9, "dropped 30%")


def test_trainer_alert_asks_its_job_for_one_profile_and_logs_the_summary(caplog) -> None:
    control = ScriptedControl({"bert"})
    hint = ProfileOnAlert(control, steps=20, cooldown_s=600)
    hint(_alert("gputuned_gpu_power_watts", None, 0.0))          # not a trainer series
    hint(_alert("gputuned_trainer_samples_per_second", "bert", 10.0))
    hint(_alert("gputuned_trainer_step_time_seconds", "bert", 20.0))  # within the cooldown
    hint(_alert("gputuned_trainer_samples_per_second", "gone", 30.0))  # no such job: logged, no crash
    assert control.sent == [("bert", {"profile_steps": 20})]
    hint.collect()
    assert hint.summaries == []
    control.profile_results["d-1"] = {"data_loader_share": 0.4, "comm_share": 0.1, "top_ops": [["aten::mm", 0.3]],
                                      "suggestions": ["add loader workers"]}
    with caplog.at_level("WARNING"):
        hint.collect()
    assert len(hint.summaries) == 1 and "gputuned_trainer_samples_per_second" in hint.summaries[0][0]
    assert "data loader 40%" in caplog.text and "add loader workers" in caplog.text
    hint(_alert("gputuned_trainer_samples_per_second", "bert", 700.0))  # after the cooldown
    assert len(control.sent) == 2


def test_simulated_node_runs_job_forecaster_and_tuner(tmp_path: Path) -> None:
    cfg = config(
        daemon={"interval_seconds": 0.2, "state_file": str(tmp_path / "state.json")},
        control={"socket_path": str(tmp_path / "control.sock")},
        sim={"gpus": 2, "workload": "cifar100-shufflenetv2"},
        forecast={"prophet": False},
    )
    daemon = Daemon(cfg)
    attach_configured(daemon)
    assert [c.name for c in daemon.components][-3:] == ["forecast", "sim-job", "tuner"]
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
