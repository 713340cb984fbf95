"""The physics backend of the simulated NVML: a GPU node stepped on a clock.

``sync()`` advances the model from its last time to ``clock.now()`` in fixed steps and
writes every :class:`SimDevice` reading in NVML units. Per step and GPU: the SM clock
ceiling (locked or application clocks, thermal slowdown, power brake, a stuck clock),
then power capping per phase of the job's step (:func:`.gpu_model.cap_clocks`;
SW_POWER_CAP when it binds), then the training job's step on those clocks, then board
power (the step's energy over its time), energy (its exact integral), temperature (first order), fan,
memory, PCIe/NVLink traffic, ECC and violation counters. See docs/simulator.md.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

from gputuned.collectors.device import ClockEventReason as R
from gputuned.collectors.sim.gpu_model import (
    Phase,
    PowerParams,
    cap_clocks,
    fan_percent,
    phase_power,
    snap_clock_mhz,
    static_power,
    thermal_step,
)
from gputuned.collectors.sim.job import JobFaults, SimJob
from gputuned.collectors.sim.scenarios import Scenario
from gputuned.collectors.sim.state import Clock, SimDevice

logger = logging.getLogger(__name__)

XID_ROW_REMAP = 63
XID_DBE = 48
#: SW thermal controller: clock ratio removed per second per degree over target, and regained
#: per second once a degree below it.
THERMAL_GAIN = 0.004
THERMAL_RECOVERY = 0.01


class _GPUFaults:
    __slots__ = ("resistance", "brake", "stuck", "leak_rate", "ecc_rate")

    def __init__(self) -> None:
        self.resistance = 1.0
        self.brake = 0.0
        self.stuck = 0.0
        self.leak_rate = 0.0
        self.ecc_rate = 0.0


class PhysicsBackend:
    """A simulated GPU node whose readings follow the physics model (see module doc)."""

    def __init__(
        self, devices: list[SimDevice], clock: Clock, power: list[PowerParams], *,
        job: SimJob | None = None, scenario: Scenario | None = None, step_s: float = 1.0,
        privileged: bool = True, driver_version: str = "550.54.15", seed: int = 0,
        peers: list[str] | None = None,
    ) -> None:
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self.devices = devices
        self.driver_version = driver_version
        self.clock = clock
        self.power = power
        self.job = job
        self.scenario = scenario
        self.step_s = step_s
        self._privileged = privileged
        self._rng = random.Random(seed)
        n = len(devices)
        self.temp_c = [d.profile.ambient_c + 5.0 for d in devices]
        self.thermal_cap = [1.0] * n  # SW thermal clock ceiling, ratio of the maximum
        self.energy_j = [0.0] * n
        self._viol_power_s = [0.0] * n
        self._viol_thermal_s = [0.0] * n
        self._nvlink_bytes = [0.0] * n
        self._ecc = [0.0] * n
        self._ecc_dbe = [0.0] * n
        self.leak_bytes = [0.0] * n
        self._t: float | None = None
        self._lock = threading.RLock()
        self.labels_path: Path | None = None  # where build_sim_node wrote the scenario labels
        self.job_faults = JobFaults()
        self.peers = peers if peers is not None else [f"node-{i}" for i in range(1, max(2, job.nodes if job else 2))]
        self.base_rtt_s = job.base_rtt_s if job else 5.0e-5

    # -- SimBackend ----------------------------------------------------------------
    def is_privileged(self) -> bool:
        return self._privileged

    @property
    def time_s(self) -> float:
        """Model time of the last step (seconds since the node started)."""
        return self._t or 0.0

    def sync(self) -> None:
        with self._lock:  # the collector thread and a simulated-trainer thread may both sync
            now = self.clock.now()
            if self._t is None:
                self._t = now
                self._step(0.0)
                return
            while now - self._t >= self.step_s - 1e-9:
                self._step(self.step_s)
                self._t += self.step_s

    def peer_rtt_s(self) -> dict[str, float]:
        """Simulated TCP round-trip time to each peer node (what a peer collector would measure)."""
        self.sync()
        base = self.base_rtt_s * self.job_faults.rtt_factor
        return {p: base * (1.0 + 0.05 * self._rng.random()) for p in self.peers}

    # -- model -----------------------------------------------------------------------
    def _apply_scenario(self, t: float) -> list[_GPUFaults]:
        gf = [_GPUFaults() for _ in self.devices]
        jf = JobFaults()
        n = len(self.devices)
        for e in self.scenario.events if self.scenario else ():
            s = e.strength(t)
            if s <= 0:
                continue
            k = e.kind
            if k == "nic_degradation":
                jf.rtt_factor *= 1.0 + s
                jf.inter_bw_factor /= 1.0 + s
            elif k == "dataloader_stall":
                jf.loader_factor *= 1.0 + s
            elif k == "pcie_bandwidth_loss":
                for i in e.targets(n):
                    jf.pcie_gpu[i] = jf.pcie_gpu.get(i, 1.0) * max(1.0 - s, 0.01)
                if not any(d.profile.nvlink_links for d in self.devices):  # the ring runs over PCIe
                    jf.intra_bw_factor *= max(1.0 - s, 0.01)
            elif k == "nvlink_bandwidth_loss":
                jf.intra_bw_factor *= max(1.0 - s, 0.01)
            for i in e.targets(n):
                g = gf[i]
                if k == "cooling_loss":
                    g.resistance *= 1.0 + s
                elif k == "power_brake":
                    g.brake = max(g.brake, min(s, 1.0))
                elif k == "clock_stuck_low":
                    g.stuck = max(g.stuck, min(s, 1.0))
                elif k == "memory_leak":
                    g.leak_rate += s
                elif k == "ecc_storm":
                    g.ecc_rate += s
                elif k == "straggler":
                    jf.straggle[i] = jf.straggle.get(i, 1.0) * (1.0 + s)
        self.job_faults = jf
        return gf

    def _ceiling(self, i: int, dev: SimDevice, gf: _GPUFaults, busy: bool, dt: float) -> tuple[float, int]:
        """SM clock ceiling (ratio) and its clock-event reason bits for one GPU this step."""
        p = dev.profile
        fmax, fmin = p.sm_clock_max_mhz, p.sm_clock_min_mhz
        reasons = 0
        ceiling = float(fmax)
        if dev.locked_sm_clocks_mhz is not None:
            ceiling = min(ceiling, dev.locked_sm_clocks_mhz[1])
        if dev.applications_clocks_mhz is not None and dev.applications_clocks_mhz[1] < ceiling:
            ceiling = dev.applications_clocks_mhz[1]
            reasons |= R.APPLICATIONS_CLOCKS_SETTING
        if gf.stuck > 0:
            ceiling = min(ceiling, fmax - gf.stuck * (fmax - fmin))
        if gf.brake > 0:
            ceiling = min(ceiling, fmax - gf.brake * (fmax - fmin))
            reasons |= R.HW_SLOWDOWN | R.HW_POWER_BRAKE_SLOWDOWN
        temp = self.temp_c[i]
        over = temp - p.max_operating_temp_c
        cap = self.thermal_cap[i]
        if over > 0 and dt > 0:  # SW thermal controller: integral action from the current clock
            cap = min(cap, dev.sm_clock_mhz / fmax) - THERMAL_GAIN * over * dt
        elif over < -1.0 and dt > 0:
            cap += THERMAL_RECOVERY * dt
        cap = min(1.0, max(cap, fmin / fmax))
        self.thermal_cap[i] = cap
        thermal_binding = cap * fmax < ceiling
        if thermal_binding:
            ceiling = cap * fmax
        if over > 0 or (thermal_binding and busy):
            reasons |= R.SW_THERMAL_SLOWDOWN
        if temp >= p.slowdown_temp_c:  # hardware slowdown halves the clock
            ceiling = min(ceiling, max(fmin, 0.5 * ceiling))
            reasons |= R.HW_SLOWDOWN | R.HW_THERMAL_SLOWDOWN
        return max(ceiling, fmin) / fmax, reasons

    def _phase_clocks(self, i: int, dev: SimDevice, phases: tuple[Phase, ...], x_ceiling: float,
                      mem_ratio: float) -> tuple[list[float], bool]:
        """Each phase's SM clock ratio under the power limit (snapped), and whether the cap bound."""
        p = dev.profile
        xs = cap_clocks(phases, dev.power_limit_mw / 1000.0, self.power[i], x_ceiling, mem_ratio,
                        0.85 + 0.15 * mem_ratio)
        capped = any(x < x_ceiling - 1e-6 for x, ph in zip(xs, phases, strict=True) if ph.time_s > 0)
        return [snap_clock_mhz(x, p) / p.sm_clock_max_mhz for x in xs], capped

    def _memory_clock(self, dev: SimDevice) -> int:
        clocks = dev.profile.memory_clocks_mhz
        if dev.locked_memory_clocks_mhz is not None:
            return max(c for c in clocks if c <= dev.locked_memory_clocks_mhz[1]) if any(
                c <= dev.locked_memory_clocks_mhz[1] for c in clocks) else min(clocks)
        if dev.applications_clocks_mhz is not None:
            return dev.applications_clocks_mhz[0]
        return max(clocks)

    def _step(self, dt: float) -> None:
        t = self.time_s
        gfs = self._apply_scenario(t)
        job = self.job
        active = job is not None and job.running(t)
        phases = job.gpu_phases(self.job_faults) if (job is not None and active) else None
        clocks, mem_ratios, reasons = [], [], []
        for i, dev in enumerate(self.devices):
            x_ceil, bits = self._ceiling(i, dev, gfs[i], phases is not None, dt)
            mem = self._memory_clock(dev)
            dev.memory_clock_mhz = mem
            mem_ratios.append(mem / max(dev.profile.memory_clocks_mhz))
            if phases is None:  # idle: lowest clock allowed
                lo = dev.locked_sm_clocks_mhz[0] if dev.locked_sm_clocks_mhz else dev.profile.sm_clock_min_mhz
                clocks.append([min(lo / dev.profile.sm_clock_max_mhz, x_ceil)])
                bits |= R.GPU_IDLE
            else:
                xs, capped = self._phase_clocks(i, dev, phases[i], x_ceil, mem_ratios[-1])
                clocks.append(xs)
                bits |= R.SW_POWER_CAP if capped else 0
            reasons.append(bits)
        if job is not None and phases is not None:
            job.plan(phases, clocks, mem_ratios, self.job_faults)
            job.advance(dt)
        for i, dev in enumerate(self.devices):
            self._finish_gpu(i, dev, gfs[i], clocks[i], phases[i] if phases else None, reasons[i], dt, t)
        n = len(self.devices)
        if job is not None and phases is not None and any(
            self.devices[i].memory_used_bytes >= self.devices[i].profile.memory_total_bytes for i in range(n)
        ):
            job.crash_oom(t)
            self.leak_bytes = [0.0] * n

    def _step_power(self, i: int, dev: SimDevice, xs: list[float], phases: tuple[Phase, ...]) -> float:
        """Mean board power over the job's step: its phases, then idle (host, waits) at the top clock."""
        job, pp = self.job, self.power[i]
        assert job is not None
        r = job.ranks[i]
        m = dev.memory_clock_mhz / max(dev.profile.memory_clocks_mhz)
        ms = 0.85 + 0.15 * m
        step = max(job.step_s, 1e-9)
        comm = job.comm_s if job.world_size > 1 else 0.0
        energy = (phase_power(phases[0], xs[0], pp, m, ms) * r.sm_s + phase_power(phases[1], xs[1], pp, m, ms) * r.mem_s
                  + phase_power(phases[2], xs[2], pp, m, ms) * comm)
        idle_s = max(0.0, step - r.busy_s - comm)
        return (energy + static_power(max(xs), pp, ms) * idle_s) / step

    def _finish_gpu(
        self, i: int, dev: SimDevice, gf: _GPUFaults, xs: list[float], phases: tuple[Phase, ...] | None, bits: int,
        dt: float, t: float,
    ) -> None:
        p, job = dev.profile, self.job
        if job is not None and phases is not None:
            r = job.ranks[i]
            step = max(job.step_s, 1e-9)
            u_busy = min(1.0, r.busy_s / step)
            u_comm = min(1.0 - u_busy, job.comm_s / step) if job.world_size > 1 else 0.0
            power = self._step_power(i, dev, xs, phases)
            x = xs[0] if r.sm_s >= r.mem_s else xs[1]  # the clock of the phase that runs longest
            util = min(100, round(100 * (u_busy + u_comm)))
            dev.util_mem_pct = min(100, round(100 * ((r.busy_s - r.sm_s) / step + 0.5 * u_comm)))
            self.leak_bytes[i] += gf.leak_rate * dt
            dev.memory_used_bytes = int(job.memory_bytes() + self.leak_bytes[i])
            local = job.local_batch()
            rx = job.workload.input_bytes_per_sample * local / step
            comm_bytes = 2.0 * job.workload.gradient_bytes * (job.gpus - 1) / max(job.gpus, 1)
            over_pcie = comm_bytes / step if p.nvlink_links == 0 else 0.0
            dev.pcie_rx_kbps = int((rx + over_pcie) / 1000.0)
            dev.pcie_tx_kbps = int((0.02 * rx + over_pcie) / 1000.0)
            if p.nvlink_links and job.gpus > 1:
                self._nvlink_bytes[i] += comm_bytes / step * dt
            dev.pstate = 0
        else:
            power = p.idle_power_w
            x = xs[0]
            util = 0
            dev.util_mem_pct = 0
            dev.memory_used_bytes = 0
            dev.pcie_rx_kbps = dev.pcie_tx_kbps = 0
            dev.pstate = 8
        dev.sm_clock_mhz = dev.graphics_clock_mhz = int(round(x * p.sm_clock_max_mhz))
        dev.util_gpu_pct = int(util)
        dev.power_mw = int(round(power * 1000.0))
        self.energy_j[i] += dev.power_mw / 1000.0 * dt
        dev.energy_mj = int(self.energy_j[i] * 1000.0)
        if bits & R.SW_POWER_CAP:
            self._viol_power_s[i] += dt
        if bits & (R.SW_THERMAL_SLOWDOWN | R.HW_THERMAL_SLOWDOWN):
            self._viol_thermal_s[i] += dt
        dev.power_violation_ns = int(self._viol_power_s[i] * 1e9)
        dev.thermal_violation_ns = int(self._viol_thermal_s[i] * 1e9)
        dev.clock_event_reasons = int(bits)
        if dt > 0:
            self.temp_c[i] = thermal_step(self.temp_c[i], power, dt, p.thermal_resistance_c_per_w * gf.resistance,
                                          p.thermal_time_constant_s, p.ambient_c)
        dev.temperature_c = int(round(self.temp_c[i]))
        dev.memory_temperature_c = int(round(self.temp_c[i] + 4.0))
        dev.fan_pct = fan_percent(self.temp_c[i], p)
        dev.nvlink_tx_kib = dev.nvlink_rx_kib = int(self._nvlink_bytes[i] / 1024.0)
        if gf.ecc_rate > 0 and dt > 0:
            self._ecc_storm(dev, i, gf.ecc_rate * dt)

    def _ecc_storm(self, dev: SimDevice, i: int, new_errors: float) -> None:
        before = int(self._ecc[i])
        self._ecc[i] += new_errors
        self._ecc_dbe[i] += new_errors / 1000.0
        dev.ecc_corrected = int(self._ecc[i])
        remaps = dev.ecc_corrected // 100 - before // 100
        if remaps > 0:
            dev.remapped_correctable += remaps
            dev.remap_pending = 1
            dev.pending_xids.append(XID_ROW_REMAP)
        dbe = int(self._ecc_dbe[i])
        if dbe > dev.ecc_uncorrected:
            dev.remapped_uncorrectable += dbe - dev.ecc_uncorrected
            dev.ecc_uncorrected = dbe
            dev.pending_xids.append(XID_DBE)
