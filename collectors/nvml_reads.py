"""The NVML calls behind one GPU's fast reads, bound to its handle: each returns plain floats in base units.

:class:`~gputuned.collectors.nvml.NvmlGPU` builds its typed reads from these, and reads many of
them in one go (:meth:`~gputuned.collectors.device.GPUDevice.read_values`: one hop to the GPU's
worker for all of them, each call still failing on its own). A structured read returns the fields
of its dataclass in field order (:data:`~gputuned.collectors.device.VALUES` says which). They call
the module they are given (the real pynvml or the simulated one) and raise that module's NVMLError;
the device layer maps the errors (GPM's absence is a NotSupportedError).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from gputuned.collectors.device import NotSupportedError
from gputuned.collectors.gpm import GpmSampler

Read = Callable[[], Any]


def _memory(n: ModuleType, h: Any) -> tuple[float, float, float, float]:
    """(total, used, free, reserved) bytes: v2 reports the driver's reserve apart from used memory, as DCGM does."""
    try:
        m = n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2)
    except (n.NVMLError, AttributeError):
        m = n.nvmlDeviceGetMemoryInfo(h)
    return float(m.total), float(m.used), float(m.free), float(getattr(m, "reserved", 0))


def nvml_reads(n: ModuleType, h: Any, gpm: GpmSampler) -> dict[str, Read]:
    """Each fast read's NVML calls for one GPU, by the name of the typed read it stands for (NVML's functions
    looked up at each call, as a module's functions are, so that a wrapped or replaced one is the one called)."""

    def utilization() -> tuple[float, float]:
        u = n.nvmlDeviceGetUtilizationRates(h)
        return u.gpu / 100.0, u.memory / 100.0

    def clock(kind: int) -> Read:
        return lambda: n.nvmlDeviceGetClockInfo(h, kind) * 1e6

    def pcie() -> tuple[float, float]:  # NVML reports KB/s
        return (n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_TX_BYTES) * 1000.0,
                n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_RX_BYTES) * 1000.0)

    def violations() -> tuple[float, float]:
        return (n.nvmlDeviceGetViolationStatus(h, n.NVML_PERF_POLICY_POWER).violationTime / 1e9,
                n.nvmlDeviceGetViolationStatus(h, n.NVML_PERF_POLICY_THERMAL).violationTime / 1e9)

    def enc_dec() -> tuple[float, float]:
        return n.nvmlDeviceGetEncoderUtilization(h)[0] / 100.0, n.nvmlDeviceGetDecoderUtilization(h)[0] / 100.0

    def limits() -> tuple[float, float, float]:
        lo, hi = n.nvmlDeviceGetPowerManagementLimitConstraints(h)
        return float(lo), float(hi), float(n.nvmlDeviceGetPowerManagementDefaultLimit(h))

    def clock_events() -> int:
        call = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(call(h)) & 0x1FF

    def gpm_activity() -> tuple[float, ...] | None:
        if not gpm.query_support():
            raise NotSupportedError("GPM not supported")
        return gpm.activity()

    return {
        "utilization": utilization,
        "memory": lambda: _memory(n, h),
        "sm_clock_hz": clock(n.NVML_CLOCK_SM),
        "max_sm_clock_hz": lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM) * 1e6,
        "memory_clock_hz": clock(n.NVML_CLOCK_MEM),
        "graphics_clock_hz": clock(n.NVML_CLOCK_GRAPHICS),
        "power_w": lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "power_limit_w": lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
        "power_management_limit_w": lambda: n.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
        "power_limit_constraints": limits,
        "temperature_c": lambda: float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
        "fan_ratio": lambda: n.nvmlDeviceGetFanSpeed(h) / 100.0,
        "pcie_throughput_bps": pcie,
        "clock_event_reasons": clock_events,
        "pstate": lambda: int(n.nvmlDeviceGetPerformanceState(h)),
        "encoder_decoder_utilization": enc_dec,
        "violation_seconds": violations,
        "gpm_activity": gpm_activity,
    }
