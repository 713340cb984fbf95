"""The simulated-node environment on the physics backend: gymnasium API, actions reach the node."""

from __future__ import annotations

import pytest
from stable_baselines3.common.env_checker import check_env

from gputuned.tuner.sim_env import SimNodeEnv


def test_sim_env_passes_check_env() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("imagenet-resnet50",), horizon=4)
    check_env(env)


def test_power_moves_reach_every_gpu_and_lower_energy_per_sample() -> None:
    env = SimNodeEnv(profiles=("a100",), workloads=("imagenet-resnet50",), gpus=(2,), horizon=12, noise=0.0)
    env.reset(seed=0, options={"objective": "energy_slowdown"})
    start = env.limit_w
    info = {}
    for _ in range(6):
        _, _, _, _, info = env.step(1)  # power down, batch kept
    assert env.limit_w < start
    assert all(d.power_limit_mw <= env.limit_w * 1000 for d in env.backend.devices)
    assert info["energy_per_sample_ratio"] < 1.0 and info["throughput_ratio"] < 1.0


def test_oversize_batch_is_reported_as_oom_not_applied() -> None:
    env = SimNodeEnv(profiles=("p100",), workloads=("imagenet-resnet50",), gpus=(1,), horizon=20, noise=0.0)
    env.reset(seed=0, options={"objective": "throughput"})
    seen_oom = False
    for _ in range(10):
        before = env.job.batch_size
        obs, _, _, _, _ = env.step(5)  # batch doubles each step until memory runs out
        if obs[11] == 1.0:
            seen_oom = True
            assert env.job.batch_size == before
            break
    assert seen_oom


def test_sim_env_rejects_unknown_objective() -> None:
    with pytest.raises(ValueError, match="unknown sim objective"):
        SimNodeEnv(objectives=("speed",))
