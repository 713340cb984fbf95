"""Train the recurring-job agent with stable-baselines3 PPO on the Zeus-trace environment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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
    """Train PPO on the Zeus-trace environment; checkpoints and model under ``out_dir``; numpy export."""
    return train_env(
        lambda i: make_env(traces, objectives, seed + i), timesteps, out_dir, "zeus",
        hidden=hidden, seed=seed, checkpoint_every=checkpoint_every, progress_bar=progress_bar, n_envs=n_envs,
    )


def train_sim(timesteps: int, out_dir: Path, hidden: int = 64, seed: int = 0, progress_bar: bool = True) -> NumpyPolicy:
    """Train PPO on the simulated-node environment (training workloads only)."""

    def make(i: int):  # noqa: ANN202
        from stable_baselines3.common.monitor import Monitor

        from gputuned.tuner.sim_env import SimNodeEnv

        env = Monitor(SimNodeEnv())
        env.reset(seed=seed + i)
        return env

    return train_env(make, timesteps, out_dir, "sim", hidden=hidden, seed=seed, progress_bar=progress_bar, n_envs=2)


def train_env(
    make: Callable[[int], object],
    timesteps: int,
    out_dir: Path,
    name: str,
    hidden: int = 64,
    seed: int = 0,
    checkpoint_every: int = 50_000,
    progress_bar: bool = True,
    n_envs: int = 4,
) -> NumpyPolicy:
    """Train PPO on ``n_envs`` environments from ``make(i)``; writes ppo_<name>.zip and policy_<name>.npz."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([lambda i=i: make(i) for i in range(n_envs)])  # type: ignore[misc]
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
    model.save(out_dir / f"ppo_{name}.zip")
    policy = from_sb3(model)
    policy.save(out_dir / f"policy_{name}.npz")
    logger.info("trained %d steps; policy written to %s", timesteps, out_dir / f"policy_{name}.npz")
    return policy
