"""Tuning objectives as small strategy classes: what a run costs and which power limit is best.

Every objective turns (energy, time) into one cost to minimise, and picks a power limit from
a profile ``{power_limit_w: (seconds_per_unit_work, watts)}`` measured live. The reward of the
environments is the negative cost normalised by the first (default) run's cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

Profile = dict[int, tuple[float, float]]


class Objective(Protocol):
    """What the tuner minimises."""

    @property
    def name(self) -> str: ...

    def cost(self, energy_j: float, time_s: float, max_power_w: float, ref_time_s: float | None = None) -> float:
        """Cost of work that took ``time_s`` and ``energy_j``."""
        ...

    def pick_power_limit(self, profile: Profile, max_power_w: float) -> int:
        """Best power limit of a measured profile."""
        ...


@dataclass(frozen=True)
class ZeusCost:
    """Zeus's cost: eta x energy + (1 - eta) x max power x time (NSDI'23, eq. 2)."""

    eta: float = 0.5
    name: str = "zeus_cost"

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta_knob must be in [0, 1], got {self.eta}")

    def cost(self, energy_j: float, time_s: float, max_power_w: float, ref_time_s: float | None = None) -> float:
        """Zeus cost in joules."""
        return self.eta * energy_j + (1.0 - self.eta) * max_power_w * time_s

    def pick_power_limit(self, profile: Profile, max_power_w: float) -> int:
        """Power limit with the lowest cost per unit of work."""
        return min(profile, key=lambda p: self.cost(profile[p][0] * profile[p][1], profile[p][0], max_power_w))


@dataclass(frozen=True)
class MaxThroughput:
    """Maximum goodput: minimum time to target."""

    name: str = "throughput"

    def cost(self, energy_j: float, time_s: float, max_power_w: float, ref_time_s: float | None = None) -> float:
        """Time in seconds."""
        return time_s

    def pick_power_limit(self, profile: Profile, max_power_w: float) -> int:
        """Fastest power limit, the higher one on ties (within 0.5%)."""
        best = min(v[0] for v in profile.values())
        return max(p for p, v in profile.items() if v[0] <= best * 1.005)


@dataclass(frozen=True)
class EnergyWithSlowdown:
    """Minimum energy with time at most (1 + max_slowdown) x the reference; a steep penalty beyond."""

    max_slowdown: float = 0.10
    penalty: float = 10.0
    name: str = "energy_slowdown"

    def cost(self, energy_j: float, time_s: float, max_power_w: float, ref_time_s: float | None = None) -> float:
        """Energy, multiplied up by the relative time over budget."""
        if ref_time_s is None or ref_time_s <= 0:
            return energy_j
        excess = time_s / (ref_time_s * (1.0 + self.max_slowdown)) - 1.0
        return energy_j * (1.0 + self.penalty * max(0.0, excess))

    def pick_power_limit(self, profile: Profile, max_power_w: float) -> int:
        """Lowest-energy power limit whose time is within the slowdown of the fastest one."""
        fastest = min(v[0] for v in profile.values())
        ok = {p: v for p, v in profile.items() if v[0] <= fastest * (1.0 + self.max_slowdown)}
        return min(ok, key=lambda p: ok[p][0] * ok[p][1])


@dataclass(frozen=True)
class MinEnergy(EnergyWithSlowdown):
    """Minimum energy to target, whatever the time: energy with no bound on the slowdown."""

    max_slowdown: float = math.inf
    name: str = "energy"


def _isotonic(values: list[float], weights: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    out: list[float] = []
    for m, _, n in blocks:
        out.extend([m] * int(n))
    return out


def smooth_profile(profile: Profile, samples: dict[int, int] | None = None) -> Profile:
    """Denoise a measured power-limit profile with the shapes physics guarantees.

    Time per unit of work does not rise with the power limit and board power does not fall
    with it, so each is replaced by its least-squares monotone fit over the limits (weighted by
    how many readings each limit's value averages). Noise then moves the pick much less.
    """
    limits = sorted(profile)
    if len(limits) < 3:
        return dict(profile)
    weights = [float((samples or {}).get(p, 1)) for p in limits]
    neg_time = _isotonic([-profile[p][0] for p in limits], weights)
    watts = _isotonic([profile[p][1] for p in limits], weights)
    return {p: (-t, w) for p, t, w in zip(limits, neg_time, watts, strict=True)}


def make_objective(name: str, eta: float = 0.5, max_slowdown: float = 0.10) -> Objective:
    """Build an objective from its config name."""
    if name == "zeus_cost":
        return ZeusCost(eta)
    if name == "energy":
        return MinEnergy()
    if name == "throughput":
        return MaxThroughput()
    if name == "energy_slowdown":
        if not (max_slowdown >= 0.0 and math.isfinite(max_slowdown)):
            raise ValueError(f"max_slowdown must be >= 0, got {max_slowdown}")
        return EnergyWithSlowdown(max_slowdown)
    raise ValueError(f"unknown objective {name!r} (zeus_cost, energy, throughput, energy_slowdown)")
