"""What the GPU collector reads: each reading turns one device call (or the tick's field values) into samples.

:data:`READINGS` in export order; :data:`SLOW_READINGS`, those set by an operator or counted for alerts
over minutes, are read every ``slow_every_ticks`` ticks; a :class:`FieldReading` is made of the
GPU's field values of the tick (:meth:`GPUDevice.read_fields`, one NVML call for all of them).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping

from gputuned.collectors import families as F
from gputuned.collectors.device import CLOCK_EVENT_LABELS, GPUDevice, GPUError
from gputuned.collectors.families import Labels, Sample

FieldValues = Mapping[str, float | GPUError]  # a GPU's field values of this tick (GPUDevice.read_fields)
Reading = Callable[[GPUDevice, Labels, FieldValues], list[Sample]]


def _one(family: str, read: Callable[[GPUDevice], float]) -> Reading:
    def reading(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
        return [(family, labels, float(read(dev)))]

    reading.__name__ = family
    return reading


def _pair(first: str, second: str, read: Callable[[GPUDevice], tuple[float, float]]) -> Reading:
    """Two families from one device call that returns a pair (transmit/receive, power/thermal ...)."""

    def reading(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
        a, b = read(dev)
        return [(first, labels, a), (second, labels, b)]

    reading.__name__ = first
    return reading


def _memory(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    m = dev.memory()
    out = [
        (F.GPU_MEM_USED, labels, float(m.used_bytes)),
        (F.GPU_MEM_FREE, labels, float(m.free_bytes)),
        (F.GPU_MEM_TOTAL, labels, float(m.total_bytes)),
    ]
    if m.reserved_bytes:  # drivers without memory info v2 do not say
        out.append((F.GPU_MEM_RESERVED, labels, float(m.reserved_bytes)))
    return out


def _gpm(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    a = dev.gpm_activity()
    if a is None:  # the first sample: activity needs two
        return []
    return [(F.GPU_GR_ENGINE, labels, a.graphics_engine), (F.GPU_SM_ACTIVE, labels, a.sm_active),
            (F.GPU_SM_OCCUPANCY, labels, a.sm_occupancy), (F.GPU_TENSOR_ACTIVE, labels, a.tensor_active),
            (F.GPU_DRAM_BW, labels, a.dram_active)]


class FieldReading:
    """A reading made of field values (one read_fields call per GPU and tick serves them all)."""

    def __init__(self, name: str, field_keys: tuple[str, ...], make: Callable[[list[float], Labels], list[Sample]]) -> None:
        self.__name__, self.field_keys, self._make = name, field_keys, make

    def __call__(self, dev: GPUDevice, labels: Labels, values: FieldValues) -> list[Sample]:
        got: list[float] = []
        for v in map(values.__getitem__, self.field_keys):
            if isinstance(v, GPUError):
                raise v
            got.append(v)
        return self._make(got, labels)


def _field(family: str, key: str) -> FieldReading:
    return FieldReading(family, (key,), lambda v, labels: [(family, labels, v[0])])


def nvlink_reading(clock: Callable[[], float] = time.monotonic) -> Reading:
    """One GPU's NVLink reading: the byte counters, and their rate (both directions) since its previous call."""
    prev: list[float] = []

    def _nvlink(v: list[float], labels: Labels) -> list[Sample]:
        tx, rx = v
        now = clock()
        out = [(F.GPU_NVLINK_TX, labels, tx), (F.GPU_NVLINK_RX, labels, rx)]
        if prev and now > prev[0] and tx + rx >= prev[1]:
            out.append((F.GPU_NVLINK_BW, labels, (tx + rx - prev[1]) / (now - prev[0])))
        prev[:] = [now, tx + rx]
        return out

    return FieldReading("_nvlink", ("nvlink_tx_bytes", "nvlink_rx_bytes"), _nvlink)


def _utilization(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    u = dev.utilization()
    return [(F.GPU_UTIL, labels, u.gpu_ratio), (F.GPU_MEM_ACTIVITY, labels, u.memory_ratio)]


def _power_limits(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    c = dev.power_limit_constraints()
    return [
        (F.GPU_POWER_LIMIT_MIN, labels, c.min_mw / 1000.0),
        (F.GPU_POWER_LIMIT_MAX, labels, c.max_mw / 1000.0),
        (F.GPU_POWER_LIMIT_DEFAULT, labels, c.default_mw / 1000.0),
    ]


_ecc = FieldReading("_ecc", ("ecc_corrected", "ecc_uncorrected"), lambda v, labels: [
    (F.GPU_ECC, (*labels, ("type", "corrected")), v[0]), (F.GPU_ECC, (*labels, ("type", "uncorrected")), v[1])])
_remapped = FieldReading("_remapped", ("remapped_correctable", "remapped_uncorrectable", "remap_pending", "remap_failed"),
                         lambda v, labels: [(F.GPU_REMAPPED, (*labels, ("cause", "correctable")), v[0]),
                                            (F.GPU_REMAPPED, (*labels, ("cause", "uncorrectable")), v[1]),
                                            (F.GPU_REMAP_PENDING, labels, v[2]), (F.GPU_REMAP_FAILED, labels, v[3])])


@functools.lru_cache(maxsize=1024)
def _reason_labels(labels: Labels) -> tuple[tuple[int, Labels], ...]:
    """Each clock-event bit (a plain int: IntFlag's ``&`` runs in Python) with its series' labels."""
    return tuple((int(bit), (*labels, ("reason", name))) for bit, name in CLOCK_EVENT_LABELS.items())


def _clock_events(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    mask = int(dev.clock_event_reasons())
    out: list[Sample] = [(F.GPU_CLOCK_EVENT_MASK, labels, float(mask))]
    out += [(F.GPU_CLOCK_EVENT, reason, 1.0 if mask & bit else 0.0) for bit, reason in _reason_labels(labels)]
    return out


_SM_CLOCK_MAX = _one(F.GPU_SM_CLOCK_MAX, lambda d: d.max_sm_clock_hz())
_PCIE_REPLAYS = _field(F.GPU_PCIE_REPLAYS, "pcie_replays")

#: Readings taken every ``slow_every_ticks`` ticks: set by an operator or counted for alerts over minutes.
SLOW_READINGS: frozenset[Reading] = frozenset({_SM_CLOCK_MAX, _power_limits, _PCIE_REPLAYS, _ecc, _remapped})

READINGS: tuple[Reading, ...] = (
    _utilization,
    _memory,
    _one(F.GPU_SM_CLOCK, lambda d: d.sm_clock_hz()),
    _SM_CLOCK_MAX,
    _one(F.GPU_MEM_CLOCK, lambda d: d.memory_clock_hz()),
    _one(F.GPU_GFX_CLOCK, lambda d: d.graphics_clock_hz()),
    _one(F.GPU_POWER, lambda d: d.power_w()),
    _one(F.GPU_POWER_LIMIT, lambda d: d.power_limit_w()),
    _power_limits,
    _field(F.GPU_ENERGY, "energy_j"),
    _one(F.GPU_TEMP, lambda d: d.temperature_c()),
    _field(F.GPU_MEM_TEMP, "memory_temperature_c"),
    _one(F.GPU_FAN, lambda d: d.fan_ratio()),
    _pair(F.GPU_PCIE_TX, F.GPU_PCIE_RX, lambda d: d.pcie_throughput_bps()),
    _PCIE_REPLAYS,
    _ecc,
    _remapped,
    _clock_events,
    _one(F.GPU_PSTATE, lambda d: d.pstate()),
    _pair(F.GPU_ENC, F.GPU_DEC, lambda d: d.encoder_decoder_utilization()),
    _pair(F.GPU_POWER_VIOLATION, F.GPU_THERMAL_VIOLATION, lambda d: d.violation_seconds()),
    _gpm,
)


#: Readings that some GPU generations or boards lack by design, and why: their absence is logged
#: at info level; any other unsupported reading is a warning (a driver or permission surprise).
EXPECTED_ABSENT: dict[str, str] = {
    F.GPU_GR_ENGINE: "no GPM; Hopper and later have it",
    F.GPU_MEM_TEMP: "no memory temperature sensor",
    F.GPU_FAN: "no fan; passively cooled",
    F.GPU_NVLINK_TX: "no NVLink",
    F.GPU_ENC: "no video engines",
    F.GPU_POWER_VIOLATION: "no violation counters",
    F.GPU_ECC: "ECC off or absent",
    F.GPU_REMAPPED: "no row remapping; Ampere and later have it",
    F.GPU_PSTATE: "no performance states",
}


def reading_name(reading: Reading) -> str:
    """The family a reading is known by in logs (its first family)."""
    composite = {"_memory": F.GPU_MEM_USED, "_utilization": F.GPU_UTIL, "_power_limits": F.GPU_POWER_LIMIT_MIN,
                 "_ecc": F.GPU_ECC, "_remapped": F.GPU_REMAPPED, "_clock_events": F.GPU_CLOCK_EVENT_MASK,
                 "_gpm": F.GPU_GR_ENGINE, "_nvlink": F.GPU_NVLINK_TX}
    return composite.get(reading.__name__, reading.__name__)
