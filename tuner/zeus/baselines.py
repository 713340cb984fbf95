"""Baselines run in the same harness as the agent: default, oracle and a Zeus-style optimizer.

A recurring policy drives one :class:`TraceRun` (one recurrence of the job) to its target and
may keep memory across recurrences, as a job that is retrained again and again allows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gputuned.tuner.zeus.objectives import Objective
from gputuned.tuner.zeus.run import TraceRun, profile_power_limits
from gputuned.tuner.zeus.traces import JobTrace

logger = logging.getLogger(__name__)


class RecurringPolicy(Protocol):
    """Runs a job's recurrences to target, one call per recurrence."""

    name: str

    def run_recurrence(self, run: TraceRun, objective: Objective, ref_time_s: float | None) -> None:
        """Drive ``run`` until the trainer reports the target reached."""
        ...


class DefaultPolicy:
    """The user's configuration: default batch size at the maximum power limit."""

    name = "default"

    def run_recurrence(self, run: TraceRun, objective: Objective, ref_time_s: float | None) -> None:
        """Run at (b0, max power limit)."""
        run.set_config(run.default_batch_size, run.max_power_w)
        run.run(objective, ref_time_s=ref_time_s)


def expected_cost(trace: JobTrace, objective: Objective, b: int, p: int, ref_time_s: float | None) -> float:
    """Expected cost of a fixed (b, p) run to target, from the full trace (oracle knowledge)."""
    t_ep, watts = trace.epoch[(b, p)]
    epochs = trace.mean_epochs(b)
    if not math.isfinite(epochs):
        return math.inf
    return objective.cost(epochs * t_ep * watts, epochs * t_ep, trace.max_power_w, ref_time_s)


def default_time_s(trace: JobTrace) -> float:
    """Expected time to target of the default configuration (the slowdown reference)."""
    return trace.mean_epochs(trace.default_batch_size) * trace.epoch[(trace.default_batch_size, trace.max_power_w)][0]


class OraclePolicy:
    """The best fixed configuration, computed from the whole trace."""

    name = "oracle"

    def __init__(self, trace: JobTrace) -> None:
        self._trace = trace

    def best(self, objective: Objective, ref_time_s: float | None) -> tuple[int, int]:
        """The (batch size, power limit) of least expected cost."""
        keys = list(self._trace.epoch)
        return min(keys, key=lambda k: expected_cost(self._trace, objective, k[0], k[1], ref_time_s))

    def run_recurrence(self, run: TraceRun, objective: Objective, ref_time_s: float | None) -> None:
        """Run at the best fixed configuration."""
        run.set_config(*self.best(objective, ref_time_s))
        run.run(objective, ref_time_s=ref_time_s)


@dataclass
class _Arm:
    costs: list[float] = field(default_factory=list)
    power_limit_w: int | None = None


class ZeusStylePolicy:
    """Zeus (NSDI'23): JIT power-limit profiling plus pruning exploration then Gaussian Thompson sampling.

    States: exploring (two pruning rounds: b0, then smaller sizes downward, then larger upward,
    a direction ends at its first early-stopped run; round two revisits the survivors), then
    sampling (Thompson sampling over the survivors' mean cost). A run whose cost passes
    ``beta`` x the least cost seen is stopped and the recurrence restarts from scratch at the
    best batch size known, as Zeus's early stopping does.
    """

    name = "zeus"

    def __init__(self, rng: np.random.Generator, beta: float = 2.0, rounds: int = 2, window: int = 10) -> None:
        self._rng = rng
        self._beta = beta
        self._rounds = rounds
        self._window = window
        self._arms: dict[int, _Arm] = {}
        self._queue: list[int] = []
        self._round = 0
        self._survivors: list[int] | None = None
        self._down: list[int] = []
        self._up: list[int] = []
        self._center = 0

    def _plan_round(self, sizes: list[int], b0: int) -> None:
        i = sizes.index(b0) if b0 in sizes else len(sizes) // 2
        self._down = list(reversed(sizes[:i]))
        self._up = sizes[i + 1 :]
        self._queue = [sizes[i]]
        self._center = sizes[i]
        self._round += 1

    def _best(self) -> int | None:
        tried = {b: float(np.mean(a.costs)) for b, a in self._arms.items() if a.costs}
        return min(tried, key=tried.__getitem__) if tried else None

    def _min_cost(self) -> float:
        costs = [c for a in self._arms.values() for c in a.costs]
        return min(costs) if costs else math.inf

    def _next_explore(self, run: TraceRun) -> int | None:
        sizes = list(run.batch_sizes) if self._survivors is None else self._survivors
        if self._round == 0:
            self._plan_round(sizes, run.default_batch_size)
        while True:
            if self._queue:
                return self._queue.pop(0)
            if self._down:
                return self._down.pop(0)
            if self._up:
                return self._up.pop(0)
            if self._round >= self._rounds:
                return None
            self._survivors = sorted(b for b, a in self._arms.items() if a.costs and a.costs[-1] < math.inf)
            best = self._best()
            self._plan_round(self._survivors, best if best is not None else run.default_batch_size)

    def _thompson(self) -> int:
        samples = {}
        for b in self._survivors or list(self._arms):
            costs = [c for c in self._arms[b].costs[-self._window :] if math.isfinite(c)]
            if not costs:
                continue
            mean = float(np.mean(costs))
            sd = float(np.std(costs)) if len(costs) > 1 else 0.1 * mean
            samples[b] = self._rng.normal(mean, max(sd, 1e-9) / math.sqrt(len(costs)))
        return min(samples, key=samples.__getitem__)

    def run_recurrence(self, run: TraceRun, objective: Objective, ref_time_s: float | None) -> None:
        """Explore or sample a batch size, profile its power limit once, early-stop if too costly."""
        exploring = True
        b = self._next_explore(run)
        if b is None:
            exploring = False
            b = self._thompson()
        while True:
            arm = self._arms.setdefault(b, _Arm())
            start_cost = run.cost(objective, ref_time_s)
            if arm.power_limit_w is None:
                arm.power_limit_w = profile_power_limits(run, b, objective)
            run.set_config(b, arm.power_limit_w)
            limit = start_cost + self._beta * self._min_cost()
            run.run(objective, cost_limit=limit, ref_time_s=ref_time_s)
            spent = run.cost(objective, ref_time_s) - start_cost
            if run.done:
                arm.costs.append(spent)
                return
            # Early stopped (or never converging): prune in exploration, retry at the best known size.
            arm.costs.append(math.inf if exploring else spent)
            if exploring and b < self._center:
                self._down.clear()
            elif exploring:
                self._up.clear()
            logger.debug("zeus: early stop at b=%d after %.0f", b, spent)
            run.restart()
            b = self._best() or run.default_batch_size
            exploring = False
