"""The report's figures: a one-page summary first, then one figure per quantity.

Each time figure zooms on the tuned run's active period (where the tuner moves or alerts
happen) with the full run in a small second panel; where that period is most of the run, one
panel shows it all. One unit per axis: forecast bands get a figure per quantity. The summary
page holds the headline numbers and the six quantities in the same zoom, board power over the
whole run in a strip below and one legend under the panels; panel titles say what the line
styles mean.
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


#: Panel titles naming the line styles where a panel has two lines per run.
PANEL_TITLES = {
    "throughput": "throughput (solid), goodput (dotted)",
    "power": "board power (solid), power limit (dashed); GPU mean",
    "sm_clock": "SM clock, GPU mean",
    "temperature": "GPU temperature, GPU mean",
    "batch_size": "global batch size",
    "energy_per_sample": "energy per sample, 60 s window",
}


def _ratio(runs: list[RunData], key: str) -> float | None:
    by = {r.name: r.summary for r in runs}
    off, on = by.get("off", {}).get(key), by.get("on", {}).get(key)
    return on / off if off and on is not None else None


def _counts(run: RunData) -> str:
    kinds = [e.get("kind") for e in run.events]
    tuner = run.summary.get("tuner") or {}
    actions = sum(tuner["actions"].values()) if tuner.get("actions") else kinds.count("action")
    return f"{actions} tuner actions, {kinds.count('rollback')} rollbacks, {kinds.count('alert')} alerts raised"


def headline(runs: list[RunData]) -> list[str]:
    """The summary's first lines: what ran, and how tuned compares with untuned."""
    tuned = next((r for r in runs if r.name in ("on", "run")), runs[0] if runs else None)
    if tuned is None:
        return ["gputuned report: no runs"]
    spec: dict[str, Any] = next((r.summary["spec"] for r in runs if r.summary.get("spec")), {})
    minutes = tuned.span()[1] - tuned.span()[0]
    if spec:
        lines = [f"{spec.get('workload')} on {spec.get('gpus')} x {spec.get('profile')}, objective {spec.get('objective')}, "
                 f"{minutes:.0f} simulated minutes per run"]
    else:
        source = str(tuned.meta.get("source", "recorded run")).split(";")[0]
        lines = [f"{source}: {minutes:.1f} minutes recorded"]
    energy, time = _ratio(runs, "energy_to_target_j"), _ratio(runs, "time_to_target_s")
    if energy is not None and time is not None:
        lines.append(f"tuner on / off: energy to target {energy:.3f} ({100 * (energy - 1):+.1f}%), "
                     f"time to target {time:.3f} ({100 * (time - 1):+.1f}%); {_counts(tuned)}")
    else:
        lines.append(_counts(tuned) + ("" if tuned.summary else " (read from the recorded counters)"))
    return lines


def _run_handles(runs: list[RunData]) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=A.COLORS.get(r.name, "#1f77b4"), lw=2, label=A.run_label(r)) for r in runs]


def summary_figure(runs: list[RunData], window: tuple[float, float] | None, lines: list[str]) -> Any:
    """The one-page summary figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 9.5 if window else 8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(4 if window else 3, 2, height_ratios=[1, 1, 1, 0.8] if window else [1, 1, 1])
    where = ("the whole run" if window is None
             else f"minutes {window[0]:.0f} to {window[1]:.0f} (where the tuner moves or alerts happen); "
                  "bottom: the whole run")
    fig.suptitle("\n".join([*lines, f"panels: {where}"]), fontsize=10, x=0.01, ha="left")
    kinds: set[str] = set()
    for i, q in enumerate(QUANTITIES):
        ax = fig.add_subplot(grid[i // 2, i % 2])
        kinds |= A.time_panel(ax, runs, q.draw, q.ylabel, window, PANEL_TITLES.get(q.stem, q.title))
    if window is not None:
        power = next(q for q in QUANTITIES if q.stem == "power")
        A.full_run_panel(fig.add_subplot(grid[3, :]), runs, power.draw, power.ylabel, window)
    handles = _run_handles(runs) + A.key_handles(kinds)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return fig
