"""Gymnasium environment on the simulated GPU node (physics backend), with domain randomisation.

An episode builds a node with ``build_sim_node`` from a random GPU profile, workload, GPU
count, seed, objective, slowdown budget and measurement noise, measures the default
configuration for one interval (the reference the daemon records when a job starts), then
each step is one decision of the live tuner: the move (power limit one step of 5% of the range
on every GPU, global batch size halve/keep/double) goes through a :class:`SafetyGuard` set up
as in the daemon (an oversize batch is an OOM event, and that size is never proposed again),
one interval runs, and the guard judges the move against the cost rate before it: a move that
made the cost rate worse beyond noise is rolled back and another interval runs at the restored
setting (both intervals count in the reward). Observations are built by the daemon's own
:class:`gputuned.tuner.decision.choosers.LiveObserver` from what the daemon measures, plus the
climber's proposal (:func:`gputuned.tuner.decision.choosers.advise`). Reward per interval:

- ``energy_slowdown``: 1 - energy per effective sample / reference's, minus 10 x the goodput
  shortfall beyond the slowdown budget (the objective the headline judges: energy to target at
  a bounded time to target);
- ``throughput``: goodput / reference goodput - 1.

Episodes are truncated (not terminated) at ``horizon``: a live job has no end the policy sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gputuned.collectors.device import ClockEventReason
from gputuned.tuner.decision.choosers import (
    N_ACTIONS,
    SIM_OBS_DIM,
    ClimbChooser,
    LiveObserver,
    advise,
    busy_power,
    power_target,
    split,
)
from gputuned.tuner.decision.guard import GuardConfig, SafetyGuard
from gputuned.tuner.decision.perseus import RankTiming, SlackConfig, plan_power_limits

logger = logging.getLogger(__name__)

SIM_OBJECTIVES = ("energy_slowdown", "throughput")
#: Slowdown budgets drawn for ``energy_slowdown`` (the daemon runs ``energy`` and ``cost`` at 10%).
BUDGETS = (0.03, 0.05, 0.10)
TRAINING_WORKLOADS = (
    "cifar100-shufflenetv2", "imagenet-resnet50", "librispeech-deepspeech2", "movielens-ncf", "sentiment140-bert",
    "squad-bert",
)
#: Held out of training, to judge generalisation to workloads never seen.
HELD_OUT_WORKLOADS = ("vit-b16-imagenet", "gpt2-small-openwebtext", "dlrm-criteo")
NOISE_GUARD = 0.02  # the noise the daemon assumes when judging a move


class SimNodeEnv(gym.Env):
    """The live tuner's decisions on a simulated node; one step is one decision interval."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        profiles: Sequence[str] = ("a100", "h100", "v100", "a40", "rtx6000", "p100"),
        workloads: Sequence[str] = TRAINING_WORKLOADS,
        objectives: Sequence[str] = SIM_OBJECTIVES,
        gpus: Sequence[int] = (1, 2, 4),
        interval_s: float = 20.0,
        horizon: int = 60,
        max_slowdown: float | None = None,
        noise: float = 0.02,
    ) -> None:
        for name in objectives:
            if name not in SIM_OBJECTIVES:
                raise ValueError(f"unknown sim objective {name!r} ({', '.join(SIM_OBJECTIVES)})")
        self.profiles, self.workloads, self.objectives = tuple(profiles), tuple(workloads), tuple(objectives)
        self.gpus, self.interval_s, self.horizon = tuple(gpus), interval_s, horizon
        self.fixed_slowdown, self.noise_max = max_slowdown, noise
        self.max_slowdown, self.noise = max_slowdown or 0.03, noise
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(SIM_OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)  # (power move, batch move) in {-1, 0, +1}^2
        self.suggested = 4

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
        eps = energy / max(goodput * self.interval_s, 1e-9)
        return {
            "energy": energy, "samples": samples, "goodput": goodput, "cap": cap, "eps": eps,
            "power": float(np.mean([d.power_mw for d in devs])) / 1000.0,
            "busy_w": busy_power([(d.power_mw / 1000.0, d.util_gpu_pct / 100.0) for d in devs]),
            "sm": float(np.mean([d.sm_clock_mhz for d in devs])), "eff": min(1.5, goodput / max(samples / self.interval_s, 1e-9)),
            "timings": timings,
        }

    def _ratios(self, m: dict[str, Any]) -> tuple[float, float, float]:
        """(throughput, goodput, energy per effective sample) over the reference's."""
        return (m["samples"] / max(self.ref["samples"], 1e-9), m["goodput"] / max(self.ref["goodput"], 1e-9),
                m["eps"] / self.ref_eps)

    def cost_rate(self, m: dict[str, Any]) -> float:
        """The daemon's cost rate for the guard (:meth:`TuningComponent.cost_rate`)."""
        if self.objective == "throughput":
            return 1.0 / max(m["goodput"], 1e-9)
        short = max(0.0, (1.0 - self.max_slowdown) - self._ratios(m)[1])
        return m["eps"] * (1.0 + 10.0 * short)

    def reward(self, m: dict[str, Any]) -> float:
        """Per-interval reward of the objective (see module doc)."""
        _, good, eps = self._ratios(m)
        if self.objective == "throughput":
            return good - 1.0
        return 1.0 - eps - 10.0 * max(0.0, (1.0 - self.max_slowdown) - good)

    def _obs(self, m: dict[str, Any]) -> np.ndarray:
        p = self.profile
        tput, good, eps = self._ratios(m)
        base = self.observer.observe(
            limit_share=self.limit_w / p.power_limit_max_w, power_w=m["power"], limit_w=self.limit_w,
            max_w=p.power_limit_max_w, sm_ratio=m["sm"] / p.sm_clock_max_mhz, capped=m["cap"],
            batch=self.job.batch_size, b0=self.b0, throughput_ratio=tput, goodput_ratio=good, eps_ratio=eps,
            eff=m["eff"], oom=self.oom,
        )
        obs, self.suggested = advise(self.adviser, base)
        return obs

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
        if self.objective == "throughput":
            self.max_slowdown = 0.03
        else:
            self.max_slowdown = float(opts.get("max_slowdown") or self.fixed_slowdown or BUDGETS[int(rng.integers(len(BUDGETS)))])
        self.noise = float(opts["noise"]) if "noise" in opts else float(rng.uniform(0.0, self.noise_max))
        n_gpus = int(opts.get("gpus") or self.gpus[int(rng.integers(len(self.gpus)))])
        node_seed = self.node_seed = int(rng.integers(1 << 30))
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
        half = self.interval_s * 0.5
        self.guard = SafetyGuard(GuardConfig(pause_file=None, settle_s=half, min_interval_s={
            "power_limit": half, "sm_clock": half, "batch_size": half}))
        energy_like = self.objective != "throughput"
        self.observer = LiveObserver(energy_like, self.max_slowdown)
        self.adviser = ClimbChooser(self.objective, self.max_slowdown)
        self._slack_w: dict[int, float] = {}
        self.ref = self._interval()
        self.ref_eps = self.ref["eps"]
        self._last = self.ref
        info = {"profile": self.profile_name, "workload": self.workload, "objective": self.objective,
                "max_slowdown": self.max_slowdown}
        return self._obs(self.ref), info

    def _set_limits(self) -> None:
        p = self.profile
        for i, d in enumerate(self.backend.devices):
            d.power_limit_mw = int(max(p.power_limit_min_w, self.limit_w - self._slack_w.get(i, 0.0)) * 1000)

    def _apply(self, action: int) -> tuple[int, int]:
        """Apply a move through the guard, as the daemon does; returns the (power, batch) move made."""
        p, now = self.profile, self.clock.now()
        dp, db = split(action)
        rate = self.cost_rate(self._last)
        self.oom = False
        done_p = done_b = 0
        step = 0.05 * (p.power_limit_max_w - p.power_limit_min_w)
        if db:
            before = self.job.batch_size
            size = int(before * (2.0 if db > 0 else 0.5))
            if self.guard.propose("batch_size", "job", size, now).allowed:
                ok, err = self.job.set_batch_size(size)
                if ok:
                    self.guard.commit("batch_size", "job", size, now, baseline=rate, previous=before)
                    done_b = db
                elif "memory" in err:
                    self.oom = True
                    self.guard.record_oom(size)
        if dp and db and not done_b:
            dp = 0  # a two-knob move is made whole or not at all, as in the daemon
        target = power_target(self.limit_w, dp, self._last["busy_w"], self._last["cap"], p.power_limit_min_w,
                              p.power_limit_max_w)
        if dp and target != self.limit_w and self.guard.propose("power_limit", "all", target, now).allowed:
            self.guard.commit("power_limit", "all", target, now, baseline=rate, previous=self.limit_w)
            self.limit_w = target
            done_p = dp
        elif len(self._last["timings"]) > 1:  # Perseus when the job-wide limit holds
            timings = self._last["timings"]
            current = {t.gpu: self.limit_w - self._slack_w.get(int(t.gpu), 0.0) for t in timings}
            bounds = {t.gpu: (p.power_limit_min_w, self.limit_w) for t in timings}
            for g, w in plan_power_limits(timings, current, bounds, SlackConfig(step_w=step)).items():
                self._slack_w[int(g)] = self.limit_w - w
        self._set_limits()
        return done_p, done_b

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply a move, run one interval (two if the guard rolls the move back), reward by the objective."""
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        action = int(action)
        self.adviser.taken(action, self.suggested)
        self.observer.moved(*self._apply(action))
        m = self._interval()
        rewards = [self.reward(m)]
        spent = [m]
        back = self.guard.evaluate(self.cost_rate(m), self.clock.now(), noise=NOISE_GUARD)
        if back:
            for knob, _gpu, value in back:  # every knob the move changed
                self.adviser.rolled_back(knob)
                if knob == "power_limit":
                    self.limit_w = value
                    self._set_limits()
                else:
                    self.job.set_batch_size(int(value))
            self.observer.rolled_back()
            m = self._interval()
            rewards.append(self.reward(m))
            spent.append(m)
        self._last = m
        self.t += 1
        tput, good, eps = self._ratios(m)
        info = {"energy_per_sample_ratio": eps, "throughput_ratio": tput, "goodput_ratio": good,
                "intervals": len(rewards), "rolled_back": bool(back), "suggested": self.suggested,
                "energy_j": sum(x["energy"] for x in spent), "effective_samples": sum(x["goodput"] for x in spent) * self.interval_s,
                "reference_eps": self.ref_eps, "reference_goodput": self.ref["goodput"]}
        obs = self._obs(m)
        return obs, float(np.clip(sum(rewards), -5.0, 5.0)), False, self.t >= self.horizon, info
