"""Seasonal likelihood: is the series where it usually is at this time of the day (of the week)?

A second stage beside the detector's baseline score, for what that score cannot see: a value
inside the series' recent range that is wrong for the time (a daily peak that does not come,
a weekday that looks like a Sunday, a holiday). Pure standard library, bounded memory (one
float and one count per slot) and a few operations per sample.

For one period (a day, a week) cut into slots, each sample's deviation from the detector's
baseline level, in the baseline's sigmas and clipped, is compared with the usual deviation of
its slot (an EWMA over the slot's last few visits). The residual is averaged over about one
slot's samples, and that average is scored against its own long-run distribution (the mean
and variance of the same average over the last few periods): the tail in standard deviations
maps to [0, 1] like the baseline's z. Relative to the series' own residuals, so stationary
noise, or a cycle that repeats, stays quiet by construction; a slot scores only after
``min_visits`` earlier periods and the stage only after one period of scoring, so a series
shorter than a few periods (a training job, a simulated run) is never judged by it.
"""

from __future__ import annotations

import math

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


def score_of(z: float, z_start: float, z_half: float) -> float:
    """Map a deviation in sigmas to [0, 1]: 0 up to z_start, 0.5 at z_half, towards 1 beyond."""
    excess = z - z_start
    if excess <= 0.0:
        return 0.0
    r = excess / (z_half - z_start)
    return 1.0 - math.exp(-math.log(2.0) * r * r)


class SeasonalLikelihood:
    """Slot profile of one period and the likelihood of the recent residual from it."""

    def __init__(
        self, period_s: float, slots: int, min_visits: int, *, memory: float = 4.0, clip: float = 4.0,
        periods_long: float = 3.0, sd_floor: float = 0.1, z_start: float = 2.0, z_half: float = 5.0,
    ) -> None:
        if period_s <= 0.0 or slots < 1 or min_visits < 1:
            raise ValueError("need a positive period, at least one slot and one visit")
        self.period_s, self.slots, self.min_visits = period_s, slots, min_visits
        self.memory, self.clip, self.periods_long, self.sd_floor = memory, clip, periods_long, sd_floor
        self.z_start, self.z_half = z_start, z_half
        self.usual = [0.0] * slots
        self.visits = [0] * slots
        self.slot = -1
        self.recent = self.mean = self.var = 0.0
        self.scored = 0
        self._spacing = math.nan
        self._rates = (1.0, 1.0, 1.0, 1.0)

    def reset_recent(self) -> None:
        """Forget the running residual (after an intended change moved the baseline)."""
        self.recent = 0.0

    def update(self, t: float, x: float, level: float, sigma: float, spacing_s: float) -> float:
        """Score sample ``x`` at ``t`` (seconds since the epoch) against its slot, then learn it.

        ``level`` and ``sigma`` are the baseline's before this sample, ``spacing_s`` the typical
        sample spacing. Returns a score in [0, 1] (0 while the slot or the stage is immature).
        """
        u = max(-self.clip, min(self.clip, (x - level) / sigma))
        k = int((t % self.period_s) / self.period_s * self.slots) % self.slots
        if k != self.slot:
            self.slot = k
            self.visits[k] += 1
        if not abs(spacing_s - self._spacing) <= 0.01 * self._spacing:
            self._set_rates(spacing_s)
        per_visit = self._rates[0]
        score = self._judge(u - self.usual[k]) if self.visits[k] > self.min_visits else 0.0
        a = min(1.0, 1.0 / (per_visit * min(self.visits[k], self.memory)))
        self.usual[k] += a * (u - self.usual[k])
        return score

    def _set_rates(self, spacing_s: float) -> None:
        """Samples per slot visit and per period, and the two averages' smoothing factors."""
        per_period = self.period_s / max(spacing_s, 1e-9)
        per_visit = max(per_period / self.slots, 1.0)
        a_recent = 1.0 - math.exp(-1.0 / per_visit)
        self._spacing = spacing_s
        self._rates = (per_visit, per_period, a_recent, 1.0 - math.exp(-1.0 / (self.periods_long * per_period)))

    def _judge(self, residual: float) -> float:
        """Fold ``residual`` into the recent average; score that against its long-run spread."""
        _, per_period, a_recent, a_long = self._rates
        self.recent += a_recent * (residual - self.recent)
        self.scored += 1
        tail = abs(self.recent - self.mean) / max(math.sqrt(self.var), self.sd_floor)
        score = score_of(tail, self.z_start, self.z_half) if self.scored > per_period else 0.0
        a = max(a_long, 1.0 / self.scored)
        d = self.recent - self.mean
        self.mean += a * d
        self.var += a * (d * d - self.var)
        return score
