"""Locked memory clocks of a GPU, [min, max] MHz; restoring an unlocked original resets them."""

from __future__ import annotations

from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import CliOption, parse_pair
from gputuned.daemon.actuation.knobs.clock_range import (
    ClockRangeKnob,
    DeviceCalls,
    MemoryClockConfig,
)
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_locked_memory_clocks_hertz", "gauge",
                 "Memory clock lock gputuned set on a GPU, by bound (min, max), while changed.")


@register
class LockedMemoryClocksKnob(ClockRangeKnob):
    name = "locked_memory_clocks"
    calls = DeviceCalls("supported_memory_clocks_mhz", "set_locked_memory_clocks_mhz", "reset_locked_memory_clocks")
    cfg_prefix = "memory_clock"
    config_model = MemoryClockConfig
    restore_rank = 20
    clock = "memory_clock_hz"
    label = "locked mem clocks"
    family = FAMILY
    cli = CliOption("--memory-clocks", "MIN:MAX", "lock memory clocks (MHz)", parse_pair)
