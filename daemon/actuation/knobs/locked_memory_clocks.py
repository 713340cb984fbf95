"""Locked memory clocks of a GPU, [min, max] MHz; restoring an unlocked original resets them."""

from __future__ import annotations

from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.clock_range import LockedClocksKnob, MemoryClockConfig
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_locked_memory_clocks_hertz", "gauge",
                 "Memory clock lock gputuned set on a GPU, by bound (min, max), while changed.")


@register
class LockedMemoryClocksKnob(LockedClocksKnob):
    domain = "memory"
    title = "memory"
    config_model = MemoryClockConfig
    restore_rank = 20
    label = "locked mem clocks"
    family = FAMILY
