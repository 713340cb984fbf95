"""The GPU collector over the simulated NVML: families, labels, faults kept to one GPU."""

from __future__ import annotations

from collections import defaultdict

import pytest

from gputuned.collectors import families as F
from gputuned.collectors.device import NoPermissionError, NotSupportedError
from gputuned.collectors.gpu import GPUCollector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock


def _families(samples: list[F.Sample]) -> dict[str, set[str]]:
    """family -> set of gpu label values."""
    out: dict[str, set[str]] = defaultdict(set)
    for name, labels, _ in samples:
        gpu = dict(labels).get("gpu")
        if gpu is not None:
            out[name].add(gpu)
    return out


def test_eight_h100s_give_twenty_plus_families_with_eight_label_sets(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 8})
    nvml, kind = open_nvml("sim", sim_nvml)
    assert kind == "sim"
    collector = GPUCollector(open_gpus(nvml), "550.54.15", "sim")
    fams = _families(collector.collect())
    full = [f for f, gpus in fams.items() if f.startswith("gputuned_gpu_") and len(gpus) == 8]
    assert len(full) >= 20, sorted(full)
    reasons = {dict(lab)["reason"] for n, lab, _ in collector.collect() if n == F.GPU_CLOCK_EVENT}
    assert {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown"} <= reasons


def test_readings_are_converted_to_base_units(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "a100", "gpus": 1, "series": [
        {"gpu": 0, "field": "power_mw", "points": [[0, 250000]]},
        {"gpu": 0, "field": "sm_clock_mhz", "points": [[0, 1410]]},
        {"gpu": 0, "field": "util_gpu_pct", "points": [[0, 87]]},
        {"gpu": 0, "field": "pcie_tx_kbps", "points": [[0, 2000]]},
        {"gpu": 0, "field": "nvlink_tx_kib", "points": [[0, 3]]},
        {"gpu": 0, "field": "clock_event_reasons", "points": [[0, 0x4]]},
    ]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    values = {(n, dict(lab).get("reason")): v for n, lab, v in GPUCollector(open_gpus(nvml)).collect()}
    assert values[(F.GPU_POWER, None)] == 250.0
    assert values[(F.GPU_SM_CLOCK, None)] == 1410e6
    assert values[(F.GPU_UTIL, None)] == pytest.approx(0.87)
    assert values[(F.GPU_PCIE_TX, None)] == 2_000_000.0
    assert values[(F.GPU_NVLINK_TX, None)] == 3 * 1024.0
    assert values[(F.GPU_CLOCK_EVENT, "sw_power_cap")] == 1.0
    assert values[(F.GPU_CLOCK_EVENT, "hw_slowdown")] == 0.0
    assert values[(F.GPU_POWER_LIMIT_MAX, None)] == 400.0


def test_energy_counter_integrates_power(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 1, "series": [{"gpu": 0, "field": "power_mw", "points": [[0, 300000]]}]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = open_gpus(nvml)
    e0 = gpu.energy_j()
    clock.advance(10.0)
    assert gpu.energy_j() - e0 == pytest.approx(3000.0)


def test_lost_gpu_mid_run_is_reported_down_and_others_go_on(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 4, "lost": {"2": 5.0}}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml))
    before = _families(collector.collect())
    assert before[F.GPU_POWER] == {"0", "1", "2", "3"}
    clock.advance(6.0)
    after_samples = collector.collect()
    after = _families(after_samples)
    assert after[F.GPU_POWER] == {"0", "1", "3"}
    ups = {dict(lab)["gpu"]: v for n, lab, v in after_samples if n == F.GPU_UP}
    assert ups == {"0": 1.0, "1": 1.0, "2": 0.0, "3": 1.0}


def test_unsupported_reading_is_skipped_for_that_gpu_only(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 2, "unsupported": {"1": ["nvmlDeviceGetFanSpeed", "field:82"]}})
    nvml, _ = open_nvml("sim", sim_nvml)
    fams = _families(GPUCollector(open_gpus(nvml)).collect())
    assert fams[F.GPU_FAN] == {"0"}
    assert fams[F.GPU_MEM_TEMP] == {"0"}
    assert fams[F.GPU_POWER] == {"0", "1"}


def test_xid_events_are_counted_per_code(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 2, "xids": {"1": [[1.0, 79], [2.0, 79], [2.5, 48]]}}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml))
    collector.collect()
    clock.advance(3.0)
    samples = collector.collect()
    xids = {(dict(lab)["gpu"], dict(lab)["xid"]): v for n, lab, v in samples if n == F.GPU_XID}
    assert xids == {("1", "79"): 2.0, ("1", "48"): 1.0}
    last = {dict(lab)["gpu"]: v for n, lab, v in samples if n == F.GPU_LAST_XID}
    assert last == {"0": 0.0, "1": 48.0}


def test_set_calls_need_privileges(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1}, privileged=False)
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = open_gpus(nvml)
    with pytest.raises(NoPermissionError):
        gpu.set_power_limit_mw(300_000)
    assert gpu.power_limit_w() == 700.0


def test_set_calls_land_and_read_back(sim_node) -> None:
    backend = sim_node({"profile": "h100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = open_gpus(nvml)
    gpu.set_power_limit_mw(450_000)
    gpu.set_locked_sm_clocks_mhz(1200, 1500)
    assert gpu.power_limit_w() == 450.0
    assert backend.devices[0].locked_sm_clocks_mhz == (1200, 1500)
    gpu.reset_locked_sm_clocks()
    assert backend.devices[0].locked_sm_clocks_mhz is None
    c = gpu.power_limit_constraints()
    assert (c.min_mw, c.max_mw, c.default_mw) == (200_000, 700_000, 700_000)


def test_gpm_absent_before_hopper_is_not_supported(sim_node) -> None:
    sim_node({"profile": "a100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = open_gpus(nvml)
    with pytest.raises(NotSupportedError):
        gpu.gpm_activity()


def test_gpm_on_hopper_gives_activity_between_two_samples(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1, "series": [
        {"gpu": 0, "field": "util_gpu_pct", "points": [[0, 80]]},
        {"gpu": 0, "field": "util_mem_pct", "points": [[0, 30]]},
    ]})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = open_gpus(nvml)
    assert gpu.gpm_activity() is None  # the first call only takes a sample
    a = gpu.gpm_activity()
    assert a is not None
    assert (a.graphics_engine, a.dram_active) == (pytest.approx(0.8), pytest.approx(0.3))
    assert a.sm_active == pytest.approx(0.72) and a.tensor_active == pytest.approx(0.4)


def test_simulated_structures_look_like_pynvml(sim_node) -> None:
    sim_node({"profile": "a100", "gpus": 1, "series": [{"gpu": 0, "field": "memory_used_bytes", "points": [[0, 2**30]]}]})
    sim_nvml.nvmlInit()
    h = sim_nvml.nvmlDeviceGetHandleByIndex(0)
    mem = sim_nvml.nvmlDeviceGetMemoryInfo(h)
    assert (mem.total, mem.used, mem.free) == (85899345920, 2**30, 85899345920 - 2**30)
    util = sim_nvml.nvmlDeviceGetUtilizationRates(h)
    assert (util.gpu, util.memory) == (0, 0)
    with pytest.raises(sim_nvml.NVMLError_InvalidArgument):
        sim_nvml.nvmlDeviceGetHandleByIndex(5)
    with pytest.raises(sim_nvml.NVMLError_InvalidArgument):
        sim_nvml.nvmlDeviceSetPowerManagementLimit(h, 50_000)


def test_no_library_raises_driver_missing() -> None:
    from gputuned.collectors.device import DriverMissingError

    sim_nvml.attach(None)
    with pytest.raises(DriverMissingError):
        open_nvml("sim", sim_nvml)


def test_sim_backend_needs_its_module_from_the_caller() -> None:
    from gputuned.collectors.device import DriverMissingError

    with pytest.raises(DriverMissingError, match="stand-in"):
        open_nvml("sim")
