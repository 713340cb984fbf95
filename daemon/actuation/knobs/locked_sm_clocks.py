"""Locked SM (graphics) clocks of a GPU, [min, max] MHz; restoring an unlocked original resets them."""

from __future__ import annotations

from gputuned.collectors.device import GPUDevice
from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import CliOption, Value, parse_pair
from gputuned.daemon.actuation.knobs.clock_range import ClockRangeKnob, SMClockConfig
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_locked_sm_clocks_hertz", "gauge",
                 "SM clock lock gputuned set on a GPU, by bound (min, max), while changed.")


@register
class LockedSMClocksKnob(ClockRangeKnob):
    name = "locked_sm_clocks"
    cfg_prefix = "sm_clock"
    config_model = SMClockConfig
    restore_rank = 10
    label = "locked SM clocks"
    family = FAMILY
    cli = CliOption("--sm-clocks", "MIN:MAX", "lock SM clocks (MHz)", parse_pair)

    def _supported(self, dev: GPUDevice) -> list[int]:
        return dev.supported_sm_clocks_mhz()

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_locked_sm_clocks_mhz(int(value[0]), int(value[1]))

    def restore(self, dev: GPUDevice, original: Value) -> None:
        if original is None:
            dev.reset_locked_sm_clocks()
        else:
            dev.set_locked_sm_clocks_mhz(int(original[0]), int(original[1]))
