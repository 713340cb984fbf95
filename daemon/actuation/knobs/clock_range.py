"""What the clock knobs share: a pair of clocks in MHz, set by one device call and reset by another.

A clock knob declares data, not methods: the :class:`DeviceCalls` it makes on the GPU, the
config keys that bound it (``<cfg_prefix>_min_mhz``, ``<cfg_prefix>_max_mhz``), and its
display. :class:`ClockRangeKnob` is a locked [min, max] range, verified from the clock it
bounds (:mod:`.lock_check`); :class:`LockedClocksKnob` is that of one clock domain, whose
name gives its NVML calls, keys and option; the application clocks knob adds its own reading
and checks. A GPU whose NVML cannot set a knob (NOT_SUPPORTED) cannot hold it either: its reset
is a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gputuned.collectors.device import GPUDevice, NotSupportedError
from gputuned.daemon.actuation.knobs.base import (
    Bounds,
    CliOption,
    Knob,
    Value,
    intersect,
    parse_pair,
)
from gputuned.daemon.actuation.knobs.lock_check import LockReading, LockState, read_lock

logger = logging.getLogger(__name__)


class SMClockConfig(BaseModel):
    """Bounds for locked SM clocks and application graphics clocks (0: NVML's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sm_clock_min_mhz: int = Field(0, ge=0)
    sm_clock_max_mhz: int = Field(0, ge=0)


class MemoryClockConfig(BaseModel):
    """Bounds for locked memory clocks and application memory clocks (0: NVML's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_clock_min_mhz: int = Field(0, ge=0)
    memory_clock_max_mhz: int = Field(0, ge=0)


@dataclass(frozen=True)
class DeviceCalls:
    """The :class:`GPUDevice` methods a clock knob calls, by name."""

    supported: str  # () -> the supported clocks in MHz, the range its bounds start from
    set: str  # (a_mhz, b_mhz) -> None
    reset: str  # () -> None: back to the driver's default


class ClockKnob(Knob):
    """A pair of clocks in MHz that :attr:`calls` set and reset, bounded by the ``cfg_prefix`` keys."""

    calls: ClassVar[DeviceCalls]
    cfg_prefix: ClassVar[str] = ""
    raw_unit = "MHz"
    base_scale = 1e6

    def supported(self, dev: GPUDevice) -> list[int]:
        """The clocks the device supports for this knob's bounds, in MHz."""
        return list(getattr(dev, self.calls.supported)())

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        clocks = self.supported(dev)
        lo = getattr(cfg, f"{self.cfg_prefix}_min_mhz")
        hi = getattr(cfg, f"{self.cfg_prefix}_max_mhz")
        return intersect((min(clocks), max(clocks)), lo, hi)

    def apply(self, dev: GPUDevice, value: Value) -> None:
        getattr(dev, self.calls.set)(int(value[0]), int(value[1]))

    def reset(self, dev: GPUDevice) -> None:
        try:
            getattr(dev, self.calls.reset)()
        except NotSupportedError as e:  # never settable here, so never changed: the default is in place
            logger.debug("%s: nothing to reset on a GPU that does not support it (%s)", self.name, e)


class ClockRangeKnob(ClockKnob):
    """A locked clock range [min, max] in MHz; NVML cannot read it, so the original is "unlocked".

    Verification reads the clock the lock bounds (:attr:`clock`) and the clock-event reasons.
    """

    parts = ("min", "max")
    part_label = "bound"
    display = "{0}-{1} MHz"
    restore_rank = 10
    clock: ClassVar[str] = "sm_clock_hz"  # the GPUDevice reading (Hz) the lock bounds

    def read(self, dev: GPUDevice) -> Value:
        return None

    def reading(self, dev: GPUDevice, value: Value) -> LockReading:
        """The lock ``value`` judged now from the clock and its reasons (call it under load, after settling)."""
        return read_lock(dev, self.clock, int(value[0]), int(value[1]))

    def verify(self, dev: GPUDevice, value: Value) -> bool | None:
        return self.verify_detail(dev, value)[0]

    def verify_detail(self, dev: GPUDevice, value: Value) -> tuple[bool | None, str]:
        """Right after setting: held (True); or unconfirmed (None) with why: idle, not settled, or masked.

        A clock below the lock under ``sw_power_cap`` already shows that the power limit cannot
        sustain the lock at this load (a higher ceiling does not lift a binding cap): the lock is
        set, and reported "masked by the power limit" with a warning.
        """
        r = self.reading(dev, value)
        if r.state is LockState.HELD:
            return True, ""
        if r.state is LockState.IDLE:
            return None, "applied; not confirmed: the GPU is idle, and a lock shows only under load"
        if r.state in (LockState.MASKED_BY_POWER_LIMIT, LockState.MASKED_BY_SLOWDOWN):
            logger.warning("gpu %d %s: %s", dev.identity.index, self.name, r.text())
            return None, f"applied, but {r.text()}"
        return None, f"applied; not confirmed yet: {r.text()}"

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        lo_v, hi_v = int(value[0]), int(value[1])
        if lo_v > hi_v:
            return f"{self.name}: min {lo_v} MHz above max {hi_v} MHz"
        lo, hi = self.bounds(dev, cfg)
        if not (lo <= lo_v and hi_v <= hi):
            return f"{self.name} {lo_v}-{hi_v} MHz outside {lo}-{hi} MHz"
        return None


class LockedClocksKnob(ClockRangeKnob):
    """The locked [min, max] range of one clock domain; a subclass sets :attr:`domain` and :attr:`title`.

    ``domain = "sm"`` gives the knob ``locked_sm_clocks``: NVML calls ``supported_sm_clocks_mhz``,
    ``set_locked_sm_clocks_mhz`` and ``reset_locked_sm_clocks``, config keys
    ``sm_clock_{min,max}_mhz``, verification from ``sm_clock_hz`` and the option ``--sm-clocks``.
    """

    domain: ClassVar[str] = ""  # "sm" or "memory": the NVML and config names of the clock
    title: ClassVar[str] = ""  # how help text names the clock ("SM", "memory")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        d = cls.domain
        cls.name = f"locked_{d}_clocks"
        cls.calls = DeviceCalls(f"supported_{d}_clocks_mhz", f"set_locked_{d}_clocks_mhz", f"reset_locked_{d}_clocks")
        cls.cfg_prefix = f"{d}_clock"
        cls.clock = f"{d}_clock_hz"
        cls.cli = CliOption(f"--{d}-clocks", "MIN:MAX", f"lock {cls.title} clocks (MHz)", parse_pair)
