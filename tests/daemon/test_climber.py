"""The climbing chooser's moves on scripted readings, and the power move's step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gputuned.tuner.decision.choosers import ClimbChooser
from gputuned.tuner.decision.moves import STAY, busy_power, fine, move, power_target, split
from gputuned.tuner.decision.observe import BASE_OBS_DIM
from gputuned.tuner.sim_env import SimNodeEnv


def reading(limit: float, goodput: float, eps: float, batch_moved: int = 0) -> np.ndarray:
    """A base observation with the climber's inputs: limit share, goodput and energy-per-sample
    ratios, and the batch move made since the last one."""
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0], obs[7], obs[8], obs[15] = limit, goodput - 1.0, eps - 1.0, batch_moved
    return obs


def climb_to_first_probe(c: ClimbChooser) -> None:
    """Three steps down (the third over the 3% budget), one back up, a quarter step down (over the
    budget too, at the same exchange rate) and back, settle, probe a doubled batch."""
    assert c(reading(1.0, 1.0, 1.0)) == move(-1, 0)
    assert c(reading(0.9625, 0.995, 0.987)) == move(-1, 0)
    assert c(reading(0.925, 0.978, 0.955)) == move(-1, 0)
    assert c(reading(0.8875, 0.966, 0.930)) == move(+1, 0)  # under 0.97 of the reference goodput
    assert c(reading(0.925, 0.978, 0.955)) == fine(dp=-1)  # one step was too far: a quarter step
    assert c(reading(0.915625, 0.969, 0.9366)) == fine(dp=+1)  # a fine step must stay within the budget
    assert c(reading(0.925, 0.978, 0.955)) == STAY
    assert c(reading(0.925, 0.978, 0.955)) == move(0, +1)


def test_a_probe_that_costs_energy_but_buys_more_goodput_than_that_is_kept() -> None:
    # the last step down gave 2.6% energy for 1.2% goodput (rate 2.1): a doubled batch at +4.2%
    # energy for +8.8% goodput is worth it once the limit comes down again
    c = ClimbChooser("energy_slowdown", 0.03)
    climb_to_first_probe(c)
    assert c(reading(0.925, 1.064, 0.995, +1)) == STAY
    assert c(reading(0.925, 1.064, 0.995)) == move(-1, 0)  # the floor is gone: the limit comes down
    for limit, good, eps in ((0.8875, 1.04, 0.95), (0.85, 1.015, 0.91), (0.8125, 0.99, 0.875)):
        assert c(reading(limit, good, eps)) == move(-1, 0)
    assert c(reading(0.775, 0.966, 0.85)) == move(+1, 0)  # over budget: back up one and stay
    assert c(reading(0.8125, 0.973, 0.875)) == STAY  # within the margin of the budget: no quarter step
    assert c(reading(0.8125, 0.973, 0.875)) == move(0, +1)  # the trade paid (0.875 < 0.955): probe on


def test_a_kept_trade_that_the_power_limit_does_not_pay_back_is_undone() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    climb_to_first_probe(c)
    assert c(reading(0.925, 1.064, 0.995, +1)) == STAY
    assert c(reading(0.925, 1.064, 0.995)) == move(-1, 0)
    assert c(reading(0.925, 1.064, 0.995)) == STAY  # the step down did not move the limit: its minimum
    assert c(reading(0.925, 1.064, 0.995)) == move(0, -1)  # settled at more energy than before: undone


def test_without_a_measured_exchange_rate_a_costlier_probe_is_undone() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    assert c(reading(1.0, 1.0, 1.0)) == move(-1, 0)
    assert c(reading(1.0, 1.0, 1.0)) == STAY  # the limit did not move: nothing measured
    assert c(reading(1.0, 1.0, 1.0)) == move(0, +1)
    assert c(reading(1.0, 1.09, 1.04, +1)) == move(0, -1)


def test_a_step_down_from_a_limit_the_gpus_do_not_reach_lands_a_step_above_their_busy_power() -> None:
    lo, hi = 150.0, 300.0  # a V100: steps of 7.5 W
    assert power_target(300.0, -1, 174.0, False, lo, hi) == 187.5  # lowest grid limit >= 174 + 7.5
    assert power_target(300.0, -1, 174.0, True, lo, hi) == 292.5  # capped: the limit binds, one step
    assert power_target(187.5, -1, 174.0, False, lo, hi) == 180.0  # within two steps: one step
    assert power_target(180.0, +1, 100.0, False, lo, hi) == 187.5  # up: always one step
    assert power_target(160.0, -1, 40.0, False, lo, hi) == lo
    # the cap acts while kernels run: 150 W at 60% utilisation may be 250 W busy
    assert busy_power([(150.0, 0.6), (140.0, 0.9)]) == 250.0
    assert busy_power([(150.0, 0.0)]) == math.inf and power_target(300.0, -1, math.inf, False, lo, hi) == 292.5
    # the memory-bound job on the simulated V100 draws ~175 W under a 300 W limit: the first
    # step down skips the steps that would change nothing, and costs no goodput
    env = SimNodeEnv(profiles=("v100",), workloads=("dlrm-criteo",), gpus=(1,), horizon=4, noise=0.0)
    env.reset(seed=0, options={"objective": "energy_slowdown", "max_slowdown": 0.03})
    assert env.kernel.last is not None
    busy = env.kernel.last.busy_w
    _, _, _, _, info = env.step(move(-1, 0))
    assert busy + 7.5 <= env.limit_w <= busy + 15.0 and env.limit_w <= 240.0
    assert info["goodput_ratio"] > 0.999 and not info["rolled_back"]


def test_an_energy_rise_after_a_step_down_stops_the_descent_only_where_the_limit_binds() -> None:
    # uncapped, a lower limit changes nothing: a 1.4% rise of energy per sample is measurement
    # noise (with 0.5% noise per interval this stopped dlrm at its first limit and saved nothing)
    for capped, expected in ((False, move(-1, 0)), (True, move(+1, 0))):
        c = ClimbChooser("energy_slowdown", 0.03)
        first = reading(1.0, 1.0, 0.986)
        first[4] = capped
        assert c(first) == move(-1, 0)
        after = reading(0.95, 0.999, 1.000)
        after[4] = capped
        assert c(after) == expected


def test_the_slowdown_budget_is_judged_against_the_measured_noise() -> None:
    # readings that move by 1.2% between intervals with no move (1% noise): one reading 0.8%
    # under the budget is not evidence of a slowdown and sets no floor; noise-free it is
    noisy = ClimbChooser("energy_slowdown", 0.03)
    obs = reading(0.9, 0.972, 0.95)  # within the budget and its margin: the limit holds
    obs[10] = 0.5  # past the reference interval
    for k in range(12):  # no move made between these readings; goodput alternates +-1.2%
        obs[17] = 0.12 if k % 2 else -0.12
        assert split(noisy(obs))[0] == 0
    assert noisy.spread > 0.01
    assert noisy(reading(0.9, 0.962, 0.90)) != move(+1, 0) and noisy.floor is None
    quiet = ClimbChooser("energy_slowdown", 0.03)
    assert quiet(reading(0.9, 0.962, 0.90)) == move(+1, 0) and quiet.floor == pytest.approx(0.9)
