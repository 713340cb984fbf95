"""Gymnasium environment replaying the Zeus traces: one step is one recurrence of a job.

An episode draws a (GPU, job) from the training traces, an objective and a horizon, and
randomises the domain (epochs to target scaled by a smooth random trend over batch size and
per-size noise; measurement noise). The agent's observation is :func:`zeus_agent.observe`
(live-measured quantities only); its action picks a batch size by offset from the best one so far; inside
the step the run is simulated with JIT power-limit profiling and progress-keeping switches.
The reward is ``1 - cost / first_run_cost``: the recurrence's saving, under the objective.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gputuned.tuner.zeus.agent import N_ACTIONS, OBS_DIM, GputunedPolicy, observe
from gputuned.tuner.zeus.baselines import default_time_s
from gputuned.tuner.zeus.objectives import Objective, make_objective
from gputuned.tuner.zeus.run import TraceRun
from gputuned.tuner.zeus.traces import JobTrace

logger = logging.getLogger(__name__)

OBJECTIVES = ("zeus_cost", "energy", "throughput", "energy_slowdown")


class ZeusTraceEnv(gym.Env):
    """Recurring-job environment over Zeus traces with domain randomisation."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        traces: Sequence[JobTrace],
        objectives: Sequence[str] = ("zeus_cost",),
        eta_range: tuple[float, float] = (0.0, 1.0),
        recurrences: tuple[int, int] = (30, 60),
        epochs_jitter: float = 0.15,
        noise: float = 0.02,
    ) -> None:
        if not traces:
            raise ValueError("ZeusTraceEnv needs at least one job trace")
        for name in objectives:
            make_objective(name)
        self.traces = list(traces)
        self.objectives = tuple(objectives)
        self.eta_range = eta_range
        self.recurrences = recurrences
        self.epochs_jitter = epochs_jitter
        self.noise = noise
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._policy: GputunedPolicy | None = None

    def _draw(self) -> None:
        rng = self.np_random
        self.trace = self.traces[int(rng.integers(len(self.traces)))]
        name = self.objectives[int(rng.integers(len(self.objectives)))]
        self.objective: Objective = make_objective(
            name, eta=float(rng.uniform(*self.eta_range)), max_slowdown=float(rng.choice([0.05, 0.1, 0.2]))
        )
        self.horizon = int(rng.integers(self.recurrences[0], self.recurrences[1] + 1))
        b0 = self.trace.default_batch_size
        trend = float(rng.normal(0.0, self.epochs_jitter))
        self.scale = {
            b: math.exp(trend * math.log2(b / b0) + float(rng.normal(0.0, self.epochs_jitter))) if b != b0 else 1.0
            for b in self.trace.batch_sizes
        }
        self.ref_time = default_time_s(self.trace)

    def _recur(self) -> float:
        assert self._policy is not None
        run = TraceRun(self.trace, self.np_random, noise=self.noise, epochs_scale=self.scale)
        self._policy.run_recurrence(run, self.objective, self.ref_time)
        return run.cost(self.objective, self.ref_time)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new job: draw the domain and run its first (default) recurrence."""
        super().reset(seed=seed)
        self._draw()
        self._action: int = 0
        self._policy = GputunedPolicy(chooser=lambda _obs: self._action, rng=self.np_random)
        self._recur()
        self.t = 1
        return observe(self._policy.mem), {"job": self.trace.job, "gpu": self.trace.gpu}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Run one recurrence with the chosen move; reward is its saving over the first run."""
        assert self._policy is not None
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        self._action = int(action)
        cost = self._recur()
        self.t += 1
        reward = float(np.clip(1.0 - cost / self._policy.mem.norm, -3.0, 1.0))
        terminated = self.t >= self.horizon
        return observe(self._policy.mem), reward, terminated, False, {"cost": cost}
