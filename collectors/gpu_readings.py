"""What the GPU collector reads: each reading turns some of a GPU's values of the tick into samples.

A GPU's values are read in one :meth:`~gputuned.collectors.device.GPUDevice.read_values` call a tick
(on NVML: one hop to the GPU's worker, the counters in one field-values call, each other read by its
own calls, each failing on its own). :data:`READINGS` in export order; :data:`SLOW_READINGS`, those set
by an operator, counted for alerts over minutes, or the video engines' (idle on training nodes), are read every
``slow_every_ticks`` ticks. Label
tuples with one more label (ECC type, remapped cause, clock-event reason) are built once per label set.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from gputuned.collectors import families as F
from gputuned.collectors.device import CLOCK_EVENT_LABELS, GPUError
from gputuned.collectors.families import Labels, Sample

Values = Mapping[str, Any]  # a GPU's values of this tick, or the error reading each (GPUDevice.read_values)
Make = Callable[[Any, Labels], list[Sample]]


class Reading:
    """Samples made of some of a GPU's values of the tick; the first error among them is raised instead.

    ``make`` takes the value itself where the reading has one key, the list of them where it has several.
    """

    __slots__ = ("__name__", "keys", "_key", "_make", "one")  # __name__: its first family, as logs name it

    def __init__(self, name: str, keys: tuple[str, ...], make: Make, *, one: bool = False) -> None:
        self.__name__, self.keys, self._make = name, keys, make
        self._key = keys[0] if len(keys) == 1 else None
        #: (key, family) of a reading that is one float value served as it is read (None: ``make`` it)
        self.one = (keys[0], name) if one else None

    def __call__(self, labels: Labels, values: Values) -> list[Sample]:
        key = self._key
        if key is not None:
            got: Any = values[key]
            if isinstance(got, GPUError):
                raise got
            return self._make(got, labels)
        got = list(map(values.__getitem__, self.keys))
        for v in got:
            if isinstance(v, GPUError):
                raise v
        return self._make(got, labels)


def _one(family: str, key: str) -> Reading:
    return Reading(family, (key,), lambda v, labels: [(family, labels, float(v))], one=True)


def _pair(first: str, second: str, *keys: str) -> Reading:
    """Two families from one read that returns a pair (transmit/receive ...), or from two keys (power/thermal)."""
    return Reading(first, keys, lambda v, labels: [(first, labels, v[0]), (second, labels, v[1])])


def _memory(v: Any, labels: Labels) -> list[Sample]:
    total, used, free, reserved = v
    out = [(F.GPU_MEM_USED, labels, used), (F.GPU_MEM_FREE, labels, free), (F.GPU_MEM_TOTAL, labels, total)]
    if reserved:  # drivers without memory info v2 do not say
        out.append((F.GPU_MEM_RESERVED, labels, reserved))
    return out


_GPM_FAMILIES = (F.GPU_GR_ENGINE, F.GPU_SM_ACTIVE, F.GPU_SM_OCCUPANCY, F.GPU_TENSOR_ACTIVE, F.GPU_DRAM_BW)


def _gpm(v: Any, labels: Labels) -> list[Sample]:
    if v is None:  # the first sample: activity needs two
        return []
    return [(family, labels, a) for family, a in zip(_GPM_FAMILIES, v, strict=True)]


def nvlink_reading(clock: Callable[[], float] = time.monotonic) -> Reading:
    """One GPU's NVLink reading: the byte counters, and their rate (both directions) since its previous call."""
    prev: list[float] = []

    def _nvlink(v: list[Any], labels: Labels) -> list[Sample]:
        tx, rx = v
        now = clock()
        out = [(F.GPU_NVLINK_TX, labels, tx), (F.GPU_NVLINK_RX, labels, rx)]
        if prev and now > prev[0] and tx + rx >= prev[1]:
            out.append((F.GPU_NVLINK_BW, labels, (tx + rx - prev[1]) / (now - prev[0])))
        prev[:] = [now, tx + rx]
        return out

    return Reading(F.GPU_NVLINK_TX, ("nvlink_tx_bytes", "nvlink_rx_bytes"), _nvlink)


def _power_limits(v: Any, labels: Labels) -> list[Sample]:
    lo, hi, default = v
    return [(F.GPU_POWER_LIMIT_MIN, labels, lo / 1000.0), (F.GPU_POWER_LIMIT_MAX, labels, hi / 1000.0),
            (F.GPU_POWER_LIMIT_DEFAULT, labels, default / 1000.0)]


@functools.lru_cache(maxsize=1024)
def _with(labels: Labels, name: str, values: tuple[str, ...]) -> tuple[Labels, ...]:
    """The label tuples of a family's series that one more label tells apart, built once per label set."""
    return tuple((*labels, (name, value)) for value in values)


def _ecc(v: list[Any], labels: Labels) -> list[Sample]:
    corrected, uncorrected = _with(labels, "type", ("corrected", "uncorrected"))
    return [(F.GPU_ECC, corrected, v[0]), (F.GPU_ECC, uncorrected, v[1])]


def _remapped(v: list[Any], labels: Labels) -> list[Sample]:
    correctable, uncorrectable = _with(labels, "cause", ("correctable", "uncorrectable"))
    return [(F.GPU_REMAPPED, correctable, v[0]), (F.GPU_REMAPPED, uncorrectable, v[1]),
            (F.GPU_REMAP_PENDING, labels, v[2]), (F.GPU_REMAP_FAILED, labels, v[3])]


_REASON_BITS = tuple(int(bit) for bit in CLOCK_EVENT_LABELS)  # plain ints: IntFlag's ``&`` runs in Python
_REASON_NAMES = tuple(CLOCK_EVENT_LABELS.values())


def _clock_events(mask: Any, labels: Labels) -> list[Sample]:
    out: list[Sample] = [(F.GPU_CLOCK_EVENT_MASK, labels, float(mask))]
    out += [(F.GPU_CLOCK_EVENT, reason, 1.0 if mask & bit else 0.0)
            for bit, reason in zip(_REASON_BITS, _with(labels, "reason", _REASON_NAMES), strict=True)]
    return out


_SM_CLOCK_MAX = _one(F.GPU_SM_CLOCK_MAX, "max_sm_clock_hz")
_POWER_LIMITS = Reading(F.GPU_POWER_LIMIT_MIN, ("power_limit_constraints",), _power_limits)
_PCIE_REPLAYS = _one(F.GPU_PCIE_REPLAYS, "pcie_replays")
_ECC = Reading(F.GPU_ECC, ("ecc_corrected", "ecc_uncorrected"), _ecc)
_REMAPPED = Reading(F.GPU_REMAPPED, ("remapped_correctable", "remapped_uncorrectable", "remap_pending", "remap_failed"),
                    _remapped)

_VIDEO = _pair(F.GPU_ENC, F.GPU_DEC, "encoder_decoder_utilization")

#: Readings taken every ``slow_every_ticks`` ticks: set by an operator, counted for alerts over minutes, or
#: the video engines' utilization (idle on a training node; two calls a GPU).
SLOW_READINGS: frozenset[Reading] = frozenset({_SM_CLOCK_MAX, _POWER_LIMITS, _PCIE_REPLAYS, _ECC, _REMAPPED, _VIDEO})

READINGS: tuple[Reading, ...] = (
    _pair(F.GPU_UTIL, F.GPU_MEM_ACTIVITY, "utilization"),
    Reading(F.GPU_MEM_USED, ("memory",), _memory),
    _one(F.GPU_SM_CLOCK, "sm_clock_hz"),
    _SM_CLOCK_MAX,
    _one(F.GPU_MEM_CLOCK, "memory_clock_hz"),
    _one(F.GPU_GFX_CLOCK, "graphics_clock_hz"),
    _one(F.GPU_POWER, "power_w"),
    _one(F.GPU_POWER_LIMIT, "power_limit_w"),
    _POWER_LIMITS,
    _one(F.GPU_ENERGY, "energy_j"),
    _one(F.GPU_TEMP, "temperature_c"),
    _one(F.GPU_MEM_TEMP, "memory_temperature_c"),
    _one(F.GPU_FAN, "fan_ratio"),
    _pair(F.GPU_PCIE_TX, F.GPU_PCIE_RX, "pcie_throughput_bps"),
    _PCIE_REPLAYS,
    _ECC,
    _REMAPPED,
    Reading(F.GPU_CLOCK_EVENT_MASK, ("clock_event_reasons",), _clock_events),
    _one(F.GPU_PSTATE, "pstate"),
    _VIDEO,
    _pair(F.GPU_POWER_VIOLATION, F.GPU_THERMAL_VIOLATION, "violation_power_s", "violation_thermal_s"),
    Reading(F.GPU_GR_ENGINE, ("gpm_activity",), _gpm),
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


