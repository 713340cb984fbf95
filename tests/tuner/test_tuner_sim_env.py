"""The simulated-node environment: gymnasium API, the daemon's observation and guard, moves reach the node."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from gputuned.tuner.decision.choosers import ClimbChooser
from gputuned.tuner.decision.moves import STAY, decode, move, share
from gputuned.tuner.decision.observe import BASE_OBS_DIM, SIM_OBS_DIM
from gputuned.tuner.sim_env import SimNodeEnv


def test_sim_env_passes_check_env() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("imagenet-resnet50",), horizon=4)
    check_env(env)
    obs, info = env.reset(seed=1)
    assert obs.shape == (SIM_OBS_DIM,) and info["max_slowdown"] in (0.03, 0.05, 0.10)


def test_power_moves_reach_every_gpu_and_lower_energy_per_sample() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("imagenet-resnet50",), gpus=(2,), horizon=12, noise=0.0)
    obs, _ = env.reset(seed=0, options={"objective": "energy_slowdown", "max_slowdown": 0.10})
    start = env.limit_w
    info: dict = {}
    for _ in range(6):
        obs, _, _, _, info = env.step(move(-1, 0))
        assert obs[14] == -1.0 or obs[18] == 1.0  # the last move as made, or its rollback, is in the observation
    assert env.limit_w < start
    assert all(d.power_limit_mw <= env.limit_w * 1000 for d in env.backend.devices)
    assert info["energy_per_sample_ratio"] < 1.0 and info["throughput_ratio"] < 1.0


def test_oversize_batch_is_an_oom_event_and_never_proposed_again() -> None:
    env = SimNodeEnv(profiles=("p100",), workloads=("imagenet-resnet50",), gpus=(1,), horizon=20, noise=0.0)
    env.reset(seed=0, options={"objective": "throughput"})
    sizes = []
    for _ in range(12):
        before = env.job.batch_size
        obs, _, _, _, _ = env.step(move(0, +1))  # batch doubles each step until memory runs out
        sizes.append(env.job.batch_size)
        if obs[11] == 1.0:
            assert env.job.batch_size == before
            ceiling = env.guard.oom_ceiling
            break
    else:
        pytest.fail("no OOM seen")
    for _ in range(3):  # the guard refuses that size from now on: no second OOM
        obs, _, _, _, _ = env.step(move(0, +1))
        assert obs[11] == 0.0 and env.job.batch_size < ceiling


def test_a_harmful_move_is_rolled_back_and_costs_an_extra_interval() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("squad-bert",), gpus=(1,), horizon=40, noise=0.0)
    env.reset(seed=0, options={"objective": "throughput"})
    env.step(STAY)
    seen = None
    for _ in range(8):  # halving the batch of a job that scales with it costs goodput
        before = env.job.batch_size
        obs, _, _, _, info = env.step(move(0, -1))
        if info["rolled_back"]:
            seen = (before, obs, info)
            break
    assert seen is not None, "the guard never rolled a halved batch back"
    before, obs, info = seen
    assert env.job.batch_size == before and info["intervals"] == 2 and obs[18] == 1.0


def test_adviser_features_are_the_climbers_move() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("imagenet-resnet50",), gpus=(1,), horizon=30, noise=0.0)
    obs, _ = env.reset(seed=3, options={"objective": "energy_slowdown", "max_slowdown": 0.03})
    twin = ClimbChooser("energy_slowdown", 0.03)
    for _ in range(15):  # following the adviser: its proposal is what a climber on the same readings says
        assert env.suggested == twin(obs[:BASE_OBS_DIM])
        proposed = decode(env.suggested)
        assert list(obs[BASE_OBS_DIM:]) == [x * share(env.suggested) for x in proposed]
        obs, _, _, _, info = env.step(env.suggested)
        if info["rolled_back"]:
            m = decode(env.suggested)
            twin.rolled_back("sm_clock" if m.dc else "power_limit" if m.dp else "batch_size")
    # the limit came down, or a lock took over from it
    assert env.limit_w < env.node.default_limit_w() or env.kernel.lock_mhz is not None


def test_sim_env_rejects_unknown_objective() -> None:
    with pytest.raises(ValueError, match="unknown sim objective"):
        SimNodeEnv(objectives=("speed",))
    assert np.isfinite(SimNodeEnv().observation_space.high).all()


def test_a_harmful_two_knob_move_is_rolled_back_whole() -> None:
    # ViT at half its batch and a lower limit is 9% slower: the move must come back entirely (the
    # batch too, not only the limit committed last), or a policy repeating it walks the job down;
    # it is the first change of both knobs, which the guard must still be able to undo
    env = SimNodeEnv(profiles=("a100",), workloads=("vit-b16-imagenet",), gpus=(1,), horizon=40, noise=0.0)
    env.reset(seed=0, options={"objective": "throughput"})
    env.step(STAY)
    before = (env.job.batch_size, env.limit_w)
    _, _, _, _, info = env.step(move(-1, -1))
    assert info["rolled_back"] and info["intervals"] == 2
    assert (env.job.batch_size, env.limit_w) == before
    assert all(d.power_limit_mw == int(before[1] * 1000) for d in env.backend.devices)
