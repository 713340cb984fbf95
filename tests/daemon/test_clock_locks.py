"""Clock knobs as the hardware behaves: a lock at one clock is [f, f]; a lock is verified from the clock
and its clock-event reasons (held; masked by the power limit, reported so; idle, unconfirmed); a GPU
whose NVML refuses a lock (NOT_SUPPORTED) gets the refusal and nothing to restore; application clocks
are checked as (memory, graphics) pairs; a daemon killed after changing every clock knob has them all
restored at its next start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from gputuned.collectors.device import ClockEventReason as R
from gputuned.collectors.nvml import NvmlGPU, open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend, step_series
from gputuned.daemon.actuation.actuator import Actuator
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.knobs.lock_check import LockState, judge
from gputuned.daemon.actuation.knobs.locked_sm_clocks import lock_at
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.record.child import DaemonProcess

SimNode = Callable[..., ScriptedBackend]


def _actuator(sim_node: SimNode, tmp_path: Path, profile: str, **script: float) -> tuple[ScriptedBackend, list[NvmlGPU], Actuator]:
    """One GPU of ``profile`` whose readings hold the scripted values (sm_clock_mhz, util_gpu_pct ...)."""
    backend = sim_node({"profile": profile, "gpus": 1})
    backend._script = {0: {k: step_series([(0.0, v)]) for k, v in script.items()}}
    backend.sync()
    gpus = open_gpus(open_nvml("sim", sim_nvml)[0])
    act = Actuator(gpus, ActuationConfig(), StateFile(tmp_path / "state.json"))
    act.start()
    return backend, gpus, act


@pytest.mark.parametrize(("clock", "reasons", "busy", "state"), [
    (1200, 0, True, LockState.HELD),
    (1210, R.SW_POWER_CAP, True, LockState.HELD),  # within one clock step: the cap does not bind below the lock
    (1005, R.SW_POWER_CAP, True, LockState.MASKED_BY_POWER_LIMIT),
    (1005, R.HW_POWER_BRAKE_SLOWDOWN | R.HW_SLOWDOWN, True, LockState.MASKED_BY_POWER_LIMIT),
    (1005, R.SW_THERMAL_SLOWDOWN, True, LockState.MASKED_BY_SLOWDOWN),
    (1005, 0, True, LockState.BELOW),
    (1410, 0, True, LockState.ABOVE),
    (210, R.GPU_IDLE, True, LockState.IDLE),
    (1410, 0, False, LockState.IDLE),
])
def test_a_lock_is_judged_from_the_clock_and_its_reasons(clock: int, reasons: int, busy: bool, state: LockState) -> None:
    assert judge(clock, R(reasons), busy, 1200, 1200) is state


def test_a_clock_the_tuner_asks_for_is_locked_f_f() -> None:
    assert lock_at(1080) == [1080, 1080]


def test_measure_fixed_locks_f_f(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputuned.collectors.sim import node

    built: list[ScriptedBackend] = []
    real = node.build_sim_node
    monkeypatch.setattr(node, "build_sim_node", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert node.measure_fixed("a100", 1, "imagenet-resnet50", 0, sm_clock_mhz=1080, warmup_s=1.0, window_s=1.0)
    assert [d.locked_sm_clocks_mhz for d in built[0].devices] == [(1080, 1080)]


def test_a_held_lock_is_verified(sim_node: SimNode, tmp_path: Path) -> None:
    backend, _, act = _actuator(sim_node, tmp_path, "h100", util_gpu_pct=100, sm_clock_mhz=1200)
    r = act.set_locked_sm_clocks(0, *lock_at(1200))
    assert r.ok and r.code == "ok" and r.reason == ""
    assert backend.devices[0].locked_sm_clocks_mhz == (1200, 1200)


def test_a_lock_the_power_limit_masks_is_reported_so(sim_node: SimNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend, gpus, act = _actuator(sim_node, tmp_path, "h100", util_gpu_pct=100, sm_clock_mhz=1500,
                                   clock_event_reasons=int(R.SW_POWER_CAP))
    with caplog.at_level(logging.WARNING):
        r = act.set_locked_sm_clocks(0, *lock_at(1800))
    assert r.ok and "masked by the power limit" in r.reason and "clock reads 1500 MHz" in r.reason
    assert "sw_power_cap" in r.reason and "masked by the power limit" in caplog.text
    assert backend.devices[0].locked_sm_clocks_mhz == (1800, 1800)  # set, and restored like any change
    act.stop()
    assert backend.devices[0].locked_sm_clocks_mhz is None


def test_an_idle_gpu_leaves_a_lock_unconfirmed(sim_node: SimNode, tmp_path: Path) -> None:
    _, _, act = _actuator(sim_node, tmp_path, "h100", util_gpu_pct=0, sm_clock_mhz=345,
                          clock_event_reasons=int(R.GPU_IDLE))
    r = act.set_locked_sm_clocks(0, *lock_at(1200))
    assert r.ok and "not confirmed" in r.reason and "idle" in r.reason


@pytest.mark.parametrize(("profile", "knob", "value"), [
    ("p100", "locked_sm_clocks", [1189, 1189]),
    ("p100", "locked_memory_clocks", [715, 715]),
    ("v100", "locked_memory_clocks", [877, 877]),
])
def test_a_lock_nvml_does_not_support_is_refused_and_leaves_nothing_to_restore(
        sim_node: SimNode, tmp_path: Path, profile: str, knob: str, value: list[int]) -> None:
    backend, _, act = _actuator(sim_node, tmp_path, profile)
    r = act.change(0, knob, value)
    assert not r.ok and r.code == "nvml" and "Not Supported" in r.reason
    report = act.restore_all()
    assert report.ok and not report.failures
    assert not (tmp_path / "state.json").exists()
    assert backend.devices[0].locked_sm_clocks_mhz is None and backend.devices[0].locked_memory_clocks_mhz is None


def test_application_clocks_are_checked_as_pairs(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus, act = _actuator(sim_node, tmp_path, "a40")
    low_mem = min(gpus[0].supported_memory_clocks_mhz())
    low_top = max(gpus[0].supported_graphics_clocks_mhz(low_mem))
    r = act.set_applications_clocks(0, low_mem, 1740)  # a supported graphics clock, but not with this memory clock
    assert not r.ok and r.code == "out_of_bounds" and f"with memory {low_mem} MHz" in r.reason
    assert backend.devices[0].applications_clocks_mhz is None
    r = act.set_applications_clocks(0, low_mem, low_top)
    assert r.ok and r.code == "ok" and backend.devices[0].applications_clocks_mhz == (low_mem, low_top)
    assert act.set_applications_clocks(0, 7251, 1740).ok
    act.stop()
    assert backend.devices[0].applications_clocks_mhz is None


def test_a_killed_daemon_has_every_clock_knob_restored_at_next_start(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, gpus=2)
    try:
        d.wait_ready()
        originals = d.sim_settings()
        for knob, value in (("locked_sm_clocks", lock_at(1200)), ("locked_memory_clocks", [2619, 2619]),
                            ("applications_clocks", [2619, 1200])):
            for gpu in (0, 1):
                r = d.admin("set", gpu=gpu, knob=knob, value=value)
                assert r["ok"], r
        changed = d.sim_settings()
        for s in changed.values():
            assert s["locked_sm_clocks_mhz"] == [1200, 1200] and s["locked_memory_clocks_mhz"] == [2619, 2619]
            assert s["applications_clocks_mhz"] == [2619, 1200]
        assert d.admin("release")["ok"]  # unpinned changes (as the tuner's): pinned ones would be applied again
        d.kill()
        assert d.sim_settings() == changed  # the GPUs keep what was set
    finally:
        d.close()
    d2 = DaemonProcess(tmp_path, config=d.data)
    try:
        d2.wait_ready()
        assert d2.sim_settings() == originals
        assert all(s["locked_sm_clocks_mhz"] is None and s["locked_memory_clocks_mhz"] is None
                   and s["applications_clocks_mhz"] is None for s in originals.values())
        assert not d2.state_path.exists()
        assert d2.stop() == 0
    finally:
        d2.close()
