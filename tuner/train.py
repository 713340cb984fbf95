"""Train the recurring-job agent with stable-baselines3 PPO on the Zeus-trace environment."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from gputuned.tuner.policy_numpy import NumpyPolicy, from_sb3
from gputuned.tuner.zeus_traces import JobTrace

logger = logging.getLogger(__name__)


def make_env(traces: Sequence[JobTrace], objectives: Sequence[str] = ("zeus_cost",), seed: int = 0):  # noqa: ANN201
    """A checked, monitored ZeusTraceEnv over ``traces``."""
    from stable_baselines3.common.monitor import Monitor

    from gputuned.tuner.zeus_env import ZeusTraceEnv

    env = Monitor(ZeusTraceEnv(traces, objectives=objectives))
    env.reset(seed=seed)
    return env


def train(
    traces: Sequence[JobTrace],
    timesteps: int,
    out_dir: Path,
    objectives: Sequence[str] = ("zeus_cost",),
    hidden: int = 64,
    seed: int = 0,
    checkpoint_every: int = 50_000,
    progress_bar: bool = True,
    n_envs: int = 4,
) -> NumpyPolicy:
    """Train PPO, saving checkpoints and the final model under ``out_dir``; return the numpy export."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([lambda i=i: make_env(traces, objectives, seed + i) for i in range(n_envs)])
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=256,
        batch_size=256,
        n_epochs=5,
        gamma=0.98,
        learning_rate=3e-4,
        ent_coef=0.01,
        policy_kwargs={"net_arch": [hidden, hidden]},
        seed=seed,
        verbose=0,
    )
    callbacks = CheckpointCallback(max(checkpoint_every // n_envs, 1), str(out_dir / "checkpoints"), name_prefix="ppo")
    use_bar = progress_bar
    if use_bar:
        try:
            import tqdm  # noqa: F401  (SB3's progress bar needs tqdm and rich)
        except ImportError:
            use_bar = False
    model.learn(total_timesteps=timesteps, callback=callbacks, progress_bar=use_bar)
    model.save(out_dir / "ppo_zeus.zip")
    policy = from_sb3(model)
    policy.save(out_dir / "policy_zeus.npz")
    logger.info("trained %d steps; policy written to %s", timesteps, out_dir / "policy_zeus.npz")
    return policy
