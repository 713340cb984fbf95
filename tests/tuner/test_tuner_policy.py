"""Numpy inference of the exported policy equals stable-baselines3's deterministic action."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gputuned.tuner.decision.policy_numpy import PACKAGED_POLICY, NumpyPolicy
from gputuned.tuner.zeus.agent import N_ACTIONS, OBS_DIM
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, load_gpu


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from gputuned.tuner.train import train

    out = tmp_path_factory.mktemp("train")
    traces = list(load_gpu(PACKAGED_TRACES, "p100").values())
    policy = train(traces, 256, out, hidden=8, checkpoint_every=128, progress_bar=False, n_envs=2)
    return out, policy


def test_numpy_policy_matches_sb3_deterministic_action(tiny_model) -> None:  # noqa: ANN001
    from stable_baselines3 import PPO

    out, exported = tiny_model
    model = PPO.load(out / "ppo_zeus.zip", device="cpu")
    rng = np.random.default_rng(0)
    obs = rng.uniform(-2.0, 2.0, size=(200, OBS_DIM)).astype(np.float32)
    sb3_actions, _ = model.predict(obs, deterministic=True)
    loaded = NumpyPolicy.load(out / "policy_zeus.npz")
    assert [loaded(o) for o in obs] == [int(a) for a in sb3_actions]
    assert [exported(o) for o in obs] == [int(a) for a in sb3_actions]
    assert len(set(int(a) for a in sb3_actions)) >= 1
    assert list((out / "checkpoints").glob("ppo_*_steps.zip"))


def test_numpy_policy_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shapes"):
        NumpyPolicy([np.zeros((4, 3))], [np.zeros(3)])
    policy = NumpyPolicy([np.ones((2, 3)), np.eye(2)], [np.zeros(2), np.array([0.0, 1.0])], "relu")
    assert policy(np.ones(3)) == 1
    with pytest.raises(ValueError, match="expects 3"):
        policy(np.ones(4))
    with pytest.raises(FileNotFoundError):
        NumpyPolicy.load(tmp_path / "none.npz")


def test_packaged_policy_loads_without_torch() -> None:
    import subprocess

    code = (
        "import sys, numpy as np\n"
        "from gputuned.tuner.decision.policy_numpy import NumpyPolicy\n"
        "p = NumpyPolicy.load()\n"
        "a = p(np.zeros(p.obs_dim))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(p.obs_dim, a)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert PACKAGED_POLICY.is_file()
    assert int(out[0]) == OBS_DIM and 0 <= int(out[1]) < N_ACTIONS
