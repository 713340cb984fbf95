"""The tuner's moves: 22 actions over (power limit, batch size, SM-clock lock, memory-clock lock), and where a move lands.

Actions 0-8 are ``3 * (power move + 1) + (batch move + 1)``, moves in {-1, 0, +1}: the power
limit one step of 5% of its range on every GPU, the global batch size halved, kept or doubled.
Actions 9-14 move the SM-clock lock instead of the power limit, ``9 + 3 * (clock move > 0) +
(batch move + 1)``: one step of 5% of the supported clock range, the GPUs locked at [f, f].
Actions 15-18 are fine moves, a quarter of a step (at least one supported clock), with no batch
move: power down, power up, clock down, clock up; the climber refines with them next to a setting
one step over the slowdown budget. Action 19 releases the lock wherever it stands (the limit it
took over from comes back). A move changes the power limit or the clock lock, never both (the two
set one clock). Actions 20 and 21 lock the memory clock one candidate lower / higher (the highest
unlocks), alone; a candidate is a supported memory clock of at least ``MEMORY_CANDIDATE_SHARE`` of
the top one (:func:`memory_candidates`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

N_ACTIONS = 22
#: Keep every knob.
STAY = 4
#: A power move is this share of the GPU's power-limit range.
POWER_STEP_SHARE = 0.05
#: A clock move is this share of the GPU's supported SM-clock range.
CLOCK_STEP_SHARE = 0.05
#: The first clock action (a clock move down with a batch move of -1).
CLOCK_ACTIONS = 9
#: The first fine action (power down, power up, clock down, clock up).
FINE_ACTIONS = 15
#: A fine move is this share of a step.
FINE_SHARE = 0.25
#: Unlock the SM clocks from any lock (the limit the lock took over from comes back).
RELEASE = 19
#: Lock the memory clock one candidate lower; ``MEMORY_UP`` one higher (unlocked from the highest).
MEMORY_DOWN = 20
MEMORY_UP = 21
#: The lowest share of the top memory clock a memory lock may go to: below it lie the idle-level
#: clocks (405 and 810 MHz on GDDR parts), at which measured work runs 2-7x slower.
MEMORY_CANDIDATE_SHARE = 0.5


class Move(NamedTuple):
    """One action as its knob moves, each in {-1, 0, +1}: power limit, batch size, SM-clock lock, memory-clock lock."""

    dp: int
    db: int
    dc: int = 0
    dm: int = 0


def move(dp: int, db: int, dc: int = 0) -> int:
    """The action index of a (power move, batch move, clock move); a power and a clock move never go together."""
    if dc:
        if dp:
            raise ValueError("a move changes the power limit or the clock lock, not both")
        return CLOCK_ACTIONS + 3 * (dc > 0) + (db + 1)
    return 3 * (dp + 1) + (db + 1)


def fine(dp: int = 0, dc: int = 0) -> int:
    """The action index of a fine move: a quarter step of the power limit (``dp``) or the clock lock (``dc``)."""
    if bool(dp) == bool(dc):
        raise ValueError("a fine move changes exactly one of the power limit and the clock lock")
    return FINE_ACTIONS + (2 if dc else 0) + ((dp or dc) > 0)


def share(action: int) -> float:
    """The size of an action's power or clock move, in steps (1, or ``FINE_SHARE`` for a fine move)."""
    return FINE_SHARE if FINE_ACTIONS <= action < RELEASE else 1.0


def decode(action: int) -> Move:
    """The knob moves of an action index (a fine move as its direction, the release as a clock move up)."""
    if action >= MEMORY_DOWN:
        return Move(0, 0, 0, -1 if action == MEMORY_DOWN else 1)
    if action == RELEASE:
        return Move(0, 0, 1)
    if action >= FINE_ACTIONS:
        k = action - FINE_ACTIONS
        d = 1 if k % 2 else -1
        return Move(0, 0, d) if k >= 2 else Move(d, 0, 0)
    if action >= CLOCK_ACTIONS:
        k = action - CLOCK_ACTIONS
        return Move(0, k % 3 - 1, 1 if k >= 3 else -1)
    return Move(action // 3 - 1, action % 3 - 1, 0)


def split(action: int) -> tuple[int, int]:
    """The (power move, batch move) of an action index."""
    m = decode(action)
    return m.dp, m.db


def power_step(lo_w: float, hi_w: float) -> float:
    """One power move, in watts, on a GPU whose limit ranges over [lo_w, hi_w]."""
    return POWER_STEP_SHARE * (hi_w - lo_w)


def power_target(limit_w: float, dp: int, busy_w: float, capped: bool, lo_w: float, hi_w: float,
                 size: float = 1.0) -> float:
    """The power limit after a power move ``dp`` of ``size`` steps from ``limit_w`` (a step is 5% of the range).

    ``busy_w`` bounds what the GPUs draw while their kernels run (a power reading over the
    utilisation it was taken at: the cap acts on kernels, not on the average with the gaps
    between them). A step down from a limit they do not reach (not capped, ``busy_w`` more than
    two steps under it) lands on the lowest limit of the step grid (``hi_w`` minus whole steps)
    at least one step above ``busy_w``: the steps in between change nothing but cost a decision
    interval each.
    """
    step = power_step(lo_w, hi_w)
    target = limit_w + dp * step * size
    if size < 1.0:
        return float(min(max(target, lo_w), hi_w))
    if dp < 0 and not capped and step > 0 and busy_w + step < limit_w - step:
        target = min(target, hi_w - math.floor((hi_w - busy_w - step) / step) * step)
    return float(min(max(target, lo_w), hi_w))


def busy_power(readings: list[tuple[float, float]]) -> float:
    """The most any GPU draws while busy, from (watts, utilisation 0-1) readings; infinite when a
    GPU shows no kernel time to scale by (no step down may then skip ahead)."""
    return max((w / u if u > 0.05 else math.inf for w, u in readings), default=math.inf)


def clock_step(clocks: Sequence[int]) -> float:
    """One clock move, in MHz, over the supported clocks ``clocks``."""
    return CLOCK_STEP_SHARE * (max(clocks) - min(clocks)) if clocks else 0.0


def snap_clock(mhz: float, clocks: Sequence[int]) -> int:
    """The highest supported clock at or under ``mhz`` (the lowest one when none is)."""
    under = [c for c in clocks if c <= mhz + 1e-6]
    return int(max(under)) if under else int(min(clocks))


def clock_target(lock: int | None, dc: int, sm_mhz: float, clocks: Sequence[int], takeover: int | None,
                 size: float = 1.0) -> int | None:
    """The SM-clock lock after a clock move ``dc`` of ``size`` steps from ``lock`` (None: unlocked, and the
    result None: unlock).

    From unlocked, a step down locks at the clock the GPUs run at now (``sm_mhz``, under the
    power limit), at most one step under the top clock: the lock takes over from the limit at an
    equal clock, so what the two cost is compared at the same speed. A step up from the clock
    the lock took over at (``takeover``), or to the top clock, unlocks. A fine move (``size``
    under 1) moves a lock by at least one supported clock and never unlocks.
    """
    if not clocks or not dc or (lock is None and dc > 0):
        return lock
    step, top = clock_step(clocks), max(clocks)
    if size < 1.0 and lock is not None:
        return _fine_clock(lock, dc, step * size, clocks)
    if lock is None:
        return snap_clock(min(sm_mhz, top - step), clocks)
    if dc < 0:
        return snap_clock(lock - step, clocks)
    if lock + step >= top - 1e-6 or (takeover is not None and lock >= takeover):
        return None
    up = [c for c in clocks if c > lock]
    return max(snap_clock(lock + step, clocks), min(up)) if up else None


def _fine_clock(lock: int, dc: int, step: float, clocks: Sequence[int]) -> int:
    """A fine move of a lock: ``step`` MHz, at least to the next supported clock, never past the ends."""
    if dc < 0:
        under = [c for c in clocks if c < lock]
        return min(snap_clock(lock - step, clocks), max(under)) if under else lock
    over = [c for c in clocks if c > lock]
    return max(snap_clock(lock + step, clocks), min(over)) if over else lock


def memory_candidates(supported: Sequence[int]) -> tuple[int, ...]:
    """The memory clocks a lock may choose, descending from the top one; empty when none lies under it
    at ``MEMORY_CANDIDATE_SHARE`` of the top or more (an HBM part's one clock, A40's [7251, 405])."""
    if not supported:
        return ()
    top = max(supported)
    under = sorted({int(c) for c in supported if MEMORY_CANDIDATE_SHARE * top - 1e-6 <= c < top}, reverse=True)
    return (int(top), *under) if under else ()


def memory_target(lock: int | None, dm: int, clocks: Sequence[int]) -> int | None:
    """The memory-clock lock after a move ``dm`` from ``lock`` (None: unlocked, and the result None:
    unlock) over the candidates ``clocks`` (descending, the top first): one candidate down or up."""
    if not clocks or not dm:
        return lock
    i = clocks.index(lock) if lock in clocks else 0
    j = min(max(i - dm, 0), len(clocks) - 1)
    return None if j == 0 else int(clocks[j])


def lock_share(lock: int | None, clocks: Sequence[int]) -> float:
    """A lock as a share of the top clock (1 unlocked, or where nothing can be locked)."""
    top = max(clocks, default=1)
    return (lock or top) / top
