"""Equations of one simulated GPU: DVFS power, power-cap clock, thermal and fan response.

These are pure functions shared by the live simulator (:mod:`.physics`) and the
calibration fit (:mod:`.calibrate`), so what is fitted is exactly what runs. Clocks are
expressed as a ratio ``x = f / f_max`` of the GPU's highest SM clock.

Board power while a kernel runs: ``P_busy(x) = P0 + A * g(x)`` with
``g(x) = x * V(x)^2`` (dynamic CMOS power ~ f V^2) and a voltage curve that is flat at
``v_min`` up to a knee and rises linearly to 1 at ``x = 1``. Averaged over a training
step: ``P = P0 + A * g(x) * u`` where ``u`` is the share of the step the GPU is busy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


def dvfs_factor(x: float, p: PowerParams) -> float:
    """g(x) = x * V(x)^2, normalised so that g(1) = 1."""
    rise = max(0.0, (x - p.voltage_knee) / (1.0 - p.voltage_knee))
    v = p.voltage_floor + (1.0 - p.voltage_floor) * rise
    return x * v * v


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
