"""GPU collector: 30-odd NVML readings per GPU, each read isolated from the others.

:data:`SLOW_READINGS` (power-limit range, maximum SM clock, PCIe replays, ECC, remapped rows, video
encoder and decoder utilization) are read every ``slow_every_ticks`` ticks, their last samples served
in between. A GPU's values are read in one device call per GPU and tick, on its worker, and the samples
are made of them on the loop's thread (:mod:`gpu_readings`). A reading
the GPU does not support is dropped for that GPU after its first failure; a lost GPU stops being polled and is reported by ``gputuned_gpu_up 0`` alone; any other
error skips that reading for one tick and is counted. GPUs opened with a call timeout are
read one after another on their shared worker (:class:`~gputuned.collectors.calls.Lane`);
one whose call hangs is ``gputuned_gpu_up 0`` and skipped until its call returns, the
others read on a new worker. One GPU never hides another.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Sequence

from pydantic import Field

from gputuned.collectors import families as F
from gputuned.collectors.calls import CallGate, GPUHungError, run_each
from gputuned.collectors.device import GPUDevice, GPUError, GPULostError, NotSupportedError
from gputuned.collectors.families import Labels, Sample
from gputuned.collectors.gpu_readings import (
    EXPECTED_ABSENT,
    READINGS,
    SLOW_READINGS,
    Reading,
    Values,
    nvlink_reading,
)
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

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
        self.info_for: Labels | None = None
        self.info_labels: Labels = ()  # its info series' labels, built again only when its labels change
        self.ticks = 0
        self.missed = False  # a tick went by without an answer: the slow readings are due at the next one
        self.lost = False
        self.xid_counts: dict[int, int] = {}
        self.last_xid = 0


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

    def collect(self) -> list[Sample]:
        """Every GPU's samples: the NVML calls of GPUs with a call timeout run on their worker, in order, the
        samples are made here (the values cross threads, not the samples made of them)."""
        out: list[Sample] = []
        dropped: dict[str, tuple[list[int], str]] = {}
        plans = [self._plan(g) for g in self._gpus]
        reads = [(None if g.lost else getattr(g.dev, "gate", None), "readings", functools.partial(self._read, g, keys))
                 for g, (_, keys) in zip(self._gpus, plans, strict=True)]
        for g, (labels, _), got in zip(self._gpus, plans, run_each(reads), strict=True):
            if isinstance(got, GPUHungError):
                logger.debug("gpu %s skipped: %s", labels[0][1], got)
                g.missed = True  # the kept counters may have moved meanwhile (an Xid): the slow readings are due
                out.append((F.GPU_UP, labels, 0.0))
            elif got is None:  # lost at an earlier tick
                out.append((F.GPU_UP, labels, 0.0))
            elif isinstance(got, GPULostError):
                out.append(self._lost(g, labels, got))
            elif isinstance(got, GPUError):
                raise got
            else:
                values, xids = got
                try:
                    out.extend(self._samples(g, labels, values, xids, dropped))
                except GPULostError as e:
                    out.append(self._lost(g, labels, e))
        if dropped:
            log_unsupported(dropped)
        return out

    @staticmethod
    def _lost(g: _GPUState, labels: Labels, err: GPULostError) -> Sample:
        """Mark ``g`` lost (one log line): from now on it is not polled and serves ``gputuned_gpu_up 0`` alone."""
        logger.error("gpu %s lost: %s; its series stop until restart", labels[0][1], err)
        g.lost = True
        return (F.GPU_UP, labels, 0.0)

    def _plan(self, g: _GPUState) -> tuple[Labels, list[str]]:
        """A GPU's labels this tick and the keys of the values to read: the slow readings' only when due (a
        failed one is due again next tick, as are all after a missed tick or a change of labels)."""
        extra = self.extra_labels
        labels = g.labels if extra is None else (*g.labels, *extra(g.dev.identity.uuid))
        if g.lost:
            return labels, []
        if g.ticks % self.slow_every_ticks == 0 or labels != g.kept_labels or g.missed:
            g.kept.clear()
            g.kept_labels = labels
        g.missed = False
        g.ticks += 1
        kept = g.kept
        return labels, [k for r in g.readings if r not in kept for k in r.keys]

    @staticmethod
    def _read(g: _GPUState, keys: list[str]) -> tuple[Values, list[int] | GPUError] | None:
        """A GPU's values of ``keys`` and its new Xid events (or the error polling them), on its worker; a lost
        GPU raises. None for a GPU lost already."""
        if g.lost:
            return None
        try:
            values: Values = g.dev.read_values(keys)
        except GPULostError:
            raise
        except GPUError as e:  # each reading fails with it
            values = dict.fromkeys(keys, e)
        try:
            xids: list[int] | GPUError = g.dev.poll_xid_events()
        except GPULostError:
            raise
        except GPUError as e:
            xids = e
        return values, xids

    def _samples(self, g: _GPUState, labels: Labels, values: Values, xids: list[int] | GPUError,
                 unsupported: dict[str, tuple[list[int], str]]) -> list[Sample]:
        """A read GPU's samples: its readings (the slow ones' kept samples unless read), Xids, info and up."""
        out = self._readings(g, labels, values, unsupported)
        if isinstance(xids, GPUError):
            logger.debug("gpu %s xid poll failed: %s", labels[0][1], xids)
            xids = []
        for xid in xids:
            g.xid_counts[xid] = g.xid_counts.get(xid, 0) + 1
            g.last_xid = xid
            logger.error("gpu %s XID %d", labels[0][1], xid)
        for xid, n in g.xid_counts.items():
            out.append((F.GPU_XID, (*labels, ("xid", str(xid))), float(n)))
        out.append((F.GPU_LAST_XID, labels, float(g.last_xid)))
        if labels != g.info_for:
            g.info_for, g.info_labels = labels, (*labels, *self._info)
        out.append((F.GPU_INFO, g.info_labels, 1.0))
        out.append((F.GPU_UP, labels, 1.0))
        return out

    @staticmethod
    def _readings(g: _GPUState, labels: Labels, values: Values,
                  unsupported: dict[str, tuple[list[int], str]]) -> list[Sample]:
        """A GPU's readings this tick, made of its values; the slow ones' kept samples where not read."""
        kept = g.kept
        out: list[Sample] = []
        dropped: list[Reading] = []
        for reading in g.readings:
            samples = kept.get(reading)
            if samples is not None:
                out.extend(samples)
                continue
            one = reading.one
            if one is not None and (value := values[one[0]]).__class__ is float:  # most readings: one value as read
                if reading in SLOW_READINGS:
                    kept[reading] = [(one[1], labels, value)]
                out.append((one[1], labels, value))
                continue
            try:
                samples = reading(labels, values)
            except NotSupportedError as e:
                dropped.append(reading)
                why = str(e).split(": ", 1)[-1] if str(e).startswith("gpu ") else str(e)
                unsupported.setdefault(reading.__name__, ([], why or "not supported"))[0].append(
                    g.dev.identity.index)
                continue
            except GPULostError:
                raise
            except GPUError as e:
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
