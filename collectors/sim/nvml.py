"""A simulated NVML with nvidia-ml-py's names, signatures, return structures and errors.

The device layer receives either the real ``pynvml`` module or this one and cannot tell
them apart: functions take the same arguments, return the same shapes (objects with
``.total/.used/.free``, ``.gpu/.memory``, field-value arrays, event data), use the same
units (mW, mJ, MHz, KB/s, bytes) and raise ``NVMLError`` subclasses with NVML's codes.
Values come from an attached backend (:mod:`gputuned.collectors.sim.state`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

# nvidia-ml-py's API surface: every constant, error class and return structure by its name.
# isort: off
from gputuned.collectors.sim.nvml_api import (  # noqa: F401 - served as nvidia-ml-py serves them
    NVML_AGGREGATE_ECC, NVML_CLOCK_GRAPHICS, NVML_CLOCK_MEM, NVML_CLOCK_SM,
    NVML_ERROR_ALREADY_INITIALIZED, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_FOUND, NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_TIMEOUT, NVML_ERROR_UNINITIALIZED, NVML_ERROR_UNKNOWN,
    NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_PCIE_UTIL_RX_BYTES, NVML_PCIE_UTIL_TX_BYTES, NVML_PERF_POLICY_POWER,
    NVML_PERF_POLICY_THERMAL, NVML_SUCCESS, NVML_TEMPERATURE_GPU, NVML_VALUE_TYPE_DOUBLE,
    NVML_VALUE_TYPE_UNSIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, NVML_VOLATILE_ECC,
    ERROR_CLASSES, NVMLError,
    _EventSet, _Handle, c_nvmlEventData_t, c_nvmlFieldValue_t, c_nvmlGpmSupport_t,
    c_nvmlMemory_t, c_nvmlMemory_v2_t, c_nvmlPciInfo_t, c_nvmlUtilization_t, c_nvmlValue_t, c_nvmlViolationTime_t,
    nvmlEventTypeXidCriticalError, nvmlMemory_v2,
)
from gputuned.collectors.sim.nvml_fields import FIELD_NAMES, field_values_api
from gputuned.collectors.sim.nvml_gpm import GPM_NAMES, gpm_api
# isort: on
from gputuned.collectors.sim.state import (
    LOCKED_MEMORY_CLOCKS_FROM,
    LOCKED_SM_CLOCKS_FROM,
    SimBackend,
    SimDevice,
)

globals().update(ERROR_CLASSES)  # NVMLError_NotSupported, NVMLError_GpuIsLost ... as nvidia-ml-py makes them

T = TypeVar("T")

# --- module state --------------------------------------------------------------------
_backend: SimBackend | None = None
_init_count = 0
_sync_lock = threading.Lock()


def attach(backend: SimBackend | None) -> None:
    """Select the backend the module reads (``None`` acts like a host without a driver)."""
    global _backend, _init_count
    _backend = backend
    _init_count = 0


def backend() -> SimBackend | None:
    return _backend


def _require_init() -> SimBackend:
    if _backend is None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    if _init_count <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _backend


def _dev(handle: _Handle, func: str) -> SimDevice:
    be = _require_init()
    with _sync_lock:  # GPUs' calls run on their own threads: one brings the node up to date at a time
        be.sync()
    try:
        dev = be.devices[handle.index]
    except (IndexError, AttributeError):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT) from None
    _hang(dev, func)
    if dev.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    if func in dev.unsupported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return dev


def _hang(dev: SimDevice, func: str) -> None:
    """A scripted hang: block the call while the device's ``hang_until`` lies ahead (polled, so it can be ended)."""
    while dev.hang_until > time.monotonic() and (not dev.hang_calls or func in dev.hang_calls):
        time.sleep(min(0.05, max(0.0, dev.hang_until - time.monotonic())))


def _settable(handle: _Handle, func: str, since: str = "") -> SimDevice:
    """The device a set call changes: as :func:`_dev`, NOT_SUPPORTED before architecture ``since``, NO_PERMISSION unless privileged."""
    dev = _dev(handle, func)
    if since and not dev.profile.at_least(since):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if not _require_init().is_privileged():
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    return dev


def _select(choice: int, values: Mapping[int, T]) -> T:
    """The value an NVML selector argument (clock type, sensor, counter) picks; INVALID_ARGUMENT otherwise."""
    if choice not in values:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return values[choice]


# --- init and system -----------------------------------------------------------------
def nvmlInit() -> None:
    global _init_count
    if _backend is None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _init_count += 1


def nvmlInitWithFlags(flags: int) -> None:
    nvmlInit()


def nvmlShutdown() -> None:
    global _init_count
    _require_init()
    _init_count -= 1


def nvmlSystemGetDriverVersion() -> str:
    return _require_init().driver_version


def nvmlDeviceGetCount() -> int:
    return len(_require_init().devices)


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    be = _require_init()
    if not 0 <= index < len(be.devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if be.devices[index].lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return _Handle(index)


# --- identity ------------------------------------------------------------------------
def nvmlDeviceGetName(handle: _Handle) -> str:
    return _dev(handle, "nvmlDeviceGetName").profile.name


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return _dev(handle, "nvmlDeviceGetUUID").uuid


def nvmlDeviceGetPciInfo(handle: _Handle) -> c_nvmlPciInfo_t:
    dev = _dev(handle, "nvmlDeviceGetPciInfo")
    bus = int(dev.pci_bus_id.split(":")[1], 16)
    return c_nvmlPciInfo_t(dev.pci_bus_id, dev.pci_bus_id[4:], 0, bus, 0, 0x233010DE)


# --- readings ------------------------------------------------------------------------
def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> c_nvmlMemory_t | c_nvmlMemory_v2_t:
    dev = _dev(handle, "nvmlDeviceGetMemoryInfo")
    total = dev.profile.memory_total_bytes
    used = min(dev.memory_used_bytes, total)
    if version:  # v2 keeps the driver's reserve (1/160: 512 MiB of 80 GB) apart; used + reserved + free = total
        used, reserved = min(used, total - total // 160), total // 160
        return c_nvmlMemory_v2_t(version, total, reserved, free=total - reserved - used, used=used)
    return c_nvmlMemory_t(total=total, free=total - used, used=used)


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> c_nvmlUtilization_t:
    dev = _dev(handle, "nvmlDeviceGetUtilizationRates")
    return c_nvmlUtilization_t(gpu=dev.util_gpu_pct, memory=dev.util_mem_pct)


def nvmlDeviceGetClockInfo(handle: _Handle, type: int) -> int:  # noqa: A002 - NVML's name
    dev = _dev(handle, "nvmlDeviceGetClockInfo")
    return _select(type, {
        NVML_CLOCK_SM: dev.sm_clock_mhz, NVML_CLOCK_GRAPHICS: dev.graphics_clock_mhz, NVML_CLOCK_MEM: dev.memory_clock_mhz,
    })


def nvmlDeviceGetMaxClockInfo(handle: _Handle, type: int) -> int:  # noqa: A002
    p = _dev(handle, "nvmlDeviceGetMaxClockInfo").profile
    return _select(type, {
        NVML_CLOCK_SM: p.sm_clock_max_mhz, NVML_CLOCK_GRAPHICS: p.sm_clock_max_mhz, NVML_CLOCK_MEM: max(p.memory_clocks_mhz),
    })


def nvmlDeviceGetApplicationsClock(handle: _Handle, type: int) -> int:  # noqa: A002
    dev = _dev(handle, "nvmlDeviceGetApplicationsClock")
    mem, gfx = dev.applications_clocks_mhz or dev.default_applications_clocks_mhz
    return _select(type, {NVML_CLOCK_SM: gfx, NVML_CLOCK_GRAPHICS: gfx, NVML_CLOCK_MEM: mem})


def nvmlDeviceGetDefaultApplicationsClock(handle: _Handle, type: int) -> int:  # noqa: A002
    mem, gfx = _dev(handle, "nvmlDeviceGetDefaultApplicationsClock").default_applications_clocks_mhz
    return _select(type, {NVML_CLOCK_SM: gfx, NVML_CLOCK_GRAPHICS: gfx, NVML_CLOCK_MEM: mem})


def nvmlDeviceGetSupportedMemoryClocks(handle: _Handle) -> list[int]:
    return sorted(_dev(handle, "nvmlDeviceGetSupportedMemoryClocks").profile.memory_clocks_mhz, reverse=True)


def nvmlDeviceGetSupportedGraphicsClocks(handle: _Handle, memoryClockMHz: int) -> list[int]:  # noqa: N803
    dev = _dev(handle, "nvmlDeviceGetSupportedGraphicsClocks")
    if memoryClockMHz not in dev.profile.memory_clocks_mhz:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return dev.profile.graphics_clocks_mhz(memoryClockMHz)


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetPowerUsage").power_mw


def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw


def nvmlDeviceGetPowerManagementLimit(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetPowerManagementLimit").power_limit_mw


def nvmlDeviceGetPowerManagementDefaultLimit(handle: _Handle) -> int:
    dev = _dev(handle, "nvmlDeviceGetPowerManagementDefaultLimit")
    return int(dev.profile.power_limit_default_w * 1000)


def nvmlDeviceGetPowerManagementLimitConstraints(handle: _Handle) -> list[int]:
    dev = _dev(handle, "nvmlDeviceGetPowerManagementLimitConstraints")
    return [int(dev.profile.power_limit_min_w * 1000), int(dev.profile.power_limit_max_w * 1000)]


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetTotalEnergyConsumption").energy_mj


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    return _select(sensor, {NVML_TEMPERATURE_GPU: _dev(handle, "nvmlDeviceGetTemperature").temperature_c})


def nvmlDeviceGetFanSpeed(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetFanSpeed").fan_pct


def nvmlDeviceGetPcieThroughput(device: _Handle, counter: int) -> int:
    dev = _dev(device, "nvmlDeviceGetPcieThroughput")
    return _select(counter, {NVML_PCIE_UTIL_TX_BYTES: dev.pcie_tx_kbps, NVML_PCIE_UTIL_RX_BYTES: dev.pcie_rx_kbps})


def nvmlDeviceGetTotalEccErrors(handle: _Handle, errorType: int, counterType: int) -> int:  # noqa: N803
    dev = _dev(handle, "nvmlDeviceGetTotalEccErrors")
    return _select(errorType, {
        NVML_MEMORY_ERROR_TYPE_CORRECTED: dev.ecc_corrected, NVML_MEMORY_ERROR_TYPE_UNCORRECTED: dev.ecc_uncorrected,
    })


def nvmlDeviceGetRemappedRows(device: _Handle) -> tuple[int, int, int, int]:
    dev = _dev(device, "nvmlDeviceGetRemappedRows")
    return (dev.remapped_correctable, dev.remapped_uncorrectable, dev.remap_pending, dev.remap_failure)


def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetCurrentClocksEventReasons").clock_event_reasons


def nvmlDeviceGetPerformanceState(handle: _Handle) -> int:
    return _dev(handle, "nvmlDeviceGetPerformanceState").pstate


def nvmlDeviceGetEncoderUtilization(handle: _Handle) -> list[int]:
    return [_dev(handle, "nvmlDeviceGetEncoderUtilization").encoder_pct, 167000]


def nvmlDeviceGetDecoderUtilization(handle: _Handle) -> list[int]:
    return [_dev(handle, "nvmlDeviceGetDecoderUtilization").decoder_pct, 167000]


def nvmlDeviceGetViolationStatus(device: _Handle, perfPolicyType: int) -> c_nvmlViolationTime_t:  # noqa: N803
    dev = _dev(device, "nvmlDeviceGetViolationStatus")
    ns = _select(perfPolicyType, {
        NVML_PERF_POLICY_POWER: dev.power_violation_ns, NVML_PERF_POLICY_THERMAL: dev.thermal_violation_ns,
    })
    return c_nvmlViolationTime_t(0, ns)


# Field values (several counters of one device in one call), with a return code per field
globals().update(FIELD_NAMES)
globals().update(field_values_api(_dev))

# GPM (Hopper and later): nvmlGpmQueryDeviceSupport, nvmlGpmSampleAlloc/Get/Free, nvmlGpmMetricsGet
globals().update(GPM_NAMES)
globals().update(gpm_api(_dev))


@dataclass
class c_nvmlProcessInfo_t:  # noqa: N801 - NVML's name
    pid: int
    usedGpuMemory: int | None  # noqa: N815
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815 - "none" outside MIG
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    """The device's compute processes (the simulated job's ranks), sharing its used memory evenly."""
    dev = _dev(handle, "nvmlDeviceGetComputeRunningProcesses")
    pids = list(dev.process_pids)
    share = min(dev.memory_used_bytes, dev.profile.memory_total_bytes) // max(1, len(pids))
    return [c_nvmlProcessInfo_t(pid, share) for pid in pids]


# --- events --------------------------------------------------------------------------
def nvmlEventSetCreate() -> _EventSet:
    _require_init()
    return _EventSet(registered={})


def nvmlDeviceRegisterEvents(handle: _Handle, eventTypes: int, eventSet: _EventSet) -> None:  # noqa: N803
    _dev(handle, "nvmlDeviceRegisterEvents")
    eventSet.registered[handle.index] = eventSet.registered.get(handle.index, 0) | eventTypes


def nvmlEventSetWait_v2(eventSet: _EventSet, timeoutms: int) -> c_nvmlEventData_t:  # noqa: N802
    be = _require_init()
    be.sync()
    for index, mask in eventSet.registered.items():
        dev = be.devices[index]
        if mask & nvmlEventTypeXidCriticalError and dev.pending_xids:
            xid = dev.pending_xids.pop(0)
            return c_nvmlEventData_t(_Handle(index), nvmlEventTypeXidCriticalError, xid)
    raise NVMLError(NVML_ERROR_TIMEOUT)


def nvmlEventSetFree(eventSet: _EventSet) -> None:  # noqa: N803
    eventSet.registered.clear()


# --- settings ------------------------------------------------------------------------
def _locked_range(lo_mhz: int, hi_mhz: int, floor_mhz: int, ceiling_mhz: int) -> tuple[int, int]:
    """A clock range to lock, INVALID_ARGUMENT unless floor <= lo <= hi <= ceiling."""
    if not floor_mhz <= lo_mhz <= hi_mhz <= ceiling_mhz:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(lo_mhz), int(hi_mhz)


def nvmlDeviceSetPowerManagementLimit(handle: _Handle, limit: int) -> None:
    dev = _settable(handle, "nvmlDeviceSetPowerManagementLimit")
    p = dev.profile
    if not p.power_limit_min_w * 1000 <= limit <= p.power_limit_max_w * 1000:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    dev.power_limit_mw = int(limit)


def nvmlDeviceSetGpuLockedClocks(handle: _Handle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:  # noqa: N803
    dev = _settable(handle, "nvmlDeviceSetGpuLockedClocks", LOCKED_SM_CLOCKS_FROM)
    dev.locked_sm_clocks_mhz = _locked_range(
        minGpuClockMHz, maxGpuClockMHz, dev.profile.sm_clock_min_mhz, dev.profile.sm_clock_max_mhz
    )


def nvmlDeviceResetGpuLockedClocks(handle: _Handle) -> None:
    _settable(handle, "nvmlDeviceResetGpuLockedClocks", LOCKED_SM_CLOCKS_FROM).locked_sm_clocks_mhz = None


def nvmlDeviceSetMemoryLockedClocks(handle: _Handle, minMemClockMHz: int, maxMemClockMHz: int) -> None:  # noqa: N803
    dev = _settable(handle, "nvmlDeviceSetMemoryLockedClocks", LOCKED_MEMORY_CLOCKS_FROM)
    clocks = dev.profile.memory_clocks_mhz
    dev.locked_memory_clocks_mhz = _locked_range(minMemClockMHz, maxMemClockMHz, min(clocks), max(clocks))


def nvmlDeviceResetMemoryLockedClocks(handle: _Handle) -> None:
    _settable(handle, "nvmlDeviceResetMemoryLockedClocks", LOCKED_MEMORY_CLOCKS_FROM).locked_memory_clocks_mhz = None


def nvmlDeviceSetApplicationsClocks(handle: _Handle, maxMemClockMHz: int, maxGraphicsClockMHz: int) -> None:  # noqa: N803
    dev = _settable(handle, "nvmlDeviceSetApplicationsClocks")
    p = dev.profile  # a valid (memory, graphics) pair: the graphics clock listed for that memory clock
    if maxMemClockMHz not in p.memory_clocks_mhz or maxGraphicsClockMHz not in p.graphics_clocks_mhz(maxMemClockMHz):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    dev.applications_clocks_mhz = (int(maxMemClockMHz), int(maxGraphicsClockMHz))


def nvmlDeviceResetApplicationsClocks(handle: _Handle) -> None:
    _settable(handle, "nvmlDeviceResetApplicationsClocks").applications_clocks_mhz = None
