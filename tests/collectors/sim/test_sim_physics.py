"""Physics of the simulated node: power capping, locked clocks, throttle bits, energy, OOM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from gputuned.collectors.device import ClockEventReason as R
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.calibrate import Rows, predict
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.scenarios import Event, Scenario
from gputuned.collectors.sim.state import VirtualClock, load_profile
from gputuned.collectors.sim.workload import load_calibration, power_params, resolve_timing


def _run(backend, clock: VirtualClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1.0)
        backend.sync()


@contextmanager
def _through_nvml(backend: sim_nvml.SimBackend) -> Iterator[None]:
    """The simulated NVML module reads and drives ``backend`` (initialised) inside the block."""
    sim_nvml.attach(backend)
    try:
        sim_nvml.nvmlInit()
        yield
    finally:
        sim_nvml.attach(None)


def _steady(workload: str, limit_w: float, profile: str = "a40") -> tuple[float, float, int]:
    clock = VirtualClock()
    b = build_sim_node(profile, 1, workload, None, clock, seed=1, batch_size=None)
    b.devices[0].power_limit_mw = int(limit_w * 1000)
    _run(b, clock, 5)
    d = b.devices[0]
    return b.job.step_s, d.power_mw / 1000, d.sm_clock_mhz


def test_lower_power_limit_slows_compute_bound_more_than_memory_bound() -> None:
    rel = {}
    for wl in ("gpt2-small-openwebtext", "dlrm-criteo"):
        step_hi, p_hi, f_hi = _steady(wl, 300)
        step_lo, p_lo, f_lo = _steady(wl, 150)
        assert p_lo < p_hi and f_lo < f_hi and step_lo >= step_hi, wl
        # each phase is capped on its own power; a memory-bound phase whose DRAM power alone
        # exceeds a low limit overshoots it at the cap's floor clock (DLRM at 150 W on A40: +6 %)
        assert p_lo <= 150 * (1.07 if wl == "dlrm-criteo" else 1.005)
        rel[wl] = step_lo / step_hi - 1
    # memory-bound time does not depend on the SM clock: DLRM's step only slows through its compute phase
    assert rel["gpt2-small-openwebtext"] > 0.05 and rel["gpt2-small-openwebtext"] > 2 * rel["dlrm-criteo"] >= 0


def test_locked_clocks_hold_through_nvml() -> None:
    clock = VirtualClock()
    with _through_nvml(build_sim_node("a100", 2, "movielens-ncf", None, clock, seed=0)):
        h = sim_nvml.nvmlDeviceGetHandleByIndex(1)
        sim_nvml.nvmlDeviceSetGpuLockedClocks(h, 1005, 1005)
        for _ in range(30):
            clock.advance(1.0)
            assert sim_nvml.nvmlDeviceGetClockInfo(h, sim_nvml.NVML_CLOCK_SM) == 1005
        h0 = sim_nvml.nvmlDeviceGetHandleByIndex(0)
        assert sim_nvml.nvmlDeviceGetClockInfo(h0, sim_nvml.NVML_CLOCK_SM) == 1410
        sim_nvml.nvmlDeviceResetGpuLockedClocks(h)
        clock.advance(1.0)
        assert sim_nvml.nvmlDeviceGetClockInfo(h, sim_nvml.NVML_CLOCK_SM) == 1410


def test_power_cap_bit_iff_limit_binds() -> None:
    clock = VirtualClock()
    b = build_sim_node("a40", 1, "gpt2-small-openwebtext", None, clock, seed=0)
    d = b.devices[0]
    for limit in (300, 250, 200, 150, 100, 300):
        d.power_limit_mw = limit * 1000
        _run(b, clock, 3)
        busy_w = b.power[0].active_idle_w + b.job.timing.power_at(b.job.local_batch())
        capped = bool(d.clock_event_reasons & R.SW_POWER_CAP)
        assert capped == (busy_w > limit), limit
        assert capped == (d.sm_clock_mhz < 1740)
        assert not d.clock_event_reasons & (R.SW_THERMAL_SLOWDOWN | R.HW_SLOWDOWN)
    assert d.power_violation_ns > 0


def test_thermal_bits_iff_hot() -> None:
    clock = VirtualClock()
    hot = Scenario("hot", "", (Event("cooling_loss", 100, 200, None, 3.0, (0,)),))
    b = build_sim_node("a100", 2, "imagenet-resnet50", hot, clock, seed=0)
    prof = load_profile("a100")
    seen_sw = seen_hw = False
    for _ in range(900):
        t_before = b.temp_c[0]
        clock.advance(1.0)
        b.sync()
        bits = b.devices[0].clock_event_reasons
        thermal_limited = b.devices[0].sm_clock_mhz <= b.thermal_cap[0] * prof.sm_clock_max_mhz + 1
        if t_before > prof.max_operating_temp_c:
            assert bits & R.SW_THERMAL_SLOWDOWN
        if bits & R.SW_THERMAL_SLOWDOWN:  # hot now, or the controller's ceiling still holds the clock
            assert t_before > prof.max_operating_temp_c or (thermal_limited and b.thermal_cap[0] < 1)
        assert bool(bits & R.HW_THERMAL_SLOWDOWN) == (t_before >= prof.slowdown_temp_c)
        seen_sw |= bool(bits & R.SW_THERMAL_SLOWDOWN)
        seen_hw |= bool(bits & R.HW_THERMAL_SLOWDOWN)
        assert not b.devices[1].clock_event_reasons & (R.SW_THERMAL_SLOWDOWN | R.HW_SLOWDOWN)
    assert seen_sw
    assert b.devices[0].sm_clock_mhz < b.devices[1].sm_clock_mhz
    assert b.devices[0].thermal_violation_ns > 0 and b.devices[1].thermal_violation_ns == 0
    assert seen_hw or b.temp_c[0] < prof.slowdown_temp_c


def test_energy_counter_is_integral_of_power() -> None:
    clock = VirtualClock()
    with _through_nvml(build_sim_node("h100", 2, "gpt2-small-openwebtext", None, clock, seed=0)):
        h = sim_nvml.nvmlDeviceGetHandleByIndex(0)
        e0 = sim_nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        integral_mj = 0.0
        for k in range(600):
            if k % 100 == 0:
                sim_nvml.nvmlDeviceSetPowerManagementLimit(h, (700 - k // 2) * 1000)
            clock.advance(1.0)
            integral_mj += sim_nvml.nvmlDeviceGetPowerUsage(h) * 1.0
        e1 = sim_nvml.nvmlDeviceGetTotalEnergyConsumption(h)
    assert abs((e1 - e0) - integral_mj) <= 0.01 * integral_mj


def test_oversize_batch_is_an_oom_event() -> None:
    clock = VirtualClock()
    b = build_sim_node("a40", 1, "imagenet-resnet50", None, clock, seed=0, batch_size=256)
    ok, err = b.job.set_batch_size(1024)
    assert not ok and "out of memory" in err
    assert b.job.batch_size == 256
    _run(b, clock, 3)
    stats = b.job.report_stats()
    assert stats["oom_total"] == 1.0 and stats["batch_size"] == 256.0
    ok, _ = b.job.set_batch_size(512)
    assert ok
    _run(b, clock, 3)
    assert b.devices[0].memory_used_bytes > 2.0e9 + 8.0e7 * 511
    with pytest.raises(ValueError, match="does not fit"):
        build_sim_node("p100", 1, "imagenet-resnet50", None, VirtualClock(), batch_size=256)


def test_batch_change_moves_goodput_and_per_rank_slack() -> None:
    clock = VirtualClock()
    b = build_sim_node("a100", 4, "imagenet-resnet50", None, clock, seed=0)
    b.devices[2].power_limit_mw = 150_000
    _run(b, clock, 10)
    s1 = b.job.report_stats()
    ranks = b.job.rank_stats()
    assert ranks[2]["sync_wait_s"] == 0.0 and min(r["sync_wait_s"] for i, r in enumerate(ranks) if i != 2) > 0
    assert s1["samples_per_s"] == pytest.approx(256 / s1["step_time_s"], rel=1e-6)
    b.job.set_batch_size(1024)
    _run(b, clock, 10)
    s2 = b.job.report_stats()
    assert s2["batch_size"] == 1024 and s2["step_time_s"] > 2 * s1["step_time_s"]
    assert s2["goodput"] / s2["samples_per_s"] < s1["goodput"] / s1["samples_per_s"]
    assert s2["samples_total"] > s1["samples_total"] and s2["loss"] < 6.9


def test_simulator_reproduces_calibration_prediction() -> None:
    cal = load_calibration()
    prof = load_profile("a40")
    from gputuned.collectors.sim.workload import load_workload

    wl = load_workload("squad-bert")
    timing, source = resolve_timing(wl, "a40", cal)
    assert source == "fitted on a40"
    for limit in (125.0, 200.0, 300.0):
        rows = Rows(np.array([32.0]), np.array([limit]), np.array([1.0]), np.array([1.0]))
        t_pred, p_pred = predict(rows, wl.dataset_samples, prof, power_params("a40", cal), timing)
        step, power, _ = _steady("squad-bert", limit)
        assert wl.dataset_samples / 32 * step == pytest.approx(t_pred[0], rel=0.01)
        assert power == pytest.approx(p_pred[0], rel=0.01)
