"""Choosers for the live tuner: the learned numpy policy, or an explicit climber, on one observation.

The observation is built by :class:`LiveObserver` from one measured decision interval, the same
way in the daemon (:class:`gputuned.daemon.app.tuning.TuningComponent`) and in training
(:class:`gputuned.tuner.sim_env.SimNodeEnv`); a move is one of 9 actions,
``action = 3 * (power move + 1) + (batch move + 1)``, moves in {-1, 0, +1} (power limit one
step of 5% of the range on every GPU; global batch size halve/keep/double).

:class:`ClimbChooser` is a small state machine. Energy objectives: the power limit steps down
while goodput stays above the slowdown budget and energy per sample keeps falling, and steps up
when goodput falls under it; once the limit has settled, a doubled batch size is tried (kept if
energy per sample falls and goodput stays within budget, undone otherwise), then a halved one,
going on in a direction while it pays; a probe that is neither better nor clearly worse looks
one step further (4x or 1/4) before it is undone; a probe that costs energy but gains more
goodput than that buys back on the power limit (at the exchange rate measured on the last step
down) is kept, and undone once the limit has settled again if energy per sample did not end
lower. Throughput: the limit goes to its maximum, then batch size climbs while goodput rises.

Where the GPUs' SM clocks can be locked, the objective decides between the limit and a lock from
what it measures: once the limit has settled the first time (or sooner, below), a lock takes over
at the clock the limit gave (the kernel lifts the limit out of its way); the lock is kept if the
cost the guard judges by (energy per sample, with the shortfall beyond the budget) is not higher
than under the limit (measured GPUs: a lock costs no more than the limit of equal speed), and the
clock is then walked as the limit was; a lock faster than the limit is walked down first and judged
once its walk settles, at the limit's speed (dearer there: released, the limit comes back). Which
knob is walked first is measured at the job's start: one lock step and the limit's first steps, the
one that saves more per slowdown first (:mod:`gputuned.tuner.decision.climb_probe`). Under a lock a
doubled batch goes with a clock step down. Next to a setting one step over the budget, the walked
knob goes on by quarter steps while they stay within it and lower energy per sample. Once the
batch probes are spent, a memory clock with candidates under the top one is stepped down while
each step lowers energy per sample within the budget (:mod:`gputuned.tuner.decision.memory_walk`).
Moves: 22 actions (:mod:`gputuned.tuner.decision.moves`).

:class:`LearnedChooser` is the PPO policy (numpy inference): it sees the observation plus the
climber's proposal (2 features, a residual design: the policy learns when to follow the rule
and when to overrule it) and picks the move; the guard keeps its bounds, rate limits and rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from gputuned.tuner.decision.climb_probe import (
    LOCK_MARGIN,
    TAKE_OVER,
    KnobProbe,
    LimitOrLock,
    Phase,
)
from gputuned.tuner.decision.memory_walk import MemoryWalk
from gputuned.tuner.decision.moves import (
    FINE_SHARE,
    MEMORY_DOWN,
    N_ACTIONS,
    RELEASE,
    STAY,
    decode,
    fine,
    move,
    share,
)
from gputuned.tuner.decision.observe import BASE_OBS_DIM, SIM_OBS_DIM, Observation, PolicyInput
from gputuned.tuner.decision.observe import Feature as F

logger = logging.getLogger(__name__)

#: Where ``bench/tuner_sim_eval.py train`` puts the simulated-node policy in the package.
PACKAGED_SIM_POLICY = Path(str(files("gputuned.tuner") / "data" / "policy_sim.npz"))
#: Share of the measured energy-for-goodput exchange rate a batch probe must beat to be kept
#: for the goodput it gains (the rate falls as the limit comes down, so only half is counted).
TRADE_SHARE = 0.5
#: Whether ``auto`` picks the packaged learned policy (true only while it is at least as good as
#: the climber on the closed-loop headline, docs/benchmarks.md); a packaged policy whose input or
#: action count is not the live tuner's is never used: ``auto`` climbs instead.
LEARNED_BY_DEFAULT = True


class Chooser:
    """Maps a base observation to an action index."""

    name = "chooser"

    def __call__(self, obs: Observation) -> int:
        raise NotImplementedError


class ClimbChooser(LimitOrLock, Chooser):
    """Explicit hill climber over the power limit and the batch size (see module doc)."""

    name = "climber"

    def __init__(self, objective: str, max_slowdown: float, margin: float = 0.004, max_probes: int = 2) -> None:
        self.energy = objective != "throughput"
        self.budget = 1.0 - max_slowdown
        self.margin = margin
        self.max_probes = max_probes
        self.state = Phase.POWER
        self.settled = 0
        self.prev_eps: float | None = None
        self.floor: float | None = None  # limit share under which energy per sample rose
        self.probe_from: tuple[float, float] | None = None  # (eps, goodput) before a batch probe
        self.probes = {+1: 0, -1: 0}
        self.direction = +1
        self.last_dp = 0
        self.prev_limit: float | None = None
        self.step = 0.0
        self.depth = 0  # 1 while a probe looks one more batch step ahead
        self.undo = 0  # the batch move still owed to undo a two-step probe
        self.prev_good: float | None = None
        self.rate: float | None = None  # energy saved per goodput given up, on the last step down
        self.traded: tuple[float, int] | None = None  # (eps before, batch steps) of a probe kept on trade
        self.spread = 0.0  # mean absolute change of goodput between intervals with no move (noise)
        self.ceiling: float | None = None  # share a step up from was undone by the guard: not up from there again
        # the ladder walked (the power limit or the clock lock): floor, ceiling, prev_limit, step and
        # last_dp are the walked knob's; ``other`` keeps the other's
        self.knob = "power"
        self.other: tuple[float | None, float | None, float | None, float, int] = (None, None, None, 0.0, 0)
        self.clock_tried = False
        self.clock_from = (0.0, 0.0)  # the judged cost and the goodput under the limit, before the lock took over
        # a lock faster than the limit, judged once its walk settles; the last walked move was a quarter step
        self.lock_pending, self.fine = False, False
        self.probe_dc = 0  # the clock move made with a batch probe under a lock (undone with it)
        self.knobs = KnobProbe()  # which knob is walked first, from one measured step of each
        self.memory = MemoryWalk()  # the memory-clock lock's walk, once the walked knob has settled

    def __call__(self, obs: Observation) -> int:
        limit, goodput, eps, oom = float(obs[F.LIMIT_SHARE]), float(obs[F.GOODPUT]) + 1.0, float(obs[F.EPS]) + 1.0, obs[F.OOM] > 0.5
        if (obs[F.LAST_DP] == 0 and obs[F.LAST_DB] == 0 and obs[F.LAST_DC] == 0 and obs[F.LAST_DM] == 0
                and obs[F.ROLLED_BACK] == 0 and obs[F.EARLY] > 0):
            self.spread = 0.8 * self.spread + 0.2 * abs(float(obs[F.D_GOODPUT])) / 10.0
        if self.energy and obs[F.CLOCKS] > 0.5:  # the start probe: which knob is walked first
            probed = self.knobs.step(bool(obs[F.LIMIT_SHARE] > 0.999 and obs[F.LOCK_SHARE] > 0.999), self.clock_tried,
                                     int(obs[F.LAST_DP]), int(obs[F.LAST_DC]), eps, goodput, 0.886 * self.spread)
            if probed is not None:
                return self._take_over(eps, goodput) if probed == TAKE_OVER else probed
        walked = self.memory.judge(obs, eps, goodput, self.budget, 0.886 * self.spread)
        if walked is not None:
            self.prev_eps, self.prev_good, self.last_dp, self.settled = eps, goodput, 0, 0
            return walked
        if self.state == Phase.PROBE and (oom or obs[F.LAST_DB] == 0):
            # the batch move asked for was not made (out of memory, refused, at the job's bound):
            # that direction is spent; a look-ahead step not made leaves the first one to undo
            self.probes[self.direction] = self.max_probes
            if self.depth:
                self.state, self.undo = Phase.UNDO, -self.direction
            else:
                self.state = Phase.POWER
            self.probe_from, self.depth, self.probe_dc = None, 0, 0  # (a two-knob move is made whole or not at all)
            self.direction = -self.direction
        fine_last, self.fine = self.fine, False
        if self.state == Phase.UNDO:  # the second half of undoing a two-step probe
            self.state = Phase.POWER
            return move(0, self.undo)
        if self.state == Phase.PROBE:
            self.probe_dc = self.probe_dc if obs[F.LAST_DC] else 0  # the clock was already at its lowest
            return self._judge_probe(eps, goodput)
        if self.state == Phase.CLOCK and self._judge_lock(obs, eps, goodput):
            return move(0, 0, +1)  # unlock: the limit comes back
        if self.knob == "clock" and obs[F.LOCK_SHARE] > 0.999:
            self._switch("power")  # unlocked (climbed back past the clock it took over at)
        if self.knob == "clock":
            limit = float(obs[F.LOCK_SHARE])
        capped = obs[F.CAPPED] > 0.5 or self.knob == "clock"
        dp = self._throughput_power(limit) if not self.energy else self._energy_power(limit, goodput, eps, capped,
                                                                                       fine_last)
        self.prev_eps, self.prev_good, self.last_dp = eps, goodput, dp
        self.settled = self.settled + 1 if dp == 0 else 0
        settled = self._settled(obs, eps, goodput) if dp == 0 and self.settled >= 2 else None
        if settled is not None:
            return settled
        if self.fine and dp:
            return fine(dc=dp) if self.knob == "clock" else fine(dp=dp)
        return move(0, 0, dp) if self.knob == "clock" else move(dp, 0)

    def _settled(self, obs: Observation, eps: float, goodput: float) -> int | None:
        """The move once the walked knob has settled: judge a trade or a lock, try a lock, or probe the batch."""
        if self.traded is not None:
            eps0, steps = self.traded
            self.traded = None
            if eps > eps0 * 0.995:  # the lower limit did not buy back the batch's energy: undo the batch move
                d = self.direction
                self.probes[d], self.direction, self.settled = self.max_probes, -d, 0
                if steps > 1:
                    self.state, self.undo = Phase.UNDO, -d
                return move(0, -d)
        if self.lock_pending:
            self.lock_pending = False
            if self._cost(eps, goodput) >= self.clock_from[0] * (1.0 - LOCK_MARGIN):
                self._switch("power")  # at the limit's speed the lock costs more: the limit comes back
                self.last_dp, self.settled = 0, 0
                return RELEASE
        if self.energy and obs[F.CLOCKS] > 0.5 and not self.clock_tried:
            return self._take_over(eps, goodput)
        db = self._next_probe()
        if not db:  # the batch probes are spent: the memory clock's walk, once
            return MEMORY_DOWN if self.energy and self.memory.start(obs, eps) else None
        self.state, self.probe_from, self.settled = Phase.PROBE, (eps, goodput), 0
        # under a lock a doubled batch goes with a clock step down (past the floor, the old size's):
        # it spends at once the speed the batch buys, as a limit would by lowering the clock itself
        self.probe_dc = -1 if self.knob == "clock" and db > 0 else 0
        return move(0, db, self.probe_dc)

    def rolled_back(self, knob: str) -> None:
        """The guard undid the last move of ``knob``: a batch probe ends there, its direction spent."""
        if knob == "memory_clock":
            self.memory.abandon()
        if knob == "sm_clock" and self.state == Phase.CLOCK:
            self.state = Phase.POWER  # the guard undid the lock's takeover: the limit stays
        if self.knobs.rolled_back(knob):  # going back from the probe's lock cost more: the lock is walked
            self._switch("clock")
            self.clock_tried, self.prev_limit = True, None
        walked = "power_limit" if self.knob == "power" else "sm_clock"
        if knob == walked and self.last_dp > 0 and self.prev_limit is not None:
            self.ceiling = self.prev_limit  # stepping up from there cost more than staying
        if knob == walked and self.last_dp < 0 and self.prev_limit is not None:
            # the limit it came down to cost too much: not again (with no step seen yet, the move
            # may have skipped several: no lower limit at all from here)
            self.floor = self.prev_limit - (FINE_SHARE if self.fine else 1.0) * self.step if self.step > 0 else self.prev_limit
        if knob == "batch_size" and self.state == Phase.PROBE:
            self.probes[self.direction] = self.max_probes
            # the guard undid the look-ahead step only: the first step is still to undo
            self.state, self.undo = (Phase.UNDO, -self.direction) if self.depth else (Phase.POWER, 0)
            self.direction = -self.direction
            self.probe_from, self.depth, self.probe_dc = None, 0, 0
        self.last_dp = 0

    def taken(self, action: int, suggested: int) -> None:
        """The move actually made was ``action`` (a learned policy overruled ``suggested``): resync the state."""
        if action == suggested:
            return
        if self.memory.pending is not None:
            self.memory.abandon()
        if self.state == Phase.PROBE:  # the probe it asked for did not happen
            self.probes[self.direction] = max(0, self.probes[self.direction] - 1)
            self.state, self.probe_from, self.depth, self.probe_dc = Phase.POWER, None, 0, 0
        elif self.state in (Phase.UNDO, Phase.CLOCK):
            self.clock_tried = self.clock_tried and self.state != Phase.CLOCK  # the lock it asked for was not tried
            self.state = Phase.POWER
        m = decode(action)
        self.last_dp = m.dc if self.knob == "clock" else m.dp
        self.fine, self.settled = share(action) < 1.0, 0

    def _energy_power(self, limit: float, goodput: float, eps: float, capped: bool, fine_last: bool = False) -> int:
        """The walked knob's move: down while the budget allows, up over it, a quarter step (``fine``) near it."""
        if self.prev_limit is not None and abs(limit - self.prev_limit) > 1e-6:
            if not fine_last:
                self.step = abs(limit - self.prev_limit)
        elif self.last_dp < 0 and self.prev_limit is not None:
            self.floor = limit  # a step down did not move the limit: its minimum is reached
        if (self.last_dp < 0 and self.prev_eps is not None and self.prev_good is not None
                and self.prev_good - goodput > 0.003 * self.prev_good and eps < self.prev_eps):
            self.rate = ((self.prev_eps - eps) / self.prev_eps) / ((self.prev_good - goodput) / self.prev_good)
        self.prev_limit = limit
        noise = 0.886 * self.spread  # one reading's standard deviation, from the mean absolute change
        fine_down = fine_last and self.last_dp < 0  # a fine step buys little: it must stay within the budget, and pay
        if goodput < self.budget - (0.0 if fine_down else max(0.002, 1.0 * noise)):
            self.floor = limit  # over the slowdown budget here: never step down to this limit again
            self.fine = fine_down  # a fine step down is undone by a fine step up
            return +1 if limit < 0.999 and (self.ceiling is None or limit < self.ceiling - 1e-6) else 0
        if (capped and self.last_dp < 0 and self.prev_eps is not None and eps > self.prev_eps * (1.0 + min(0.01, noise))
                and goodput >= self.budget):  # (uncapped, the limit changed nothing: a rise is noise)
            self.floor, self.fine = limit, fine_last  # the last step down bought nothing: back, and stop there
            return +1
        if goodput > self.budget + max(self.margin, 1.5 * noise) and limit > 0.0:
            if self.floor is None or limit - self.step > self.floor + 1e-6:
                return -1
            self.fine = self.step > 0 and limit - FINE_SHARE * self.step > self.floor + 1e-6
            return -1 if self.fine else 0
        return 0

    def _throughput_power(self, limit: float) -> int:
        return +1 if limit < 0.999 else 0

    def _next_probe(self) -> int:
        for d in (self.direction, -self.direction):
            if self.probes[d] < self.max_probes:
                self.direction = d
                self.probes[d] += 1
                return d
        return 0

    def _judge_probe(self, eps: float, goodput: float) -> int:
        assert self.probe_from is not None
        eps0, g0 = self.probe_from
        traded = False
        if self.energy:
            # less energy, or more goodput (headroom the power limit then trades for energy)
            better = goodput >= self.budget and (eps < eps0 * 0.995 or (goodput > g0 * 1.02 and eps < eps0 * 1.01))
            if not better and self.rate and goodput >= self.budget and goodput > g0 * 1.02:
                # more energy now, but the goodput gained buys more than that back on the power
                # limit at half the exchange rate measured on the last step down
                traded = better = eps / eps0 - 1.0 < TRADE_SHARE * self.rate * (goodput / g0 - 1.0)
            close = goodput >= self.budget and eps <= eps0 * 1.02
        else:
            better = goodput > g0 * 1.01
            close = goodput >= g0 * 0.985
        d = self.direction
        if not better and close and not self.depth:  # flat here: one more step may pay (e.g. 4x, not 2x)
            self.depth = 1
            return move(0, d)
        two, self.depth = self.depth, 0
        self.state, self.probe_from = Phase.POWER, None
        dc, self.probe_dc = self.probe_dc, 0
        self.prev_eps, self.last_dp = (eps if better else eps0), 0
        if better:
            self.floor = self.ceiling = None  # a new batch size: the limits left to explore change
            # keep going while it pays; the size it came from is known to be worse
            self.probes[d], self.probes[-d] = 0, self.max_probes
            self.traded = (eps0, 1 + two) if traded else None  # judged again once the limit settles
            return STAY
        self.probes[d] = self.max_probes  # this direction does not pay: undo it, try the other
        self.direction = -d
        if two:
            self.state, self.undo = Phase.UNDO, -d
        return move(0, -d, -dc)  # the clock step made with the probe goes back with it


class LearnedChooser(Chooser):
    """The learned policy (numpy weights exported from stable-baselines3), the climber as its adviser."""

    name = "learned"

    def __init__(self, policy: Callable[[PolicyInput], int], objective: str, max_slowdown: float) -> None:
        self.policy = policy
        self.adviser = ClimbChooser(objective, max_slowdown)
        self.overruled_reversals = 0

    def __call__(self, obs: Observation) -> int:
        full, suggested = advise(self.adviser, obs)
        action = int(self.policy(full))
        if not 0 <= action < N_ACTIONS:
            action = STAY
        dp, last_dp = decode(action).dp, int(obs[F.LAST_DP])
        if action != suggested and dp and dp == -last_dp:
            # overruling the adviser only to undo the last power step is how a policy oscillates
            # (seen outside its training range, e.g. 32x the batch): follow the adviser there
            action = suggested
            self.overruled_reversals += 1
        self.adviser.taken(action, suggested)
        return action

    def rolled_back(self, knob: str) -> None:
        """Forward the guard's rollback to the adviser."""
        self.adviser.rolled_back(knob)


def advise(climber: ClimbChooser, obs: Observation) -> tuple[PolicyInput, int]:
    """The policy input: ``obs`` (base features) and the climber's proposed move; returns it and the proposal."""
    import numpy as np  # the learned policy's path only: the climber runs without numpy
    suggested = int(climber(obs))
    proposal = np.asarray(decode(suggested), dtype=np.float32) * share(suggested)  # a fine move as its quarter step
    return np.concatenate([obs[:BASE_OBS_DIM], proposal]).astype(np.float32), suggested


def load_learned(path: Path | None = None) -> Callable[[PolicyInput], int]:
    """The numpy policy at ``path`` (default: the packaged one); raises ValueError on a wrong input size."""
    from gputuned.tuner.decision.policy_file import policy_shape

    path = path or PACKAGED_SIM_POLICY
    obs_dim, n_actions = policy_shape(path)  # from the headers: a policy not used imports no numpy
    if obs_dim != SIM_OBS_DIM:
        raise ValueError(f"{path}: policy expects {obs_dim} observations, the live tuner gives {SIM_OBS_DIM}")
    if n_actions != N_ACTIONS:
        raise ValueError(f"{path}: policy chooses among {n_actions} moves, the live tuner makes {N_ACTIONS}")
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy
    return NumpyPolicy.load(path)


def make_chooser(kind: str, policy: Path | None, objective: str, max_slowdown: float) -> Chooser:
    """``learned``: the numpy policy (``policy`` or the packaged one); ``climber``; ``auto``: learned if it loads."""
    if kind not in ("auto", "learned", "climber"):
        raise ValueError(f"tuner.policy: unknown {kind!r} (learned, climber)")
    if kind == "learned" or (kind == "auto" and LEARNED_BY_DEFAULT):
        try:
            pol = load_learned(policy)
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            if kind == "learned":
                raise
            # the packaged policy not matching today's moves is expected until it is retrained: no warning
            (logger.info if policy is None else logger.warning)(
                "tuner: learned policy not used (%s); climbing chooser instead", e)
        else:
            logger.info("tuner: learned policy %s", policy or PACKAGED_SIM_POLICY)
            return LearnedChooser(pol, objective, max_slowdown)
    logger.info("tuner: climbing chooser (objective %s)", objective)
    return ClimbChooser(objective, max_slowdown)

