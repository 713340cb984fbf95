"""What the tuner sees: one measured decision interval, and the observation built from it.

An :class:`Interval` is what a node measured over one decision interval (energy, samples,
goodput, power, clocks, the job's batch size). :class:`LiveObserver` turns it into the
observation every chooser reads, relative to the reference interval measured at the job's own
settings, with the memory of the move that led to it. Features are named by :class:`Feature`.

The observation is a float32 ``array.array`` (the values numpy's float32 array held), so the
climbing chooser runs without numpy; the learned policy's input converts it without copying.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

#: The observation: float32 values, indexed by :class:`Feature`.
Observation = array
#: The learned policy's input (base features and the climber's proposal): a numpy array
if TYPE_CHECKING:
    from numpy import ndarray as PolicyInput
else:
    PolicyInput = object  # annotations only: numpy is imported where the learned policy runs

#: Intervals after which the observation's "early phase" feature saturates.
EARLY_INTERVALS = 20


class Feature(IntEnum):
    """Index of each observation feature (all relative to the reference interval)."""

    LIMIT_SHARE = 0  # power limit / max limit
    POWER_OVER_LIMIT = 1  # power / limit
    POWER_OVER_MAX = 2  # power / max limit
    SM_RATIO = 3  # SM clock / max
    CAPPED = 4  # power-cap throttle bit
    LOG_BATCH = 5  # log2(batch / b0) / 4
    THROUGHPUT = 6  # throughput ratio - 1
    GOODPUT = 7  # goodput ratio - 1
    EPS = 8  # energy per effective sample ratio - 1
    EFFICIENCY = 9  # statistical efficiency - 1
    EARLY = 10  # intervals seen / 20, capped at 1
    OOM = 11  # the last batch move ran out of memory
    ENERGY_OBJECTIVE = 12  # 1 for energy objectives
    BUDGET = 13  # slowdown budget x 10
    LAST_DP = 14  # the last power move made
    LAST_DB = 15  # the last batch move made
    D_EPS = 16  # change of the energy-per-sample ratio since the previous interval, x 10
    D_GOODPUT = 17  # change of the goodput ratio since the previous interval, x 10
    ROLLED_BACK = 18  # the guard rolled the last move back
    CLOCKS = 19  # 1 where the tuner may lock SM clocks
    LOCK_SHARE = 20  # SM-clock lock / top supported clock (1 when unlocked)
    LAST_DC = 21  # the last clock move made
    MEMORY_CLOCKS = 22  # 1 where the tuner may lock memory clocks (a candidate under the top one)
    MEMORY_SHARE = 23  # memory-clock lock / top memory clock (1 when unlocked)
    LAST_DM = 24  # the last memory-clock move made
    SUGGESTED_DP = 25  # the climber's proposed power move (learned policy input only)
    SUGGESTED_DB = 26  # the climber's proposed batch move (learned policy input only)
    SUGGESTED_DC = 27  # the climber's proposed clock move (learned policy input only)
    SUGGESTED_DM = 28  # the climber's proposed memory-clock move (learned policy input only)


#: Observation features measured from one interval.
BASE_OBS_DIM = int(Feature.LAST_DM) + 1
#: The learned policy's input: the base observation and the climber's proposed (power, batch, clock, memory) move.
SIM_OBS_DIM = BASE_OBS_DIM + 4


def _pairwise_sum(v: Sequence[float], lo: int, n: int) -> float:
    """numpy's pairwise summation of ``v[lo:lo + n]`` (8 partial sums per block of 128, halves above), term for term."""
    if n < 8:
        res = 0.0
        for x in v[lo:lo + n]:
            res += x
        return res
    if n > 128:
        half = n // 2 - (n // 2) % 8
        return _pairwise_sum(v, lo, half) + _pairwise_sum(v, lo + half, n - half)
    r = list(v[lo:lo + 8])
    end = lo + n - n % 8
    for i in range(lo + 8, end, 8):
        for j in range(8):
            r[j] += v[i + j]
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for x in v[end:lo + n]:
        res += x
    return res


def mean(values: Sequence[float]) -> float:
    """The mean of ``values`` to the bit ``numpy.mean`` gives (its pairwise summation; NaN when empty), without numpy."""
    v = [float(x) for x in values]
    return (0.0 + _pairwise_sum(v, 0, len(v))) / len(v) if v else math.nan


@dataclass
class Interval:
    """One decision interval as a node measured it."""

    energy_j: float
    samples: float
    seconds: float
    goodput: float
    power_w: float
    sm_ratio: float
    capped: bool
    batch: int
    busy_w: float  # the most any GPU draws while busy (:func:`gputuned.tuner.decision.moves.busy_power`)

    @property
    def throughput(self) -> float:
        """Samples per second."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def eff(self) -> float:
        """Statistical efficiency: goodput over throughput, at most 1.5."""
        return min(1.5, self.goodput / self.throughput) if self.throughput > 0 else 1.0

    @property
    def eps(self) -> float:
        """Energy per effective sample (J)."""
        good = self.goodput * self.seconds
        return self.energy_j / good if good > 0 else math.inf


class LiveObserver:
    """The observation of one decision interval, and the memory of the move that led to it."""

    def __init__(self, energy_objective: bool, max_slowdown: float) -> None:
        self.energy = energy_objective
        self.max_slowdown = max_slowdown
        self.t = 0
        self.last = (0, 0, 0, 0)
        self.rolled = False
        self.prev: tuple[float, float] | None = None

    def observe(
        self, *, limit_share: float, power_w: float, limit_w: float, max_w: float, sm_ratio: float, capped: bool,
        batch: int, b0: int, throughput_ratio: float, goodput_ratio: float, eps_ratio: float, eff: float, oom: bool,
        clocks: bool = False, lock_share: float = 1.0, memory: bool = False, memory_share: float = 1.0,
    ) -> Observation:
        """The base observation (``BASE_OBS_DIM`` floats in [-5, 5], indexed by :class:`Feature`)."""
        eps_ratio = eps_ratio if math.isfinite(eps_ratio) else 5.0
        d_eps, d_good = (0.0, 0.0) if self.prev is None else (eps_ratio - self.prev[0], goodput_ratio - self.prev[1])
        obs = [
            limit_share, power_w / max(limit_w, 1e-9), power_w / max(max_w, 1e-9), sm_ratio, float(capped),
            math.log2(max(batch, 1) / max(b0, 1)) / 4.0, throughput_ratio - 1.0, goodput_ratio - 1.0, eps_ratio - 1.0,
            eff - 1.0, min(self.t, EARLY_INTERVALS) / EARLY_INTERVALS, float(oom), 1.0 if self.energy else 0.0,
            self.max_slowdown * 10.0, float(self.last[0]), float(self.last[1]), 10.0 * d_eps, 10.0 * d_good,
            float(self.rolled), float(clocks), lock_share, float(self.last[2]), float(memory), memory_share,
            float(self.last[3]),
        ]
        self.prev = (eps_ratio, goodput_ratio)
        self.t += 1
        self.last, self.rolled = (0, 0, 0, 0), False
        return array("f", [x if math.isnan(x) else min(5.0, max(-5.0, x)) for x in obs])  # float32 of the clipped value

    def moved(self, dp: int, db: int, dc: int = 0, dm: int = 0) -> None:
        """The move made after the last observation (what the guard let through)."""
        self.last = (dp, db, dc, dm)

    def rolled_back(self) -> None:
        """The guard undid the last move: the next observation says so."""
        self.last, self.rolled = (0, 0, 0, 0), True
