"""Train the recurring-job agent with stable-baselines3 PPO on the Zeus-trace environment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gputuned.tuner.decision.policy_numpy import NumpyPolicy, from_sb3
from gputuned.tuner.zeus.traces import JobTrace

logger = logging.getLogger(__name__)


def make_env(traces: Sequence[JobTrace], objectives: Sequence[str] = ("zeus_cost",), seed: int = 0):  # noqa: ANN201
    """A checked, monitored ZeusTraceEnv over ``traces``."""
    from stable_baselines3.common.monitor import Monitor

    from gputuned.tuner.zeus.env import ZeusTraceEnv

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


def train_sim(
    timesteps: int, out_dir: Path, hidden: int = 64, seed: int = 0, progress_bar: bool = True,
    clone_steps: int = 12_000, n_envs: int = 4, checkpoint_every: int = 20_000,
) -> NumpyPolicy:
    """Train PPO on the simulated-node environment (training workloads only), warm-started by cloning the climber.

    ``clone_steps`` decisions of the climber (the environment's adviser acting alone) give a
    supervised start: the policy's action head is fitted to the climber's moves and its value head
    to the discounted returns seen, so that PPO improves on the rule instead of starting from a
    random walk through power limits and batch sizes. Writes ppo_sim.zip, policy_sim.npz and
    policy_clone.npz (the clone alone) under ``out_dir``.
    """
    from gputuned.tuner.sim_env import SimNodeEnv

    def make(i: int):  # noqa: ANN202
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(SimNodeEnv())
        env.reset(seed=seed + i)
        return env

    def warm(model: object) -> None:
        if clone_steps <= 0:
            return
        data = collect_adviser(SimNodeEnv(), clone_steps, seed + 1000, gamma=SIM_PPO["gamma"])
        clone(model, *data)
        from_sb3(model).save(Path(out_dir) / "policy_clone.npz")

    return train_env(make, timesteps, out_dir, "sim", hidden=hidden, seed=seed, progress_bar=progress_bar,
                     n_envs=n_envs, checkpoint_every=checkpoint_every, ppo=SIM_PPO, before=warm)


#: PPO settings for the simulated node (fine-tuning a cloned start).
SIM_PPO: dict[str, float | int] = {"n_steps": 512, "batch_size": 256, "n_epochs": 5, "gamma": 0.95,
                                   "learning_rate": 2e-4, "ent_coef": 0.005, "clip_range": 0.2}


def collect_adviser(env: object, steps: int, seed: int, gamma: float) -> tuple:
    """Observations, the adviser's (climber's) moves and discounted returns over ``steps`` decisions."""
    import numpy as np

    obs_l: list[Any] = []
    act_l: list[int] = []
    ret_l: list[float] = []
    k = 0
    while len(obs_l) < steps:
        obs, _ = env.reset(seed=seed + k)  # type: ignore[attr-defined]
        k += 1
        rewards = []
        done = False
        while not done:
            action = env.suggested  # type: ignore[attr-defined]
            obs_l.append(obs)
            act_l.append(action)
            obs, r, term, trunc, _ = env.step(action)  # type: ignore[attr-defined]
            rewards.append(r)
            done = term or trunc
        g, out = 0.0, []
        for r in reversed(rewards):
            g = r + gamma * g
            out.append(g)
        ret_l.extend(reversed(out))
    logger.info("cloning data: %d decisions over %d episodes", len(obs_l), k)
    return np.asarray(obs_l, dtype=np.float32), np.asarray(act_l), np.asarray(ret_l, dtype=np.float32)


def clone(
    model: object, obs: object, actions: object, returns: object, epochs: int = 30, lr: float = 1e-3, smooth: float = 0.15,
) -> float:
    """Fit the policy head to ``actions`` and the value head to ``returns``; the share of moves reproduced.

    Cross-entropy against targets smoothed by ``smooth`` (that share spread over the other moves):
    the start follows the adviser but still explores, so PPO sees what overruling it is worth.
    """
    import torch

    policy = model.policy  # type: ignore[attr-defined]
    o = torch.as_tensor(obs)
    a = torch.as_tensor(actions)
    r = torch.as_tensor(returns)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(o), generator=gen)
        for i in range(0, len(o), 256):
            idx = perm[i : i + 256]
            dist = policy.get_distribution(o[idx]).distribution
            n = dist.logits.shape[1]
            target = torch.full_like(dist.logits, smooth / (n - 1))
            target[torch.arange(len(idx)), a[idx]] = 1.0 - smooth
            values = policy.predict_values(o[idx])
            loss = -(target * torch.log_softmax(dist.logits, 1)).sum(1).mean() + 0.5 * torch.nn.functional.mse_loss(
                values.flatten(), r[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((policy.get_distribution(o).distribution.probs.argmax(1) == a).float().mean())
    logger.info("cloned the adviser: %.3f of its moves reproduced", acc)
    return acc


def resume_sim(checkpoint: Path, timesteps: int, out_dir: Path, seed: int = 0, n_envs: int = 4,
               checkpoint_every: int = 20_000, **ppo: float | int) -> NumpyPolicy:
    """Continue a simulated-node PPO run from ``checkpoint`` (optionally with other PPO settings, e.g. learning_rate)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from gputuned.tuner.sim_env import SimNodeEnv

    torch.set_num_threads(1)
    out_dir = Path(out_dir)

    def make(i: int):  # noqa: ANN202
        env = Monitor(SimNodeEnv())
        env.reset(seed=seed + 100 + i)
        return env

    venv = DummyVecEnv([lambda i=i: make(i) for i in range(n_envs)])  # type: ignore[misc]
    custom: dict[str, Any] = dict(ppo)
    if "learning_rate" in ppo:
        lr = float(ppo["learning_rate"])
        custom["lr_schedule"] = lambda _: lr
    model = PPO.load(checkpoint, env=venv, device="cpu", custom_objects=custom)
    callbacks = CheckpointCallback(max(checkpoint_every // n_envs, 1), str(out_dir / "checkpoints"), name_prefix="ppo")
    model.learn(total_timesteps=timesteps, callback=callbacks, reset_num_timesteps=False)
    model.save(out_dir / "ppo_sim.zip")
    policy = from_sb3(model)
    policy.save(out_dir / "policy_sim.npz")
    return policy


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
    ppo: dict[str, float | int] | None = None,
    before: Callable[[object], None] | None = None,
) -> NumpyPolicy:
    """Train PPO on ``n_envs`` environments from ``make(i)``; writes ppo_<name>.zip and policy_<name>.npz.

    ``ppo`` overrides PPO settings; ``before(model)`` runs before learning (e.g. a cloned start).
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([lambda i=i: make(i) for i in range(n_envs)])  # type: ignore[misc]
    settings: dict[str, float | int] = {"n_steps": 256, "batch_size": 256, "n_epochs": 5, "gamma": 0.98,
                                        "learning_rate": 3e-4, "ent_coef": 0.01}
    settings.update(ppo or {})
    model = PPO("MlpPolicy", venv, policy_kwargs={"net_arch": [hidden, hidden]}, seed=seed, verbose=0,
                **settings)  # type: ignore[arg-type]
    if before is not None:
        before(model)
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
