"""The tunable GPU settings, each a knob with read, bounds, apply, verify and restore.

Values are JSON-friendly so they go into the state file as they are: the power limit in
milliwatts (int), clock pairs as ``[low, high]`` lists in MHz. NVML has no getter for
locked clocks, so their original is "unlocked" (``None``) and restoring them is a reset;
their read-back is likewise not available and ``verify`` says so by returning ``None``.
"""

from __future__ import annotations

import abc
from typing import Any

from gputuned.collectors.device import GPUDevice, GPUError, NotSupportedError

Value = Any  # int (mW) or [int, int] (MHz) or None
Bounds = tuple[int, int]


def _intersect(nvml: Bounds, cfg_lo: float, cfg_hi: float) -> Bounds:
    lo, hi = nvml
    if cfg_lo > 0:
        lo = max(lo, int(cfg_lo))
    if cfg_hi > 0:
        hi = min(hi, int(cfg_hi))
    return lo, hi


class Knob(abc.ABC):
    """One setting of one GPU that the actuator may change and must be able to restore."""

    name: str = ""

    @abc.abstractmethod
    def read(self, dev: GPUDevice) -> Value:
        """The current value (``None`` where NVML cannot read it)."""

    @abc.abstractmethod
    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        """NVML's allowed range intersected with the config's, in the knob's units."""

    @abc.abstractmethod
    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        """Why ``value`` is refused, or None when it is within bounds."""

    @abc.abstractmethod
    def apply(self, dev: GPUDevice, value: Value) -> None: ...

    def verify(self, dev: GPUDevice, value: Value) -> bool | None:
        """Read back: True when the GPU reports ``value``, None when it cannot be read."""
        current = self.read(dev)
        if current is None:
            return None
        return bool(current == value)

    @abc.abstractmethod
    def restore(self, dev: GPUDevice, original: Value) -> None:
        """Put the recorded original back."""


class PowerLimitKnob(Knob):
    name = "power_limit"

    def read(self, dev: GPUDevice) -> Value:
        # The management limit is what a set call changes and restore must put back; the
        # enforced limit can be lower (an out-of-band cap).
        return int(round(dev.power_management_limit_w() * 1000))

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        c = dev.power_limit_constraints()
        return _intersect((c.min_mw, c.max_mw), cfg.power_limit_min_w * 1000, cfg.power_limit_max_w * 1000)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        lo, hi = self.bounds(dev, cfg)
        if lo > hi:
            return f"no power limit allowed: config range does not meet NVML's {lo / 1000:g}-{hi / 1000:g} W"
        if not lo <= value <= hi:
            return f"power limit {value / 1000:g} W outside {lo / 1000:g}-{hi / 1000:g} W"
        return None

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_power_limit_mw(int(value))

    def verify(self, dev: GPUDevice, value: Value) -> bool | None:
        # NVML may round the limit to whole watts.
        return abs(self.read(dev) - int(value)) < 1000

    def restore(self, dev: GPUDevice, original: Value) -> None:
        if original is None:
            original = dev.power_limit_constraints().default_mw
        dev.set_power_limit_mw(int(original))


class _ClockRangeKnob(Knob):
    """A locked clock range [min, max] in MHz; original is "unlocked"."""

    cfg_prefix = ""

    @abc.abstractmethod
    def _supported(self, dev: GPUDevice) -> list[int]: ...

    def read(self, dev: GPUDevice) -> Value:
        return None

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        clocks = self._supported(dev)
        lo = getattr(cfg, f"{self.cfg_prefix}_min_mhz")
        hi = getattr(cfg, f"{self.cfg_prefix}_max_mhz")
        return _intersect((min(clocks), max(clocks)), lo, hi)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        lo_v, hi_v = int(value[0]), int(value[1])
        if lo_v > hi_v:
            return f"{self.name}: min {lo_v} MHz above max {hi_v} MHz"
        lo, hi = self.bounds(dev, cfg)
        if not (lo <= lo_v and hi_v <= hi):
            return f"{self.name} {lo_v}-{hi_v} MHz outside {lo}-{hi} MHz"
        return None


class LockedSMClocksKnob(_ClockRangeKnob):
    name = "locked_sm_clocks"
    cfg_prefix = "sm_clock"

    def _supported(self, dev: GPUDevice) -> list[int]:
        return dev.supported_sm_clocks_mhz()

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_locked_sm_clocks_mhz(int(value[0]), int(value[1]))

    def restore(self, dev: GPUDevice, original: Value) -> None:
        if original is None:
            dev.reset_locked_sm_clocks()
        else:
            dev.set_locked_sm_clocks_mhz(int(original[0]), int(original[1]))


class LockedMemoryClocksKnob(_ClockRangeKnob):
    name = "locked_memory_clocks"
    cfg_prefix = "memory_clock"

    def _supported(self, dev: GPUDevice) -> list[int]:
        return dev.supported_memory_clocks_mhz()

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_locked_memory_clocks_mhz(int(value[0]), int(value[1]))

    def restore(self, dev: GPUDevice, original: Value) -> None:
        if original is None:
            dev.reset_locked_memory_clocks()
        else:
            dev.set_locked_memory_clocks_mhz(int(original[0]), int(original[1]))


class ApplicationsClocksKnob(Knob):
    """Application clocks ``[memory, graphics]`` in MHz; both must be supported clocks."""

    name = "applications_clocks"

    def read(self, dev: GPUDevice) -> Value:
        try:
            mem, gfx = dev.applications_clocks_mhz()
        except NotSupportedError:
            return None
        return [int(mem), int(gfx)]

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        return _intersect((min(dev.supported_sm_clocks_mhz()), max(dev.supported_sm_clocks_mhz())),
                          cfg.sm_clock_min_mhz, cfg.sm_clock_max_mhz)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        mem, gfx = int(value[0]), int(value[1])
        mems = dev.supported_memory_clocks_mhz()
        if mem not in mems:
            return f"applications_clocks: memory {mem} MHz not a supported clock {sorted(mems)}"
        mlo, mhi = _intersect((min(mems), max(mems)), cfg.memory_clock_min_mhz, cfg.memory_clock_max_mhz)
        if not mlo <= mem <= mhi:
            return f"applications_clocks: memory {mem} MHz outside {mlo}-{mhi} MHz"
        if gfx not in dev.supported_sm_clocks_mhz():
            return f"applications_clocks: graphics {gfx} MHz not a supported clock"
        lo, hi = self.bounds(dev, cfg)
        if not lo <= gfx <= hi:
            return f"applications_clocks: graphics {gfx} MHz outside {lo}-{hi} MHz"
        return None

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_applications_clocks_mhz(int(value[0]), int(value[1]))

    def restore(self, dev: GPUDevice, original: Value) -> None:
        if original is None:
            dev.reset_applications_clocks()
        else:
            dev.set_applications_clocks_mhz(int(original[0]), int(original[1]))


KNOBS: dict[str, Knob] = {k.name: k for k in (PowerLimitKnob(), LockedSMClocksKnob(), LockedMemoryClocksKnob(), ApplicationsClocksKnob())}

#: Restore order: unlock clocks first, then application clocks, then the power limit.
RESTORE_ORDER = ("locked_sm_clocks", "locked_memory_clocks", "applications_clocks", "power_limit")


def read_originals(dev: GPUDevice) -> dict[str, Value]:
    """Every knob's current value, ``None`` where it cannot be read."""
    out: dict[str, Value] = {}
    for name, knob in KNOBS.items():
        try:
            out[name] = knob.read(dev)
        except GPUError:
            out[name] = None
    return out
