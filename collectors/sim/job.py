"""A simulated data-parallel training job: step timing per rank, memory, OOM, statistics.

Each rank's step is phases (:class:`~.gpu_model.Phase`): host time (GPU idle), compute
``sm / x`` and memory-bound ``mem * (m_max / m)`` (SM clock ratio ``x`` of that phase, memory
clock ``m``) and the all-reduce; ranks wait for the slowest at the gradient all-reduce (their slack is what
a Perseus-style tuner can harvest), then the all-reduce's unhidden part runs. The job
emits the control protocol's ``report.stats`` (docs/protocol.md), accepts batch-size
changes, and raises an out-of-memory event when a batch does not fit.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.sim.gpu_model import Phase, phase_time
from gputuned.collectors.sim.workload import StepTiming, Workload

logger = logging.getLogger(__name__)

#: Share of a memory-bound phase's power at the highest clocks drawn by the SMs (the rest is
#: DRAM access power, which goes with bytes moved, not with the SM clock's voltage).
MEMORY_PHASE_SM_SHARE = 0.5
#: Share of a memory-bound phase's time that scales with 1 / SM clock (0: the Zeus fit cannot
#: tell it from host time; 0.1 raised the RTX 6000 hold-out median from 2.7 % to 3.3 %).
MEMORY_PHASE_SM_TIME = 0.0
#: Power of communication kernels (NCCL) relative to the compute kernels'.
COMM_POWER_SHARE = 0.15


def step_phases(sm_s: float, mem_s: float, kernel_w: float) -> tuple[Phase, Phase]:
    """The compute and memory-bound phases of a step from a workload's timing table."""
    return (Phase("compute", sm_s, 1.0, 0.0, kernel_w),
            Phase("memory", mem_s, MEMORY_PHASE_SM_TIME, 1.0 - MEMORY_PHASE_SM_TIME, MEMORY_PHASE_SM_SHARE * kernel_w,
                  (1.0 - MEMORY_PHASE_SM_SHARE) * kernel_w))


@dataclass
class JobFaults:
    """Degradations the scenarios apply to the job (multipliers >= 1, 0 extra RTT)."""

    loader_factor: float = 1.0
    straggle: dict[int, float] = field(default_factory=dict)  # gpu -> compute multiplier
    intra_bw_factor: float = 1.0  # <= 1: share of NVLink/PCIe bandwidth left
    pcie_gpu: dict[int, float] = field(default_factory=dict)  # gpu -> share of PCIe bandwidth left
    inter_bw_factor: float = 1.0
    rtt_factor: float = 1.0


@dataclass
class RankStep:
    """One rank's share of the last step (seconds)."""

    compute_s: float = 0.0
    host_s: float = 0.0
    data_wait_s: float = 0.0
    sync_wait_s: float = 0.0
    busy_s: float = 0.0  # GPU kernels running (SM- or memory-bound)
    sm_s: float = 0.0
    mem_s: float = 0.0


class SimJob:
    """The training job running on the simulated node (one rank per GPU of this node)."""

    def __init__(
        self, workload: Workload, timing: StepTiming, gpus: int, *, nodes: int = 1,
        batch_size: int | None = None, memory_total_bytes: int, intra_bw: float, pcie_bw: float,
        inter_bw: float = 25.0e9, base_rtt_s: float = 5.0e-5, seed: int = 0,
        noise_scale: float | None = None, restart_s: float = 30.0,
    ) -> None:
        self.workload = workload
        self.timing = timing
        self.gpus = gpus
        self.nodes = nodes
        self.memory_total_bytes = memory_total_bytes
        self.intra_bw, self.pcie_bw, self.inter_bw = intra_bw, pcie_bw, inter_bw
        self.base_rtt_s = base_rtt_s
        self.noise_scale = workload.grad_noise_scale if noise_scale is None else noise_scale
        self.restart_s = restart_s
        self._rng = random.Random(seed)
        self.batch_size = batch_size or workload.default_batch_size
        if self.memory_bytes(self.batch_size) > memory_total_bytes:
            raise ValueError(f"batch size {self.batch_size} of {workload.name} does not fit in GPU memory")
        self.down_until = -1.0
        self.oom_total = 0
        self.samples_total = 0.0
        self.steps_total = 0.0
        self.progress = 0.0  # effective samples / samples needed to reach the target
        self.comm_bytes_total = 0.0
        self.ranks = [RankStep() for _ in range(gpus)]
        self.step_s = 0.0
        self.comm_s = 0.0
        self._acc: dict[str, float] = {}
        self._acc_steps = 0.0

    # -- configuration -------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    def local_batch(self, batch: float | None = None) -> float:
        return (batch or self.batch_size) / self.world_size

    def memory_bytes(self, batch: float | None = None) -> float:
        """Device memory each GPU holds for the job at a global batch."""
        return self.workload.memory_bytes(self.local_batch(batch))

    def set_batch_size(self, batch: int) -> tuple[bool, str]:
        """Switch the global batch at the next step; an oversize batch is an OOM event."""
        wl = self.workload
        if not wl.min_batch_size <= batch <= wl.max_batch_size:
            return False, f"batch_size {batch} outside [{wl.min_batch_size}, {wl.max_batch_size}]"
        if self.memory_bytes(batch) > self.memory_total_bytes:
            self.oom_total += 1
            logger.info("simulated job %s: batch %d is out of memory", wl.name, batch)
            return False, f"CUDA out of memory at batch_size {batch}"
        self.batch_size = batch
        return True, ""

    def running(self, t: float) -> bool:
        return t >= self.down_until

    def crash_oom(self, t: float) -> None:
        """The job died of OOM (e.g. a leak); it restarts after ``restart_s`` with memory freed."""
        self.oom_total += 1
        self.down_until = t + self.restart_s
        logger.info("simulated job %s crashed out of memory; restarting", self.workload.name)

    # -- one step of the model -----------------------------------------------------
    def comm_time(self, faults: JobFaults) -> float:
        """Unhidden all-reduce time: ring within the node, then across nodes."""
        n, k = self.gpus, self.nodes
        g = self.workload.gradient_bytes
        t = 0.0
        if n > 1:
            t += 2 * (n - 1) / n * g / (self.intra_bw * faults.intra_bw_factor) + 2 * (n - 1) * 5e-6
        if k > 1:
            rtt = self.base_rtt_s * faults.rtt_factor
            t += 2 * (k - 1) / k * g / (self.inter_bw * faults.inter_bw_factor) + 2 * (k - 1) * rtt
        return t * (1.0 - self.workload.comm_overlap)

    def gpu_phases(self, faults: JobFaults) -> list[tuple[Phase, ...]]:
        """Each rank's step as phases at the highest clocks: compute, memory-bound, all-reduce, host."""
        b = self.local_batch()
        host, sm, mem = self.timing.at(b)
        a = self.timing.power_at(b)
        comm = Phase("communication", self.comm_time(faults), 0.0, 0.0, COMM_POWER_SHARE * a)
        idle = Phase("idle", host, 0.0, 0.0)
        out = []
        for i in range(self.gpus):
            st = faults.straggle.get(i, 1.0)
            out.append((*step_phases(sm * st, mem * st, a), comm, idle))
        return out

    def plan(
        self, phases: list[tuple[Phase, ...]], clocks: list[list[float]], mem_ratio: list[float], faults: JobFaults
    ) -> None:
        """Compute one step's timing for every rank given each phase's SM clock ratio."""
        b = self.local_batch()
        host = self.timing.at(b)[0]
        h2d = self.workload.input_bytes_per_sample * b / self.pcie_bw
        loader = self.workload.loader_sample_s * b * faults.loader_factor
        ready = []
        for i in range(self.gpus):
            pcie = h2d / faults.pcie_gpu.get(i, 1.0)
            m = max(mem_ratio[i], 1e-3)
            sm_i = phase_time(phases[i][0], clocks[i][0], m)
            mem_i = phase_time(phases[i][1], clocks[i][1], m)
            busy = sm_i + mem_i
            r = self.ranks[i]
            r.sm_s, r.mem_s, r.busy_s, r.host_s = sm_i, mem_i, busy, host + pcie
            r.compute_s = busy
            r.data_wait_s = max(0.0, loader - (host + pcie + busy))
            ready.append(host + pcie + busy + r.data_wait_s)
        slowest = max(ready)
        for r, t in zip(self.ranks, ready, strict=True):
            r.sync_wait_s = slowest - t
        self.comm_s = self.comm_time(faults)
        self.step_s = slowest + self.comm_s

    def advance(self, dt: float) -> float:
        """Run ``dt`` seconds of steps as planned; returns the number of steps done."""
        if self.step_s <= 0:
            return 0.0
        steps = dt / self.step_s
        samples = steps * self.batch_size
        eff = self.workload.efficiency(self.batch_size, self.noise_scale)
        need = self.workload.target_epochs * self.workload.dataset_samples
        self.progress += samples * eff / need
        self.samples_total += samples
        self.steps_total += steps
        self.comm_bytes_total += steps * self.workload.gradient_bytes * (self.world_size > 1)
        r0 = self.ranks[0]
        stats = {
            "step_time_s": self.step_s, "compute_time_s": r0.compute_s, "comm_time_s": self.comm_s,
            "data_wait_s": r0.data_wait_s, "samples_per_s": self.batch_size / self.step_s,
            "goodput": self.batch_size / self.step_s * eff, "loss": self.loss(),
        }
        for k, v in stats.items():
            self._acc[k] = self._acc.get(k, 0.0) + v * steps
        self._acc_steps += steps
        return steps

    def loss(self) -> float:
        """Training loss: exponential approach to its final value as progress accrues."""
        wl = self.workload
        base = wl.loss_final + (wl.loss_initial - wl.loss_final) * math.exp(-3.0 * self.progress)
        return base * (1.0 + 0.01 * self._rng.gauss(0.0, 1.0))

    # -- reporting -----------------------------------------------------------------
    def rank_stats(self) -> list[dict[str, float]]:
        """Per-rank compute, data wait and sync wait (slack) of the last step."""
        return [
            {"rank": float(i), "compute_time_s": r.compute_s, "data_wait_s": r.data_wait_s,
             "sync_wait_s": r.sync_wait_s, "host_time_s": r.host_s}
            for i, r in enumerate(self.ranks)
        ]

    def report_stats(self) -> dict[str, Any]:
        """``report.stats`` for rank 0 since the last call (means over steps, counters)."""
        n = self._acc_steps
        out: dict[str, Any] = {k: v / n for k, v in self._acc.items()} if n > 0 else {}
        if n <= 0 and self.step_s > 0:
            out = {"step_time_s": self.step_s, "comm_time_s": self.comm_s}
        eff = self.workload.efficiency(self.batch_size, self.noise_scale)
        out.update({
            "batch_size": float(self.batch_size), "grad_noise_scale": self.noise_scale,
            "samples_total": self.samples_total, "oom_total": float(self.oom_total),
            "comm_bytes_total": self.comm_bytes_total, "comm_bytes_uncompressed_total": self.comm_bytes_total,
            "micro_batch_size": self.local_batch(), "accumulation_steps": 1.0,
            "statistical_efficiency": eff,
        })
        self._acc, self._acc_steps = {}, 0.0
        return out
