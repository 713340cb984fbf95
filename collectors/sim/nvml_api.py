"""nvidia-ml-py's constants, error classes and return structures, for the simulated NVML.

Values, names and shapes are those of nvml.h and nvidia-ml-py, so code written against the real
module reads the simulated one unchanged; :mod:`gputuned.collectors.sim.nvml` serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- constants (values as in nvml.h) -------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PERF_POLICY_POWER = 0
NVML_PERF_POLICY_THERMAL = 1
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
nvmlMemory_v2 = 0x02000028
nvmlEventTypeXidCriticalError = 0x0000000000000008

_ERROR_NAMES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """NVML error carrying its code in ``.value``; construction picks the subclass."""

    _value_class: dict[int, type[NVMLError]] = {}
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._value_class.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _ERROR_NAMES.get(self.value, f"Unknown Error ({self.value})")


def _error_class_name(constant: str) -> str:
    """nvidia-ml-py's class name for an error code's constant: NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost."""
    words = constant.removeprefix("NVML_ERROR_").split("_")
    return "NVMLError_" + "".join(w.capitalize() for w in words)


def _make_error_classes() -> dict[str, type[NVMLError]]:
    """One NVMLError subclass per NVML_ERROR_* code, registered so ``NVMLError(code)`` builds it."""
    classes: dict[str, type[NVMLError]] = {}
    for constant, code in list(globals().items()):
        if constant.startswith("NVML_ERROR_"):
            cls = type(_error_class_name(constant), (NVMLError,), {})
            NVMLError._value_class[code] = cls
            classes[cls.__name__] = cls
    return classes


#: The error classes by the names nvidia-ml-py gives them (NVMLError_NotSupported ...), module attributes too.
ERROR_CLASSES = _make_error_classes()
globals().update(ERROR_CLASSES)


# --- return structures ---------------------------------------------------------------
@dataclass
class c_nvmlMemory_t:  # noqa: N801 - NVML's name
    total: int
    free: int
    used: int


@dataclass
class c_nvmlMemory_v2_t:  # noqa: N801
    version: int
    total: int
    reserved: int
    free: int
    used: int


@dataclass
class c_nvmlUtilization_t:  # noqa: N801
    gpu: int
    memory: int


@dataclass
class c_nvmlPciInfo_t:  # noqa: N801
    busId: str  # noqa: N815
    busIdLegacy: str  # noqa: N815
    domain: int
    bus: int
    device: int
    pciDeviceId: int  # noqa: N815


@dataclass
class c_nvmlViolationTime_t:  # noqa: N801
    referenceTime: int  # noqa: N815
    violationTime: int  # noqa: N815


@dataclass
class c_nvmlValue_t:  # noqa: N801
    dVal: float = 0.0  # noqa: N815
    uiVal: int = 0  # noqa: N815
    ullVal: int = 0  # noqa: N815


@dataclass
class c_nvmlFieldValue_t:  # noqa: N801
    fieldId: int  # noqa: N815
    scopeId: int  # noqa: N815
    timestamp: int
    latencyUsec: int  # noqa: N815
    valueType: int  # noqa: N815
    nvmlReturn: int  # noqa: N815
    value: c_nvmlValue_t


@dataclass
class c_nvmlEventData_t:  # noqa: N801
    device: Any
    eventType: int  # noqa: N815
    eventData: int  # noqa: N815
    gpuInstanceId: int = 0  # noqa: N815
    computeInstanceId: int = 0  # noqa: N815


@dataclass
class c_nvmlGpmSupport_t:  # noqa: N801
    version: int
    isSupportedDevice: int  # noqa: N815


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass
class _EventSet:
    registered: dict[int, int]  # device index -> event mask
