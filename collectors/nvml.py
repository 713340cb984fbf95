"""The one module that imports pynvml: NVML loading and the NVML-backed GPUDevice.

:func:`open_nvml` returns an NVML API module, the real ``pynvml`` or a stand-in module with
the same API that its caller passes in (the composition root passes the simulated node's),
and :class:`NvmlGPU` implements :class:`GPUDevice` on whichever it is given, so the real
and the simulated node run the same code. NVML error codes become the device layer's
own exceptions, raised ``from`` the NVML error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal, TypeVar

from gputuned.collectors.calls import CallGate, Lane
from gputuned.collectors.device import (
    ClockEventReason,
    DriverMissingError,
    EccCounts,
    GpmActivity,
    GPUDevice,
    GPUError,
    GPUIdentity,
    GPULostError,
    GPUProcess,
    InvalidArgumentError,
    MemoryInfo,
    NoPermissionError,
    NotSupportedError,
    PowerLimitConstraints,
    RemappedRows,
    Utilization,
    Value,
)
from gputuned.collectors.gpm import GpmSampler
from gputuned.collectors.nvml_fields import FieldReader
from gputuned.collectors.nvml_reads import nvml_reads

logger = logging.getLogger(__name__)

Backend = Literal["auto", "nvml", "sim"]

# NVML return codes (nvml.h); identical in pynvml and the simulated module.
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_INVALID_ARGUMENT = 2
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_GPU_NOT_FOUND = 28

_CODE_TO_ERROR: dict[int, type[GPUError]] = {
    _NOT_SUPPORTED: NotSupportedError,
    _FUNCTION_NOT_FOUND: NotSupportedError,
    _NO_PERMISSION: NoPermissionError,
    _INVALID_ARGUMENT: InvalidArgumentError,
    _DRIVER_NOT_LOADED: DriverMissingError,
    _LIBRARY_NOT_FOUND: DriverMissingError,
    _GPU_IS_LOST: GPULostError,
    _GPU_NOT_FOUND: GPULostError,
}

T = TypeVar("T")


def map_nvml_error(err: Exception, what: str) -> GPUError:
    """Translate an NVMLError (real or simulated) into the project's exception."""
    code = getattr(err, "value", None)
    cls = _CODE_TO_ERROR.get(code, GPUError) if isinstance(code, int) else GPUError
    return cls(f"{what}: {err} (NVML code {code})")


def _import_pynvml() -> ModuleType:
    try:
        import pynvml  # the only import of pynvml in gputuned
    except ImportError as e:  # pragma: no cover - nvidia-ml-py is a dependency
        raise DriverMissingError("nvidia-ml-py is not installed") from e
    return pynvml


def open_nvml(backend: Backend = "auto", sim_module: ModuleType | None = None) -> tuple[ModuleType, str]:
    """Initialise NVML and return ``(module, kind)`` where kind is "nvml" or "sim".

    ``sim_module`` is a module with NVML's API (the caller's choice, typically the simulated
    node with a backend attached): ``sim`` opens it, ``auto`` opens it when the real library
    or driver is missing. Without one, those cases raise :class:`DriverMissingError`.
    """
    if backend in ("auto", "nvml"):
        nvml = _import_pynvml()
        try:
            nvml.nvmlInit()
            return nvml, "nvml"
        except nvml.NVMLError as e:
            err = map_nvml_error(e, "nvmlInit")
            if backend == "nvml" or not isinstance(err, DriverMissingError) or sim_module is None:
                raise err from e
            logger.info("no NVIDIA driver found (%s); using the simulated GPU node", e)
    if sim_module is None:
        raise DriverMissingError("no NVML stand-in module given for the simulated backend")
    try:
        sim_module.nvmlInit()
    except sim_module.NVMLError as e:
        raise map_nvml_error(e, "simulated nvmlInit") from e
    return sim_module, "sim"


def _nvml_call(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a device method so NVML errors become device-layer errors."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(self: NvmlGPU, *args: Any) -> T:
            gate = self._gate
            if gate is not None and not gate.in_worker():
                return gate.call(what, lambda: wrapper(self, *args))
            try:
                return fn(self, *args)
            except self._nvml.NVMLError as e:
                raise map_nvml_error(e, f"gpu {self._index} {what}") from e

        return wrapper

    return deco


def _typed(what: str, read: Callable[[NvmlGPU], T]) -> Callable[[NvmlGPU], T]:
    """A typed read of :class:`NvmlGPU` made of its NVML reads (:mod:`nvml_reads`), NVML errors mapped."""
    return _nvml_call(what)(read)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlGPU(GPUDevice):
    """A GPU read and set through an NVML API module.

    With ``call_timeout_s``, every call after opening runs on a worker thread (:class:`CallGate`, on
    ``lane`` where the node's GPUs share one, else on its own) and fails with :class:`GPUHungError`
    once it takes longer.
    """

    def __init__(self, nvml: ModuleType, index: int, call_timeout_s: float | None = None,
                 lane: Lane | None = None) -> None:
        self._nvml = nvml
        self._index = index
        self._gate = CallGate(f"gpu {index}", call_timeout_s, lane=lane) if call_timeout_s else None
        try:
            self._h = nvml.nvmlDeviceGetHandleByIndex(index)
            mem = nvml.nvmlDeviceGetMemoryInfo(self._h)
            self._identity = GPUIdentity(
                index=index,
                uuid=_text(nvml.nvmlDeviceGetUUID(self._h)),
                model=_text(nvml.nvmlDeviceGetName(self._h)),
                pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(self._h).busId),
                memory_total_bytes=int(mem.total),
            )
        except nvml.NVMLError as e:
            raise map_nvml_error(e, f"gpu {index} open") from e
        self._events: Any = None
        self._gpm = GpmSampler(nvml, self._h)
        self._fields = FieldReader(nvml, self._h)
        self._reads = nvml_reads(nvml, self._h, self._gpm)

    @property
    def identity(self) -> GPUIdentity:
        return self._identity

    @property
    def gate(self) -> CallGate | None:
        """The worker this GPU's calls run on, when calls have a timeout."""
        return self._gate

    @_nvml_call("readings")
    def read_values(self, keys: Sequence[str]) -> dict[str, Value | GPUError]:
        """Many values in one hop to the GPU's worker: the counters in one field-values call (a field the driver
        lacks by its single call), each other read by its own calls; a lost GPU is raised at once."""
        reads, fields = self._reads, self._fields
        out: dict[str, Value | GPUError] = {}
        asked = [k for k in keys if k not in reads]
        err = self._nvml.NVMLError
        if asked:
            try:
                got = fields.read(asked)
            except err as e:  # the field-values call as a whole: its counters fail with it, the other reads go on
                got = dict.fromkeys(asked, e)
            for k, v in got.items():
                out[k] = v if isinstance(v, float) else self._error(v, k)
        for k in keys:
            read = reads.get(k)
            if read is not None:
                try:
                    out[k] = read()
                except err as e:
                    out[k] = self._error(e, k)
                except GPUError as e:
                    out[k] = e
        return out

    def _error(self, e: Exception, what: str) -> GPUError:
        """The device-layer error of one read; a lost GPU is raised (every other read would fail with it)."""
        mapped = map_nvml_error(e, f"gpu {self._index} {what}")
        if isinstance(mapped, GPULostError):
            raise mapped from e
        return mapped

    def _read(self, key: str) -> Any:
        return self._reads[key]()

    def _field(self, key: str) -> float:
        """One of FieldReader's keys in base units (raises its NVMLError)."""
        got = self._fields.read([key])[key]
        if isinstance(got, Exception):
            raise got
        return got

    utilization = _typed("utilization", lambda g: Utilization(*g._read("utilization")))
    memory = _typed("memory", lambda g: MemoryInfo(*map(int, g._read("memory"))))
    sm_clock_hz = _typed("sm clock", lambda g: g._read("sm_clock_hz"))
    memory_clock_hz = _typed("memory clock", lambda g: g._read("memory_clock_hz"))
    graphics_clock_hz = _typed("graphics clock", lambda g: g._read("graphics_clock_hz"))
    max_sm_clock_hz = _typed("max sm clock", lambda g: g._read("max_sm_clock_hz"))
    power_w = _typed("power", lambda g: g._read("power_w"))
    power_limit_w = _typed("power limit", lambda g: g._read("power_limit_w"))
    power_management_limit_w = _typed("power management limit", lambda g: g._read("power_management_limit_w"))
    power_limit_constraints = _typed("power limit constraints",
                                     lambda g: PowerLimitConstraints(*map(int, g._read("power_limit_constraints"))))
    temperature_c = _typed("temperature", lambda g: g._read("temperature_c"))
    fan_ratio = _typed("fan", lambda g: g._read("fan_ratio"))
    pcie_throughput_bps = _typed("pcie throughput", lambda g: g._read("pcie_throughput_bps"))
    clock_event_reasons = _typed("clock event reasons", lambda g: ClockEventReason(g._read("clock_event_reasons")))
    pstate = _typed("pstate", lambda g: g._read("pstate"))
    encoder_decoder_utilization = _typed("encoder/decoder utilization",
                                         lambda g: g._read("encoder_decoder_utilization"))
    violation_seconds = _typed("violation status", lambda g: g._read("violation_seconds"))
    energy_j = _typed("energy", lambda g: g._field("energy_j"))
    memory_temperature_c = _typed("memory temperature", lambda g: g._field("memory_temperature_c"))
    nvlink_bytes = _typed("nvlink throughput", lambda g: (g._field("nvlink_tx_bytes"), g._field("nvlink_rx_bytes")))
    pcie_replays = _typed("pcie replays", lambda g: int(g._field("pcie_replays")))

    ecc_errors = _typed("ecc errors", lambda g: EccCounts(*(int(g._field(k)) for k in ("ecc_corrected", "ecc_uncorrected"))))
    remapped_rows = _typed("remapped rows", lambda g: RemappedRows(
        int(g._field("remapped_correctable")), int(g._field("remapped_uncorrectable")),
        bool(g._field("remap_pending")), bool(g._field("remap_failed"))))

    @_nvml_call("gpm")
    def gpm_activity(self) -> GpmActivity | None:
        got = self._read("gpm_activity")
        return None if got is None else GpmActivity(*got)

    @_nvml_call("running processes")
    def processes(self) -> list[GPUProcess]:
        """Compute processes from NVML's running-process list: each pid once, its used memory (None reads 0)."""
        out: dict[int, int] = {}
        for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._h):
            used = getattr(p, "usedGpuMemory", None)
            out[int(p.pid)] = out.get(int(p.pid), 0) + (int(used) if isinstance(used, int) else 0)
        return [GPUProcess(pid, used) for pid, used in sorted(out.items())]

    def poll_xid_events(self) -> list[int]:
        if self._gate is not None and not self._gate.in_worker():
            return self._gate.call("xid events", self.poll_xid_events)
        n = self._nvml
        try:
            if self._events is None:
                self._events = n.nvmlEventSetCreate()
                n.nvmlDeviceRegisterEvents(self._h, n.nvmlEventTypeXidCriticalError, self._events)
            xids: list[int] = []
            while True:
                try:
                    data = n.nvmlEventSetWait_v2(self._events, 0)
                except n.NVMLError as e:
                    if getattr(e, "value", None) == _TIMEOUT:
                        return xids
                    raise
                xids.append(int(data.eventData))
        except n.NVMLError as e:
            raise map_nvml_error(e, f"gpu {self._index} xid events") from e

    @_nvml_call("supported sm clocks")
    def supported_sm_clocks_mhz(self) -> list[int]:
        mem = max(self._nvml.nvmlDeviceGetSupportedMemoryClocks(self._h))
        return sorted(self._nvml.nvmlDeviceGetSupportedGraphicsClocks(self._h, mem), reverse=True)

    @_nvml_call("supported graphics clocks")
    def supported_graphics_clocks_mhz(self, memory_mhz: int) -> list[int]:
        return sorted(self._nvml.nvmlDeviceGetSupportedGraphicsClocks(self._h, int(memory_mhz)), reverse=True)

    @_nvml_call("supported memory clocks")
    def supported_memory_clocks_mhz(self) -> list[int]:
        return sorted(self._nvml.nvmlDeviceGetSupportedMemoryClocks(self._h), reverse=True)

    @_nvml_call("applications clocks")
    def applications_clocks_mhz(self) -> tuple[int, int]:
        return self._clock_pair(self._nvml.nvmlDeviceGetApplicationsClock)

    @_nvml_call("default applications clocks")
    def default_applications_clocks_mhz(self) -> tuple[int, int]:
        return self._clock_pair(self._nvml.nvmlDeviceGetDefaultApplicationsClock)

    def _clock_pair(self, read: Callable[[Any, int], int]) -> tuple[int, int]:
        """(memory, graphics) MHz from an NVML call taking a clock type."""
        n = self._nvml
        return int(read(self._h, n.NVML_CLOCK_MEM)), int(read(self._h, n.NVML_CLOCK_GRAPHICS))

    @_nvml_call("set power limit")
    def set_power_limit_mw(self, limit_mw: int) -> None:
        self._nvml.nvmlDeviceSetPowerManagementLimit(self._h, int(limit_mw))

    @_nvml_call("lock sm clocks")
    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        self._nvml.nvmlDeviceSetGpuLockedClocks(self._h, int(min_mhz), int(max_mhz))

    @_nvml_call("reset locked sm clocks")
    def reset_locked_sm_clocks(self) -> None:
        self._nvml.nvmlDeviceResetGpuLockedClocks(self._h)

    @_nvml_call("lock memory clocks")
    def set_locked_memory_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        self._nvml.nvmlDeviceSetMemoryLockedClocks(self._h, int(min_mhz), int(max_mhz))

    @_nvml_call("reset locked memory clocks")
    def reset_locked_memory_clocks(self) -> None:
        self._nvml.nvmlDeviceResetMemoryLockedClocks(self._h)

    @_nvml_call("set applications clocks")
    def set_applications_clocks_mhz(self, memory_mhz: int, graphics_mhz: int) -> None:
        self._nvml.nvmlDeviceSetApplicationsClocks(self._h, int(memory_mhz), int(graphics_mhz))

    @_nvml_call("reset applications clocks")
    def reset_applications_clocks(self) -> None:
        self._nvml.nvmlDeviceResetApplicationsClocks(self._h)


def open_gpus(nvml: ModuleType, call_timeout_s: float | None = None) -> list[NvmlGPU]:
    """Open every GPU NVML reports; a GPU that fails to open is logged and skipped.

    ``call_timeout_s`` bounds each later call per GPU; the GPUs' calls share one worker (see :class:`NvmlGPU`).
    """
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as e:
        raise map_nvml_error(e, "device count") from e
    gpus = []
    lane = Lane("gpus")
    for i in range(count):
        try:
            gpus.append(NvmlGPU(nvml, i, call_timeout_s, lane))
        except GPUError as e:
            logger.error("gpu %d not opened: %s", i, e)
    return gpus
