"""GPU collector: 30-odd NVML readings per GPU, each read isolated from the others.

:data:`SLOW_READINGS` (power-limit range, maximum SM clock, PCIe replays, ECC, remapped rows)
are read every ``slow_every_ticks`` ticks, their last samples served in between; the counters
made of field values are read in one call per GPU and tick. A reading the GPU does not support is dropped for that GPU after its first failure; a
lost GPU stops being polled and is reported by ``gputuned_gpu_up 0`` alone; any other
error skips that reading for one tick and is counted. GPUs opened with a call timeout are
read in parallel, each on its own worker; one whose calls hang is ``gputuned_gpu_up 0``
and skipped until its call returns. One GPU never hides another.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

from pydantic import Field

from gputuned.collectors import families as F
from gputuned.collectors.calls import CallGate, GPUHungError
from gputuned.collectors.device import (
    CLOCK_EVENT_LABELS,
    GPUDevice,
    GPUError,
    GPULostError,
    NotSupportedError,
)
from gputuned.collectors.families import Labels, Sample
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

FieldValues = Mapping[str, float | GPUError]  # a GPU's field values of this tick (GPUDevice.read_fields)
Reading = Callable[[GPUDevice, Labels, FieldValues], list[Sample]]
_Read = tuple[list[Sample], dict[str, tuple[list[int], str]]]  # samples, readings found unsupported


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


def _clock_events(dev: GPUDevice, labels: Labels, _v: FieldValues) -> list[Sample]:
    mask = dev.clock_event_reasons()
    out: list[Sample] = [(F.GPU_CLOCK_EVENT_MASK, labels, float(int(mask)))]
    for bit, name in CLOCK_EVENT_LABELS.items():
        out.append((F.GPU_CLOCK_EVENT, (*labels, ("reason", name)), 1.0 if mask & bit else 0.0))
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


def gpu_list(indices: Sequence[int]) -> str:
    """``gpu 2``, ``gpus 0-3``, ``gpus 0, 2, 5-7``: GPU indices with runs folded."""
    idx = sorted(set(indices))
    runs: list[str] = []
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return f"{'gpus' if len(idx) > 1 else 'gpu'} {', '.join(runs)}"


def log_unsupported(dropped: dict[str, tuple[list[int], str]]) -> None:
    """One line per reading that some GPUs lack: which GPUs, why, at info level where it is expected."""
    for name, (indices, why) in dropped.items():
        verb = "do not support" if len(indices) > 1 else "does not support"
        if name in EXPECTED_ABSENT:
            logger.info("%s %s %s (%s); not read again", gpu_list(indices), verb, name, EXPECTED_ABSENT[name])
        else:
            logger.warning("%s %s %s (%s); not read again", gpu_list(indices), verb, name, why)


class _GPUState:
    def __init__(self, dev: GPUDevice) -> None:
        ident = dev.identity
        self.dev = dev
        self.labels: Labels = (
            ("gpu", str(ident.index)),
            ("uuid", ident.uuid),
            ("model", ident.model),
            ("pci_bus_id", ident.pci_bus_id),
        )
        self.readings: list[Reading] = [*READINGS, nvlink_reading()]
        self.kept: dict[Reading, list[Sample]] = {}  # the slow readings' last samples, served between their reads
        self.kept_labels: Labels = ()
        self.ticks = 0
        self.lost = False
        self.xid_counts: dict[int, int] = {}
        self.last_xid = 0
        self.errors = 0


class GPUCollector:
    """Reads every GPU through the :class:`GPUDevice` interface."""

    name = "gpu"

    def __init__(self, devices: Sequence[GPUDevice], driver_version: str = "", backend: str = "nvml",
                 slow_every_ticks: int = 1) -> None:
        if slow_every_ticks < 1:
            raise ValueError("slow_every_ticks must be at least 1")
        self._gpus = [_GPUState(d) for d in devices]
        self.slow_every_ticks = slow_every_ticks
        self._info = (("driver_version", driver_version), ("backend", backend), ("hostname", socket.gethostname()))
        self.extra_labels: Callable[[str], Labels] | None = None  # by GPU UUID: pod labels (kubernetes collector)

    @property
    def devices(self) -> list[GPUDevice]:
        return [g.dev for g in self._gpus]

    def lost_gpus(self) -> list[int]:
        return [g.dev.identity.index for g in self._gpus if g.lost]

    def collect(self) -> list[Sample]:
        """Every GPU's samples; GPUs with a call timeout are read in parallel, each on its own worker."""
        out: list[Sample] = []
        dropped: dict[str, tuple[list[int], str]] = {}
        t0 = time.monotonic()
        started = [(g, self._start(g)) for g in self._gpus]
        for g, job in started:
            out.extend(self._finish(g, job, dropped, t0))
        if dropped:
            log_unsupported(dropped)
        return out

    def _start(self, g: _GPUState) -> Future[_Read] | GPUHungError | None:
        """Queue a GPU's readings on its worker (None: read here, on the caller's thread)."""
        gate: CallGate | None = getattr(g.dev, "gate", None)
        if gate is None or g.lost:
            return None
        try:
            return gate.submit("readings", lambda: self._read_gpu(g))
        except GPUHungError as e:
            return e

    def _read_gpu(self, g: _GPUState) -> _Read:
        unsupported: dict[str, tuple[list[int], str]] = {}
        return self._collect_one(g, unsupported), unsupported

    def _finish(self, g: _GPUState, job: Future[_Read] | GPUHungError | None,
                dropped: dict[str, tuple[list[int], str]], t0: float) -> list[Sample]:
        """A GPU's samples, or only ``gpu_up 0`` when its worker did not answer by ``t0`` + the timeout."""
        if job is None:
            return self._collect_one(g, dropped)
        gate: CallGate = getattr(g.dev, "gate")  # noqa: B009 - set when a job was queued
        try:
            if isinstance(job, GPUHungError):
                raise job
            samples, unsupported = gate.wait(job, t0 + gate.timeout_s - time.monotonic())
        except GPUHungError as e:
            logger.debug("gpu %s skipped: %s", g.labels[0][1], e)
            return [(F.GPU_UP, g.labels, 0.0)]
        for name, (indices, why) in unsupported.items():
            dropped.setdefault(name, ([], why))[0].extend(indices)
        return samples

    def _collect_one(self, g: _GPUState, unsupported: dict[str, tuple[list[int], str]]) -> list[Sample]:
        extra = self.extra_labels
        labels = g.labels if extra is None else (*g.labels, *extra(g.dev.identity.uuid))
        if g.lost:
            return [(F.GPU_UP, labels, 0.0)]
        try:
            out = self._readings(g, labels, unsupported)
        except GPULostError as e:
            logger.error("gpu %s lost: %s; its series stop until restart", labels[0][1], e)
            g.lost = True
            return [(F.GPU_UP, labels, 0.0)]
        try:
            for xid in g.dev.poll_xid_events():
                g.xid_counts[xid] = g.xid_counts.get(xid, 0) + 1
                g.last_xid = xid
                logger.error("gpu %s XID %d", labels[0][1], xid)
        except GPUError as e:
            logger.debug("gpu %s xid poll failed: %s", labels[0][1], e)
        for xid, n in g.xid_counts.items():
            out.append((F.GPU_XID, (*labels, ("xid", str(xid))), float(n)))
        out.append((F.GPU_LAST_XID, labels, float(g.last_xid)))
        out.append((F.GPU_INFO, (*labels, *self._info), 1.0))
        out.append((F.GPU_UP, labels, 1.0))
        return out

    def _readings(self, g: _GPUState, labels: Labels, unsupported: dict[str, tuple[list[int], str]]) -> list[Sample]:
        """A GPU's readings this tick: the slow ones' kept samples unless due (a failed one is due again next tick)."""
        due = g.ticks % self.slow_every_ticks == 0 or labels != g.kept_labels
        g.ticks += 1
        kept = g.kept
        if due:
            kept.clear()
            g.kept_labels = labels
        keys = [k for r in g.readings if r not in kept for k in getattr(r, "field_keys", ())]
        try:
            values = g.dev.read_fields(keys) if keys else {}
        except GPULostError:
            raise
        except GPUError as e:  # each reading made of fields fails with it
            values = dict.fromkeys(keys, e)
        out: list[Sample] = []
        dropped: list[Reading] = []
        for reading in g.readings:
            samples = kept.get(reading)
            if samples is not None:
                out.extend(samples)
                continue
            try:
                samples = reading(g.dev, labels, values)
            except NotSupportedError as e:
                dropped.append(reading)
                why = str(e).split(": ", 1)[-1] if str(e).startswith("gpu ") else str(e)
                unsupported.setdefault(reading_name(reading), ([], why or "not supported"))[0].append(
                    g.dev.identity.index)
                continue
            except GPULostError:
                raise
            except GPUError as e:
                g.errors += 1
                logger.warning("gpu %s reading %s failed: %s", labels[0][1], reading.__name__, e)
                continue
            if reading in SLOW_READINGS:
                kept[reading] = samples
            out.extend(samples)
        for reading in dropped:
            g.readings.remove(reading)
        return out

    def close(self) -> None:
        """Let idle GPU workers end; NVML is shut down by its owner."""
        for g in self._gpus:
            gate: CallGate | None = getattr(g.dev, "gate", None)
            if gate is not None:
                gate.close()


class GPUConfig(CollectorConfig):
    """``[collectors.gpu]``: every opened GPU's readings."""

    #: Ticks between two reads of the slow readings (1: every tick); their last samples are served in between
    slow_every_ticks: int = Field(default=10, ge=1)


@register("gpu", config=GPUConfig, families=tuple(v for k, v in vars(F).items() if k.startswith("GPU_")))
def build_gpu_collector(cfg: CollectorConfig, ctx: CollectorContext) -> GPUCollector | None:
    """``[collectors.gpu]``: every opened GPU; down when NVML could not be opened."""
    if ctx.gpu_error is not None:
        raise ctx.gpu_error
    own = cfg if isinstance(cfg, GPUConfig) else GPUConfig()
    return GPUCollector(ctx.devices, ctx.driver_version, ctx.backend,
                        slow_every_ticks=own.slow_every_ticks) if ctx.devices else None
