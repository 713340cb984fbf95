"""Locked SM (graphics) clocks of a GPU, [min, max] MHz; restoring an unlocked original resets them."""

from __future__ import annotations

from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.clock_range import LockedClocksKnob, SMClockConfig
from gputuned.daemon.actuation.knobs.registry import register


def lock_at(mhz: int) -> list[int]:
    """The lock for one SM clock the tuner asks for: [f, f], as Zeus and Perseus lock.

    [min, f] would let the driver drop the clock in light phases, so the clock a measurement
    or a decision names would not be the clock the GPU ran.
    """
    return [int(mhz), int(mhz)]


FAMILY = declare("gputuned_actuation_locked_sm_clocks_hertz", "gauge",
                 "SM clock lock gputuned set on a GPU, by bound (min, max), while changed.")


@register
class LockedSMClocksKnob(LockedClocksKnob):
    domain = "sm"
    title = "SM"
    config_model = SMClockConfig
    restore_rank = 10
    label = "locked SM clocks"
    family = FAMILY
