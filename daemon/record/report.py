"""``gputuned report``: figures and a self-contained HTML page from a trace or an experiment.

The input is a trace file (``gputuned record -o node.gttrace``), a run folder or an
experiment folder (``off`` and ``on``); see :mod:`gputuned.daemon.record.report_data`. The
first figure is a one-page summary; then throughput and goodput, board power and limits, SM
clock, temperature, batch size, energy per sample and forecast bands, each zoomed on the
period where the tuner moves or alerts happen, with the whole run below. The HTML page holds a
table of energy and time against the tuner-off baseline, the figures (embedded as base64, so
the page stands alone) and the tuner's events.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gputuned.daemon.record.report_data import ReportError, RunData, energy_per_sample, load_runs

logger = logging.getLogger(__name__)

__all__ = ["ReportError", "RunData", "build_figures", "build_report", "energy_per_sample", "load_runs",
           "summary_rows", "write_html"]


def build_figures(runs: list[RunData], step: Callable[[str], None] | None = None) -> list[tuple[str, Any]]:
    """The summary page, then one figure per quantity: (file stem, matplotlib figure)."""
    from gputuned.daemon.record import report_figures as figs

    done = step or (lambda _name: None)
    window = figs.window_of(runs)
    out = [("summary", figs.summary_figure(runs, window, figs.headline(runs)))]
    done("summary")
    for q in figs.quantities(runs):
        out.append((q.stem, figs.time_figure(q, runs, window)))
        done(q.title)
    return out


def save_figures(figures: list[tuple[str, Any]], out: Path) -> list[Path]:
    """Write each figure as ``<stem>.png`` in ``out`` and close it; returns the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for stem, fig in figures:
        path = out / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


ROWS = (("energy_to_target_j", "energy to target (J)", True), ("energy_per_sample_j", "energy per sample (J)", True),
        ("time_to_target_s", "time to target (s)", True), ("throughput_samples_per_s", "throughput (samples/s)", False),
        ("goodput_samples_per_s", "goodput (samples/s)", False), ("energy_j", "GPU energy in the run (J)", True))


def summary_rows(runs: list[RunData]) -> list[list[str]]:
    """Table rows: metric, baseline, tuned, tuned / baseline."""
    by = {r.name: r.summary for r in runs}
    off, on = by.get("off"), by.get("on") or by.get("run")
    rows = []
    for key, label, _lower in ROWS:
        a = off.get(key) if off else None
        b = on.get(key) if on else None
        ratio = f"{b / a:.3f}" if a and b is not None else "-"
        rows.append([label, f"{a:.4g}" if a is not None else "-", f"{b:.4g}" if b is not None else "-", ratio])
    return rows


def write_html(runs: list[RunData], pngs: list[Path], out_html: Path) -> None:
    """The self-contained page: summary table, figures embedded, events listed."""
    spec: dict[str, Any] = next((r.summary["spec"] for r in runs if r.summary.get("spec")), {})
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in summary_rows(runs))
    imgs = "".join(
        f'<h3>{html.escape(p.stem.replace("_", " "))}</h3><img alt="{html.escape(p.stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs)
    tuned = next((r for r in runs if r.name in ("on", "run")), None)
    evs = [e for e in (tuned.events if tuned else []) if e.get("kind") not in ("start",)]
    ev_rows = "".join(
        f"<tr><td>{(float(e.get('t', 0)) - tuned.t0) / 60.0:.1f}</td><td>{html.escape(str(e.get('kind')))}</td>"
        f"<td>{html.escape(str(e.get('knob', '')))}</td><td>{html.escape(str(e.get('value', '')))}</td>"
        f"<td>{html.escape(str(e.get('reason', e.get('previous', ''))))}</td></tr>" for e in evs[:400]) if tuned else ""
    what = ", ".join(f"{k} {v}" for k, v in spec.items() if v is not None)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gputuned report</title>
<style>body{{font-family:sans-serif;max-width:1050px;margin:auto}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}</style></head><body><h1>gputuned closed-loop report</h1><p>{html.escape(what)}</p>
<h2>Tuner off versus on</h2><table><tr><th>metric</th><th>tuner off</th><th>tuner on</th><th>on / off</th></tr>{rows}</table>
<p>Each figure carries its own key of the marks: green lines, tuner actions; red dashed, rollbacks; orange dotted lines and shading, hardware alerts (thermal, ECC, XID; the guard freezes the tuner); purple band on top, anomaly or degradation alerts.</p>{imgs}
<h2>Tuner events</h2><table><tr><th>minute</th><th>kind</th><th>knob</th><th>value</th><th>reason / previous</th></tr>
{ev_rows}</table></body></html>"""
    out_html.write_text(page)


def build_report(path: Path, out_html: Path, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Load the runs at ``path`` (trace file, run or experiment folder), draw the PNGs next to
    ``out_html`` and write the page; returns the PNGs, the summary first."""
    runs = load_runs(path)
    fig_dir = out_html.parent / (out_html.stem + "_figures")
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs = save_figures(build_figures(runs, progress), fig_dir)
    write_html(runs, pngs, out_html)
    return pngs
