"""The climber's start probe: one measured step of the lock and of the limit picks the knob walked first."""

from __future__ import annotations

import numpy as np

from gputuned.tuner.decision.choosers import ClimbChooser, Phase
from gputuned.tuner.decision.climb_probe import Stage, exchange
from gputuned.tuner.decision.moves import RELEASE, move
from gputuned.tuner.decision.observe import BASE_OBS_DIM
from gputuned.tuner.decision.observe import Feature as F


def reading(goodput: float, eps: float, *, limit: float = 1.0, lock: float = 1.0, dp: int = 0,
            dc: int = 0) -> np.ndarray:
    """One interval on a node whose clocks can be locked: the limit's and the lock's shares, the goodput
    and energy-per-sample ratios to the reference, and the power and clock moves that led to it."""
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[F.LIMIT_SHARE], obs[F.LOCK_SHARE], obs[F.CLOCKS], obs[F.CAPPED] = limit, lock, 1.0, float(limit < 1.0)
    obs[F.GOODPUT], obs[F.EPS], obs[F.LAST_DP], obs[F.LAST_DC] = goodput - 1.0, eps - 1.0, dp, dc
    return obs


def probe_the_lock(c: ClimbChooser, lock_eps: float) -> None:
    """The lock's step from the job's own settings (2% slower at ``lock_eps``), released, and the limit's first step."""
    assert c(reading(1.0, 1.0)) == move(0, 0, -1)  # the lock's step
    assert c(reading(0.98, lock_eps, lock=0.957, dc=-1)) == RELEASE
    assert c(reading(1.0, 1.0, dc=+1)) == move(-1, 0)  # back at the base: the limit's walk starts


def test_a_lock_that_saves_more_per_slowdown_than_the_limit_takes_over_at_the_limits_first_slowing_step() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    probe_the_lock(c, 0.93)  # 7% saved for 2% slower
    assert c(reading(1.0, 0.995, limit=0.95, dp=-1)) == move(-1, 0)  # no slowdown yet: the walk goes on
    # 3% saved for 2% slower: the lock measured the better exchange and takes over now
    assert c(reading(0.98, 0.97, limit=0.90, dp=-1)) == move(0, 0, -1)
    assert c.state == Phase.CLOCK and c.clock_tried and c.knobs.stage == Stage.DONE


def test_a_limit_that_saves_more_per_slowdown_than_the_lock_is_walked_on() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    probe_the_lock(c, 0.99)  # 1% saved for 2% slower
    assert c(reading(0.98, 0.97, limit=0.95, dp=-1)) == move(-1, 0)  # the limit's walk goes on
    assert c.state == Phase.POWER and not c.clock_tried and c.knob == "power"
    assert c.knobs.lock_rate < c.knobs.power_rate is not None


def test_a_release_the_guard_undid_leaves_the_lock_walked() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    assert c(reading(1.0, 1.0)) == move(0, 0, -1)
    assert c(reading(0.99, 0.90, lock=0.957, dc=-1)) == RELEASE
    c.rolled_back("sm_clock")  # going back to the base cost more than the guard's tolerance
    assert c.knob == "clock" and c.clock_tried
    assert c(reading(0.99, 0.90, lock=0.957)) == move(0, 0, -1)  # the lock walks down


def test_no_probe_away_from_the_jobs_own_settings_or_where_clocks_cannot_be_locked() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    assert c(reading(0.99, 0.95, limit=0.9)) == move(-1, 0) and c.knobs.stage == Stage.DONE
    c = ClimbChooser("energy_slowdown", 0.03)
    obs = reading(1.0, 1.0)
    obs[F.CLOCKS] = 0.0
    assert c(obs) == move(-1, 0) and c.knobs.stage == Stage.START


def test_the_exchange_is_saving_per_slowdown_with_a_floor_under_the_slowdown() -> None:
    assert abs(exchange((1.0, 1.0), 0.94, 0.98, 0.0) - 3.0) < 1e-9
    assert abs(exchange((1.0, 1.0), 0.99, 1.0, 0.0) - 2.0) < 1e-9  # no slowdown: judged over 0.5%
