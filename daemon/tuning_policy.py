"""Choosers for the live tuner: the learned numpy policy, or an explicit climber.

Both map the :class:`gputuned.tuner.sim_env.SimNodeEnv` observation (14 floats) to one of its
9 moves, ``action = 3 * (power move + 1) + (batch move + 1)``, moves in {-1, 0, +1}.

:class:`ClimbChooser` is a small state machine for when no policy for that observation ships
(or to compare against one). Energy objectives: the power limit steps down while goodput stays
above the slowdown budget and energy per sample keeps falling, and steps up when goodput falls
under it; once the limit has settled, a doubled batch size is tried once (kept if energy per
sample falls and goodput stays within budget, undone otherwise), then a halved one. Throughput:
the limit goes to its maximum, then batch size climbs while goodput rises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

STAY = 4
#: Where ``gputuned tuner train --sim`` puts the simulated-node policy in the package.
PACKAGED_SIM_POLICY = Path(__file__).resolve().parent.parent / "tuner" / "data" / "policy_sim.npz"
SIM_OBS_DIM = 14


def move(dp: int, db: int) -> int:
    """The action index of a (power move, batch move)."""
    return 3 * (dp + 1) + (db + 1)


class Chooser:
    """Maps an observation to an action index."""

    name = "chooser"

    def __call__(self, obs: np.ndarray) -> int:
        raise NotImplementedError


class PolicyChooser(Chooser):
    """The learned policy (numpy inference of weights exported from stable-baselines3)."""

    name = "policy"

    def __init__(self, policy: Callable[[np.ndarray], int]) -> None:
        self.policy = policy

    def __call__(self, obs: np.ndarray) -> int:
        return int(self.policy(obs))


class ClimbChooser(Chooser):
    """Explicit hill climber over the power limit and the batch size (see module doc)."""

    name = "climb"

    def __init__(self, objective: str, max_slowdown: float, margin: float = 0.004, max_probes: int = 2) -> None:
        self.energy = objective != "throughput"
        self.budget = 1.0 - max_slowdown
        self.margin = margin
        self.max_probes = max_probes
        self.state = "power"
        self.settled = 0
        self.prev_eps: float | None = None
        self.floor: float | None = None  # limit share under which energy per sample rose
        self.probe_from: tuple[float, float] | None = None  # (eps, goodput) before a batch probe
        self.probes = {+1: 0, -1: 0}
        self.direction = +1
        self.last_dp = 0
        self.prev_limit: float | None = None
        self.step = 0.0

    def __call__(self, obs: np.ndarray) -> int:
        limit, goodput, eps, oom = float(obs[0]), float(obs[7]) + 1.0, float(obs[8]) + 1.0, obs[11] > 0.5
        if oom and self.state == "probe":  # the doubled batch did not fit: nothing to undo
            self.state, self.probes[+1] = "power", self.max_probes
            self.probe_from = None
        if self.state == "probe":
            return self._judge_probe(eps, goodput)
        dp = self._throughput_power(limit) if not self.energy else self._energy_power(limit, goodput, eps)
        self.prev_eps, self.last_dp = eps, dp
        self.settled = self.settled + 1 if dp == 0 else 0
        if dp == 0 and self.settled >= 2:
            db = self._next_probe()
            if db:
                self.state, self.probe_from, self.settled = "probe", (eps, goodput), 0
                return move(0, db)
        return move(dp, 0)

    def rolled_back(self, knob: str) -> None:
        """The guard undid the last move of ``knob``: a batch probe ends there, its direction spent."""
        if knob == "power_limit" and self.last_dp < 0 and self.prev_limit is not None and self.step > 0:
            self.floor = self.prev_limit - self.step  # the limit it came down to cost too much: not again
        if knob == "batch_size" and self.state == "probe":
            self.probes[self.direction] = self.max_probes
            self.direction = -self.direction
            self.state, self.probe_from = "power", None
        self.last_dp = 0

    def _energy_power(self, limit: float, goodput: float, eps: float) -> int:
        if self.prev_limit is not None and abs(limit - self.prev_limit) > 1e-6:
            self.step = abs(limit - self.prev_limit)
        elif self.last_dp < 0 and self.prev_limit is not None:
            self.floor = limit  # a step down did not move the limit: its minimum is reached
        self.prev_limit = limit
        if goodput < self.budget - 0.002:
            self.floor = limit  # over the slowdown budget here: never step down to this limit again
            return +1 if limit < 0.999 else 0
        if self.last_dp < 0 and self.prev_eps is not None and eps > self.prev_eps * 1.01 and goodput >= self.budget:
            self.floor = limit  # the last step down cost energy: stop there
            return +1
        if goodput > self.budget + self.margin and limit > 0.0 and (
                self.floor is None or limit - self.step > self.floor + 1e-6):
            return -1
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
        self.state, self.probe_from = "power", None
        if self.energy:
            # less energy, or more goodput (headroom the power limit then trades for energy)
            better = goodput >= self.budget and (eps < eps0 * 0.995 or (goodput > g0 * 1.02 and eps < eps0 * 1.01))
        else:
            better = goodput > g0 * 1.01
        self.prev_eps, self.last_dp = (eps if better else eps0), 0
        if better:
            self.floor = None  # a new batch size: the limits left to explore change
            return STAY
        d = self.direction
        self.probes[d] = self.max_probes  # this direction does not pay: undo it, try the other
        self.direction = -d
        return move(0, -d)


def make_chooser(kind: str, policy: Path | None, objective: str, max_slowdown: float) -> Chooser:
    """``policy``: the numpy policy (``policy`` or the packaged one); ``climb``; ``auto``: policy if one exists."""
    if kind not in ("auto", "policy", "climb"):
        raise ValueError(f"tuner.chooser: unknown {kind!r} (auto, policy, climb)")
    if kind != "climb":
        path = policy or PACKAGED_SIM_POLICY
        if path.is_file():
            from gputuned.tuner.policy_numpy import NumpyPolicy

            pol = NumpyPolicy.load(path)
            if pol.obs_dim == SIM_OBS_DIM:
                logger.info("tuner: numpy policy %s", path)
                return PolicyChooser(pol)
            if kind == "policy":
                raise ValueError(f"{path}: policy expects {pol.obs_dim} observations, the live tuner gives {SIM_OBS_DIM}")
        elif kind == "policy":
            raise FileNotFoundError(f"{path}: no such policy file")
    logger.info("tuner: climbing chooser (objective %s)", objective)
    return ClimbChooser(objective, max_slowdown)
