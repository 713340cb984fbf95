"""The live tuner: the decision kernel, given the daemon's store, actuator and control socket.

:class:`StoreNode` is the kernel's node in the daemon: an interval is measured from the store
(GPU energy counters, power, clocks, limits; the job leader's reports: samples, goodput, batch
size); the GPUs' power limits, SM- and memory-clock locks ([f, f], knobs ``locked_sm_clocks``,
``locked_memory_clocks``) and the job's batch size (a decision the job acknowledges) go through
the :class:`Actuator`, which records each knob's original first, emits each change with its
origin (tuner, perseus) and restores it on stop. :class:`TuningComponent` finds the job to tune, runs one
:class:`gputuned.tuner.decision.kernel.DecisionKernel` per job every ``interval_s``, and
publishes the guard's counters and the tuner's own measurements. Given the daemon's placement
(:mod:`gputuned.collectors.attribution`: NVML's process lists joined with the ranks' hellos),
it tunes only the GPUs the job's own processes run on, and Perseus reads each rank's GPU from it.

In a multi-node job every node's daemon tunes its own GPUs from the ranks connected to it,
whatever their global rank: it reads the job's series of its lowest local rank (samples and
batch are the job's on every rank), and Perseus takes every node's ranks' times from the
reports (the plugin's exchange carries them), so only GPUs off the job's critical path slow
down. Only the daemon holding the job's leader (global rank 0) decides the batch size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gputuned.collectors import families as F
from gputuned.collectors.attribution import Attribution
from gputuned.collectors.device import ClockEventReason
from gputuned.collectors.families import Labels, Sample
from gputuned.daemon.actuation.pause import pause_path
from gputuned.daemon.app.rank_times import job_timings, local_ranks, place_ranks
from gputuned.daemon.app.tuner_families import DECISIONS, EPS, EPS_REF, GOODPUT_RATIO, LAST_ACTION
from gputuned.daemon.control.reports import STAT_FAMILIES
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.choosers import Chooser, make_chooser
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.guard import KNOBS, GuardConfig, SafetyGuard
from gputuned.tuner.decision.kernel import Ack, DecisionKernel, GPULimits
from gputuned.tuner.decision.moves import busy_power, decode, memory_candidates
from gputuned.tuner.decision.observe import Interval, Observation, mean
from gputuned.tuner.decision.perseus import RankTiming

logger = logging.getLogger(__name__)

LEADER_RANK = 0
POWER_CAP = int(ClockEventReason.SW_POWER_CAP)
SAMPLES_TOTAL = STAT_FAMILIES["samples_total"]
SAMPLES_RATE = STAT_FAMILIES["samples_per_s"]
GOODPUT_RATE = STAT_FAMILIES["goodput"]
BATCH_SIZE = STAT_FAMILIES["batch_size"]
COMPUTE_SECONDS = STAT_FAMILIES["compute_time_s"]
#: The grid of lock clocks in the actuator's ``locked_sm_clocks`` range (NVIDIA's clock granularity
#: from Volta on; NVML takes any clock in the range and runs the nearest supported one).
CLOCK_GRID_MHZ = 15
#: The actuator's knob for each of the kernel's knob names.
KNOB_NAMES = {"sm_clock": "locked_sm_clocks", "memory_clock": "locked_memory_clocks"}


class BatchDecider(Protocol):
    """Where batch-size decisions go (the control server in the daemon)."""

    def send_decision(self, job: str, payload: dict[str, Any]) -> str: ...

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None: ...

    def connected_jobs(self) -> dict[str, list[int]]: ...


#: Every rank's (compute_s, wait_s) per step of the tuned job, all nodes' (the control server's).
RankTimes = Callable[[], dict[int, tuple[float, float]]]


class KnobActuator(Protocol):
    """What the tuner needs of :class:`gputuned.daemon.actuation.actuator.Actuator`: every knob it
    moves (the GPUs' power limits, the job's batch size) is changed, recorded and restored there."""

    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Any: ...

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]: ...

    def change(self, target: int | str, knob_name: str, value: Any, *, origin: str = "operator") -> Any: ...

    def memory_clocks(self, gpu: int) -> list[int]: ...

    def acknowledged(self, ident: str) -> Any: ...


class StoreNode:
    """The kernel's node in the daemon: the store's readings, the actuator, the job's decisions."""

    def __init__(self, store: Store, actuator: KnobActuator, decider: BatchDecider | None, job: str,
                 gpus: list[tuple[GPULimits, Labels, float]], now: float,
                 rank_gpus: Callable[[], dict[int, int]] | None = None, *, rank: int = LEADER_RANK,
                 rank_times: RankTimes | None = None) -> None:
        """``rank``: the local rank whose series are read; ``rank_times``: every node's ranks' times."""
        self.store = store
        self.rank_gpus = rank_gpus  # rank -> GPU index from NVML's process lists (None: not known)
        self.rank = rank
        self.leader = rank == LEADER_RANK  # this node holds the job's leader: it decides the batch size
        self.rank_times = rank_times
        self._labels: Labels = (("job", job), ("rank", str(rank)))
        self.actuator = actuator
        self.decider = decider
        self.job = job
        self._gpus = gpus  # (limits, labels, max SM clock in Hz)
        self._pins_said: set[tuple[str, str]] = set()  # (knob, target) pins the tuner has logged
        self.mark_t, self.mark_energy, self.mark_samples = now, 0.0, 0.0
        self.mark(now)

    def gpus(self) -> list[GPULimits]:
        return [g for g, _, _ in self._gpus]

    def _trainer(self, family: str) -> float | None:
        return self.store.value(family, self._labels)

    def batch_size(self) -> int:
        """The job's last reported batch size (0 when none)."""
        return int(self._trainer(BATCH_SIZE) or 0)

    def totals(self) -> tuple[float, float] | None:
        """(GPU energy counters summed, the job's samples) now, or None while either is missing."""
        energy = [self.store.value(F.GPU_ENERGY, labels) for _, labels, _ in self._gpus]
        if any(e is None for e in energy) and self._follow_labels():
            energy = [self.store.value(F.GPU_ENERGY, labels) for _, labels, _ in self._gpus]
        samples = self._trainer(SAMPLES_TOTAL)
        if samples is None or not energy or any(e is None for e in energy):
            return None
        return float(sum(e for e in energy if e is not None)), samples

    def _follow_labels(self) -> bool:
        """Follow GPUs whose labels changed (pod labels come with a pod) to their served series."""
        served = {dict(lab).get("gpu"): lab for lab in self.store.series(F.GPU_ENERGY)
                  if self.store.value(F.GPU_ENERGY, lab) is not None}
        moved = [(g, served.get(g.key, lab), sm) for g, lab, sm in self._gpus]
        changed = moved != self._gpus
        self._gpus = moved
        return changed

    def mark(self, now: float) -> None:
        """Start the next interval at ``now``."""
        tot = self.totals()
        if tot is not None:
            self.mark_t, self.mark_energy, self.mark_samples = now, tot[0], tot[1]

    def measure(self, now: float) -> Interval | None:
        m = self._measure(now)
        self.mark(now)
        return m

    def _measure(self, now: float) -> Interval | None:
        tot = self.totals()
        if tot is None:
            return None
        seconds = now - self.mark_t
        rates: dict[str, list[float]] = {}
        for name in (SAMPLES_RATE, GOODPUT_RATE):
            _, rates[name] = self.store.window(name, self._labels, seconds, now)
        tps, gps = rates[SAMPLES_RATE], rates[GOODPUT_RATE]
        samples = tot[1] - self.mark_samples
        # the job's own rates: a counter delta between ticks jitters with report timing
        tput = float(mean(tps)) if tps else (samples / seconds if seconds > 0 else 0.0)
        eff = float(mean(gps)) / tput if gps and tput > 0 else 1.0
        power = [self.store.value(F.GPU_POWER, labels) or 0.0 for _, labels, _ in self._gpus]
        sm = [(self.store.value(F.GPU_SM_CLOCK, labels) or 0.0) / sm_max for _, labels, sm_max in self._gpus]
        masks = [int(self.store.value(F.GPU_CLOCK_EVENT_MASK, labels) or 0) for _, labels, _ in self._gpus]
        util = [self.store.value(F.GPU_UTIL, labels) or 0.0 for _, labels, _ in self._gpus]
        batch = self.batch_size()
        return Interval(tot[0] - self.mark_energy, tput * seconds, seconds, tput * eff, float(mean(power)),
                        float(mean(sm)), any(m & POWER_CAP for m in masks), batch,
                        busy_power(list(zip(power, util, strict=True))))

    def set_power_limit(self, gpu: str, watts: float, origin: str = "tuner") -> bool:
        return bool(getattr(self.actuator.set_power_limit(int(gpu), watts, origin=origin), "ok", False))

    def pinned(self, knob: str, target: str) -> bool:
        """Whether the operator pinned ``knob`` (kernel name) on GPU ``target`` or the job (``job``); logged once."""
        pins = getattr(self.actuator, "pins", None)
        pin = pins.holding(self.job if target == "job" else int(target), KNOB_NAMES.get(knob, knob)) if pins else None
        if pin is not None and (knob, target) not in self._pins_said:
            logger.info("tuner pinned %s on %s: set to %s by %s, left alone until `gputuned set --release`",
                        knob, target, pin.value, pin.by or "the operator")
        (self._pins_said.add if pin is not None else self._pins_said.discard)((knob, target))
        return pin is not None

    def set_sm_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        """Lock [mhz, mhz]; unlocking locks the whole supported range (what the driver runs unlocked)."""
        clocks = next((g.sm_clocks for g, _, _ in self._gpus if g.key == gpu), ())
        return bool(clocks) and self._lock(gpu, "locked_sm_clocks", mhz, clocks, origin)

    def set_memory_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        """Lock the memory clock at [mhz, mhz]; unlocking locks the whole supported range."""
        clocks = next((g.memory_clocks for g, _, _ in self._gpus if g.key == gpu), ())
        return bool(clocks) and self._lock(gpu, "locked_memory_clocks", mhz, self.actuator.memory_clocks(int(gpu)), origin)

    def _lock(self, gpu: str, knob: str, mhz: int | None, clocks: Sequence[int], origin: str) -> bool:
        pair = [int(mhz), int(mhz)] if mhz is not None else [min(clocks), max(clocks)]
        return bool(getattr(self.actuator.change(int(gpu), knob, pair, origin=origin), "ok", False))

    def request_batch(self, size: int) -> str:
        """Ask the job for ``size`` through the actuator (the original recorded first, restored on stop)."""
        if not self.leader:
            raise ValueError("the job's leader is on another node: its daemon decides the batch size")
        res = self.actuator.change(self.job, "batch_size", size, origin="tuner")
        if getattr(res, "code", "") != "pending":
            raise ValueError(getattr(res, "reason", "") or f"batch size {size} not sent")
        return str(res.ident)

    def batch_ack(self, ident: str) -> Ack | None:
        res = self.actuator.acknowledged(ident)
        return None if res is None else Ack(bool(res.ok), str(res.reason))

    def rank_timings(self) -> list[RankTiming]:
        """Per-rank compute time, each local rank on the GPU NVML lists its process on (the k-th GPU
        without process lists), and every other node's ranks, from the job's exchanged times, as
        remote; a local rank not placed on one of the tuned GPUs leaves Perseus out."""
        ranks = local_ranks(self.store, self.job)
        on = place_ranks([r for r, _ in ranks], [g.key for g, _, _ in self._gpus], self.rank_gpus)
        times = self.rank_times() if self.rank_times is not None and on else {}
        return job_timings(ranks, on, times)


class TuningComponent:
    """Daemon component running the tuner live (see module doc)."""

    name = "tuner"

    def __init__(
        self, store: Store, actuator: KnobActuator, decider: BatchDecider | None, gpus: list[int],
        config: TuningConfig | None = None, *, chooser: Chooser | Callable[[Observation], int] | None = None,
        guard: SafetyGuard | None = None, alerts: Callable[[], list[str]] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        placement: Callable[[], Attribution] | None = None,
    ) -> None:
        """``placement``: the latest rank -> GPU join; with it only the job's GPUs are tuned."""
        self.store = store
        self.placement = placement
        self._unplaced_said = ""  # the job last logged as placed on no GPU
        self.actuator = actuator
        self.decider = decider
        self.gpu_indices = list(gpus)
        self.cfg = config or TuningConfig()
        self._own_chooser = chooser is None
        self.chooser = chooser or self._new_chooser()
        # a batch size counts as changed when the job acks it, a tick or so after the decision
        half = self.cfg.interval_s * 0.5
        state_file = getattr(actuator, "state_file", None)  # the daemon's pause flag lives beside it
        pause_file = pause_path(state_file.path) if state_file is not None else None
        self.guard = guard or SafetyGuard(GuardConfig(
            pause_file=pause_file, min_interval_s=dict.fromkeys(KNOBS, half), settle_s=half), alerts=alerts)
        self.on_event = on_event or (lambda e: None)
        self._gpus: list[tuple[GPULimits, Labels, float]] = []
        self.kernel: DecisionKernel | None = None
        self.node: StoreNode | None = None
        self.decisions: dict[str, int] = {}
        self._last_t = 0.0
        self._last_action_t = 0.0  # kept across jobs: when the tuner last changed a knob

    @property
    def batch_in_flight(self) -> bool:
        """Whether a batch-size decision waits for the job's acknowledgement."""
        return self.kernel is not None and self.kernel.pending is not None

    # -- component ------------------------------------------------------------------
    def start(self) -> None:
        name = getattr(self.chooser, "name", "custom")
        logger.info("tuner: objective %s every %g s, chooser %s", self.cfg.objective, self.cfg.interval_s, name)

    def stop(self) -> None:
        """Nothing to put back here: the actuator restores every knob the tuner moved."""

    def tick(self, now: float) -> None:
        self._last_t = now
        if not self._gpus:
            self._discover()
        kernel, node = self.kernel, self.node
        if kernel is not None:
            kernel.poll(now)
        if kernel is not None and node is not None and self._job_gone(node):
            self._job_gone_restore(now, kernel, node.job)
            self.kernel = self.node = kernel = node = None
        if kernel is None or node is None:
            self._start_run(now)
        elif now - node.mark_t >= self.cfg.interval_s - 1e-6:
            out = kernel.step(now, lambda obs: int(self.chooser(obs)))
            if out.action is not None:
                dp, db, dc, dm = decode(out.action)
                key = f"p{dp:+d}b{db:+d}" + (f"c{dc:+d}" if dc else "") + (f"m{dm:+d}" if dm else "")
                self.decisions[key] = self.decisions.get(key, 0) + 1
        self.store.publish(self.name, now, self.samples())

    # -- the job --------------------------------------------------------------------
    def _discover(self) -> None:
        for labels in self.store.series(F.GPU_POWER_LIMIT):
            idx = int(dict(labels).get("gpu", -1))
            if idx not in self.gpu_indices:
                continue
            lo = self.store.value(F.GPU_POWER_LIMIT_MIN, labels) or 0.0
            hi = self.store.value(F.GPU_POWER_LIMIT_MAX, labels) or 0.0
            sm = self.store.value(F.GPU_SM_CLOCK_MAX, labels) or 1.0
            bounds = self.actuator.bounds(idx)
            b = bounds.get("power_limit")
            if b is not None:  # config bounds intersected with NVML's
                lo, hi = max(lo, b[0] / 1000.0), min(hi, b[1] / 1000.0)
            c = bounds.get("locked_sm_clocks") if self.cfg.tune_clocks else None
            clocks = tuple(range(int(c[1]), int(c[0]) - 1, -CLOCK_GRID_MHZ)) if c is not None and c[1] > c[0] else ()
            mem = memory_candidates(self.actuator.memory_clocks(idx)) if clocks and hasattr(self.actuator, "memory_clocks") else ()
            self._gpus.append((GPULimits(str(idx), lo, hi, clocks, mem), labels, sm))
        self._gpus.sort(key=lambda g: int(g[0].key))

    def _job(self) -> tuple[str, int] | None:
        """The job to tune and the local rank whose series are read: a job whose leader (global rank 0)
        is connected here first, else one with only other ranks here (a node of a multi-node job)."""
        jobs = self.decider.connected_jobs() if self.decider is not None else {}
        if self.cfg.job is not None:
            return self.cfg.job, min(jobs.get(self.cfg.job) or [LEADER_RANK])
        for job, ranks in sorted(jobs.items(), key=lambda jr: (LEADER_RANK not in jr[1], jr[0])):
            if ranks:
                return job, min(ranks)
        return None

    def _job_gone(self, node: StoreNode) -> bool:
        """The rank the tuner reads disconnected (a job named in the config is waited for instead)."""
        if self.cfg.job is not None or self.decider is None:
            return False
        return node.rank not in self.decider.connected_jobs().get(node.job, [])

    def _job_gone_restore(self, now: float, kernel: DecisionKernel, job: str) -> None:
        kernel.emit(now, "job_gone", "batch_size", "job", 0, job=job)
        restore = getattr(self.actuator, "restore_gpu", None)
        if restore is not None and (kernel.limit_w and self.cfg.tune_power or kernel.clocks or kernel.mem_clocks):
            for g in kernel.node.gpus():
                restore(int(g.key))
            kernel.emit(now, "restore", "power_limit", "all", 0)

    def _new_chooser(self) -> Chooser:
        kind, path = self.cfg.chooser_kind()
        return make_chooser(kind, path, self.cfg.objective, self.cfg.max_slowdown)

    def _job_gpus(self, job: str) -> list[tuple[GPULimits, Labels, float]] | None:
        """The GPUs to tune for ``job``: those its processes run on; all of them without a placement,
        or when only the batch is tuned (GPU readings, no GPU knob); None while it runs on none."""
        if self.placement is None or not (self.cfg.tune_power or self.cfg.tune_clocks):
            return self._gpus
        on = self.placement().gpus_of(job)
        gpus = [g for g in self._gpus if int(g[0].key) in on]
        if not gpus and self._unplaced_said != job:
            logger.info("tuner: job %s runs on none of GPUs %s by NVML's process lists; waiting",
                        job, ", ".join(g.key for g, _, _ in self._gpus))
        self._unplaced_said = job if not gpus else ""
        return gpus or None

    def _start_run(self, now: float) -> None:
        found = self._job()
        if found is None or not self._gpus:
            return
        job, rank = found
        gpus = self._job_gpus(job)
        if gpus is None:
            return
        placement = self.placement
        rank_gpus = None if placement is None else (lambda: placement().rank_map(job))
        times = getattr(self.decider, "rank_times", None)
        node = StoreNode(self.store, self.actuator, self.decider, job, gpus, now, rank_gpus, rank=rank,
                         rank_times=None if times is None else (lambda: times(job)))
        if node.totals() is None:
            return
        if self._own_chooser and self.decisions:  # a new job: a fresh chooser and OOM ceiling
            self.chooser = self._new_chooser()
            self.guard.oom_ceiling = None
        g0_labels = gpus[0][1]
        limit = float(self.store.value(F.GPU_POWER_LIMIT, g0_labels) or gpus[0][0].hi_w)
        hook = getattr(self.chooser, "rolled_back", None)
        # a node without the job's leader tunes its GPUs; the leader's daemon decides the batch size
        cfg = self.cfg if node.leader else self.cfg.model_copy(update={"tune_batch": False})
        if not node.leader:
            logger.info("tuner: job %s has its leader on another node; tuning GPUs %s from its rank %d here",
                        job, ", ".join(g.key for g, _, _ in gpus), rank)
        self.kernel = DecisionKernel(node, cfg, self.guard, b0=node.batch_size(), limit_w=limit,
                                     on_event=self.on_event, on_rollback=hook)
        self.kernel.last_action_t = self._last_action_t
        self.node = node
        self.kernel.emit(now, "job", "batch_size", "job", self.kernel.b0, job=job, power_limit_w=limit)

    # -- output -----------------------------------------------------------------------
    def samples(self) -> list[Sample]:
        """Guard counters, knob values and the tuner's own measurements."""
        out = self.guard.samples()
        k, job = self.kernel, self.node.job if self.node is not None else ""
        if k is not None and k.last is not None and k.ref is not None and math.isfinite(k.last.eps):
            out.append((EPS, (("job", job),), k.last.eps))
            out.append((EPS_REF, (("job", job),), k.ref.eps))
            out.append((GOODPUT_RATIO, (("job", job),), k.last.goodput / max(k.ref.goodput, 1e-9)))
        out.append((LAST_ACTION, (), k.last_action_t if k is not None else self._last_action_t))
        out += [(DECISIONS, (("move", key),), float(n)) for key, n in sorted(self.decisions.items())]
        if k is not None:
            self._last_action_t = k.last_action_t
        return out
