"""The report's axes: event marks and their key, units, "no data", zoom and full-run panels.

Every axis is labelled ``quantity [unit]``; every time axis is ``time [min]`` from the run's
start. Marks (tuner actions, rollbacks, alerts) are drawn on the tuned run and explained by a
key beside the figure's legend, outside the axes. A panel with nothing to draw says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gputuned.daemon.record.report_data import HARDWARE_ALERTS, SOFT_ALERTS, RunData
from gputuned.tuner.forecast.service import ALERT_ACTIVE

#: Draws one run on an axes in a colour; returns whether it drew anything.
Draw = Callable[[Any, RunData, str], bool]

TIME_LABEL = "time [min]"
NO_DATA = "no data"
MARK_GID = "mark"
COLORS = {"off": "#7f7f7f", "on": "#1f77b4", "run": "#1f77b4"}
RUN_NAMES = {"off": "tuner off", "on": "tuner on", "run": "recorded"}
ZOOM_SHADE = "#bbbbbb"
#: Mark kind: (style, what the key says).
MARK_STYLES: dict[str, tuple[dict[str, Any], str]] = {
    "action": ({"color": "#2ca02c", "alpha": 0.45, "lw": 0.9, "ls": "-"}, "tuner action"),
    "rollback": ({"color": "#d62728", "alpha": 0.8, "lw": 1.2, "ls": "--"}, "rollback (guard undid an action)"),
    "hardware": ({"color": "#ff7f0e", "alpha": 0.9, "lw": 1.2, "ls": ":"}, "hardware alert raised (thermal/ECC/XID)"),
}
SPAN_STYLES: dict[str, tuple[dict[str, Any], str]] = {
    "hardware_span": ({"color": "#ff7f0e", "alpha": 0.15}, "hardware alert active (tuner frozen)"),
    "soft_span": ({"color": "#9467bd", "alpha": 0.45}, "anomaly/degradation alert active (top band)"),
}


def run_label(run: RunData) -> str:
    """How a run is named in legends."""
    return RUN_NAMES.get(run.name, run.name)


def _mark_kind(event: dict[str, Any]) -> str | None:
    kind = event.get("kind")
    if kind in ("action", "applied"):
        return "action"
    if kind == "rollback":
        return "rollback"
    if kind == "alert" and event.get("knob") in HARDWARE_ALERTS:
        return "hardware"
    return None


def _alert_on(run: RunData, kinds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    found = [(t, v) for lab, t, v in run.get(ALERT_ACTIVE) if lab.get("alert") in kinds]
    if not found:
        return None
    t = np.unique(np.concatenate([f[0] for f in found]))
    on = np.zeros(len(t), dtype=bool)
    for tt, vv in found:
        on |= np.interp(t, tt, vv) > 0.5
    return (t, on) if on.any() else None


def draw_marks(ax: Any, run: RunData) -> set[str]:
    """Vertical marks and alert spans of ``run``; returns the kinds drawn (for the key)."""
    drawn: set[str] = set()
    for event in run.events:
        kind = _mark_kind(event)
        if kind is not None:
            ax.axvline(run.minute(event), gid=MARK_GID, **MARK_STYLES[kind][0])
            drawn.add(kind)
    for key, kinds, low in (("hardware_span", HARDWARE_ALERTS, 0.0), ("soft_span", SOFT_ALERTS, 0.95)):
        found = _alert_on(run, kinds)
        if found is not None:
            ax.fill_between(found[0], low, 1, where=found[1], transform=ax.get_xaxis_transform(), lw=0, step="post",
                            gid=MARK_GID, **SPAN_STYLES[key][0])
            drawn.add(key)
    return drawn


def key_handles(kinds: set[str]) -> list[Any]:
    """Legend handles explaining the marks drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    out: list[Any] = [Line2D([], [], label=label, **style) for kind, (style, label) in MARK_STYLES.items() if kind in kinds]
    out += [Patch(label=label, **style) for kind, (style, label) in SPAN_STYLES.items() if kind in kinds]
    return out


def no_data(ax: Any, why: str = "") -> None:
    """Write "no data" in the middle of an empty panel."""
    ax.text(0.5, 0.5, NO_DATA + (f"\n{why}" if why else ""), transform=ax.transAxes, ha="center", va="center",
            fontsize=11, color="#666666")


def label(ax: Any, ylabel: str, title: str | None = None) -> None:
    """Time on x, ``ylabel`` on y, a light grid."""
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    ax.grid(alpha=0.3)


def fit_y(ax: Any, window: tuple[float, float]) -> None:
    """Scale y to the data lines inside the x window (not to the whole run)."""
    lo, hi = np.inf, -np.inf
    for line in ax.get_lines():
        if line.get_gid() == MARK_GID:
            continue
        x, y = (np.asarray(a, dtype=float) for a in line.get_data())
        inside = y[(x >= window[0]) & (x <= window[1]) & np.isfinite(y)]
        if len(inside):
            lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
    if np.isfinite(lo):
        pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def draw_runs(ax: Any, runs: list[RunData], draw: Draw, marks: bool = True) -> tuple[bool, set[str]]:
    """Every run on ``ax``, marks on the tuned one; returns (anything drawn, mark kinds)."""
    drew, kinds = False, set()
    for run in runs:
        drew = draw(ax, run, COLORS.get(run.name, "#1f77b4")) or drew
    if marks:
        for run in runs:
            if run.name in ("on", "run"):
                kinds |= draw_marks(ax, run)
    return drew, kinds


def time_panel(ax: Any, runs: list[RunData], draw: Draw, ylabel: str, window: tuple[float, float] | None,
               title: str | None = None) -> set[str]:
    """One time panel over ``window`` (or the whole run); returns the mark kinds drawn."""
    drew, kinds = draw_runs(ax, runs, draw)
    label(ax, ylabel, title)
    if not drew:
        no_data(ax)
        return set()
    window = window or _whole(runs, ax)
    ax.set_xlim(*window)
    fit_y(ax, window)
    return kinds


def _whole(runs: list[RunData], ax: Any = None) -> tuple[float, float]:
    """The runs' span, widened to the data drawn on ``ax`` (forecasts reach past the run's end)."""
    lo, hi = min(r.span()[0] for r in runs), max(r.span()[1] for r in runs)
    for line in ax.get_lines() if ax is not None else []:
        x = np.asarray(line.get_xdata(), dtype=float)
        if line.get_gid() != MARK_GID and len(x):
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return lo, hi


def full_run_panel(ax: Any, runs: list[RunData], draw: Draw, ylabel: str, window: tuple[float, float]) -> None:
    """The whole run, small, with the zoomed period shaded."""
    drew, _ = draw_runs(ax, runs, draw, marks=False)
    label(ax, ylabel, "full run (shaded: the period zoomed above)")
    if not drew:
        no_data(ax)
        return
    ax.axvspan(*window, color=ZOOM_SHADE, alpha=0.35, lw=0, gid=MARK_GID)
    ax.set_xlim(*_whole(runs))


def outside_legend(fig: Any, ax: Any, kinds: set[str], where: str = "outside right upper") -> None:
    """The data lines' legend and the marks' key together, outside the axes."""
    handles, _ = ax.get_legend_handles_labels()
    handles += key_handles(kinds)
    if handles:
        fig.legend(handles=handles, loc=where, fontsize=8, frameon=False)
