"""The GPU device interface every part of gputuned talks to, and its error tree.

Reads return base units (watts, joules, hertz, bytes, celsius, ratios 0-1, seconds);
writes take NVML's own units where NVML defines them (milliwatts, megahertz) and say so
in the argument name, because those are the values NVML reports as constraints.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import Any


class GPUError(Exception):
    """Base of every error raised by the device layer."""


class NotSupportedError(GPUError):
    """The GPU or driver does not support this query or setting."""


class NoPermissionError(GPUError):
    """The setting needs privileges the process does not have (usually root)."""


class GPULostError(GPUError):
    """The GPU fell off the bus or stopped answering; it stays down until restart."""


class DriverMissingError(GPUError):
    """The NVML library or the NVIDIA kernel driver is not present."""


class InvalidArgumentError(GPUError):
    """NVML rejected a value (out of range, unsupported clock pair)."""


class ClockEventReason(enum.IntFlag):
    """NVML clock-event (throttle) reason bits, as nvmlClocksEventReason* defines them."""

    GPU_IDLE = 0x1
    APPLICATIONS_CLOCKS_SETTING = 0x2
    SW_POWER_CAP = 0x4
    HW_SLOWDOWN = 0x8
    SYNC_BOOST = 0x10
    SW_THERMAL_SLOWDOWN = 0x20
    HW_THERMAL_SLOWDOWN = 0x40
    HW_POWER_BRAKE_SLOWDOWN = 0x80
    DISPLAY_CLOCK_SETTING = 0x100


#: Label values for each reason, in the order they are exported.
CLOCK_EVENT_LABELS: dict[ClockEventReason, str] = {
    ClockEventReason.GPU_IDLE: "gpu_idle",
    ClockEventReason.APPLICATIONS_CLOCKS_SETTING: "applications_clocks_setting",
    ClockEventReason.SW_POWER_CAP: "sw_power_cap",
    ClockEventReason.HW_SLOWDOWN: "hw_slowdown",
    ClockEventReason.SYNC_BOOST: "sync_boost",
    ClockEventReason.SW_THERMAL_SLOWDOWN: "sw_thermal_slowdown",
    ClockEventReason.HW_THERMAL_SLOWDOWN: "hw_thermal_slowdown",
    ClockEventReason.HW_POWER_BRAKE_SLOWDOWN: "hw_power_brake_slowdown",
    ClockEventReason.DISPLAY_CLOCK_SETTING: "display_clock_setting",
}


@dataclass(frozen=True)
class GPUIdentity:
    """What identifies a GPU in labels."""

    index: int
    uuid: str
    model: str
    pci_bus_id: str
    memory_total_bytes: int


@dataclass(frozen=True)
class PowerLimitConstraints:
    """NVML's allowed power-limit range and default, in milliwatts."""

    min_mw: int
    max_mw: int
    default_mw: int


@dataclass(frozen=True)
class Utilization:
    gpu_ratio: float
    memory_ratio: float


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    used_bytes: int
    free_bytes: int
    reserved_bytes: int = 0  # held by the driver (NVML's memory info v2); 0 where the driver does not say


@dataclass(frozen=True)
class GpmActivity:
    """Activity ratios (0-1) over the interval between two GPM samples (Hopper and later)."""

    graphics_engine: float
    sm_active: float
    sm_occupancy: float
    tensor_active: float
    dram_active: float


@dataclass(frozen=True)
class EccCounts:
    corrected: int
    uncorrected: int


@dataclass(frozen=True)
class RemappedRows:
    correctable: int
    uncorrectable: int
    pending: bool
    failed: bool


@dataclass(frozen=True)
class GPUProcess:
    """A process with a compute context on a GPU, as NVML lists it (pid in the host's namespace)."""

    pid: int
    used_memory_bytes: int  # 0 where NVML cannot say (its "not available", under some vGPU/MIG setups)


#: A value of :meth:`GPUDevice.read_values`: a float, an int (pstate, the clock-event mask), the fields of a
#: structured read in field order as floats (memory, utilization, PCIe ...), or None (GPM's first sample).
Value = Any


def _call(name: str) -> Callable[[GPUDevice], Value]:
    return lambda d: getattr(d, name)()


def _fields(name: str) -> Callable[[GPUDevice], Value]:
    """A structured read's fields as floats, in field order (None as None)."""
    return lambda d: None if (got := getattr(d, name)()) is None else tuple(map(float, astuple(got)))


#: Readings a device returns many of at once (:meth:`GPUDevice.read_values`), in base units, by the typed
#: read each stands for: the fast ones, by the method's name, and the counters of NVML's field values.
VALUES: dict[str, Callable[[GPUDevice], Value]] = {
    **{name: _call(name) for name in (
        "sm_clock_hz", "max_sm_clock_hz", "memory_clock_hz", "graphics_clock_hz", "power_w", "power_limit_w",
        "temperature_c", "fan_ratio", "pcie_throughput_bps", "pstate", "encoder_decoder_utilization",
        "violation_seconds")},
    **{name: _fields(name) for name in (
        "utilization", "memory", "power_limit_constraints", "gpm_activity")},
    "clock_event_reasons": lambda d: int(d.clock_event_reasons()),
    "energy_j": lambda d: d.energy_j(),
    "memory_temperature_c": lambda d: d.memory_temperature_c(),
    "nvlink_tx_bytes": lambda d: d.nvlink_bytes()[0],
    "nvlink_rx_bytes": lambda d: d.nvlink_bytes()[1],
    "pcie_replays": lambda d: float(d.pcie_replays()),
    "ecc_corrected": lambda d: float(d.ecc_errors().corrected),
    "ecc_uncorrected": lambda d: float(d.ecc_errors().uncorrected),
    "remapped_correctable": lambda d: float(d.remapped_rows().correctable),
    "remapped_uncorrectable": lambda d: float(d.remapped_rows().uncorrectable),
    "remap_pending": lambda d: float(d.remapped_rows().pending),
    "remap_failed": lambda d: float(d.remapped_rows().failed),
    "violation_power_s": lambda d: d.violation_seconds()[0],
    "violation_thermal_s": lambda d: d.violation_seconds()[1],
}


class GPUDevice(abc.ABC):
    """One GPU: typed reads in base units, the writes tuning needs, and their resets.

    Every method may raise a :class:`GPUError` subclass; callers decide whether a
    :class:`NotSupportedError` means "skip this series" or "refuse this knob".
    """

    @property
    @abc.abstractmethod
    def identity(self) -> GPUIdentity:
        """Index, UUID, model, PCI bus id and memory size (read once)."""

    # -- reads -------------------------------------------------------------
    @abc.abstractmethod
    def utilization(self) -> Utilization: ...

    @abc.abstractmethod
    def memory(self) -> MemoryInfo: ...

    @abc.abstractmethod
    def sm_clock_hz(self) -> float: ...

    @abc.abstractmethod
    def memory_clock_hz(self) -> float: ...

    @abc.abstractmethod
    def graphics_clock_hz(self) -> float: ...

    @abc.abstractmethod
    def max_sm_clock_hz(self) -> float: ...

    @abc.abstractmethod
    def power_w(self) -> float: ...

    @abc.abstractmethod
    def power_limit_w(self) -> float:
        """The enforced power limit."""

    @abc.abstractmethod
    def power_management_limit_w(self) -> float:
        """The power limit set through NVML (may be above the enforced one under an external cap)."""

    @abc.abstractmethod
    def power_limit_constraints(self) -> PowerLimitConstraints: ...

    @abc.abstractmethod
    def energy_j(self) -> float:
        """Energy consumed since the driver loaded."""

    @abc.abstractmethod
    def temperature_c(self) -> float: ...

    @abc.abstractmethod
    def memory_temperature_c(self) -> float: ...

    @abc.abstractmethod
    def fan_ratio(self) -> float: ...

    @abc.abstractmethod
    def pcie_throughput_bps(self) -> tuple[float, float]:
        """(transmit, receive) bytes per second over the last sampling window."""

    @abc.abstractmethod
    def nvlink_bytes(self) -> tuple[float, float]:
        """(transmitted, received) bytes since the counters started."""

    @abc.abstractmethod
    def ecc_errors(self) -> EccCounts:
        """Aggregate corrected and uncorrected ECC error counts."""

    @abc.abstractmethod
    def remapped_rows(self) -> RemappedRows: ...

    @abc.abstractmethod
    def clock_event_reasons(self) -> ClockEventReason: ...

    @abc.abstractmethod
    def pstate(self) -> int: ...

    @abc.abstractmethod
    def encoder_decoder_utilization(self) -> tuple[float, float]:
        """(encoder, decoder) utilization ratios."""

    @abc.abstractmethod
    def violation_seconds(self) -> tuple[float, float]:
        """(power, thermal) violation time since the driver loaded."""

    @abc.abstractmethod
    def gpm_activity(self) -> GpmActivity | None:
        """Activity since the previous call from GPM (None on the first); NotSupportedError where GPM is absent."""

    def read_values(self, keys: Sequence[str]) -> dict[str, Value | GPUError]:
        """Many :data:`VALUES` in one call: each key's value, or the error reading it alone raises.

        A :class:`GPULostError` of the whole device may be raised instead; this default reads them one by one.
        """
        out: dict[str, Value | GPUError] = {}
        for key in keys:
            try:
                out[key] = VALUES[key](self)
            except GPUError as e:
                out[key] = e
        return out

    def pcie_replays(self) -> int:
        """PCIe replays (link-level retries) since the driver loaded; NotSupportedError where not counted."""
        raise NotSupportedError("this device does not count PCIe replays")

    def processes(self) -> list[GPUProcess]:
        """Processes with a compute context on this GPU; NotSupportedError where the device cannot list them."""
        raise NotSupportedError("this device does not list its processes")

    @abc.abstractmethod
    def poll_xid_events(self) -> list[int]:
        """XID error codes raised since the last poll (never blocks)."""

    @abc.abstractmethod
    def supported_sm_clocks_mhz(self) -> list[int]:
        """SM clocks supported at the highest memory clock, descending."""

    @abc.abstractmethod
    def supported_graphics_clocks_mhz(self, memory_mhz: int) -> list[int]:
        """Graphics clocks valid with one memory clock (application-clock pairs), descending."""

    @abc.abstractmethod
    def supported_memory_clocks_mhz(self) -> list[int]: ...

    @abc.abstractmethod
    def applications_clocks_mhz(self) -> tuple[int, int]:
        """(memory, graphics) application clocks."""

    @abc.abstractmethod
    def default_applications_clocks_mhz(self) -> tuple[int, int]:
        """(memory, graphics) application clocks the driver resets to."""

    # -- writes ------------------------------------------------------------
    @abc.abstractmethod
    def set_power_limit_mw(self, limit_mw: int) -> None: ...

    @abc.abstractmethod
    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None: ...

    @abc.abstractmethod
    def reset_locked_sm_clocks(self) -> None: ...

    @abc.abstractmethod
    def set_locked_memory_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None: ...

    @abc.abstractmethod
    def reset_locked_memory_clocks(self) -> None: ...

    @abc.abstractmethod
    def set_applications_clocks_mhz(self, memory_mhz: int, graphics_mhz: int) -> None: ...

    @abc.abstractmethod
    def reset_applications_clocks(self) -> None: ...
