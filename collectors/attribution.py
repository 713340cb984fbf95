"""Which process, job and rank runs on which GPU: NVML's process lists joined with the ranks' hellos.

Each tick the ``processes`` collector reads every GPU's compute processes from NVML
(:meth:`GPUDevice.processes`: pid, used memory) and joins them with the ranks the control
socket knows (:class:`RankClaim`: the peer's pid from SO_PEERCRED, never the pid a hello
claims, and the CUDA device UUID the rank reported). A rank runs on the GPU whose process
list holds its pid; where its pid is on several GPUs (stray contexts, or one process driving
several GPUs) the UUID it reported picks among those, and only among those: a rank cannot
claim a GPU its process does not use. A job's GPUs are every GPU that lists one of its ranks'
pids; the tuner acts on those alone.

Served as an info series joinable in PromQL (``gputuned_gpu_process_info``, one per resolved
rank) rather than as job/rank labels on every GPU series, so the GPU families keep their
label set (and dcgm-exporter's) and their cardinality whatever the jobs do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import Field

from gputuned.collectors.calls import run_each
from gputuned.collectors.device import GPUDevice, GPUError, GPUProcess, NotSupportedError
from gputuned.collectors.families import Labels, Sample, declare
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

PROCESS_INFO = declare("gputuned_gpu_process_info", "gauge",
                       "1 for each rank of a job on a GPU: the GPU NVML lists the rank's process on.")
PROCESS_MEMORY = declare("gputuned_gpu_process_memory_used_bytes", "gauge",
                         "GPU memory a compute process uses on a GPU (NVML's running-process list).")
PROCESSES = declare("gputuned_gpu_processes", "gauge", "Compute processes NVML lists on a GPU.")


@dataclass(frozen=True)
class RankClaim:
    """A connected rank as the control socket knows it."""

    job: str
    rank: int
    pid: int  # the peer's pid (SO_PEERCRED), in the daemon's pid namespace
    uuid: str = ""  # the CUDA device UUID the rank reported ("": none)


@dataclass(frozen=True)
class RankGPU:
    """A rank placed on a GPU, and by what: its pid alone, or its UUID among the GPUs its pid is on."""

    job: str
    rank: int
    pid: int
    gpu: int
    uuid: str
    by: str  # "pid" or "uuid"


@dataclass
class Attribution:
    """The join of one tick: each resolved rank's GPU and each job's GPUs."""

    ranks: list[RankGPU] = field(default_factory=list)
    job_gpus: dict[str, set[int]] = field(default_factory=dict)

    def gpus_of(self, job: str) -> set[int]:
        """Indices of the GPUs any process of ``job`` runs on (empty: none seen)."""
        return set(self.job_gpus.get(job, ()))

    def rank_map(self, job: str) -> dict[int, int]:
        """rank -> GPU index for the ranks of ``job`` that resolved to one GPU."""
        return {r.rank: r.gpu for r in self.ranks if r.job == job}


GPUProcesses = Mapping[int, tuple[str, Sequence[GPUProcess]]]  # GPU index -> (uuid, its processes)


def attribute(claims: Iterable[RankClaim], gpus: GPUProcesses) -> Attribution:
    """Join the ranks with the GPUs' process lists (see the module doc)."""
    out = Attribution()
    for c in claims:
        on = sorted(i for i, (_, procs) in gpus.items() if any(p.pid == c.pid for p in procs))
        if on:
            out.job_gpus.setdefault(c.job, set()).update(on)
        by_uuid = [i for i in on if gpus[i][0] == c.uuid] if c.uuid else []
        if len(on) == 1:
            out.ranks.append(RankGPU(c.job, c.rank, c.pid, on[0], gpus[on[0]][0], "pid"))
        elif len(by_uuid) == 1:
            out.ranks.append(RankGPU(c.job, c.rank, c.pid, by_uuid[0], c.uuid, "uuid"))
    out.ranks.sort(key=lambda r: (r.job, r.rank))
    return out


class ProcessCollector:
    """Reads each GPU's compute processes and joins them with the ranks from ``claims``."""

    name = "processes"

    def __init__(self, devices: Sequence[GPUDevice], claims: Callable[[], list[RankClaim]] | None = None,
                 max_processes_per_gpu: int = 64, refresh_ticks: int = 1) -> None:
        if refresh_ticks < 1:
            raise ValueError("refresh_ticks must be at least 1")
        self._devices = list(devices)
        self.claims = claims  # set by the composition root once the control socket exists
        self.max_processes = max_processes_per_gpu
        self.refresh_ticks = refresh_ticks
        self._unlisted: set[int] = set()  # GPUs that cannot list their processes
        self._listed: dict[int, tuple[str, list[GPUProcess]]] = {}
        self._read_claims: frozenset[RankClaim] | None = None  # the ranks when the lists were last read
        self._reads_due_in = 0  # ticks until the lists are read again
        self._served: list[Sample] | None = None  # the samples of the lists and ranks as last joined
        self.latest = Attribution()

    def read(self) -> dict[int, tuple[str, list[GPUProcess]]]:
        """Every listable GPU's processes (one trip to the GPUs' worker for all); a GPU that cannot list
        them is logged once and skipped."""
        devices = [d for d in self._devices if d.identity.index not in self._unlisted]
        out: dict[int, tuple[str, list[GPUProcess]]] = {}
        for dev, got in zip(devices, run_each([(getattr(dev, "gate", None), "running processes", dev.processes)
                                               for dev in devices]), strict=True):
            ident = dev.identity
            if isinstance(got, NotSupportedError):
                self._unlisted.add(ident.index)
                logger.info("gpu %d cannot list its processes (%s); no rank is attributed to it", ident.index, got)
            elif isinstance(got, GPUError):
                logger.debug("gpu %d process list failed: %s", ident.index, got)
            else:
                out[ident.index] = (ident.uuid, got)
        return out

    def collect(self) -> list[Sample]:
        """Per-GPU process counts and memory, and one info sample per resolved rank.

        The process lists are read every ``refresh_ticks`` calls, and at once when a rank came or
        went since the last read (its process is then looked for); between reads the last lists are
        joined with the ranks and served again (the same samples: neither moved).
        """
        claims = self.claims() if self.claims is not None else []
        ranks = frozenset(claims)
        if self._reads_due_in <= 0 or ranks != self._read_claims:
            self._listed, self._read_claims, self._reads_due_in = self.read(), ranks, self.refresh_ticks
            self._served = None
        self._reads_due_in -= 1
        if self._served is None:
            self.latest = att = attribute(claims, self._listed)
            self._served = self._samples(self._listed, att)
        return list(self._served)

    def _samples(self, listed: dict[int, tuple[str, list[GPUProcess]]], att: Attribution) -> list[Sample]:
        """Per-GPU process counts and memory of ``listed``, and the info samples of ``att``'s ranks."""
        out: list[Sample] = []
        for idx, (uuid, procs) in sorted(listed.items()):
            gpu: Labels = (("gpu", str(idx)), ("uuid", uuid))
            out.append((PROCESSES, gpu, float(len(procs))))
            top = sorted(procs, key=lambda p: -p.used_memory_bytes)[: self.max_processes]
            out += [(PROCESS_MEMORY, (*gpu, ("pid", str(p.pid))), float(p.used_memory_bytes)) for p in top]
        for r in att.ranks:
            labels = (("gpu", str(r.gpu)), ("uuid", r.uuid), ("job", r.job), ("rank", str(r.rank)), ("pid", str(r.pid)))
            out.append((PROCESS_INFO, labels, 1.0))
        return out

    def close(self) -> None:
        """Nothing to release: the GPUs belong to the daemon."""


class ProcessesConfig(CollectorConfig):
    """``[collectors.processes]``: NVML's running-process list per GPU, joined with the ranks."""

    max_processes_per_gpu: int = 64
    #: Collection ticks between two reads of the process lists (1: every tick); a rank coming or going reads them at once
    refresh_ticks: int = Field(default=5, ge=1)


@register("processes", config=ProcessesConfig, families=(PROCESS_INFO, PROCESS_MEMORY, PROCESSES))
def build_process_collector(cfg: CollectorConfig, ctx: CollectorContext) -> ProcessCollector | None:
    """Every opened GPU's processes; nothing without GPUs."""
    own = cfg if isinstance(cfg, ProcessesConfig) else ProcessesConfig()
    return ProcessCollector(ctx.devices, max_processes_per_gpu=own.max_processes_per_gpu,
                            refresh_ticks=own.refresh_ticks) if ctx.devices else None


def link(collectors: Iterable[object], claims: Callable[[], list[RankClaim]] | None) -> ProcessCollector | None:
    """Wire the built collectors together: pod labels into the GPU collector, the ranks into the
    process collector; returns the process collector (None when it is off)."""
    from gputuned.collectors.gpu import GPUCollector
    from gputuned.collectors.kubernetes import KubernetesCollector

    by_name = {getattr(c, "name", ""): c for c in collectors}
    gpu, pods, procs = by_name.get("gpu"), by_name.get("kubernetes"), by_name.get("processes")
    if isinstance(gpu, GPUCollector) and isinstance(pods, KubernetesCollector):
        gpu.extra_labels = pods.labels
    if not isinstance(procs, ProcessCollector):
        return None
    procs.claims = claims
    return procs
