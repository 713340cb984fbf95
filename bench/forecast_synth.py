"""Synthetic labelled series for the detector evaluation (step, ramp, spike, variance change).

Each series is one simulated day of one metric of one GPU, on one of several backgrounds
(white noise; AR(1) noise with a daily cycle; heavy-tailed, quantised noise; irregular sampling
with gaps), with one labelled event (or none). Magnitudes are in units of the noise sigma,
the kind of shift that costs a few percent of throughput on a series with 1 % noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_S = 86400.0
KINDS = ("step", "ramp", "spike", "variance", "none")
BACKGROUNDS = ("white", "seasonal_ar1", "heavy_quantised", "irregular_gaps")


@dataclass
class Labelled:
    """A series with its event window and the time the event first costs (``cost_t``)."""

    kind: str
    background: str
    t: np.ndarray
    x: np.ndarray
    start: float
    end: float
    cost_t: float


def _times(rng: np.random.Generator, background: str, step_s: float) -> np.ndarray:
    if background != "irregular_gaps":
        return np.arange(0.0, DAY_S, step_s)
    dts = step_s * rng.lognormal(0.0, 0.5, size=int(2 * DAY_S / step_s))
    t = np.cumsum(dts)
    t = t[t < DAY_S]
    for _ in range(3):  # three collection gaps of 5 to 40 minutes
        g0 = rng.uniform(0.05, 0.95) * DAY_S
        t = t[(t < g0) | (t > g0 + rng.uniform(300, 2400))]
    return t


def _background(rng: np.random.Generator, background: str, t: np.ndarray) -> np.ndarray:
    n = len(t)
    level = rng.uniform(50.0, 500.0)
    sigma = 1.0
    if background == "seasonal_ar1":
        e = rng.normal(0.0, sigma, n)
        ar = np.empty(n)
        acc = 0.0
        phi = 0.8
        for i in range(n):
            acc = phi * acc + np.sqrt(1 - phi**2) * e[i]
            ar[i] = acc
        return level + 3.0 * sigma * np.sin(2 * np.pi * t / DAY_S + rng.uniform(0, 6.3)) + ar
    if background == "heavy_quantised":
        noise = rng.standard_t(4, n) * sigma / np.sqrt(2.0)
        return np.round(level + noise)
    return level + rng.normal(0.0, sigma, n)


def make_series(rng: np.random.Generator, kind: str, background: str, step_s: float = 10.0) -> Labelled:
    """One labelled day: the event starts between 35 % and 70 % of the day."""
    t = _times(rng, background, step_s)
    x = _background(rng, background, t)
    sign = rng.choice([-1.0, 1.0])
    start = rng.uniform(0.35, 0.7) * DAY_S
    end = cost_t = start
    if kind == "step":
        mag = rng.uniform(5.0, 10.0)
        end = start + rng.uniform(1800.0, 7200.0)
        x = x + sign * mag * ((t >= start) & (t < end))
        cost_t = start
    elif kind == "ramp":
        dur = rng.uniform(3600.0, 3 * 3600.0)
        top = rng.uniform(8.0, 12.0)
        end = start + dur
        frac = np.clip((t - start) / dur, 0.0, 1.0)
        frac[t > end + 1800.0] = 0.0  # the fault is fixed half an hour after it peaks
        x = x + sign * top * frac
        cost_t = start + dur * 5.0 / top  # first time the drift reaches 5 sigma
        end = end + 1800.0
    elif kind == "spike":
        i = int(np.searchsorted(t, start))
        x = x.copy()
        x[i] += sign * rng.uniform(10.0, 20.0)
        start = end = cost_t = float(t[i])
    elif kind == "variance":
        end = start + rng.uniform(1800.0, 7200.0)
        inside = (t >= start) & (t < end)
        x = x + inside * rng.normal(0.0, rng.uniform(3.0, 5.0), len(t))
        cost_t = start
    return Labelled(kind, background, t, x, float(start), float(end), float(cost_t))
