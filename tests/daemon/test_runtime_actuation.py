"""The actuator on a scripted simulated node: bounds, refusals with reasons, dry-run, the state file
written before a change, verification, restore, and restore after a previous run died."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.device import GPUDevice
from gputuned.collectors.nvml import NvmlGPU, open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend
from gputuned.daemon.actuation import knobs as registry
from gputuned.daemon.actuation.actuator import Actuator, restore_from_state
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.knobs.clock_range import ClockKnob
from gputuned.daemon.actuation.statefile import State, StateFile, parse_state
from gputuned.daemon.core.store import Store

SimNode = Callable[..., ScriptedBackend]


def _gpus(sim_node: SimNode, n: int = 2, privileged: bool = True) -> tuple[ScriptedBackend, list[NvmlGPU]]:
    backend = sim_node({"profile": "h100", "gpus": n}, privileged=privileged)
    nvml, _ = open_nvml("sim", sim_nvml)
    return backend, open_gpus(nvml)


def _settings(backend: ScriptedBackend) -> list[tuple[Any, ...]]:
    return [(d.power_limit_mw, d.locked_sm_clocks_mhz, d.locked_memory_clocks_mhz, d.applications_clocks_mhz)
            for d in backend.devices]


def test_changes_are_recorded_first_verified_and_restored(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node)
    original = _settings(backend)
    sf = StateFile(tmp_path / "state.json")
    act = Actuator(gpus, ActuationConfig(), sf, Store(10))
    act.start()
    r = act.set_power_limit(0, 350)
    assert r.ok and r.code == "ok" and backend.devices[0].power_limit_mw == 350_000
    assert act.set_locked_sm_clocks(1, 1000, 1400).ok
    assert act.set_applications_clocks(1, 2619, 1200).ok
    state = parse_state(sf.path.read_text())
    rec0 = state.gpus[gpus[0].identity.uuid]
    assert rec0.originals["power_limit"] == 700_000 and rec0.changed == ["power_limit"]
    assert state.gpus[gpus[1].identity.uuid].changed == ["locked_sm_clocks", "applications_clocks"]
    assert act.set_power_limit(0, 300).ok  # a second change keeps the first originals
    assert parse_state(sf.path.read_text()).gpus[gpus[0].identity.uuid].originals["power_limit"] == 700_000
    act.tick(1.0)
    assert act.store is not None
    assert act.store.value("gputuned_actuation_changes_total", (("knob", "power_limit"),)) == 2.0
    act.stop()
    assert _settings(backend)[0] == original[0]
    assert backend.devices[1].locked_sm_clocks_mhz is None
    assert backend.devices[1].applications_clocks_mhz is None  # the original was the driver's default: reset to it
    assert not sf.path.exists()


def test_bounds_are_nvml_constraints_intersected_with_config(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node)
    cfg = ActuationConfig(power_limit_min_w=300, power_limit_max_w=650, sm_clock_min_mhz=800, sm_clock_max_mhz=1800)
    act = Actuator(gpus, cfg, StateFile(tmp_path / "s.json"))
    assert act.bounds(0)["power_limit"] == (300_000, 650_000)
    assert act.bounds(0)["locked_sm_clocks"] == (800, 1800)
    for res, words in (
        (act.set_power_limit(0, 250), "outside 300-650 W"),
        (act.set_power_limit(0, 690), "outside 300-650 W"),
        (act.set_locked_sm_clocks(0, 700, 1000), "outside 800-1800 MHz"),
        (act.set_locked_sm_clocks(0, 1500, 1000), "min 1500 MHz above max 1000 MHz"),
        (act.set_applications_clocks(0, 1234, 1200), "not a supported clock"),
        (act.set_power_limit(7, 300), "no gpu 7"),
        (act.change(0, "power_limit", [300000, 1]), "expected an integer in mW"),
        (act.change(0, "locked_sm_clocks", 900), "expected a pair of integers"),
        (act.change(0, "fan_speed", 50), "unknown knob"),
    ):
        assert not res.ok and words in res.reason, res
    assert act.set_power_limit(0, 650).ok
    wide = Actuator(gpus, ActuationConfig(power_limit_max_w=5000), StateFile(tmp_path / "w.json"))
    assert wide.bounds(0)["power_limit"] == (200_000, 700_000)  # NVML's range still applies
    assert backend.devices[1].power_limit_mw == 700_000


def test_dry_run_and_disabled_knobs_change_nothing(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node)
    before = _settings(backend)
    sf = StateFile(tmp_path / "s.json")
    dry = Actuator(gpus, ActuationConfig(dry_run=True), sf)
    r = dry.set_power_limit(0, 300)
    assert r.ok and r.code == "dry_run"
    assert not dry.set_power_limit(0, 50).ok  # bounds still checked in dry-run
    only_power = Actuator(gpus, ActuationConfig(knobs=["power_limit"]), sf)
    r = only_power.set_locked_sm_clocks(0, 900, 1000)
    assert not r.ok and r.code == "disabled" and "not enabled" in r.reason
    off = Actuator(gpus, ActuationConfig(enabled=False), sf)
    assert off.set_power_limit(0, 300).code == "disabled"
    assert _settings(backend) == before and not sf.path.exists()


def test_unprivileged_set_fails_with_reason_and_restore_is_harmless(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node, privileged=False)
    act = Actuator(gpus, ActuationConfig(), StateFile(tmp_path / "s.json"))
    r = act.set_power_limit(0, 300)
    assert not r.ok and r.code == "nvml"
    assert backend.devices[0].power_limit_mw == 700_000
    report = act.restore_all()  # nothing changed, but the failed restore is reported, and kept for retry
    assert not report.ok and "gpu 0 power_limit" in report.failures[0]
    assert (tmp_path / "s.json").exists()


class StuckPowerGPU(NvmlGPU):
    """A GPU whose power-limit writes are accepted but do not take (a driver that ignores them)."""

    def set_power_limit_mw(self, limit_mw: int) -> None:
        return None


def test_a_change_that_does_not_read_back_is_reported(sim_node: SimNode, tmp_path: Path) -> None:
    _gpus(sim_node)
    nvml, _ = open_nvml("sim", sim_nvml)
    stuck: list[GPUDevice] = [StuckPowerGPU(nvml, 0)]
    act = Actuator(stuck, ActuationConfig(), StateFile(tmp_path / "s.json"))
    r = act.set_power_limit(0, 300)
    assert not r.ok and r.code == "verify" and "read back 700000" in r.reason


def test_next_start_restores_what_a_dead_run_left(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node)
    original = _settings(backend)
    sf = StateFile(tmp_path / "s.json")
    first = Actuator(gpus, ActuationConfig(), sf)
    first.start()
    assert first.set_power_limit(0, 300).ok and first.set_locked_memory_clocks(1, 2619, 2619).ok
    # the first run dies here: no stop(); the GPUs keep their settings
    (tmp_path / ".s.json.999.tmp").write_text('{"trunc')  # a write a crash interrupted
    second = Actuator(gpus, ActuationConfig(), sf)
    second.start()
    assert _settings(backend) == original
    assert not sf.path.exists() and not (tmp_path / ".s.json.999.tmp").exists()


def test_unreadable_state_file_falls_back_to_its_copy(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus = _gpus(sim_node)
    act = Actuator(gpus, ActuationConfig(), StateFile(tmp_path / "s.json"))
    assert act.set_power_limit(0, 300).ok and act.set_locked_sm_clocks(0, 900, 900).ok
    (tmp_path / "s.json").write_text("{ edited by hand")
    report = restore_from_state(gpus, StateFile(tmp_path / "s.json"))
    assert report.ok
    assert backend.devices[0].power_limit_mw == 700_000 and backend.devices[0].locked_sm_clocks_mhz is None


def test_state_file_write_is_atomic_and_complete(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "sub" / "state.json")
    sf.save(State())
    text = sf.path.read_text()
    assert json.loads(text)["version"] == 1 and text.endswith("\n")
    assert sorted(p.name for p in sf.path.parent.iterdir()) == ["state.json", "state.json.1"]
    assert oct(sf.path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="version"):
        parse_state('{"version": 7}')


def test_clock_knobs_name_device_methods_and_reset_an_unknown_original(sim_node: SimNode) -> None:
    backend, gpus = _gpus(sim_node, n=1)
    clock_knobs = [k for k in registry.knobs("gpu") if isinstance(k, ClockKnob)]
    assert {k.name for k in clock_knobs} == {"locked_sm_clocks", "locked_memory_clocks", "applications_clocks"}
    for knob in clock_knobs:
        assert all(callable(getattr(GPUDevice, name, None)) for name in vars(knob.calls).values()), knob.name
    sm = registry.get("locked_sm_clocks")
    assert sm is not None
    sm.restore(gpus[0], [900, 1000])  # a recorded original is applied ...
    assert backend.devices[0].locked_sm_clocks_mhz == (900, 1000)
    sm.restore(gpus[0], None)  # ... an unknown one resets the driver's default
    assert backend.devices[0].locked_sm_clocks_mhz is None
