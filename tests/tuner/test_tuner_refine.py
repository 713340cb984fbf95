"""Fine moves next to the slowdown budget, and a lock judged against the limit at the limit's speed."""

from __future__ import annotations

import numpy as np

from gputuned.tuner.decision.choosers import ClimbChooser
from gputuned.tuner.decision.moves import (
    FINE_SHARE,
    RELEASE,
    STAY,
    Move,
    clock_target,
    decode,
    fine,
    move,
    power_target,
    share,
)
from gputuned.tuner.decision.observe import BASE_OBS_DIM
from gputuned.tuner.decision.observe import Feature as F

from .test_tuner_clocks import CLOCKS, ClockNode, kernel


def reading(knob: float, goodput: float, eps: float, *, lock: bool = False, dc: int = 0,
            d_goodput: float = 0.0) -> np.ndarray:
    """A capped reading on a node whose clocks can be locked: the walked knob's share (the limit, or
    the lock when ``lock``), goodput and energy-per-sample ratios, and the clock move made."""
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[F.LIMIT_SHARE], obs[F.LOCK_SHARE] = (1.0, knob) if lock else (knob, 1.0)
    obs[F.GOODPUT], obs[F.EPS], obs[F.CAPPED], obs[F.CLOCKS] = goodput - 1.0, eps - 1.0, 1.0, 1.0
    obs[F.LAST_DC], obs[F.D_GOODPUT], obs[F.EARLY] = dc, d_goodput, 1.0
    return obs


def test_fine_moves_are_a_quarter_step_that_never_unlocks() -> None:
    assert [decode(fine(dp=-1)), decode(fine(dp=+1)), decode(fine(dc=-1)), decode(fine(dc=+1))] == [
        Move(-1, 0, 0), Move(+1, 0, 0), Move(0, 0, -1), Move(0, 0, +1)]
    assert share(fine(dc=-1)) == FINE_SHARE and share(move(0, 0, -1)) == 1.0 and share(RELEASE) == 1.0
    assert clock_target(1215, -1, 0.0, CLOCKS, 1335, FINE_SHARE) == 1200  # 60 MHz steps, 15 MHz fine
    assert clock_target(1200, +1, 0.0, CLOCKS, 1335, FINE_SHARE) == 1215
    assert clock_target(1395, +1, 0.0, CLOCKS, 1335, FINE_SHARE) == 1410  # at the top: locked there, not unlocked
    assert clock_target(1395, +1, 0.0, CLOCKS, 1335) is None  # a whole step up from there unlocks
    assert clock_target(210, -1, 0.0, CLOCKS, None, FINE_SHARE) == 210
    assert power_target(115.0, -1, 40.0, False, 100.0, 400.0, FINE_SHARE) == 111.25  # no skip ahead uncapped


def test_the_kernel_releases_a_lock_from_anywhere_and_the_limit_comes_back() -> None:
    node = ClockNode()
    k = kernel(node)
    k.act(move(0, 0, -1), 10.0)
    assert node.locks["0"] == 1350 and node.limits["0"] == 400.0
    k.act(fine(dc=-1), 30.0)
    assert node.locks["0"] == 1335  # a quarter of a 60 MHz step
    k.act(move(0, 0, -1), 50.0)
    assert node.locks["0"] == 1275
    k.act(RELEASE, 70.0)
    assert node.locks == {"0": None, "1": None} and node.limits == {"0": 300.0, "1": 300.0} and k.lock_mhz is None


def settle_on_the_limit(c: ClimbChooser) -> None:
    """A limit walked to the budget (0.973 of the reference goodput at 0.9 of the energy), then the lock's trial."""
    assert c(reading(0.925, 0.973, 0.90)) == STAY
    assert c(reading(0.925, 0.973, 0.90)) == move(0, 0, -1)  # the lock takes over


def test_a_lock_faster_than_the_limit_is_walked_to_its_speed_and_released_when_dearer() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    settle_on_the_limit(c)
    # 5% faster at 6% more energy: not judged yet, the lock walks down first
    assert c(reading(0.90, 1.02, 0.954, lock=True, dc=-1)) == move(0, 0, -1)
    assert c(reading(0.857, 0.973, 0.93, lock=True, dc=-1)) == STAY  # the limit's speed
    assert c(reading(0.857, 0.973, 0.93, lock=True)) == RELEASE  # dearer there than the limit: released
    assert c.knob == "power"


def test_a_lock_that_is_cheaper_at_the_limits_speed_is_kept() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    settle_on_the_limit(c)
    assert c(reading(0.90, 1.02, 0.954, lock=True, dc=-1)) == move(0, 0, -1)
    assert c(reading(0.857, 0.973, 0.88, lock=True, dc=-1)) == STAY
    assert c(reading(0.857, 0.973, 0.88, lock=True)) == move(0, +1, -1)  # kept: the batch is probed under it
    assert c.knob == "clock" and not c.lock_pending


def test_a_fine_step_that_saves_nothing_is_undone() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    settle_on_the_limit(c)
    assert c(reading(0.90, 0.99, 0.88, lock=True, dc=-1)) == move(0, 0, -1)  # cheaper at once: kept
    assert c(reading(0.857, 0.96, 0.85, lock=True, dc=-1)) == move(0, 0, +1)  # over the budget: back
    assert c(reading(0.90, 0.99, 0.88, lock=True, dc=+1)) == fine(dc=-1)  # a quarter step instead
    assert c(reading(0.889, 0.985, 0.881, lock=True, dc=-1)) == fine(dc=+1)  # it cost energy: back


def test_goodput_moved_by_a_clock_step_is_not_counted_as_noise() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    c(reading(0.90, 0.99, 0.88, lock=True, dc=-1, d_goodput=0.3))
    assert c.spread == 0.0
    c(reading(0.90, 0.99, 0.88, lock=True, d_goodput=0.3))
    assert c.spread > 0.0


def test_under_a_lock_a_doubled_batch_goes_with_a_clock_step_and_back_with_it() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    settle_on_the_limit(c)
    assert c(reading(0.90, 0.973, 0.88, lock=True, dc=-1)) == STAY  # cheaper: kept, settling
    assert c(reading(0.90, 0.973, 0.88, lock=True)) == move(0, +1, -1)  # the probe spends its speed at once
    obs = reading(0.857, 0.96, 0.93, lock=True, dc=-1)
    obs[F.LAST_DB] = 1
    assert c(obs) == move(0, -1, +1)  # over the budget and dearer: batch and clock undone together
