"""One recurrence of a job replayed from a Zeus trace, seen only through live readings.

A :class:`TraceRun` hides the trace tables: a policy can set (batch size, power limit), run
for some seconds or until a cost limit, and read what the daemon would read live (measured
epoch time and board power, with noise; the energy counter; the wall clock; whether the
trainer reported the target reached). Progress is a fraction of the target: an epoch at
batch size b adds 1 / epochs_to_target(b), so it carries across batch-size changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from gputuned.tuner.zeus.objectives import Objective
from gputuned.tuner.zeus.traces import JOBS, JobTrace

logger = logging.getLogger(__name__)


#: Training steps measured per profiled configuration (after the change settles).
PROFILE_STEPS = 30


class OutOfMemory(RuntimeError):
    """The trainer ran out of device memory at this batch size."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(f"out of memory at batch size {batch_size}")
        self.batch_size = batch_size


@dataclass(frozen=True)
class Reading:
    """What the daemon measures over a window: epoch time (from samples/s) and board power."""

    epoch_time_s: float
    power_w: float


class TraceRun:
    """One run of a job to its target, driven by a policy through live readings only."""

    def __init__(
        self,
        trace: JobTrace,
        rng: np.random.Generator,
        noise: float = 0.02,
        epochs_scale: dict[int, float] | None = None,
        oom_above: int | None = None,
    ) -> None:
        self._trace = trace
        self._rng = rng
        self._noise = noise
        self._oom_above = oom_above
        scale = epochs_scale or {}
        self._need = {
            b: float(rng.choice(np.asarray(s))) * scale.get(b, 1.0) for b, s in trace.epochs_to_target.items()
        }
        finite = [e for s in trace.epochs_to_target.values() for e in s if math.isfinite(e)]
        self._cap_epochs = 2.0 * max(finite)
        self.batch_sizes: tuple[int, ...] = trace.batch_sizes
        self.default_batch_size = trace.default_batch_size
        self.power_limits_w: tuple[int, ...] = trace.power_limits_w
        self.max_power_w = trace.max_power_w
        self.batch_size = trace.default_batch_size
        self.power_limit_w = trace.max_power_w
        self.progress = 0.0
        self.time_s = 0.0
        self.energy_j = 0.0
        self.failed = False
        self._epochs_at: dict[int, float] = {}

    @property
    def done(self) -> bool:
        """The trainer reported the target metric reached."""
        return self.progress >= 1.0 - 1e-12

    def set_config(self, batch_size: int, power_limit_w: int) -> None:
        """Apply a batch size and power limit (raises OutOfMemory above the memory ceiling)."""
        if batch_size not in self.batch_sizes or power_limit_w not in self.power_limits_w:
            raise ValueError(f"({batch_size}, {power_limit_w} W) is not a configuration of this job")
        if self._oom_above is not None and batch_size > self._oom_above:
            raise OutOfMemory(batch_size)
        self.batch_size, self.power_limit_w = batch_size, power_limit_w

    def _rates(self) -> tuple[float, float, float]:
        t_ep, watts = self._trace.epoch[(self.batch_size, self.power_limit_w)]
        return t_ep, watts, self._need[self.batch_size]

    def _advance(self, seconds: float) -> None:
        t_ep, watts, need = self._rates()
        epochs = seconds / t_ep
        done_at = self._epochs_at.get(self.batch_size, 0.0)
        if math.isfinite(need):
            left = (1.0 - self.progress) * need
            if epochs >= left:
                epochs, seconds = left, left * t_ep
            self.progress = min(1.0, self.progress + epochs / need)
        elif done_at + epochs >= self._cap_epochs:
            epochs = max(0.0, self._cap_epochs - done_at)
            seconds = epochs * t_ep
            self.failed = True
        self._epochs_at[self.batch_size] = done_at + epochs
        self.time_s += seconds
        self.energy_j += seconds * watts

    def measure(self, seconds: float) -> Reading:
        """Run ``seconds`` at the current configuration and return noisy readings."""
        self._advance(seconds)
        t_ep, watts, _ = self._rates()
        n = self._rng.normal(0.0, self._noise, 2) if self._noise > 0 else (0.0, 0.0)
        return Reading(t_ep * (1.0 + float(n[0])), watts * (1.0 + float(n[1])))

    def restart(self) -> None:
        """Abandon the run's progress (a stopped run restarted from scratch); time and energy stay spent."""
        self.progress = 0.0
        self.failed = False
        self._epochs_at.clear()

    def step_time_s(self) -> float:
        """Seconds per training step at the current configuration (the trainer's step timer)."""
        t_ep = self._trace.epoch[(self.batch_size, self.power_limit_w)][0]
        return t_ep * self.batch_size / JOBS[self._trace.job].dataset_size

    def profile_window_s(self) -> float:
        """Seconds to measure one configuration: 30 steps, at least 0.5 s, at most 10 s."""
        return min(10.0, max(0.5, PROFILE_STEPS * self.step_time_s()))

    def run(
        self,
        objective: Objective,
        cost_limit: float = math.inf,
        max_seconds: float = math.inf,
        ref_time_s: float | None = None,
    ) -> bool:
        """Run until the target, ``max_seconds``, or the run's cost reaching ``cost_limit``; True when done."""
        if self.done or self.failed:
            return self.done
        t_ep, watts, need = self._rates()
        seconds = max_seconds
        if math.isfinite(cost_limit):
            now = objective.cost(self.energy_j, self.time_s, self.max_power_w, ref_time_s)
            rate = objective.cost(watts, 1.0, self.max_power_w, None)
            seconds = min(seconds, max(0.0, (cost_limit - now) / rate) if rate > 0 else math.inf)
        if not math.isfinite(seconds):
            seconds = (1.0 - self.progress) * need * t_ep if math.isfinite(need) else self._cap_epochs * t_ep
        self._advance(seconds)
        return self.done

    def cost(self, objective: Objective, ref_time_s: float | None = None) -> float:
        """The run's cost so far under ``objective``."""
        return objective.cost(self.energy_j, self.time_s, self.max_power_w, ref_time_s)


def profile_power_limits(run: TraceRun, batch_size: int, objective: Objective) -> int:
    """Just-in-time power-limit profiling (Zeus): measure each limit briefly, return the best."""
    profile: dict[int, tuple[float, float]] = {}
    for p in sorted(run.power_limits_w, reverse=True):
        run.set_config(batch_size, p)
        reading = run.measure(run.profile_window_s())
        profile[p] = (reading.epoch_time_s, reading.power_w)
        if run.done:
            break
    return objective.pick_power_limit(profile, run.max_power_w)
