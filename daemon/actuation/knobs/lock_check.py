"""Whether a clock lock holds, judged from what NVML can read: the clock and its clock-event reasons.

NVML cannot read a lock back, and a lock bounds the clock only while the GPU works: idle, the
clock drops below any lock; under load a binding power limit pulls it below the lock's floor
(the ``sw_power_cap`` reason), and so do thermal or hardware slowdowns. So a lock is judged on
a busy GPU, and a clock below the lock is told apart by its reason: "masked by the power
limit" is a lock set and in place that the power limit overrides, not a failure to set it and
not a silent success.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gputuned.collectors.device import CLOCK_EVENT_LABELS, ClockEventReason, GPUDevice, GPUError

#: How far a reading may sit from the lock and still hold it: one step of the supported clocks.
TOLERANCE_MHZ = 15

_POWER = ClockEventReason.SW_POWER_CAP | ClockEventReason.HW_POWER_BRAKE_SLOWDOWN
_SLOWDOWN = (ClockEventReason.SW_THERMAL_SLOWDOWN | ClockEventReason.HW_THERMAL_SLOWDOWN
             | ClockEventReason.HW_SLOWDOWN)


class LockState(enum.Enum):
    """What a reading says of a lock [lo, hi]."""

    HELD = "held"
    MASKED_BY_POWER_LIMIT = "masked by the power limit"
    MASKED_BY_SLOWDOWN = "masked by a thermal or hardware slowdown"
    BELOW = "below the lock"
    ABOVE = "above the lock"
    IDLE = "idle"


@dataclass(frozen=True)
class LockReading:
    """One judgement of a lock: its state, the clock read and the reasons active then."""

    state: LockState
    lo_mhz: int
    hi_mhz: int
    clock_mhz: int
    reasons: ClockEventReason

    @property
    def held(self) -> bool | None:
        """True when held, None when it cannot be told (idle), False otherwise."""
        if self.state is LockState.IDLE:
            return None
        return self.state is LockState.HELD

    def text(self) -> str:
        """One line for a log or a reply: the state, the clock read, the lock and the reasons."""
        names = [label for bit, label in CLOCK_EVENT_LABELS.items() if self.reasons & bit] or ["none"]
        return (f"lock {self.lo_mhz}-{self.hi_mhz} MHz {self.state.value}: clock reads {self.clock_mhz} MHz, "
                f"clock-event reasons {','.join(names)}")


def judge(clock_mhz: int, reasons: ClockEventReason, busy: bool, lo_mhz: int, hi_mhz: int,
          tolerance_mhz: int = TOLERANCE_MHZ) -> LockState:
    """The state of a lock [lo, hi] from one clock reading, its clock-event reasons and whether the GPU works."""
    if not busy or reasons & ClockEventReason.GPU_IDLE:
        return LockState.IDLE
    if clock_mhz > hi_mhz + tolerance_mhz:
        return LockState.ABOVE
    if clock_mhz >= lo_mhz - tolerance_mhz:
        return LockState.HELD
    if reasons & _POWER:
        return LockState.MASKED_BY_POWER_LIMIT
    if reasons & _SLOWDOWN:
        return LockState.MASKED_BY_SLOWDOWN
    return LockState.BELOW


def _busy(dev: GPUDevice) -> bool:
    try:
        return dev.utilization().gpu_ratio > 0
    except GPUError:
        return True  # unknown: the reasons' GPU_IDLE bit decides


def read_lock(dev: GPUDevice, clock: str, lo_mhz: int, hi_mhz: int) -> LockReading:
    """Judge a lock [lo, hi] on ``dev`` now; ``clock`` names the GPUDevice reading in Hz (``sm_clock_hz`` ...)."""
    mhz = int(round(getattr(dev, clock)() / 1e6))
    try:
        reasons = ClockEventReason(dev.clock_event_reasons())
    except GPUError:
        reasons = ClockEventReason(0)
    return LockReading(judge(mhz, reasons, _busy(dev), lo_mhz, hi_mhz), lo_mhz, hi_mhz, mhz, reasons)
