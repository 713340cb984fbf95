"""Seasonal labelled series: GPU utilisation of a shared cluster and GPU temperature, with faults.

Each series is 8 days of one sample a minute, starting on a Monday at midnight:

* ``utilisation`` (percent): busy working hours (a daily bump peaking mid-afternoon), weekends
  at a third of the weekday swing, AR(1) noise of 2 points;
* ``temperature`` (C, read as integers as NVML gives them): 62 C plus a daily swing of 6 C
  following the machine room and the load, AR(1) noise of 0.4 C, then rounded.

One fault (or none) starts between day 5.5 and day 7.5 (so weekend and weekdays both occur):

* ``night_load``: 3 h at night (01:00-04:00) at the level of a busy afternoon: values the series
  shows every day, wrong for the hour (a runaway job, a fan curve stuck on day settings);
* ``step``: +6 noise sigmas for 2 h at any hour;
* ``ramp``: a drift of +1.5 noise sigmas an hour for 6 h (a clogging filter), then fixed.
"""

from __future__ import annotations

import numpy as np
from forecast_synth import Labelled

DAY_S = 86400.0
STEP_S = 60.0
DAYS = 8
BACKGROUNDS = ("utilisation", "temperature")
KINDS = ("none", "night_load", "step", "ramp")
FAMILY = {"utilisation": "gputuned_gpu_utilization_ratio", "temperature": "gputuned_gpu_temperature_celsius"}
_NOISE = {"utilisation": 2.0, "temperature": 0.4}


def _ar1(rng: np.random.Generator, n: int, sigma: float, phi: float = 0.7) -> np.ndarray:
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def daily_shape(t: np.ndarray) -> np.ndarray:
    """0 at night, 1 at the mid-afternoon peak: a smooth working-day bump."""
    hour = (t % DAY_S) / 3600.0
    return np.exp(-0.5 * ((hour - 14.5) / 3.5) ** 2)


def _clean(background: str, t: np.ndarray) -> np.ndarray:
    weekday = (t // DAY_S) % 7 < 5
    swing = np.where(weekday, 1.0, 0.33)
    if background == "utilisation":
        return 20.0 + 60.0 * swing * daily_shape(t)
    return 62.0 + 6.0 * (0.5 * swing * daily_shape(t) + 0.5 * np.sin(2 * np.pi * (t / DAY_S - 0.375)))


def make_seasonal(rng: np.random.Generator, kind: str, background: str) -> Labelled:
    """One labelled series (see the module doc); its fault window is start..end (nan for none)."""
    t = np.arange(0.0, DAYS * DAY_S, STEP_S)
    clean = _clean(background, t)
    sigma = _NOISE[background]
    x = clean + _ar1(rng, len(t), sigma)
    day = float(np.floor(rng.uniform(5.5, 7.5)))
    start = end = float("nan")
    if kind == "night_load":
        start, end = day * DAY_S + 3600.0, day * DAY_S + 4 * 3600.0
        busy = _clean(background, np.full(len(t), 2 * DAY_S + 14.5 * 3600.0))  # a weekday afternoon
        x = np.where((t >= start) & (t < end), busy + _ar1(rng, len(t), sigma), x)
    elif kind == "step":
        start = float(rng.uniform(5.5, 7.5)) * DAY_S
        end = start + 2 * 3600.0
        x = x + 6.0 * sigma * ((t >= start) & (t < end))
    elif kind == "ramp":
        start = float(rng.uniform(5.5, 7.5)) * DAY_S
        end = start + 6 * 3600.0
        x = x + 1.5 * sigma * np.clip((t - start) / 3600.0, 0.0, 6.0) * ((t >= start) & (t < end))
    if background == "temperature":
        x = np.round(x)
    return Labelled(kind, background, t, x, start, end, start)
