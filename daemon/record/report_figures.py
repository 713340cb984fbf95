"""The report's figures: a one-page summary first, then one figure per quantity.

Each time figure zooms on the tuned run's active period (where the tuner moves or alerts
happen) with the full run in a small second panel; where that period is most of the run, one
panel shows it all. One unit per axis: forecast bands get a figure per quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gputuned.collectors import families as F
from gputuned.daemon.record import report_axes as A
from gputuned.daemon.record.report_data import (
    BATCH_SIZE,
    GOODPUT,
    SAMPLES_PER_S,
    RunData,
    active_period,
    energy_per_sample,
    first_series,
    mean_series,
)
from gputuned.tuner.forecast.service import FORECAST_VALUE

#: Forecast families shown (at most two), first found first, with (quantity, unit, scale).
FORECAST_UNITS = {
    F.GPU_TEMP: ("GPU temperature", "°C", 1.0),
    F.GPU_POWER: ("board power", "W", 1.0),
    SAMPLES_PER_S: ("throughput", "samples/s", 1.0),
    F.GPU_SM_CLOCK: ("SM clock", "MHz", 1e-6),
}
FIGSIZE, DPI = (10.0, 4.6), 100


@dataclass(frozen=True)
class Quantity:
    """One quantity over time: its figure's title and file name, y label, and how to draw a run."""

    title: str
    stem: str
    ylabel: str
    draw: A.Draw
    #: False: always the whole run (a forecast is read against the whole series).
    zoom: bool = True
    #: True: the tuned (or recorded) run only.
    tuned_only: bool = False


def _line(family: str, what: str, scale: float = 1.0, mean: bool = False, ls: str = "-", **lab: str) -> A.Draw:
    def draw(ax: Any, run: RunData, color: str) -> bool:
        xy = mean_series(run, family, scale) if mean else first_series(run, family, scale, **lab)
        if xy is None:
            return False
        ax.plot(*xy, color=color, ls=ls, lw=1.2, label=f"{what}, {A.run_label(run)}")
        return True
    return draw


def _both(*draws: A.Draw) -> A.Draw:
    def draw(ax: Any, run: RunData, color: str) -> bool:
        return any([d(ax, run, color) for d in draws])  # a list: every part draws
    return draw


def _eps(ax: Any, run: RunData, color: str) -> bool:
    t, v = energy_per_sample(run)
    if not len(t):
        return False
    ax.plot(t, v, color=color, lw=1.2, label=f"60 s window, {A.run_label(run)}")
    return True


QUANTITIES = (
    Quantity("Throughput", "throughput", "throughput [samples/s]",
             _both(_line(SAMPLES_PER_S, "samples/s", rank="0"), _line(GOODPUT, "goodput", ls=":", rank="0"))),
    Quantity("Power", "power", "power [W]",
             _both(_line(F.GPU_POWER, "mean board power", mean=True),
                   _line(F.GPU_POWER_LIMIT, "mean power limit", mean=True, ls="--"))),
    Quantity("SM clock", "sm_clock", "SM clock [MHz]", _line(F.GPU_SM_CLOCK, "mean SM clock", 1e-6, mean=True)),
    Quantity("GPU temperature", "temperature", "temperature [°C]", _line(F.GPU_TEMP, "mean GPU temperature", mean=True)),
    Quantity("Batch size", "batch_size", "global batch size [samples]", _line(BATCH_SIZE, "batch size", rank="0")),
    Quantity("Energy per sample", "energy_per_sample", "energy per sample [J/sample]", _eps),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def window_of(runs: list[RunData]) -> tuple[float, float] | None:
    """The zoom window: the tuned run's active period, None for no zoom."""
    tuned = next((r for r in runs if r.name in ("on", "run")), None)
    return active_period(tuned) if tuned is not None else None


def _zoom_title(title: str, window: tuple[float, float] | None) -> str:
    if window is None:
        return f"{title}, the whole run"
    return f"{title}, minutes {window[0]:.0f} to {window[1]:.0f}: the tuner moves or alerts happen"


def time_figure(q: Quantity, runs: list[RunData], window: tuple[float, float] | None) -> Any:
    """One quantity: the zoomed period, and below it the full run where zoomed."""
    plt = _pyplot()
    if q.tuned_only:
        runs = [r for r in runs if r.name in ("on", "run")]
    window = window if q.zoom else None
    if window is None:
        fig, ax = plt.subplots(figsize=(FIGSIZE[0], 3.4), dpi=DPI, layout="constrained")
        kinds = A.time_panel(ax, runs, q.draw, q.ylabel, None, _zoom_title(q.title, None))
    else:
        fig, (ax, full) = plt.subplots(2, 1, figsize=FIGSIZE, dpi=DPI, layout="constrained",
                                       gridspec_kw={"height_ratios": [2.6, 1]})
        kinds = A.time_panel(ax, runs, q.draw, q.ylabel, window, _zoom_title(q.title, window))
        A.full_run_panel(full, runs, q.draw, q.ylabel, window)
    A.outside_legend(fig, ax, kinds)
    return fig


def _forecast_keys(run: RunData) -> dict[tuple[str, str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    by: dict[tuple[str, str, float], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for lab, t, v in run.get(FORECAST_VALUE):
        key = (lab.get("series", ""), lab.get("gpu", ""), float(lab.get("horizon", "0")))
        by.setdefault(key, {})[lab.get("bound", "yhat")] = (t, v)
    return by


def forecast_choices(run: RunData) -> list[tuple[str, str, float]]:
    """The forecasts drawn: per quantity with a known unit, the shortest horizon of the first GPU (two at most)."""
    rank = {f: i for i, f in enumerate(FORECAST_UNITS)}
    keys = sorted((k for k in _forecast_keys(run) if k[0] in rank), key=lambda k: (rank[k[0]], k[2], k[1]))
    chosen: list[tuple[str, str, float]] = []
    for k in keys:
        if all(c[0] != k[0] for c in chosen) and len(chosen) < 2:
            chosen.append(k)
    return chosen


def _forecast_draw(key: tuple[str, str, float]) -> A.Draw:
    family, gpu, horizon = key
    _quantity, _unit, scale = FORECAST_UNITS[family]

    def draw(ax: Any, run: RunData, color: str) -> bool:
        bands = _forecast_keys(run).get(key, {})
        actual = run.get(family, gpu=gpu) if gpu else run.get(family)
        if actual:
            ax.plot(actual[0][1], actual[0][2] * scale, color="#444444", lw=0.8, alpha=0.7, label="measured")
        shift = horizon / 60.0  # a value published at t forecasts t + horizon
        if "yhat" in bands:
            t, v = bands["yhat"]
            ax.plot(t + shift, v * scale, color=color, lw=1.3, ls="--", label=f"forecast {horizon:g} s ahead")
        if "lower" in bands and "upper" in bands:
            t = bands["lower"][0]
            ax.fill_between(t + shift, bands["lower"][1] * scale, np.interp(t, *bands["upper"]) * scale, color=color,
                            alpha=0.2, lw=0, label="forecast band")
        return bool(actual) or bool(bands)
    return draw


def forecast_quantity(key: tuple[str, str, float]) -> Quantity:
    """The figure of one forecast: its own quantity and unit."""
    quantity, unit, _ = FORECAST_UNITS[key[0]]
    where = f", GPU {key[1]}" if key[1] else ""
    stem = "forecast_" + quantity.lower().replace(" ", "_")
    return Quantity(f"Forecast of {quantity}{where}", stem, f"{quantity} [{unit}]", _forecast_draw(key), zoom=False,
                    tuned_only=True)


def quantities(runs: list[RunData]) -> list[Quantity]:
    """Every quantity drawn: the fixed ones, then the tuned run's forecasts."""
    tuned = next((r for r in runs if r.name in ("on", "run")), None)
    forecasts = [forecast_quantity(k) for k in forecast_choices(tuned)] if tuned is not None else []
    return [*QUANTITIES, *forecasts]

