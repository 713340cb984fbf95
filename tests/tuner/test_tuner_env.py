"""The Zeus-trace environment: gymnasium API, live-only observations, objectives, progress carry."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from gputuned.tuner.zeus.agent import OBS_DIM, PER_SLOT, SLOTS, GputunedPolicy, observe
from gputuned.tuner.zeus.baselines import (
    DefaultPolicy,
    OraclePolicy,
    ZeusStylePolicy,
    expected_cost,
)
from gputuned.tuner.zeus.env import ZeusTraceEnv
from gputuned.tuner.zeus.objectives import (
    EnergyWithSlowdown,
    MaxThroughput,
    MinEnergy,
    ZeusCost,
    make_objective,
)
from gputuned.tuner.zeus.run import TraceRun
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, load_gpu


@pytest.fixture(scope="module")
def a40() -> dict:
    return load_gpu(PACKAGED_TRACES, "a40")


def test_env_passes_sb3_check_env(a40: dict) -> None:
    env = ZeusTraceEnv(list(a40.values()), objectives=("zeus_cost", "energy", "throughput", "energy_slowdown"))
    check_env(env)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info["gpu"] == "a40"
    total, done = 0.0, False
    while not done:
        obs, reward, done, truncated, _ = env.step(env.action_space.sample())
        assert math.isfinite(reward) and -3.0 <= reward <= 1.0 and not truncated
        total += reward
    assert env.t == env.horizon


def test_env_rejects_unknown_objective_and_action(a40: dict) -> None:
    with pytest.raises(ValueError, match="unknown objective"):
        ZeusTraceEnv(list(a40.values()), objectives=("speed",))
    env = ZeusTraceEnv(list(a40.values()))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(99)


def test_observation_does_not_see_hidden_epochs_to_target(a40: dict) -> None:
    """Two traces that differ only in the epochs table give the same first observation."""
    trace = a40["cifar100"]
    other = dataclasses.replace(
        trace, epochs_to_target={b: tuple(e * (3.0 if b != trace.default_batch_size else 1.0) for e in s)
                                 for b, s in trace.epochs_to_target.items()}
    )
    obs = []
    for t in (trace, other):
        policy = GputunedPolicy(lambda o: SLOTS, rng=np.random.default_rng(0))
        policy.run_recurrence(TraceRun(t, np.random.default_rng(5)), ZeusCost(0.5), None)
        obs.append(observe(policy.mem))
    # Only the run's own measured cost may differ: profiling the other sizes makes a little real
    # progress, which ends the run slightly sooner or later. Nothing else depends on the table.
    cost_idx = [k * PER_SLOT + 3 for k in range(2 * SLOTS + 1)] + [(2 * SLOTS + 1) * PER_SLOT + 1]
    rest = np.ones(OBS_DIM, dtype=bool)
    rest[cost_idx] = False
    np.testing.assert_array_equal(obs[0][rest], obs[1][rest])
    np.testing.assert_allclose(obs[0][cost_idx], obs[1][cost_idx], atol=0.02)


def test_progress_carries_across_batch_size_changes(a40: dict) -> None:
    trace = a40["librispeech"]
    run = TraceRun(trace, np.random.default_rng(0), noise=0.0)
    need = {b: run._need[b] for b in (32, 192)}
    run.set_config(192, 300)
    run.run(ZeusCost(0.5), max_seconds=0.5 * need[192] * trace.epoch[(192, 300)][0])
    assert run.progress == pytest.approx(0.5)
    run.set_config(32, 300)
    t0 = run.time_s
    assert run.run(ZeusCost(0.5))
    assert run.time_s - t0 == pytest.approx(0.5 * need[32] * trace.epoch[(32, 300)][0])


def test_objectives_pick_the_right_power_limit() -> None:
    profile = {300: (10.0, 300.0), 200: (12.0, 200.0), 100: (30.0, 100.0)}
    assert MinEnergy().pick_power_limit(profile, 300) == 200
    assert MinEnergy().cost(100.0, 1e9, 300, ref_time_s=1.0) == 100.0  # no slowdown is penalised
    assert MaxThroughput().pick_power_limit(profile, 300) == 300
    assert EnergyWithSlowdown(0.25).pick_power_limit(profile, 300) == 200
    assert EnergyWithSlowdown(0.1).pick_power_limit(profile, 300) == 300
    assert ZeusCost(0.0).pick_power_limit(profile, 300) == 300
    slow = EnergyWithSlowdown(0.1)
    assert slow.cost(100.0, 120.0, 300, ref_time_s=100.0) > slow.cost(100.0, 105.0, 300, ref_time_s=100.0) == 100.0
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("fast")


def test_baselines_reach_target_and_oracle_is_cheapest_in_expectation(a40: dict) -> None:
    trace = a40["cifar100"]
    objective = ZeusCost(0.5)
    oracle = OraclePolicy(trace)
    b, p = oracle.best(objective, None)
    assert expected_cost(trace, objective, b, p, None) <= expected_cost(
        trace, objective, trace.default_batch_size, trace.max_power_w, None
    )
    for policy in (DefaultPolicy(), oracle, ZeusStylePolicy(np.random.default_rng(0))):
        for seed in range(3):
            run = TraceRun(trace, np.random.default_rng(seed))
            policy.run_recurrence(run, objective, None)
            assert run.done


def test_local_search_walks_to_a_better_neighbour_even_when_the_policy_only_exploits(a40: dict) -> None:
    trace = a40["librispeech"]  # b0 = 192; smaller sizes are much cheaper to target
    policy = GputunedPolicy(lambda o: SLOTS, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for _ in range(12):
        policy.run_recurrence(TraceRun(trace, rng), ZeusCost(0.5), None)
    sizes = trace.batch_sizes
    best = policy.mem.best()
    assert best < trace.default_batch_size
    i = sizes.index(best)
    assert all(not policy.mem.untried(sizes[j]) for j in (i - 1, i + 1) if 0 <= j < len(sizes))
