"""What the clock knobs share: a [min, max] lock in MHz within supported clocks and config bounds."""

from __future__ import annotations

import abc
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gputuned.collectors.device import GPUDevice
from gputuned.daemon.actuation.knobs.base import Bounds, Knob, Value, intersect


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


class ClockRangeKnob(Knob):
    """A locked clock range [min, max] in MHz; NVML cannot read it, so the original is "unlocked"."""

    cfg_prefix = ""
    raw_unit = "MHz"
    parts = ("min", "max")
    part_label = "bound"
    display = "{0}-{1} MHz"
    base_scale = 1e6
    restore_rank = 10

    @abc.abstractmethod
    def _supported(self, dev: GPUDevice) -> list[int]: ...

    def read(self, dev: GPUDevice) -> Value:
        return None

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        clocks = self._supported(dev)
        lo = getattr(cfg, f"{self.cfg_prefix}_min_mhz")
        hi = getattr(cfg, f"{self.cfg_prefix}_max_mhz")
        return intersect((min(clocks), max(clocks)), lo, hi)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        lo_v, hi_v = int(value[0]), int(value[1])
        if lo_v > hi_v:
            return f"{self.name}: min {lo_v} MHz above max {hi_v} MHz"
        lo, hi = self.bounds(dev, cfg)
        if not (lo <= lo_v and hi_v <= hi):
            return f"{self.name} {lo_v}-{hi_v} MHz outside {lo}-{hi} MHz"
        return None
