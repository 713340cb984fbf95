"""Application clocks of a GPU, ``[memory, graphics]`` MHz; both must be supported clocks."""

from __future__ import annotations

from typing import Any

from gputuned.collectors.device import GPUDevice, NotSupportedError
from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import (
    Bounds,
    CliOption,
    Knob,
    Value,
    intersect,
    parse_pair,
)
from gputuned.daemon.actuation.knobs.clock_range import MemoryClockConfig, SMClockConfig
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_applications_clocks_hertz", "gauge",
                 "Application clocks gputuned set on a GPU, by clock (memory, graphics), while changed.")


class ApplicationsClocksConfig(SMClockConfig, MemoryClockConfig):
    """Application clocks obey both the SM (graphics) and the memory clock bounds."""


@register
class ApplicationsClocksKnob(Knob):
    name = "applications_clocks"
    config_model = ApplicationsClocksConfig
    restore_rank = 30
    raw_unit = "MHz"
    parts = ("memory", "graphics")
    part_label = "clock"
    label = "app clocks"
    display = "mem {0} / gfx {1} MHz"
    family = FAMILY
    base_scale = 1e6
    cli = CliOption("--app-clocks", "MEM:GFX", "application clocks (MHz)", parse_pair)

    def read(self, dev: GPUDevice) -> Value:
        try:
            mem, gfx = dev.applications_clocks_mhz()
        except NotSupportedError:
            return None
        return [int(mem), int(gfx)]

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        return intersect((min(dev.supported_sm_clocks_mhz()), max(dev.supported_sm_clocks_mhz())),
                         cfg.sm_clock_min_mhz, cfg.sm_clock_max_mhz)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        mem, gfx = int(value[0]), int(value[1])
        mems = dev.supported_memory_clocks_mhz()
        if mem not in mems:
            return f"applications_clocks: memory {mem} MHz not a supported clock {sorted(mems)}"
        mlo, mhi = intersect((min(mems), max(mems)), cfg.memory_clock_min_mhz, cfg.memory_clock_max_mhz)
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
