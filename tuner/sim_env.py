"""Gymnasium environment on the simulated GPU node (physics backend), with domain randomisation.

An episode builds a node with ``build_sim_node`` from a random GPU profile, workload, GPU
count, seed, objective, slowdown budget and measurement noise. Each step is one decision of
the live tuner, made by the daemon's own decision kernel
(:class:`gputuned.tuner.decision.kernel.DecisionKernel`) over a :class:`SimNode`: the first
interval at the job's settings is the reference, the move goes through the same
:class:`SafetyGuard` (an oversize batch is an OOM event, and that size is never proposed
again), and a move that made the cost rate worse beyond noise is rolled back before the next
choice (the intervals in between count in the reward). Observations are the kernel's, plus the
climber's proposal (:func:`gputuned.tuner.decision.choosers.advise`). Reward per interval:

- ``energy_slowdown``: 1 - energy per effective sample / reference's, minus 10 x the goodput
  shortfall beyond the slowdown budget (the objective the headline judges: energy to target at
  a bounded time to target);
- ``throughput``: goodput / reference goodput - 1.

Episodes are truncated (not terminated) at ``horizon``: a live job has no end the policy sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gputuned.collectors.device import ClockEventReason
from gputuned.tuner.decision.choosers import ClimbChooser, advise
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.guard import KNOBS, GuardConfig, SafetyGuard
from gputuned.tuner.decision.kernel import Ack, DecisionKernel, GPULimits, Node, Outcome
from gputuned.tuner.decision.moves import N_ACTIONS, STAY, busy_power, memory_candidates
from gputuned.tuner.decision.observe import SIM_OBS_DIM, Interval
from gputuned.tuner.decision.perseus import RankTiming

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
POWER_CAP = int(ClockEventReason.SW_POWER_CAP)
#: Intervals the environment runs waiting for a choice before it gives up on the episode's job.
MAX_INTERVALS_PER_CHOICE = 30


class SimNode:
    """The kernel's node on the simulated backend: intervals measured with relative noise."""

    def __init__(self, backend: Any, clock: Any, rng: np.random.Generator, noise: float) -> None:
        self.backend = backend
        self.clock = clock
        self.rng = rng
        self.noise = noise
        self.job = backend.job
        p = backend.devices[0].profile
        at_least = getattr(p, "at_least", None)  # NVML locks SM clocks from Volta on
        clocks = tuple(p.sm_clocks_mhz) if at_least is None or at_least("volta") else ()
        memory = memory_candidates(p.memory_clocks_mhz) if at_least is not None and at_least("ampere") else ()
        self._gpus = [GPULimits(str(i), p.power_limit_min_w, p.power_limit_max_w, clocks, memory)
                      for i in range(len(backend.devices))]
        self._t0 = clock.now()
        self._e0 = sum(backend.energy_j)
        self._acks: dict[str, Ack] = {}

    def gpus(self) -> list[GPULimits]:
        return list(self._gpus)

    def now(self) -> float:
        """The simulated time."""
        return float(self.clock.now())

    def advance(self, seconds: float) -> None:
        """Run the node for ``seconds``."""
        self.clock.advance(seconds)
        self.backend.sync()

    def batch_size(self) -> int:
        """The job's global batch size now."""
        return int(self.job.batch_size)

    def default_limit_w(self) -> float:
        """The power limit the GPUs start at."""
        return float(self.backend.devices[0].profile.power_limit_default_w)

    def measure(self, now: float) -> Interval | None:
        devs = self.backend.devices
        seconds, self._t0 = now - self._t0, now
        e1 = sum(self.backend.energy_j)
        energy, self._e0 = e1 - self._e0, e1
        stats = self.job.report_stats()
        n = self.rng.normal(1.0, self.noise, 3) if self.noise > 0 else np.ones(3)
        samples = stats.get("samples_per_s", 0.0) * seconds * float(n[1])
        return Interval(
            energy_j=energy * float(n[0]), samples=samples, seconds=seconds,
            goodput=stats.get("goodput", 0.0) * float(n[2]),
            power_w=float(np.mean([d.power_mw for d in devs])) / 1000.0,
            sm_ratio=float(np.mean([d.sm_clock_mhz for d in devs])) / devs[0].profile.sm_clock_max_mhz,
            capped=any(d.clock_event_reasons & POWER_CAP for d in devs), batch=int(self.job.batch_size),
            busy_w=busy_power([(d.power_mw / 1000.0, d.util_gpu_pct / 100.0) for d in devs]),
        )

    def set_power_limit(self, gpu: str, watts: float, origin: str = "tuner") -> bool:
        self.backend.devices[int(gpu)].power_limit_mw = int(watts * 1000)
        return True

    def set_sm_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        self.backend.devices[int(gpu)].locked_sm_clocks_mhz = None if mhz is None else (int(mhz), int(mhz))
        return True

    def set_memory_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        self.backend.devices[int(gpu)].locked_memory_clocks_mhz = None if mhz is None else (int(mhz), int(mhz))
        return True

    def request_batch(self, size: int) -> str:
        ok, err = self.job.set_batch_size(size)
        ident = f"b{len(self._acks) + 1}"
        self._acks[ident] = Ack(ok, err)
        return ident

    def batch_ack(self, ident: str) -> Ack | None:
        return self._acks.get(ident)

    def rank_timings(self) -> list[RankTiming]:
        stats = self.job.rank_stats()
        if len(stats) < 2:
            return []
        return [RankTiming(int(r["rank"]), str(i), r["compute_time_s"], r["sync_wait_s"]) for i, r in enumerate(stats)]


class EnvNode(Node, Protocol):
    """A node the environment runs: the kernel's node, plus time and the job's starting point."""

    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...

    def batch_size(self) -> int: ...

    def default_limit_w(self) -> float: ...


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
        self.action_space = spaces.Discrete(N_ACTIONS)  # (power or clock move, batch move), moves.py
        self.suggested = STAY
        #: Where the kernel's events go (the daemon logs and publishes them; training drops them).
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    # -- what the kernel knows -------------------------------------------------------
    @property
    def limit_w(self) -> float:
        """The job-wide power limit the kernel has set."""
        return self.kernel.limit_w

    @property
    def guard(self) -> SafetyGuard:
        """The kernel's safety guard."""
        return self.kernel.guard

    @property
    def b0(self) -> int:
        """The job's own batch size (the reference's)."""
        return self.kernel.b0

    @property
    def profile(self) -> Any:
        """The simulated GPUs' profile."""
        return self.backend.devices[0].profile

    def reward(self, m: Interval) -> float:
        """Per-interval reward of the objective (see module doc)."""
        ref = self.kernel.ref or m
        good = m.goodput / max(ref.goodput, 1e-9)
        if self.objective == "throughput":
            return good - 1.0
        return 1.0 - m.eps / ref.eps - 10.0 * max(0.0, (1.0 - self.max_slowdown) - good)

    def _run_until_choice(self) -> tuple[Outcome, list[Interval], bool]:
        """Advance interval by interval until the kernel has an observation to choose from; returns
        it, the intervals run and whether the guard rolled a move back on the way."""
        spent: list[Interval] = []
        rolled = False
        for _ in range(MAX_INTERVALS_PER_CHOICE):
            self.node.advance(self.interval_s)
            out = self.kernel.observe(self.node.now())
            rolled = rolled or out.kind == "rollback"
            if out.interval is not None:
                spent.append(out.interval)
            if out.obs is not None:
                return out, spent, rolled
        raise RuntimeError(f"{self.workload} on {self.profile_name}: no measurable interval in "
                           f"{MAX_INTERVALS_PER_CHOICE} (the job reports no samples)")

    def _full_obs(self, out: Outcome) -> np.ndarray:
        assert out.obs is not None
        obs, self.suggested = advise(self.adviser, out.obs)
        return obs

    # -- gym API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Build a random node and job, measure the default configuration (reference and first interval)."""
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
        self.node_seed = int(rng.integers(1 << 30))
        self.node = self._build_node(n_gpus)
        half = self.interval_s * 0.5
        guard = SafetyGuard(GuardConfig(pause_file=None, settle_s=half, min_interval_s=dict.fromkeys(KNOBS, half)))
        cfg = TuningConfig(objective=self.objective, interval_s=self.interval_s, max_slowdown=self.max_slowdown,
                           pause_file=None)
        self.adviser = ClimbChooser(self.objective, self.max_slowdown)
        self.kernel = DecisionKernel(self.node, cfg, guard, b0=self.node.batch_size(), limit_w=self.node.default_limit_w(),
                                     on_event=self.on_event, on_rollback=self.adviser.rolled_back)
        self.t = 0
        out, _, _ = self._run_until_choice()
        info = {"profile": self.profile_name, "workload": self.workload, "objective": self.objective,
                "max_slowdown": self.max_slowdown}
        return self._full_obs(out), info

    def _build_node(self, n_gpus: int) -> EnvNode:
        """The simulated node of this episode; a default batch that does not fit is halved, as a user would."""
        from gputuned.collectors.sim.node import build_sim_node
        from gputuned.collectors.sim.state import VirtualClock
        from gputuned.collectors.sim.workload import load_workload

        batch: int | None = None
        while True:
            self.clock = VirtualClock()
            try:
                self.backend = build_sim_node(self.profile_name, n_gpus, self.workload, None, self.clock,
                                              seed=self.node_seed, batch_size=batch)
                self.job = self.backend.job
                return SimNode(self.backend, self.clock, self.np_random, self.noise)
            except ValueError as exc:
                if "does not fit" not in str(exc):
                    raise
                batch = (batch or load_workload(self.workload).default_batch_size) // 2
                if batch < 1:
                    raise

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Make a move, run intervals until the next choice (two if the guard rolls it back), reward them."""
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        action = int(action)
        self.adviser.taken(action, self.suggested)
        self.kernel.act(action, self.node.now())
        out, spent, rolled = self._run_until_choice()
        rewards = [self.reward(m) for m in spent]
        m, ref = spent[-1], self.kernel.ref
        assert ref is not None
        self.t += 1
        info = {"energy_per_sample_ratio": m.eps / ref.eps, "throughput_ratio": m.samples / max(ref.samples, 1e-9),
                "goodput_ratio": m.goodput / max(ref.goodput, 1e-9), "intervals": len(rewards),
                "rolled_back": rolled, "suggested": self.suggested,
                "energy_j": sum(x.energy_j for x in spent), "effective_samples": sum(x.goodput * x.seconds for x in spent),
                "reference_eps": ref.eps, "reference_goodput": ref.goodput}
        obs = self._full_obs(out)
        return obs, float(np.clip(sum(rewards), -5.0, 5.0)), False, self.t >= self.horizon, info
