"""Knobs as plugins: a knob module registers itself and appears everywhere with no other edit;
batch size is a knob of the job, recorded first and restored on stop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from plugins import installed
from runtime_kit import wait_for
from testkit import REPO, config

from gputuned.collectors.nvml import NvmlGPU
from gputuned.collectors.sim.state import SimDevice
from gputuned.daemon.actuation import knobs as registry
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.statefile import StateFile, parse_state
from gputuned.daemon.app.daemon import Daemon, GPUSetup, setup_gpus
from gputuned.daemon.commands.cli import main


class FanGPU(NvmlGPU):
    """A simulated GPU whose fan can be set (NVML's device layer has no fan control)."""

    def __init__(self, nvml: ModuleType, index: int, sim: SimDevice) -> None:
        super().__init__(nvml, index)
        self.sim = sim

    def fan_percent(self) -> int:
        return int(self.sim.fan_pct)

    def set_fan_percent(self, percent: int) -> None:
        self.sim.fan_pct = int(percent)

    def reset_fan(self) -> None:
        self.sim.fan_pct = 30


@pytest.fixture
def fan_plugin() -> Iterator[ModuleType]:
    """The test plugin, imported (so registered) for one test, then taken out of the registry."""
    with installed("fan_speed_knob", lambda: registry.unregister("fan_speed")) as module:
        yield module


def _daemon(tmp_path: Path, gpus: int = 2, fans: bool = False, **actuation: Any) -> Daemon:
    script = tmp_path / "node.toml"
    script.write_text(f'profile = "h100"\ngpus = {gpus}\n')
    cfg = config(
        daemon={"state_file": str(tmp_path / "state.json"), "interval_seconds": 0.1},
        control={"socket_path": str(tmp_path / "control.sock")},
        sim={"gpus": gpus, "script": str(script)},
        collectors={"infiniband": {"enabled": False}},
        actuation=actuation,
    )
    setup = setup_gpus(cfg)
    if fans:
        assert setup.nvml is not None and setup.sim_backend is not None
        devices = [FanGPU(setup.nvml, d.identity.index, setup.sim_backend.devices[i]) for i, d in enumerate(setup.devices)]
        setup = GPUSetup(setup.nvml, setup.kind, list(devices), setup.sim_backend, setup.driver_version)
    return Daemon(cfg, gpus=setup, serve=False)


def test_a_knob_plugin_file_appears_in_metrics_state_file_and_status(
    fan_plugin: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = _daemon(tmp_path, fans=True, knobs=[*registry.default_enabled(), "fan_speed"], fan_speed_min_percent=40)
    backend = daemon.gpus.sim_backend
    assert backend is not None
    daemon.start()
    try:
        sock = str(daemon.cfg.control.socket_path)
        assert main(["set", "--socket", sock, "--gpu", "1", "--fan-percent", "20"]) == 1  # its own config key bounds it
        assert "fan_speed 20 % outside 40-100 %" in capsys.readouterr().err
        assert main(["set", "--socket", sock, "--gpu", "1", "--fan-percent", "75"]) == 0
        assert "gpu 1: fan = 75 % (ok, pinned" in capsys.readouterr().out
        assert backend.devices[1].fan_pct == 75
        rec = parse_state(daemon.cfg.daemon.state_file.read_text()).gpus[daemon.gpus.devices[1].identity.uuid]
        assert rec.originals["fan_speed"] == 30 and rec.changed == ["fan_speed"] and rec.targets["fan_speed"] == 75

        assert wait_for(lambda: b"gputuned_actuation_fan_speed_ratio" in daemon.renderer.render(), timeout=5)
        text = daemon.renderer.render().decode()
        assert "# TYPE gputuned_actuation_fan_speed_ratio gauge" in text  # its family is in the catalog
        lines = [ln for ln in text.splitlines() if ln.startswith("gputuned_actuation_fan_speed_ratio{")]
        assert any('setting="target"' in ln and ln.endswith(" 0.75") for ln in lines), lines
        assert any('setting="original"' in ln and ln.endswith(" 0.3") for ln in lines), lines

        assert main(["status", "--socket", sock, "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["gpus"][1]["current"]["fan_speed"] == 75 and st["gpus"][1]["changed"] == ["fan_speed"]
        assert main(["status", "--socket", sock]) == 0
        table = capsys.readouterr().out
        assert "fan" in table and "75 % / 30 %" in table
    finally:
        daemon.stop()
    assert backend.devices[1].fan_pct == 30  # restored on stop
    assert not daemon.cfg.daemon.state_file.exists()


def test_a_plugin_adds_its_keys_to_actuation_and_unknown_keys_stay_errors(fan_plugin: ModuleType) -> None:
    cfg = ActuationConfig.model_validate({"knobs": ["fan_speed"], "fan_speed_max_percent": 90})
    assert cfg.fan_speed_max_percent == 90 and cfg.fan_speed_min_percent == 30
    assert ActuationConfig().power_limit_max_w == 0.0
    with pytest.raises(ValueError, match="fan_speed_max_percent"):
        ActuationConfig.model_validate({"fan_speed_max_percent": 101})
    with pytest.raises(ValueError, match="fan_speed_maximum"):
        ActuationConfig.model_validate({"fan_speed_maximum": 90})


def test_every_knob_key_is_listed_in_the_shipped_example() -> None:
    text = (REPO / "systemd" / "gputuned.toml").read_text()
    section = text.split("[actuation]", 1)[1].split("\n[", 1)[0]
    keys = [*ActuationConfig.model_fields, *ActuationConfig().knob_keys()]
    assert {"batch_size_max", "power_limit_min_w", "job_ack_timeout_s"} <= set(keys)
    for key in keys:
        assert f"\n{key} =" in section, key


def test_a_version_1_state_file_of_gpus_alone_still_loads_and_writes_alike(tmp_path: Path) -> None:
    old = {"version": 1, "pid": 7, "updated": 1.0, "gpus": {"GPU-a": {
        "index": 0, "uuid": "GPU-a", "originals": {"power_limit": 700000, "locked_sm_clocks": None},
        "changed": ["power_limit"], "targets": {"power_limit": 300000}}}}
    state = parse_state(json.dumps(old))
    assert state.gpus["GPU-a"].originals["power_limit"] == 700000 and state.jobs == {}
    sf = StateFile(tmp_path / "s.json")
    sf.save(state)
    again = json.loads(sf.path.read_text())
    assert again["version"] == 1 and "jobs" not in again and again["gpus"] == old["gpus"]


class FakeJob:
    """A training job's leader on the real plugin client: reports its batch size, obeys decisions."""

    def __init__(self, socket_path: str, name: str, batch: int) -> None:
        from gputuned.trainer_plugin.client import DaemonClient

        self.batch = batch
        self.applied: list[int] = []
        self.client = DaemonClient(socket_path, job=name, rank=0, world_size=1, batch_size=batch, backoff_s=(0.02, 0.1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        step = 0
        while not self._stop.is_set():
            step += 1
            self.client.report(step, 1, {"batch_size": self.batch, "samples_per_s": 100.0})
            while (d := self.client.poll_decision()) is not None:
                if "batch_size" in d:
                    self.batch = int(d["batch_size"])
                    self.applied.append(self.batch)
                    self.client.ack(d["id"], True, applied_step=step)
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def test_batch_size_is_a_job_knob_recorded_first_and_restored_by_restore_and_on_daemon_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = _daemon(tmp_path)
    daemon.start()
    job = FakeJob(str(daemon.cfg.control.socket_path), "job-a", 64)
    act = daemon.actuator
    try:
        assert job.client.wait_connected(10)
        assert wait_for(lambda: act.job_target("job-a") is not None and act.job_target("job-a").report("batch_size") == 64,
                        timeout=10)
        assert not act.set_batch_size("job-a", 0).ok  # shape and bounds hold for the job's knob too
        assert act.set_batch_size("nobody", 128).code == "no_job"
        r = act.set_batch_size("job-a", 128, wait_s=10)
        assert r.ok and r.code == "ok", r
        assert job.batch == 128
        rec = parse_state(daemon.cfg.daemon.state_file.read_text()).jobs["job-a"]
        assert rec.originals == {"batch_size": 64} and rec.changed == ["batch_size"] and rec.targets == {"batch_size": 128}
        assert main(["restore", "--socket", str(daemon.cfg.control.socket_path)]) == 0  # through the daemon
        assert "restored batch_size on job job-a" in capsys.readouterr().out
        assert wait_for(lambda: job.batch == 64, timeout=10) and not daemon.cfg.daemon.state_file.exists()
        pending = act.set_batch_size("job-a", 256)  # the tuner's way: no wait, then poll the ack
        assert pending.ok and pending.code == "pending" and pending.ident
        assert wait_for(lambda: (res := act.acknowledged(pending.ident)) is not None and res.ok, timeout=10)
        st = act.status()
        assert st["jobs"][0]["job"] == "job-a" and st["jobs"][0]["originals"] == {"batch_size": 64}
        assert rec.originals == {"batch_size": 64}  # the original survives a restore and a new change
        daemon.stop()  # the actuator restores before the control socket closes
        assert job.batch == 64 and job.applied[-1] == 64
        assert not daemon.cfg.daemon.state_file.exists()
    finally:
        job.close()
        if daemon.started_at and daemon.control is not None and daemon.control._listener is not None:  # noqa: SLF001
            daemon.stop()
