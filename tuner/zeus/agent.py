"""The gputuned policy on recurring jobs: learned batch-size moves plus online exploration.

What it does, per recurrence of a job (it never reads the trace tables):

1. First recurrence: profile every batch size the trainer accepts for a few seconds at the
   maximum power limit (samples/s and watts give each size's cost per epoch; an out-of-memory
   size is recorded and never proposed again), then run the default batch size with
   just-in-time power-limit profiling. That run's cost normalises everything after.
2. Later recurrences: build the observation (:func:`observe`: per batch size around the best
   one so far, whether tried, its normalised mean cost to target, its measured cost per epoch
   relative to the best's; global counters) and ask the chooser (the learned policy, numpy
   inference) for a move: run the size at an offset of -3..+3 places from the best one in
   the trainer's list of sizes; offset 0 exploits once the local search is done (an untried
   immediate neighbour of the best size is run first, :meth:`GputunedPolicy._local_search`),
   an offset to an absent size exploits at once. Exploiting is Thompson sampling (:func:`thompson`)
   on log-normal beliefs: a finished size's from its runs with the job's pooled run-to-run
   noise; an untried size's from its measured cost per epoch relative to the best size, with a
   critical-batch-size drift (larger sizes need more epochs) and a spread growing with the
   distance in doublings, considered only when it predicts a clear (5%) saving.
3. The chosen size gets its power limit by JIT profiling (cached per size), picked from the
   profile after a monotone fit (time falls, power rises with the limit; :func:`smooth_profile`).
   The size's run cost counts that profiling. If the run's cost passes ``switch_beta`` x the
   best mean run cost, it switches to the best size, keeping the progress made (unlike Zeus,
   which stops and restarts), and the size is marked stopped (excluded from exploiting until a
   later explicit try of it finishes).

Every knob change goes through the safety guard when one is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gputuned.tuner.decision.guard import SafetyGuard
from gputuned.tuner.zeus.objectives import Objective, smooth_profile
from gputuned.tuner.zeus.run import OutOfMemory, TraceRun

logger = logging.getLogger(__name__)

#: Slots observed around the best batch size so far (offsets -SLOTS..+SLOTS in the size list).
SLOTS = 3
PER_SLOT = 7
N_GLOBAL = 7
OBS_DIM = (2 * SLOTS + 1) * PER_SLOT + N_GLOBAL
#: Moves: run the size at offset (action - SLOTS) from the best one; offset 0 exploits.
N_ACTIONS = 2 * SLOTS + 1

Chooser = Callable[[np.ndarray], int]


@dataclass
class ArmMemory:
    """What the daemon remembers about one job across its recurrences."""

    sizes: tuple[int, ...] = ()
    default_batch_size: int = 0
    epoch_cost: dict[int, float] = field(default_factory=dict)
    run_costs: dict[int, list[float]] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    oom_from: int | None = None
    power_limit: dict[int, int] = field(default_factory=dict)
    norm: float = 0.0
    recurrences: int = 0

    def usable(self) -> list[int]:
        """Batch sizes below the out-of-memory ceiling."""
        return [b for b in self.sizes if self.oom_from is None or b < self.oom_from]

    def mean_cost(self, b: int) -> float:
        """Mean observed cost to target at ``b`` (inf when untried or stopped)."""
        costs = self.run_costs.get(b)
        return float(np.mean(costs)) if costs and b not in self.stopped else math.inf

    def best(self) -> int:
        """Batch size with the least mean cost (the default before any run finished)."""
        tried = {b: self.mean_cost(b) for b in self.usable()}
        b = min(tried, key=tried.__getitem__)
        return b if math.isfinite(tried[b]) else self.default_batch_size

    def untried(self, b: int) -> bool:
        """Whether ``b`` has no finished or stopped run yet."""
        return b not in self.run_costs and b not in self.stopped


def _log_ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return 0.0
    return float(np.clip(math.log(a / b), -3.0, 3.0))


def observe(mem: ArmMemory) -> np.ndarray:
    """The observation: live-measured, normalised, translation-invariant around the best size."""
    obs = np.zeros(OBS_DIM, dtype=np.float32)
    sizes = mem.usable()
    best = mem.best()
    i_best = sizes.index(best)
    best_cost = mem.mean_cost(best)
    for k, off in enumerate(range(-SLOTS, SLOTS + 1)):
        j = i_best + off
        if not 0 <= j < len(sizes):
            continue
        b = sizes[j]
        o = k * PER_SLOT
        obs[o] = 1.0
        obs[o + 1] = 0.0 if mem.untried(b) else 1.0
        obs[o + 2] = 1.0 if b in mem.stopped else 0.0
        obs[o + 3] = _log_ratio(mem.mean_cost(b), mem.norm)
        obs[o + 4] = _log_ratio(mem.epoch_cost.get(b, math.inf), mem.epoch_cost.get(best, math.inf))
        obs[o + 5] = math.log2(b / best) / 4.0
        obs[o + 6] = min(len(mem.run_costs.get(b, ())), 10) / 10.0
    g = (2 * SLOTS + 1) * PER_SLOT
    obs[g] = min(mem.recurrences, 50) / 50.0
    obs[g + 1] = _log_ratio(best_cost, mem.norm)
    obs[g + 2] = sum(not mem.untried(b) for b in sizes) / len(sizes)
    obs[g + 3] = float(any(mem.untried(b) for b in sizes[:i_best]))
    obs[g + 4] = float(any(mem.untried(b) for b in sizes[i_best + 1 :]))
    obs[g + 5] = math.log2(best / mem.default_batch_size) / 4.0
    obs[g + 6] = len(mem.run_costs.get(best, ())) / 10.0
    return obs


def pooled_log_sd(mem: ArmMemory, floor: float = 0.03, prior: float = 0.1, prior_weight: float = 2.0) -> float:
    """Run-to-run noise of a job's cost, in log space, pooled over every size with repeat runs.

    One noise level per job (its epochs to target vary between runs the same way at every
    size), shrunk toward ``prior`` with ``prior_weight`` pseudo-degrees of freedom and floored.
    """
    ss, dof = prior_weight * prior**2, prior_weight
    for b, costs in mem.run_costs.items():
        if len(costs) > 1 and b not in mem.stopped:
            logs = np.log(np.maximum(np.asarray(costs), 1e-12))
            ss += float(np.sum((logs - logs.mean()) ** 2))
            dof += len(costs) - 1
    return max(floor, math.sqrt(ss / dof))


#: Prior spread of an untried size's epochs to target, in log units per doubling of the batch
#: size away from the size it is predicted from (statistical efficiency is not measured live).
PRIOR_SD_PER_DOUBLING = 0.15
#: Expected rise of an untried larger size's epochs to target, in log units per doubling.
PRIOR_DRIFT_PER_DOUBLING = 0.4
#: An untried size is explored only when its prior mean is at least this much (log) cheaper.
PRIOR_MARGIN = 0.05


def _prior(mem: ArmMemory, b: int, ref: int, sd_run: float) -> tuple[float, float]:
    """Belief (log mean cost, sd) on an untried size: the reference's cost scaled by measured cost per epoch."""
    ratio = mem.epoch_cost.get(b, math.inf) / mem.epoch_cost.get(ref, math.inf)
    if not math.isfinite(ratio) or ratio <= 0 or not 0 < mem.mean_cost(ref) < math.inf:
        return math.inf, 0.0
    doublings = math.log2(b / ref)
    # Critical-batch-size model (McCandlish et al. 2018): epochs to target grow with the batch
    # size, so a larger size is expected to need more epochs than the reference; a smaller one
    # at most as many (the spread covers the exceptions).
    mean = math.log(mem.mean_cost(ref)) + math.log(ratio) + PRIOR_DRIFT_PER_DOUBLING * max(doublings, 0.0)
    return mean, math.hypot(sd_run, PRIOR_SD_PER_DOUBLING * abs(math.log2(b / ref)))


def thompson(mem: ArmMemory, rng: np.random.Generator, untried: bool = True) -> int:
    """Exploit by Thompson sampling: a log-normal belief on each size's mean cost to target.

    A finished size's belief is centred on its runs' mean log cost with spread sd / sqrt(runs),
    sd being the job's pooled run-to-run noise (:func:`pooled_log_sd`), so a size that happened
    to repeat one value is not taken as certain, nor a lucky single run. With ``untried``, a
    size never run gets a prior from its measured cost per epoch relative to the best size
    (:func:`_prior`): cheaper per epoch means probably cheaper to target, with a spread that
    grows with its distance from the best size in doublings.
    """
    sd = pooled_log_sd(mem)
    draws: dict[int, float] = {}
    best = mem.best()
    known = math.isfinite(mem.mean_cost(best))
    for b in mem.usable():
        costs = mem.run_costs.get(b)
        if b in mem.stopped:
            continue
        if costs:
            mean = float(np.mean(np.log(np.maximum(np.asarray(costs), 1e-12))))
            draws[b] = float(rng.normal(mean, sd / math.sqrt(len(costs))))
        elif untried and known:
            mean, spread = _prior(mem, b, best, sd)
            if math.isfinite(mean) and mean < math.log(mem.mean_cost(best)) - PRIOR_MARGIN:
                draws[b] = float(rng.normal(mean, spread))
    return min(draws, key=draws.__getitem__) if draws else best


def apply_move(mem: ArmMemory, move: int, rng: np.random.Generator | None = None) -> int:
    """Batch size for a move: offset ``move - SLOTS`` from the best size; offset 0 or absent exploits."""
    sizes = mem.usable()
    j = sizes.index(mem.best()) + int(move) - SLOTS
    if move != SLOTS and 0 <= j < len(sizes):
        return sizes[j]
    return thompson(mem, rng) if rng is not None else mem.best()


def run_noise(_reading: object) -> float:
    """Relative measurement noise assumed when judging an action (2%, the trace runs' noise)."""
    return 0.02


class GuardedKnobs:
    """Applies (batch size, power limit) to a run, through a guard when one is given."""

    def __init__(self, run: TraceRun, guard: SafetyGuard | None = None) -> None:
        self.run = run
        self.guard = guard
        self.oom_from: int | None = None

    def set(self, b: int, p: int, baseline: float | None = None) -> bool:
        """Apply a configuration; False when the guard refused it or memory ran out."""
        now = self.run.time_s
        if (b, p) == (self.run.batch_size, self.run.power_limit_w):
            return True
        if self.guard is not None:
            for knob, value, current in (
                ("batch_size", b, self.run.batch_size),
                ("power_limit", p, self.run.power_limit_w),
            ):
                if value != current and not self.guard.propose(knob, "0", value, now).allowed:
                    return False
        try:
            self.run.set_config(b, p)
        except OutOfMemory:
            self.oom_from = b if self.oom_from is None else min(b, self.oom_from)
            if self.guard is not None:
                self.guard.record_oom(b)
            return False
        if self.guard is not None:
            self.guard.commit("batch_size", "0", b, now)
            self.guard.commit("power_limit", "0", p, now, baseline=baseline)
        return True


class GputunedPolicy:
    """The gputuned recurring-job policy (see the module docstring for exactly what it does)."""

    name = "gputuned"

    def __init__(
        self,
        chooser: Chooser,
        switch_beta: float = 1.3,
        guard: SafetyGuard | None = None,
        rng: np.random.Generator | None = None,
        local_search: bool = True,
    ) -> None:
        self.chooser = chooser
        self.local_search = local_search
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.switch_beta = switch_beta
        self.guard = guard
        self.mem = ArmMemory()
        self.last_move = SLOTS

    def _local_search(self) -> int | None:
        """An untried neighbour of the best size, toward where the best moved from b0 first."""
        sizes = self.mem.usable()
        i = sizes.index(self.mem.best())
        order = (i + 1, i - 1) if sizes[i] > self.mem.default_batch_size else (i - 1, i + 1)
        for j in order:
            if 0 <= j < len(sizes) and self.mem.untried(sizes[j]):
                return sizes[j]
        return None

    def _power_limit(self, knobs: GuardedKnobs, b: int, objective: Objective) -> int:
        if b not in self.mem.power_limit:
            run = knobs.run
            profile: dict[int, tuple[float, float]] = {}
            for p in sorted(run.power_limits_w, reverse=True):
                if not knobs.set(b, p):
                    continue
                r = run.measure(run.profile_window_s())
                profile[p] = (r.epoch_time_s, r.power_w)
                if run.done:
                    break
            best = objective.pick_power_limit(smooth_profile(profile), run.max_power_w) if profile else run.max_power_w
            self.mem.power_limit[b] = best
            if self.guard is not None and run.max_power_w in profile and not run.done:
                best = self._checked(knobs, b, best, profile, objective)
                self.mem.power_limit[b] = best
        return self.mem.power_limit[b]

    def _checked(self, knobs: GuardedKnobs, b: int, p: int, profile: dict, objective: Objective) -> int:
        """Apply the chosen limit, measure, and let the guard roll it back if the cost rate got worse."""
        assert self.guard is not None
        run = knobs.run

        def rate(t_ep: float, watts: float) -> float:
            return objective.cost(t_ep * watts, t_ep, run.max_power_w)

        if not knobs.set(b, run.max_power_w):
            return p
        baseline = rate(*profile[run.max_power_w])
        if not knobs.set(b, p, baseline=baseline):
            return run.max_power_w
        r = run.measure(max(self.guard.config.settle_s, run.profile_window_s()))
        undo = dict(((k, v) for k, _gpu, v in self.guard.evaluate(rate(r.epoch_time_s, r.power_w), run.time_s,
                                                                   noise=run_noise(r))))
        if "power_limit" in undo:  # only the limit moved here: the batch size was set before the baseline
            run.set_config(b, int(undo["power_limit"]))
            return int(undo["power_limit"])
        return p

    def _profile_sizes(self, knobs: GuardedKnobs, objective: Objective) -> None:
        run = knobs.run
        for b in run.batch_sizes:
            if self.mem.oom_from is not None and b >= self.mem.oom_from:
                continue
            if not knobs.set(b, run.max_power_w):
                if knobs.oom_from is not None:
                    self.mem.oom_from = knobs.oom_from
                continue
            r = run.measure(run.profile_window_s())
            self.mem.epoch_cost[b] = objective.cost(r.epoch_time_s * r.power_w, r.epoch_time_s, run.max_power_w)

    def run_recurrence(self, run: TraceRun, objective: Objective, ref_time_s: float | None) -> None:
        """One recurrence: choose a size, profile its power limit, switch away if it costs too much."""
        knobs = GuardedKnobs(run, self.guard)
        if self.mem.recurrences == 0:
            self.mem.sizes = run.batch_sizes
            self.mem.default_batch_size = run.default_batch_size
            self._profile_sizes(knobs, objective)
            b = run.default_batch_size
        else:
            self.last_move = int(self.chooser(observe(self.mem)))
            b = self._local_search() if self.last_move == SLOTS and self.local_search else None
            if b is None:
                b = apply_move(self.mem, self.last_move, self.rng)
        # The size's run cost includes its own power-limit profiling: that time trains at this size
        # (progress the trainer keeps), so leaving it out would flatter a size first tried on a short job.
        start = run.cost(objective, ref_time_s)
        done_before = run.done  # a short job can reach its target while recurrence 1 profiles sizes
        p = self._power_limit(knobs, b, objective)
        knobs.set(b, p)
        b = run.batch_size  # what actually runs (the guard may have refused the change)
        best_cost = self.mem.mean_cost(self.mem.best())
        # Only an untried size is switched away from; a known size runs to the end (noise is not failure).
        exploring = b not in self.mem.run_costs or b in self.mem.stopped
        limit = start + self.switch_beta * best_cost if exploring and math.isfinite(best_cost) else math.inf
        run.run(objective, cost_limit=limit, ref_time_s=ref_time_s)
        if not run.done:
            self.mem.stopped.add(b)
            best = self.mem.best()
            knobs.set(best, self._power_limit(knobs, best, objective))
            run.run(objective, ref_time_s=ref_time_s)
            if not run.done:  # even the best size failed this time: restart there from scratch
                run.restart()
                run.run(objective, ref_time_s=ref_time_s)
        elif not done_before:  # a run that never trained at b says nothing about b's cost
            self.mem.stopped.discard(b)
            self.mem.run_costs.setdefault(b, []).append(run.cost(objective, ref_time_s) - start)
        if self.mem.recurrences == 0:
            self.mem.norm = run.cost(objective, ref_time_s)
        self.mem.recurrences += 1
