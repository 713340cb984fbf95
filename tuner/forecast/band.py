"""The forecast's band: reading a forecast grid, the band alert rule and the forecast's time to a limit.

A forecast grid (from the worker) holds times ``t`` and, per time, ``yhat`` and the interval
``lo``..``hi`` of width ``interval_width``; ``sigma = (hi - lo) / (2 z)`` with ``z`` that
width's normal quantile. :class:`BandRule` is the alert rule applied when a forecast exists:
**outside the forecast's 2-sigma band for N consecutive samples** raises, 2N consecutive
samples inside (or without a forecast) clear. :func:`crossing_eta` is the degradation ETA
read off the forecast's own path (trend plus seasonality). Pure standard library.
"""

from __future__ import annotations

import bisect
import math
from statistics import NormalDist

from gputuned.tuner.forecast.alerts import Transition

Grid = dict[str, list[float]]
BAND_SIGMAS = 2.0


def z_of(interval_width: float) -> float:
    """Normal quantile that turns an interval of ``interval_width`` into sigmas."""
    return NormalDist().inv_cdf(0.5 + interval_width / 2)


def forecast_at(grid: Grid, t: float, z_iw: float, slack_s: float) -> tuple[float, float] | None:
    """``(yhat, sigma)`` at ``t``, linearly interpolated; None outside the grid (``slack_s`` before
    its first point is allowed) or where the interval is empty."""
    if not grid:
        return None
    ts = grid["t"]
    i = bisect.bisect_left(ts, t)
    if i >= len(ts) or (i == 0 and t < ts[0] - slack_s):
        return None
    i = max(i, 1) if len(ts) > 1 else 0
    a = 0.0 if i == 0 else min(max((t - ts[i - 1]) / (ts[i] - ts[i - 1]), 0.0), 1.0)
    lo, hi = (0 if i == 0 else i - 1), i

    def at(name: str) -> float:
        return grid[name][lo] + a * (grid[name][hi] - grid[name][lo])

    sigma = (at("hi") - at("lo")) / (2.0 * z_iw)
    return (at("yhat"), sigma) if sigma > 0 else None


def outside(x: float, forecast: tuple[float, float], direction: str, sigmas: float = BAND_SIGMAS) -> bool:
    """True when ``x`` lies beyond ``sigmas`` of the forecast in a direction that counts."""
    yhat, sigma = forecast
    z = (x - yhat) / sigma
    if direction == "up":
        return z > sigmas
    if direction == "down":
        return z < -sigmas
    return abs(z) > sigmas


def crossing_eta(grid: Grid, t: float, limit: float, up: bool) -> float:
    """Seconds from ``t`` until the forecast's yhat first reaches ``limit``; +inf if it never does."""
    ts, yhat = grid["t"], grid["yhat"]
    for i in range(bisect.bisect_left(ts, t), len(ts)):
        if (yhat[i] >= limit) if up else (yhat[i] <= limit):
            return max(ts[i] - t, 0.0)
    return math.inf


class BandRule:
    """Alert state of the band rule for one series (see the module doc)."""

    def __init__(self, samples: int, direction: str) -> None:
        if samples < 1:
            raise ValueError("the band rule needs at least one sample")
        self.samples, self.direction = samples, direction
        self.active = False
        self.since = math.nan
        self._out = 0
        self._in = 0

    def step(self, t: float, x: float, forecast: tuple[float, float] | None) -> Transition | None:
        """Judge one sample against the forecast at its time; return the transition it caused."""
        out = forecast is not None and math.isfinite(x) and outside(x, forecast, self.direction)
        if not self.active:
            self._out = self._out + 1 if out else 0
            if self._out >= self.samples:
                self.active, self.since, self._in = True, t, 0
                return "raised"
            return None
        self._in = 0 if out else self._in + 1
        if self._in >= 2 * self.samples:
            self.active, self._out = False, 0
            return "cleared"
        return None
