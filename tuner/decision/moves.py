"""The tuner's moves: 9 actions over (power limit, batch size), and where a power move lands.

A move is one of 9 actions, ``action = 3 * (power move + 1) + (batch move + 1)``, moves in
{-1, 0, +1}: the power limit one step of 5% of the range on every GPU, the global batch size
halved, kept or doubled.
"""

from __future__ import annotations

import math

N_ACTIONS = 9
#: Keep both knobs.
STAY = 4
#: A power move is this share of the GPU's power-limit range.
POWER_STEP_SHARE = 0.05


def move(dp: int, db: int) -> int:
    """The action index of a (power move, batch move)."""
    return 3 * (dp + 1) + (db + 1)


def split(action: int) -> tuple[int, int]:
    """The (power move, batch move) of an action index."""
    return action // 3 - 1, action % 3 - 1


def power_step(lo_w: float, hi_w: float) -> float:
    """One power move, in watts, on a GPU whose limit ranges over [lo_w, hi_w]."""
    return POWER_STEP_SHARE * (hi_w - lo_w)


def power_target(limit_w: float, dp: int, busy_w: float, capped: bool, lo_w: float, hi_w: float) -> float:
    """The power limit after a power move ``dp`` from ``limit_w``: one step of 5% of the range.

    ``busy_w`` bounds what the GPUs draw while their kernels run (a power reading over the
    utilisation it was taken at: the cap acts on kernels, not on the average with the gaps
    between them). A step down from a limit they do not reach (not capped, ``busy_w`` more than
    two steps under it) lands on the lowest limit of the step grid (``hi_w`` minus whole steps)
    at least one step above ``busy_w``: the steps in between change nothing but cost a decision
    interval each.
    """
    step = power_step(lo_w, hi_w)
    target = limit_w + dp * step
    if dp < 0 and not capped and step > 0 and busy_w + step < limit_w - step:
        target = min(target, hi_w - math.floor((hi_w - busy_w - step) / step) * step)
    return float(min(max(target, lo_w), hi_w))


def busy_power(readings: list[tuple[float, float]]) -> float:
    """The most any GPU draws while busy, from (watts, utilisation 0-1) readings; infinite when a
    GPU shows no kernel time to scale by (no step down may then skip ahead)."""
    return max((w / u if u > 0.05 else math.inf for w, u in readings), default=math.inf)
