"""The simulated NVML refuses clock settings as the real one does, per generation and part: SM locks
from Volta, memory locks from Ampere, one memory clock on HBM parts, application clocks only as valid
(memory, graphics) pairs; NOT_SUPPORTED before permission, INVALID_ARGUMENT for a bad value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from gputuned.collectors.sim import nvml as n
from gputuned.collectors.sim.state import ScriptedBackend, load_profile

SimNode = Callable[..., ScriptedBackend]


def _open(sim_node: SimNode, profile: str, privileged: bool = True) -> tuple[ModuleType, object, ScriptedBackend]:
    backend = sim_node({"profile": profile, "gpus": 1}, privileged=privileged)
    n.nvmlInit()
    return n, n.nvmlDeviceGetHandleByIndex(0), backend


def _lock_sm(h: object, p: object) -> None:
    n.nvmlDeviceSetGpuLockedClocks(h, p.sm_clock_base_mhz, p.sm_clock_base_mhz)  # type: ignore[attr-defined]


def _lock_mem(h: object, p: object) -> None:
    top = max(p.memory_clocks_mhz)  # type: ignore[attr-defined]
    n.nvmlDeviceSetMemoryLockedClocks(h, top, top)


CALLS = {
    "sm lock": _lock_sm,
    "sm reset": lambda h, p: n.nvmlDeviceResetGpuLockedClocks(h),
    "memory lock": _lock_mem,
    "memory reset": lambda h, p: n.nvmlDeviceResetMemoryLockedClocks(h),
}

# (profile, call): supported? P100 is Pascal (no locks), V100 Volta and RTX 6000 Turing (SM locks only),
# A100/A40 Ampere and H100 Hopper (both).
SUPPORT = {
    "p100": {"sm lock": False, "sm reset": False, "memory lock": False, "memory reset": False},
    "v100": {"sm lock": True, "sm reset": True, "memory lock": False, "memory reset": False},
    "rtx6000": {"sm lock": True, "sm reset": True, "memory lock": False, "memory reset": False},
    "a100": {"sm lock": True, "sm reset": True, "memory lock": True, "memory reset": True},
    "a40": {"sm lock": True, "sm reset": True, "memory lock": True, "memory reset": True},
    "h100": {"sm lock": True, "sm reset": True, "memory lock": True, "memory reset": True},
}


@pytest.mark.parametrize(("profile", "call"), [(p, c) for p, calls in SUPPORT.items() for c in calls])
def test_each_generation_supports_or_refuses_with_not_supported(sim_node: SimNode, profile: str, call: str) -> None:
    _, h, backend = _open(sim_node, profile)
    dev = backend.devices[0]
    if SUPPORT[profile][call]:
        CALLS[call](h, dev.profile)
        if call == "sm lock":
            assert dev.locked_sm_clocks_mhz == (dev.profile.sm_clock_base_mhz,) * 2
        if call == "memory lock":
            assert dev.locked_memory_clocks_mhz == (max(dev.profile.memory_clocks_mhz),) * 2
    else:
        with pytest.raises(n.NVMLError_NotSupported):  # type: ignore[attr-defined]
            CALLS[call](h, dev.profile)
        assert dev.locked_sm_clocks_mhz is None and dev.locked_memory_clocks_mhz is None


def test_unsupported_comes_before_permission_and_permission_before_the_value(sim_node: SimNode) -> None:
    _, h, _ = _open(sim_node, "p100", privileged=False)
    with pytest.raises(n.NVMLError_NotSupported):  # type: ignore[attr-defined]
        n.nvmlDeviceSetGpuLockedClocks(h, 900, 900)
    _, h, _ = _open(sim_node, "v100", privileged=False)
    with pytest.raises(n.NVMLError_NoPermission):  # type: ignore[attr-defined]
        n.nvmlDeviceSetGpuLockedClocks(h, 99999, 99999)
    _, h, _ = _open(sim_node, "v100")
    with pytest.raises(n.NVMLError_InvalidArgument):  # type: ignore[attr-defined]
        n.nvmlDeviceSetGpuLockedClocks(h, 1200, 99999)  # above the highest clock
    with pytest.raises(n.NVMLError_InvalidArgument):  # type: ignore[attr-defined]
        n.nvmlDeviceSetGpuLockedClocks(h, 1200, 900)  # min above max


@pytest.mark.parametrize("profile", ["a100", "h100", "v100", "p100"])
def test_hbm_parts_list_one_memory_clock(sim_node: SimNode, profile: str) -> None:
    _, h, backend = _open(sim_node, profile)
    assert backend.devices[0].profile.memory_kind == "hbm"
    assert len(n.nvmlDeviceGetSupportedMemoryClocks(h)) == 1


def test_a_profile_of_an_hbm_part_with_several_memory_clocks_is_refused(tmp_path: Path) -> None:
    text = (Path(__file__).parents[3] / "collectors/sim/profiles/a100-sxm4-80gb.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("memory_clocks_mhz = [1593]", "memory_clocks_mhz = [1593, 800]"))
    with pytest.raises(ValueError, match="HBM part has one memory clock"):
        load_profile(str(bad))
    bad.write_text(text.replace('architecture = "ampere"', 'architecture = "fermi2"'))
    with pytest.raises(ValueError, match="unknown architecture"):
        load_profile(str(bad))


def test_application_clocks_are_valid_memory_graphics_pairs(sim_node: SimNode) -> None:
    _, h, backend = _open(sim_node, "a40")
    dev = backend.devices[0]
    high, low = n.nvmlDeviceGetSupportedMemoryClocks(h)
    at_high = n.nvmlDeviceGetSupportedGraphicsClocks(h, high)
    at_low = n.nvmlDeviceGetSupportedGraphicsClocks(h, low)
    assert max(at_high) == dev.profile.sm_clock_max_mhz and set(at_low) < set(at_high)  # depends on the memory clock
    with pytest.raises(n.NVMLError_NotFound):  # type: ignore[attr-defined]
        n.nvmlDeviceGetSupportedGraphicsClocks(h, 1234)
    n.nvmlDeviceSetApplicationsClocks(h, high, max(at_high))
    assert dev.applications_clocks_mhz == (high, max(at_high))
    n.nvmlDeviceSetApplicationsClocks(h, low, max(at_low))
    assert n.nvmlDeviceGetApplicationsClock(h, n.NVML_CLOCK_MEM) == low
    for mem, gfx in ((low, max(at_high)), (high, max(at_high) + 1), (1234, min(at_high))):
        with pytest.raises(n.NVMLError_InvalidArgument):  # type: ignore[attr-defined]
            n.nvmlDeviceSetApplicationsClocks(h, mem, gfx)
    assert dev.applications_clocks_mhz == (low, max(at_low))  # a refused pair changed nothing
