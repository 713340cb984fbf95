"""Application clocks of a GPU, ``[memory, graphics]`` MHz; both must be supported clocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gputuned.collectors.device import GPUDevice, NotSupportedError
from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import CliOption, Value, intersect, parse_pair
from gputuned.daemon.actuation.knobs.clock_range import (
    ClockKnob,
    DeviceCalls,
    MemoryClockConfig,
    SMClockConfig,
)
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_applications_clocks_hertz", "gauge",
                 "Application clocks gputuned set on a GPU, by clock (memory, graphics), while changed.")


def _clock_pair(read: Callable[[], tuple[int, int]]) -> Value:
    """``[memory, graphics]`` MHz as ``read`` reports them; None where the GPU does not support them."""
    try:
        mem, gfx = read()
    except NotSupportedError:
        return None
    return [int(mem), int(gfx)]


class ApplicationsClocksConfig(SMClockConfig, MemoryClockConfig):
    """Application clocks obey both the SM (graphics) and the memory clock bounds."""


@register
class ApplicationsClocksKnob(ClockKnob):
    name = "applications_clocks"
    config_model = ApplicationsClocksConfig
    restore_rank = 30
    parts = ("memory", "graphics")
    part_label = "clock"
    label = "app clocks"
    display = "mem {0} / gfx {1} MHz"
    family = FAMILY
    cli = CliOption("--app-clocks", "MEM:GFX", "application clocks (MHz)", parse_pair)
    calls = DeviceCalls("supported_sm_clocks_mhz", "set_applications_clocks_mhz", "reset_applications_clocks")
    cfg_prefix = "sm_clock"  # bounds() are the graphics clock's: supported SM clocks within the SM keys

    def read(self, dev: GPUDevice) -> Value:
        return _clock_pair(dev.applications_clocks_mhz)

    def default(self, dev: GPUDevice) -> Value:
        return _clock_pair(dev.default_applications_clocks_mhz)

    def restore(self, dev: GPUDevice, original: Value) -> None:
        """An original equal to the driver's default is restored by a reset (the unset state), others applied."""
        if original is None or list(original) == self.default(dev):
            self.reset(dev)
        else:
            self.apply(dev, original)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        mem, gfx = int(value[0]), int(value[1])
        mems = dev.supported_memory_clocks_mhz()
        if mem not in mems:
            return f"applications_clocks: memory {mem} MHz not a supported clock {sorted(mems)}"
        mlo, mhi = intersect((min(mems), max(mems)), cfg.memory_clock_min_mhz, cfg.memory_clock_max_mhz)
        if not mlo <= mem <= mhi:
            return f"applications_clocks: memory {mem} MHz outside {mlo}-{mhi} MHz"
        valid = dev.supported_graphics_clocks_mhz(mem)  # the pair: graphics clocks listed for this memory clock
        if gfx not in valid:
            span = f"{min(valid)}-{max(valid)} MHz" if valid else "none"
            return f"applications_clocks: graphics {gfx} MHz is not a supported clock with memory {mem} MHz ({span})"
        lo, hi = self.bounds(dev, cfg)
        if not lo <= gfx <= hi:
            return f"applications_clocks: graphics {gfx} MHz outside {lo}-{hi} MHz"
        return None
