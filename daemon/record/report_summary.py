"""The report's first page: the headline numbers and the six quantities on one figure.

The six panels share the zoom window of the per-quantity figures; a full-width strip at the
bottom shows board power over the whole run, with the zoomed period shaded. One legend below
the panels names the runs and explains the marks; panel titles say what the line styles mean.
"""

from __future__ import annotations

from typing import Any

from gputuned.daemon.record import report_axes as A
from gputuned.daemon.record.report_data import RunData
from gputuned.daemon.record.report_figures import QUANTITIES

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
