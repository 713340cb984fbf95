"""The climber's choice between the power limit and an SM-clock lock, from what it measures.

:class:`KnobProbe` decides which knob is walked first. At the start of a job (its first
observation, the power limit at its maximum and the SM clocks unlocked) the climber locks the
clocks one step down, reads the interval and releases the lock; then it walks the power limit as
usual until a step down slows the job measurably (or, after ``MAX_POWER_STEPS`` steps that did
not, judges the limit by what they saved). Each knob is measured against the interval before it
at the same base: energy per sample saved per unit of goodput given up. Where the lock bought
more, it takes over at once at the clock the limit gives; else the limit's walk goes on and the
lock is tried once the limit has settled. A lock's step the guard rolled back, or one the node
did not make, leaves the limit first; a release the guard rolled back (going back cost more)
leaves the lock walked first.

:class:`LimitOrLock` is the climber's part that hands the walk between the two: the lock's
takeover at the limit's clock, its judgement against the limit at equal speed, and the switch of
the walked ladder.
"""

from __future__ import annotations

import math
from enum import Enum

from gputuned.tuner.decision.moves import RELEASE, move
from gputuned.tuner.decision.observe import Feature as F
from gputuned.tuner.decision.observe import Observation

#: Slowdown under which a step's saving per slowdown is read as this floor (a step that slows
#: less than the noise is judged by its saving alone).
MIN_SLOWDOWN = 0.005
#: The lock is walked first only when its saving per slowdown beats the limit's by this share.
LOCK_FIRST_MARGIN = 0.10
#: The lock is kept when it lowers the judged cost by more than this share (a tie keeps the limit).
LOCK_MARGIN = 0.003
#: What :meth:`KnobProbe.step` answers when the lock is to take over from the limit now.
TAKE_OVER = -1
#: Power steps down the limit's probe may take without slowing the job before it is judged.
MAX_POWER_STEPS = 4


class Stage(Enum):
    """Where the start probe stands."""

    START = "start"  # nothing measured yet
    LOCK = "lock"  # the lock's step is applied: judge it, then release
    RELEASED = "released"  # back at the base: measure it again before the limit's step
    POWER = "power"  # the limit's walk: the first step that slows the job is its probe
    DONE = "done"


def exchange(base: tuple[float, float], eps: float, goodput: float, noise: float) -> float:
    """Energy per sample saved per unit of goodput given up, from ``base`` (eps, goodput) to here."""
    eps0, g0 = base
    saving = 1.0 - eps / eps0
    slowdown = max(1.0 - goodput / g0, MIN_SLOWDOWN, noise)
    return saving / slowdown


class Phase(Enum):
    """What the climber is doing: moving the power limit, judging a batch probe, or undoing one."""

    POWER = "power"
    PROBE = "probe"
    UNDO = "undo"
    CLOCK = "clock"  # judging a lock that took over from the limit


class KnobProbe:
    """The start probe's state: the lock's measured exchange, then the limit's; which is walked first."""

    def __init__(self) -> None:
        self.stage = Stage.START
        self.base: tuple[float, float] = (1.0, 1.0)
        self.lock_rate = -math.inf
        self.power_rate: float | None = None
        self.power_steps = 0

    def step(self, untouched: bool, clock_tried: bool, last_dp: int, last_dc: int, eps: float, goodput: float,
             noise: float) -> int | None:
        """The probe's move on this interval: an action, ``TAKE_OVER``, or None for the climber's own move.

        ``untouched``: the knobs are at the job's own settings; ``clock_tried``: the climber has tried
        the lock already (the probe then has nothing left to decide).
        """
        if self.stage == Stage.START:
            self.stage, self.base = (Stage.LOCK if untouched else Stage.DONE), (eps, goodput)
            return move(0, 0, -1) if untouched else None  # the lock's step, from the job's own settings
        if self.stage == Stage.LOCK:  # the interval under the lock's step: release it (if it was made)
            if last_dc >= 0:  # not made (not supported, refused): the limit is walked
                self.stage = Stage.POWER
                return None
            self.stage, self.lock_rate = Stage.RELEASED, exchange(self.base, eps, goodput, noise)
            return RELEASE
        if self.stage == Stage.RELEASED:  # back at the base: the limit's step is measured from here
            self.base, self.stage = (eps, goodput), Stage.POWER
        elif self.stage == Stage.POWER and clock_tried:
            self.stage = Stage.DONE
        elif self.stage == Stage.POWER and self.lock_first(last_dp, eps, goodput, noise):
            return TAKE_OVER
        return None

    def rolled_back(self, knob: str) -> bool:
        """The guard undid a clock move of the probe; True when it undid the release (going back to the
        base cost more: the lock stays and is walked first). An undone lock's step is the dearer knob."""
        if knob != "sm_clock" or self.stage not in (Stage.LOCK, Stage.RELEASED):
            return False
        released = self.stage == Stage.RELEASED
        self.stage = Stage.DONE if released else Stage.RELEASED
        return released

    def lock_first(self, last_dp: int, eps: float, goodput: float, noise: float) -> bool:
        """During the limit's walk: True once its first step that slows the job measured a worse
        exchange than the lock's (the lock is then to take over); False otherwise."""
        if last_dp >= 0:
            return False
        self.power_steps += 1
        if goodput > self.base[1] * (1.0 - max(MIN_SLOWDOWN, noise)) and self.power_steps < MAX_POWER_STEPS:
            return False  # not slower yet: the next step may be the first the cap binds at
        # judged by its saving alone after that many steps (none where the cap does not bind yet)
        self.power_rate = exchange(self.base, eps, goodput, noise)
        self.stage = Stage.DONE
        return self.lock_rate > self.power_rate + LOCK_FIRST_MARGIN * abs(self.power_rate)


class LimitOrLock:
    """The climber's choice between the limit and the lock: a lock's takeover, its judgement, the walked ladder."""

    budget: float
    spread: float
    state: Phase
    settled: int
    clock_tried: bool
    clock_from: tuple[float, float]
    lock_pending: bool
    knob: str
    other: tuple[float | None, float | None, float | None, float, int]
    floor: float | None
    ceiling: float | None
    prev_limit: float | None
    step: float
    last_dp: int
    prev_eps: float | None
    prev_good: float | None

    def _take_over(self, eps: float, goodput: float) -> int:
        """The lock takes over from the limit at the clock it gives; judged at the next interval."""
        self.clock_tried, self.state, self.settled = True, Phase.CLOCK, 0
        self.clock_from = (self._cost(eps, goodput), goodput)
        return move(0, 0, -1)

    def _cost(self, eps: float, goodput: float) -> float:
        """What the guard judges by: energy per sample, with the goodput shortfall beyond the budget."""
        return eps * (1.0 + 10.0 * max(0.0, self.budget - goodput))

    def _switch(self, knob: str) -> None:
        """Walk ``knob``'s ladder from here (its floor, last step and last move kept from before)."""
        if knob != self.knob:
            mine = (self.floor, self.ceiling, self.prev_limit, self.step, self.last_dp)
            self.floor, self.ceiling, self.prev_limit, self.step, self.last_dp = self.other
            self.other, self.knob = mine, knob

    def _judge_lock(self, obs: Observation, eps: float, goodput: float) -> bool:
        """Judge the lock that took over from the limit; True when it must be undone (unlocked)."""
        self.state = Phase.POWER
        if obs[F.LAST_DC] >= 0:  # the lock was not made (not supported, refused): the limit stays
            return False
        noise = max(0.005, 1.5 * self.spread)
        cheaper = self._cost(eps, goodput) < self.clock_from[0] * (1.0 + LOCK_MARGIN)
        # a lock that runs faster than the limit did is walked down and judged at the limit's speed
        self.lock_pending = not cheaper and goodput > self.clock_from[1] * (1.0 + noise)
        if cheaper or self.lock_pending:
            self._switch("clock")
            self.prev_limit, self.last_dp = None, 0  # the takeover's jump is not a step of the ladder
            self.prev_eps, self.prev_good = eps, goodput
            return False
        self.last_dp, self.settled = 0, 0
        return True
