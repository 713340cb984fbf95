"""Equations of one simulated GPU: phases, DVFS power, power-cap clocks, thermal and fan.

These are pure functions shared by the live simulator (:mod:`.physics`) and the
calibration fits (:mod:`.calibrate`, :mod:`.calibrate_clocks`), so what is fitted is
exactly what runs. Clocks are ratios ``x = f / f_max`` of the GPU's highest SM clock.

A training step is a list of :class:`Phase` (compute, memory-bound, communication, idle),
each with its time at the highest clocks, the share of that time that scales with 1 / SM
clock (up to a saturation clock above which it is bound elsewhere) and with 1 / memory
clock, and its SM and DRAM power. Voltage ``V(x)`` is flat at
``v_min`` up to a knee and rises linearly to 1 at ``x = 1``. Power in a phase:
``static(x) + sm_w V(x)^2 r + dram_w r`` with ``r`` the phase's speed relative to the
highest clocks (work per second), so SM energy per unit of work goes with ``V^2``; static
power is ``base + leakage V(x) + clock_tree x V(x)^2``. The power-cap controller acts on
power averaged over ``cap_window_s``: a phase at least that long gets its own cap clock,
shorter phases share one cap clock set on their time-weighted mean power (padded with idle
power to the window when together they are shorter than it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from gputuned.collectors.sim.state import GPUProfile

#: Effective PCIe bandwidth per direction (bytes/s) of an x16 link by generation.
PCIE_BANDWIDTH = {3: 12.0e9, 4: 24.0e9, 5: 48.0e9}


@dataclass(frozen=True)
class PowerParams:
    """Per-GPU constants of the power model (fitted for calibrated GPUs)."""

    active_idle_w: float  # P0: board power in P0 with no kernel running
    voltage_floor: float  # v_min: V(x)/V(1) below the knee
    voltage_knee: float  # clock ratio where voltage starts to rise
    cap_floor_ratio: float  # lowest clock ratio power capping goes down to
    cap_floor_w: float = 0.0  # lowest busy power the capping loop regulates to (overshoot below it)
    leakage_w: float = 0.0  # part of P0 that goes with V(x) (leakage)
    clock_tree_w: float = 0.0  # part of P0 that goes with x V(x)^2 (clock distribution)
    cap_window_s: float = 0.0  # averaging window of the power-cap controller

    @property
    def base_w(self) -> float:
        """Clock-independent part of P0 (board, fans, DRAM refresh)."""
        return self.active_idle_w - self.leakage_w - self.clock_tree_w

    def as_dict(self) -> dict[str, float]:
        """The constants by field name (calibration.json's form)."""
        return asdict(self)


def default_power_params(profile: GPUProfile) -> PowerParams:
    """Power constants from a profile's optional physics fields (uncalibrated GPUs)."""
    p0 = profile.active_idle_power_w or 2.5 * profile.idle_power_w
    floor_mhz = profile.power_cap_min_clock_mhz or profile.sm_clock_min_mhz
    return PowerParams(
        active_idle_w=p0,
        voltage_floor=profile.voltage_floor_ratio,
        voltage_knee=0.5,
        cap_floor_ratio=floor_mhz / profile.sm_clock_max_mhz,
    )


def voltage(x: float, p: PowerParams) -> float:
    """V(x) / V(1): flat at v_min up to the knee, then linear to 1."""
    rise = max(0.0, (x - p.voltage_knee) / (1.0 - p.voltage_knee))
    return p.voltage_floor + (1.0 - p.voltage_floor) * rise


def dvfs_factor(x: float, p: PowerParams) -> float:
    """g(x) = x * V(x)^2, normalised so that g(1) = 1."""
    v = voltage(x, p)
    return x * v * v


@dataclass(frozen=True)
class Phase:
    """One part of a step: its time at the highest clocks, clock-sensitive shares and powers."""

    name: str
    time_s: float
    sm_share: float = 1.0  # share of the time that scales with 1 / SM clock
    mem_share: float = 0.0  # share of the time that scales with 1 / memory clock
    sm_w: float = 0.0  # SM dynamic power at the highest clocks and voltage
    dram_w: float = 0.0  # DRAM access power at full speed
    sat_ratio: float = 1.0  # SM clock ratio above which the phase is bound elsewhere (no faster)


def phase_time(ph: Phase, x: float, m: float = 1.0) -> float:
    """Seconds the phase takes at SM clock ratio ``x`` and memory clock ratio ``m``."""
    fixed = 1.0 - ph.sm_share - ph.mem_share
    return ph.time_s * (fixed + ph.sm_share / max(min(x, ph.sat_ratio), 1e-3) + ph.mem_share / max(m, 1e-3))


def static_power(x: float, p: PowerParams, mem_scale: float = 1.0) -> float:
    """Power with no kernel running at clock ratio ``x``: base + leakage V + clock tree x V^2."""
    v = voltage(x, p)
    return p.base_w * mem_scale + p.leakage_w * v + p.clock_tree_w * x * v * v


def phase_power(ph: Phase, x: float, p: PowerParams, m: float = 1.0, mem_scale: float = 1.0) -> float:
    """Mean board power (W) during the phase at SM clock ratio ``x``."""
    t = phase_time(ph, x, m)
    r = ph.time_s / t if t > 0 else 0.0
    v = voltage(x, p)
    return static_power(x, p, mem_scale) + ph.sm_w * v * v * r + ph.dram_w * r


def _group_power(group: tuple[Phase, ...], x: float, p: PowerParams, m: float, mem_scale: float) -> float:
    """Mean power the controller sees: the group's phases, padded with idle time to its window."""
    ts = [phase_time(ph, x, m) for ph in group]
    total = sum(ts)
    pad = max(0.0, p.cap_window_s - total)
    if total + pad <= 0:
        return static_power(x, p, mem_scale)
    energy = sum(phase_power(ph, x, p, m, mem_scale) * t for ph, t in zip(group, ts, strict=True))
    return (energy + static_power(x, p, mem_scale) * pad) / (total + pad)


@lru_cache(maxsize=4096)
def _group_cap(
    group: tuple[Phase, ...], limit_w: float, p: PowerParams, hi: float, m: float, mem_scale: float
) -> float:
    limit_w = max(limit_w, p.cap_floor_w)
    if _group_power(group, hi, p, m, mem_scale) <= limit_w:
        return hi
    floor = min(p.cap_floor_ratio, hi)
    if _group_power(group, floor, p, m, mem_scale) >= limit_w:
        return floor
    lo_x, hi_x = floor, hi
    for _ in range(24):
        mid = 0.5 * (lo_x + hi_x)
        if _group_power(group, mid, p, m, mem_scale) <= limit_w:
            lo_x = mid
        else:
            hi_x = mid
    return lo_x


def cap_clocks(
    phases: tuple[Phase, ...], limit_w: float, p: PowerParams, hi: float = 1.0, m: float = 1.0,
    mem_scale: float = 1.0,
) -> list[float]:
    """Clock ratio of each phase under a power limit and a clock ceiling ``hi`` (a lock's top).

    A phase lasting at least the controller's window gets the highest clock whose power fits
    the limit; shorter phases share one clock set on their time-weighted mean power (padded
    with idle power to a window when together they are shorter).
    """
    long_ = [ph.time_s >= p.cap_window_s for ph in phases]
    short = tuple(ph for ph, lg in zip(phases, long_, strict=True) if not lg)
    pooled = _group_cap(short, limit_w, p, hi, m, mem_scale) if short else hi
    return [_group_cap((ph,), limit_w, p, hi, m, mem_scale) if lg else pooled
            for ph, lg in zip(phases, long_, strict=True)]


def step_time_energy(
    phases: tuple[Phase, ...], clocks: list[float], p: PowerParams, m: float = 1.0, mem_scale: float = 1.0
) -> tuple[float, float]:
    """Seconds and joules of one step whose phases run at the given clock ratios."""
    t = e = 0.0
    for ph, x in zip(phases, clocks, strict=True):
        dt = phase_time(ph, x, m)
        t += dt
        e += phase_power(ph, x, p, m, mem_scale) * dt
    return t, e


def dvfs_factor_array(x: np.ndarray, vmin: float, knee: float) -> np.ndarray:
    """Vectorised :func:`dvfs_factor` for the calibration fit."""
    v = vmin + (1.0 - vmin) * np.maximum(0.0, (x - knee) / (1.0 - knee))
    return x * v * v


def cap_clock_ratio(limit_w: float, dynamic_w: float, p: PowerParams, ceiling: float) -> float:
    """Highest clock ratio <= ceiling whose busy power fits the limit (not below the cap floors)."""
    limit_w = max(limit_w, p.cap_floor_w)
    if dynamic_w <= 0 or p.active_idle_w + dynamic_w * dvfs_factor(ceiling, p) <= limit_w:
        return ceiling
    floor = min(p.cap_floor_ratio, ceiling)
    budget = limit_w - p.active_idle_w
    if budget <= 0 or dynamic_w * dvfs_factor(floor, p) >= budget:
        return floor
    lo, hi = floor, ceiling
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if dynamic_w * dvfs_factor(mid, p) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def cap_clock_ratio_array(
    limit_w: np.ndarray, dynamic_w: np.ndarray, p0: float, vmin: float, knee: float, floor: float,
    floor_w: float = 0.0,
) -> np.ndarray:
    """Vectorised :func:`cap_clock_ratio` with ceiling 1 (broadcasts limit against dynamic)."""
    limit_w = np.maximum(limit_w, floor_w)
    xs = np.linspace(0.0, 1.0, 2001)
    gs = dvfs_factor_array(xs, vmin, knee)
    need = (limit_w - p0) / np.maximum(dynamic_w, 1e-9)
    x = np.interp(need, gs, xs, left=0.0, right=1.0)
    return np.clip(x, floor, 1.0)


def snap_clock_mhz(x: float, profile: GPUProfile) -> int:
    """The supported SM clock at or just below ratio ``x`` of the maximum."""
    f = x * profile.sm_clock_max_mhz
    step = profile.sm_clock_step_mhz
    snapped = profile.sm_clock_max_mhz - math.ceil((profile.sm_clock_max_mhz - f) / step - 1e-9) * step
    return int(max(profile.sm_clock_min_mhz, min(profile.sm_clock_max_mhz, snapped)))


def thermal_step(temp_c: float, power_w: float, dt: float, resistance: float, tau_s: float, ambient_c: float) -> float:
    """First-order die temperature: relax towards ambient + R * P with time constant tau."""
    target = ambient_c + resistance * power_w
    return target + (temp_c - target) * math.exp(-dt / tau_s)


def fan_percent(temp_c: float, profile: GPUProfile) -> int:
    """Fan curve: 30 % up to 50 C, rising linearly to 100 % at the SW thermal target."""
    span = max(profile.max_operating_temp_c - 50.0, 1.0)
    return int(round(min(100.0, max(30.0, 30.0 + 70.0 * (temp_c - 50.0) / span))))


def interconnect_bandwidth(profile: GPUProfile) -> float:
    """Bytes/s per direction between GPUs of one node: NVLink where present, else PCIe."""
    if profile.nvlink_links > 0:
        return profile.nvlink_bandwidth_bytes_per_s or profile.nvlink_links * 25.0e9
    return PCIE_BANDWIDTH.get(profile.pcie_gen, 12.0e9)
