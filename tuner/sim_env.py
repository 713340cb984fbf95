"""Gymnasium environment on the simulated GPU node (physics backend), with domain randomisation.

An episode builds a node with ``build_sim_node`` from a random GPU profile, workload, GPU
count and seed, measures the default configuration for one interval (the baseline the daemon
records when a job starts), then lets the agent move the power limit (all GPUs, one step of
5% of the range) and the global batch size (halve, keep, double) every interval. Ranks with
slack additionally get the Perseus controller's lower limits. Observations are normalised
NVML readings and trainer report statistics only. Rewards:

- ``energy_slowdown``: 1 - energy per effective sample / baseline's, minus 10 x the throughput
  shortfall beyond the allowed slowdown;
- ``throughput``: goodput / baseline goodput - 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gputuned.collectors.device import ClockEventReason
from gputuned.tuner.perseus import RankTiming, SlackConfig, plan_power_limits

logger = logging.getLogger(__name__)

SIM_OBJECTIVES = ("energy_slowdown", "throughput")
SIM_OBS_DIM = 14
#: Held out of training, to judge generalisation to workloads never seen.
HELD_OUT_WORKLOADS = ("vit-b16-imagenet", "gpt2-small-openwebtext", "dlrm-criteo")


class SimNodeEnv(gym.Env):
    """Power-limit and batch-size tuning on a simulated node; one step is one decision interval."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        profiles: Sequence[str] = ("a100", "h100", "v100", "a40", "rtx6000", "p100"),
        workloads: Sequence[str] = (
            "cifar100-shufflenetv2", "imagenet-resnet50", "librispeech-deepspeech2",
            "movielens-ncf", "sentiment140-bert", "squad-bert",
        ),
        objectives: Sequence[str] = SIM_OBJECTIVES,
        gpus: Sequence[int] = (1, 2, 4),
        interval_s: float = 20.0,
        horizon: int = 30,
        max_slowdown: float = 0.03,
        noise: float = 0.02,
    ) -> None:
        for name in objectives:
            if name not in SIM_OBJECTIVES:
                raise ValueError(f"unknown sim objective {name!r} ({', '.join(SIM_OBJECTIVES)})")
        self.profiles, self.workloads, self.objectives = tuple(profiles), tuple(workloads), tuple(objectives)
        self.gpus, self.interval_s, self.horizon = tuple(gpus), interval_s, horizon
        self.max_slowdown, self.noise = max_slowdown, noise
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(SIM_OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(9)  # (power move, batch move) in {-1, 0, +1}^2

    # -- measurement ---------------------------------------------------------------
    def _interval(self) -> dict[str, Any]:
        devs = self.backend.devices
        e0 = sum(self.backend.energy_j)
        self.clock.advance(self.interval_s)
        self.backend.sync()
        stats = self.backend.job.report_stats()
        n = self.np_random.normal(1.0, self.noise, 3) if self.noise > 0 else np.ones(3)
        energy = (sum(self.backend.energy_j) - e0) * float(n[0])
        samples = stats.get("samples_per_s", 0.0) * self.interval_s * float(n[1])
        goodput = stats.get("goodput", 0.0) * float(n[2])
        cap = any(d.clock_event_reasons & int(ClockEventReason.SW_POWER_CAP) for d in devs)
        timings = [
            RankTiming(int(r["rank"]), str(i), r["compute_time_s"], r["sync_wait_s"])
            for i, r in enumerate(self.backend.job.rank_stats())
        ]
        return {
            "energy": energy, "samples": samples, "goodput": goodput, "cap": float(cap),
            "power": float(np.mean([d.power_mw for d in devs])) / 1000.0,
            "sm": float(np.mean([d.sm_clock_mhz for d in devs])), "eff": stats.get("statistical_efficiency", 1.0),
            "timings": timings,
        }

    def _obs(self, m: dict[str, Any]) -> np.ndarray:
        p = self.profile
        eps = m["energy"] / max(m["goodput"] * self.interval_s, 1e-9)
        obs = [
            self.limit_w / p.power_limit_max_w,
            m["power"] / self.limit_w,
            m["power"] / p.power_limit_max_w,
            m["sm"] / p.sm_clock_max_mhz,
            m["cap"],
            math.log2(self.job.batch_size / self.b0) / 4.0,
            m["samples"] / max(self.ref["samples"], 1e-9) - 1.0,
            m["goodput"] / max(self.ref["goodput"], 1e-9) - 1.0,
            eps / self.ref_eps - 1.0,
            m["eff"] - 1.0,
            self.t / self.horizon,
            float(self.oom),
            1.0 if self.objective == "energy_slowdown" else 0.0,
            self.max_slowdown * 10.0,
        ]
        return np.clip(np.asarray(obs, dtype=np.float32), -5.0, 5.0)

    # -- gym API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Build a random node and job, measure the default configuration once."""
        from gputuned.collectors.sim.node import build_sim_node
        from gputuned.collectors.sim.state import VirtualClock

        super().reset(seed=seed)
        rng = self.np_random
        opts = options or {}
        self.profile_name = opts.get("profile") or self.profiles[int(rng.integers(len(self.profiles)))]
        self.workload = opts.get("workload") or self.workloads[int(rng.integers(len(self.workloads)))]
        self.objective = opts.get("objective") or self.objectives[int(rng.integers(len(self.objectives)))]
        n_gpus = int(opts.get("gpus") or self.gpus[int(rng.integers(len(self.gpus)))])
        node_seed = int(rng.integers(1 << 30))
        batch: int | None = None
        while True:  # a default batch that does not fit this GPU is halved, as a user would
            self.clock = VirtualClock()
            try:
                self.backend = build_sim_node(
                    self.profile_name, n_gpus, self.workload, None, self.clock, seed=node_seed, batch_size=batch
                )
                break
            except ValueError as exc:
                if "does not fit" not in str(exc):
                    raise
                from gputuned.collectors.sim.workload import load_workload

                batch = (batch or load_workload(self.workload).default_batch_size) // 2
                if batch < 1:
                    raise
        self.job = self.backend.job
        self.profile = self.backend.devices[0].profile
        self.b0 = self.job.batch_size
        self.limit_w = self.profile.power_limit_default_w
        self.t, self.oom = 0, False
        self.ref = self._interval()
        self._last_timings: list[RankTiming] = self.ref["timings"]
        self.ref_eps = self.ref["energy"] / max(self.ref["goodput"] * self.interval_s, 1e-9)
        info = {"profile": self.profile_name, "workload": self.workload, "objective": self.objective}
        return self._obs(self.ref), info

    def _apply(self, action: int, timings: list[RankTiming]) -> None:
        p = self.profile
        dp, db = action // 3 - 1, action % 3 - 1
        step = 0.05 * (p.power_limit_max_w - p.power_limit_min_w)
        self.limit_w = float(np.clip(self.limit_w + dp * step, p.power_limit_min_w, p.power_limit_max_w))
        limits = {str(i): self.limit_w for i in range(len(self.backend.devices))}
        if len(timings) > 1:
            bounds = {g: (p.power_limit_min_w, self.limit_w) for g in limits}
            current = {g: d.power_limit_mw / 1000.0 for g, d in zip(limits, self.backend.devices, strict=True)}
            limits = plan_power_limits(timings, current, bounds, SlackConfig(step_w=step))
        for g, d in zip(limits, self.backend.devices, strict=True):
            d.power_limit_mw = int(min(limits[g], self.limit_w) * 1000)
        self.oom = False
        if db:
            target = int(self.job.batch_size * (2.0 if db > 0 else 0.5))
            ok, _ = self.job.set_batch_size(target)
            self.oom = not ok

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply a move, run one interval, reward by the objective."""
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        self._apply(int(action), self._last_timings)
        m = self._interval()
        self._last_timings = m["timings"]
        self.t += 1
        eps = m["energy"] / max(m["goodput"] * self.interval_s, 1e-9)
        tput = m["samples"] / max(self.ref["samples"], 1e-9)
        if self.objective == "energy_slowdown":
            reward = 1.0 - eps / self.ref_eps - 10.0 * max(0.0, (1.0 - self.max_slowdown) - tput)
        else:
            reward = m["goodput"] / max(self.ref["goodput"], 1e-9) - 1.0
        info = {"energy_per_sample_ratio": eps / self.ref_eps, "throughput_ratio": tput,
                "goodput_ratio": m["goodput"] / max(self.ref["goodput"], 1e-9)}
        return self._obs(m), float(np.clip(reward, -5.0, 5.0)), self.t >= self.horizon, False, info
