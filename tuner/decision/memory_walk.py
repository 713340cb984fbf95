"""The climber's walk of the memory-clock lock, on GPUs whose memory clock has candidates under the top one.

Once its batch probes are spent and the walked knob (power limit or SM-clock lock) has settled,
the climber locks the memory clock one candidate lower
(:func:`~gputuned.tuner.decision.moves.memory_candidates`) and judges the next interval against
the one before it: the lock is kept when goodput stays within the slowdown budget and energy per
sample fell by more than the measured noise (at least ``MIN_SAVING``), and the next candidate down
is tried the same way; otherwise the step is undone (one candidate up) and the walk ends for the
job. A step the guard rolled back, or one the node did not make (the lowest candidate reached, a
refused lock), ends it too. Energy objectives only; nothing happens where no candidate exists
(HBM parts have one memory clock; NVML locks memory clocks from Ampere on).
"""

from __future__ import annotations

from gputuned.tuner.decision.moves import MEMORY_DOWN, MEMORY_UP
from gputuned.tuner.decision.observe import Feature as F
from gputuned.tuner.decision.observe import Observation

#: The least fall of energy per sample that keeps a memory-clock step (a lower memory clock slows
#: the memory-bound phases for sure; a saving within reading noise does not pay for that).
MIN_SAVING = 0.001


class MemoryWalk:
    """Steps the memory clock down while each step saves energy within the budget (see module doc)."""

    def __init__(self) -> None:
        self.pending: float | None = None  # energy per sample before the step being judged
        self.done = False

    def start(self, obs: Observation, eps: float) -> bool:
        """Whether to take the first step down now (once per job, where candidates exist)."""
        if self.done or self.pending is not None or obs[F.MEMORY_CLOCKS] < 0.5:
            return False
        self.pending = eps
        return True

    def judge(self, obs: Observation, eps: float, goodput: float, budget: float, noise: float) -> int | None:
        """The move after a step down: the next step down (kept), ``MEMORY_UP`` (undone), or None (walk over)."""
        if self.pending is None:
            return None
        eps0, self.pending = self.pending, None
        if obs[F.LAST_DM] >= 0:  # the step was not made: the lowest candidate, or a refused lock
            self.done = True
            return None
        if goodput >= budget and eps < eps0 * (1.0 - max(MIN_SAVING, noise)):
            self.pending = eps
            return MEMORY_DOWN
        self.done = True
        return MEMORY_UP

    def abandon(self) -> None:
        """The step was not judged (the guard undid it, or a policy overruled the walk): the walk ends."""
        self.pending, self.done = None, True
