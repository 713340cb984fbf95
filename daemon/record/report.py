"""``gputuned report``: figures and a self-contained HTML page from an experiment or a recording.

A run directory holds ``trace.gtrace`` (every published sample), ``events.jsonl`` (tuner
actions, rollbacks, alerts, restores) and ``summary.json``. An experiment directory holds two
of them, ``off`` and ``on``, plus ``comparison.json``. The report draws, over time, throughput
and goodput, board power and limits, SM clocks, batch size and energy per sample, with the
tuner's actions as vertical marks, forecast bands and alert spans where the trace has them,
and a table of energy and time against the tuner-off baseline. PNGs are written next to the
HTML and embedded in it (base64), so the page stands alone.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gputuned.collectors import families as F
from gputuned.daemon.control.reports import STAT_FAMILIES as TRAINER
from gputuned.tuner.forecast.service import ALERT_ACTIVE, FORECAST_VALUE

logger = logging.getLogger(__name__)

SAMPLES_PER_S, GOODPUT = TRAINER["samples_per_s"], TRAINER["goodput"]
BATCH_SIZE, SAMPLES = TRAINER["batch_size"], TRAINER["samples_total"]
#: (family, how to combine label sets): the series the figures need.
WANTED = (
    SAMPLES_PER_S, GOODPUT, BATCH_SIZE, SAMPLES, F.GPU_POWER, F.GPU_POWER_LIMIT, F.GPU_SM_CLOCK, F.GPU_ENERGY,
    FORECAST_VALUE, ALERT_ACTIVE, F.GPU_TEMP,
)
HARDWARE_ALERTS = ("thermal", "ecc", "xid")
#: Forecast series shown first, when the trace has bands for them.
FORECAST_PREFERENCE = (F.GPU_TEMP, F.GPU_POWER, SAMPLES_PER_S, F.GPU_SM_CLOCK)
Series = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]]


class ReportError(ValueError):
    """A run directory that cannot be reported on; the message names the file."""


@dataclass
class RunData:
    """One run's series, events and summary."""

    name: str
    series: Series
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0

    def get(self, family: str, **labels: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """Every series of ``family`` whose labels include ``labels``: (labels, minutes, values)."""
        out = []
        for (name, lab), (t, v) in sorted(self.series.items()):
            d = dict(lab)
            if name == family and all(d.get(k) == w for k, w in labels.items()):
                out.append((d, (t - self.t0) / 60.0, v))
        return out


def load_run(name: str, path: Path) -> RunData:
    """Decode one run directory."""
    from gputuned.daemon.record.trace import Publish, TraceError, read_trace

    trace_path = path / "trace.gtrace"
    if not trace_path.is_file():
        raise ReportError(f"{trace_path}: no trace file (run `gputuned experiment` or record one)")
    try:
        trace = read_trace(trace_path, strict=False)
    except TraceError as e:
        raise ReportError(str(e)) from None
    if trace.error:
        logger.warning("%s; reporting the intact part", trace.error)
    wanted = {i: key for i, key in enumerate(trace.series) if key[0] in WANTED}
    acc: dict[int, tuple[list[float], list[float]]] = {i: ([], []) for i in wanted}
    ids_wanted = np.fromiter(wanted, dtype=np.uint32, count=len(wanted))
    t0 = None
    for ev in trace.events:
        if not isinstance(ev, Publish):
            continue
        t0 = ev.t if t0 is None else t0
        mask = np.isin(ev.ids, ids_wanted)
        for i, v in zip(ev.ids[mask].tolist(), ev.values[mask].tolist(), strict=True):
            ts, vs = acc[i]
            ts.append(ev.t)
            vs.append(v)
    series: Series = {wanted[i]: (np.asarray(ts), np.asarray(vs)) for i, (ts, vs) in acc.items() if ts}
    events = []
    ev_path = path / "events.jsonl"
    if ev_path.is_file():
        for n, line in enumerate(ev_path.read_text().splitlines(), 1):
            try:
                events.append(json.loads(line))
            except ValueError:
                raise ReportError(f"{ev_path}:{n}: not a JSON line") from None
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    return RunData(name, series, events, summary, t0 or 0.0)


def load_runs(run_dir: Path) -> list[RunData]:
    """The runs of an experiment directory (off, on) or a single run directory."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    parts = [(n, run_dir / n) for n in ("off", "on") if (run_dir / n / "trace.gtrace").is_file()]
    if not parts:
        parts = [("run", run_dir)]
    return [load_run(n, p) for n, p in parts]


def energy_per_sample(run: RunData, window_s: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """GPU energy per trained sample over a sliding window (minutes, J/sample)."""
    energy = run.get(F.GPU_ENERGY)
    samples = run.get(SAMPLES, rank="0")
    if not energy or not samples:
        return np.array([]), np.array([])
    t, s = samples[0][1], samples[0][2]
    e = np.zeros_like(t)
    for _, te, ve in energy:
        e += np.interp(t, te, ve)
    lag = np.searchsorted(t, t - window_s / 60.0)
    ds, de = s - s[lag], e - e[lag]
    ok = ds > 0
    return t[ok], de[ok] / ds[ok]


_COLORS = {"off": "#7f7f7f", "on": "#1f77b4", "run": "#1f77b4"}


def _mark(ax: Any, run: RunData) -> None:
    for e in run.events:
        kind = e.get("kind")
        x = (float(e.get("t", run.t0)) - run.t0) / 60.0
        if kind in ("action", "applied"):
            ax.axvline(x, color="#2ca02c", alpha=0.35, lw=0.8)
        elif kind == "rollback":
            ax.axvline(x, color="#d62728", alpha=0.7, lw=1.2, ls="--")
        elif kind == "alert" and e.get("knob") in HARDWARE_ALERTS:
            ax.axvline(x, color="#ff7f0e", alpha=0.9, lw=1.2, ls=":")
    # spans: any hardware alert (orange, full height); any anomaly/degradation alert (thin band on top)
    for kinds, lo, alpha in ((HARDWARE_ALERTS, 0.0, 0.15), (("anomaly", "degradation"), 0.94, 0.5)):
        found = [(t, v) for lab, t, v in run.get(ALERT_ACTIVE) if lab.get("alert") in kinds]
        if not found:
            continue
        t = np.unique(np.concatenate([f[0] for f in found]))
        on = np.zeros(len(t), dtype=bool)
        for tt, vv in found:
            on |= np.interp(t, tt, vv) > 0.5
        if on.any():
            ax.fill_between(t, lo, 1, where=on, transform=ax.get_xaxis_transform(), color="#ff7f0e", alpha=alpha, lw=0,
                            step="post")


def _plot(name: str, runs: list[RunData], draw: Callable[[Any, RunData, str], None], ylabel: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=100)
    for run in runs:
        draw(ax, run, _COLORS.get(run.name, "#1f77b4"))
        if run.name in ("on", "run"):
            _mark(ax, run)
    ax.set_xlabel("minutes")
    ax.set_ylabel(ylabel)
    ax.set_title(name)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out / f"{name.lower().replace(' ', '_').replace('/', '_')}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _first(run: RunData, family: str, scale: float = 1.0, **labels: str) -> tuple[np.ndarray, np.ndarray] | None:
    found = run.get(family, **labels)
    return (found[0][1], found[0][2] * scale) if found else None


def _mean(run: RunData, family: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    found = run.get(family)
    if not found:
        return None
    t = found[0][1]
    return t, np.mean([np.interp(t, tt, vv) for _, tt, vv in found], axis=0) * scale


def figures(runs: list[RunData], out: Path, step: Callable[[str], None] | None = None) -> list[Path]:
    """Draw every figure the runs have data for; returns the PNG paths."""
    done = step or (lambda _name: None)
    paths = []

    def line(family: str, label: str, scale: float = 1.0, mean: bool = False, ls: str = "-", **lab: str):  # noqa: ANN202
        def draw(ax: Any, run: RunData, color: str) -> None:
            xy = _mean(run, family, scale) if mean else _first(run, family, scale, **lab)
            if xy is not None:
                ax.plot(*xy, color=color, ls=ls, lw=1.2, label=f"{label} (tuner {run.name})")
        return draw

    def both(*draws: Callable[[Any, RunData, str], None]) -> Callable[[Any, RunData, str], None]:
        def draw(ax: Any, run: RunData, color: str) -> None:
            for d in draws:
                d(ax, run, color)
        return draw

    def eps(ax: Any, run: RunData, color: str) -> None:
        t, v = energy_per_sample(run)
        if len(t):
            ax.plot(t, v, color=color, lw=1.2, label=f"energy per sample, 60 s window (tuner {run.name})")

    specs = [
        ("Throughput", both(line(SAMPLES_PER_S, "samples/s", rank="0"),
                            line(GOODPUT, "goodput", ls=":", rank="0")), "samples/s"),
        ("Power", both(line(F.GPU_POWER, "mean board power", mean=True),
                       line(F.GPU_POWER_LIMIT, "mean power limit", mean=True, ls="--")), "W"),
        ("SM clock", line(F.GPU_SM_CLOCK, "mean SM clock", 1e-6, mean=True), "MHz"),
        ("Batch size", line(BATCH_SIZE, "global batch size", rank="0"), "samples"),
        ("Energy per sample", eps, "J / sample"),
    ]
    for name, draw, ylabel in specs:
        paths.append(_plot(name, runs, draw, ylabel, out))
        done(name)
    fc = [r for r in runs if r.name in ("on", "run") and r.get(FORECAST_VALUE)]
    if fc:
        paths.append(_plot("Forecast bands", fc, _forecast_draw, "value", out))
        done("Forecast bands")
    return paths


def _forecast_draw(ax: Any, run: RunData, color: str) -> None:
    found = run.get(FORECAST_VALUE)
    by: dict[tuple[str, str, float], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for lab, t, v in found:
        key = (lab.get("series", ""), lab.get("gpu", ""), float(lab.get("horizon", "0")))
        by.setdefault(key, {})[lab.get("bound", "yhat")] = (t, v)
    rank = {f: i for i, f in enumerate(FORECAST_PREFERENCE)}
    keys = sorted(by, key=lambda k: (rank.get(k[0], 99), k[2], k[1]))
    chosen: list[tuple[str, str, float]] = []
    for k in keys:  # one band per series family, the shortest horizon, first GPU
        if all(c[0] != k[0] for c in chosen) and len(chosen) < 2:
            chosen.append(k)
    for i, (family, gpu, horizon) in enumerate(chosen):
        c = ("#1f77b4", "#9467bd")[i]
        b = by[(family, gpu, horizon)]
        actual = run.get(family, gpu=gpu) if gpu else run.get(family)
        if actual:
            ax.plot(actual[0][1], actual[0][2], color=c, lw=0.8, alpha=0.6, label=f"{family} gpu {gpu}")
        shift = horizon / 60.0  # a value published at t forecasts t + horizon
        if "yhat" in b:
            ax.plot(b["yhat"][0] + shift, b["yhat"][1], color=c, lw=1.3, ls="--", label=f"forecast {horizon:g} s ahead")
        if "lower" in b and "upper" in b:
            t = b["lower"][0]
            ax.fill_between(t + shift, b["lower"][1], np.interp(t, *b["upper"]), color=c, alpha=0.2, lw=0)


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
<p>Green marks: tuner actions; red dashed: rollbacks; orange dotted lines and shading: hardware alerts (thermal, ECC, XID; the guard freezes the tuner); thin orange band on top: anomaly or degradation alerts.</p>{imgs}
<h2>Tuner events</h2><table><tr><th>minute</th><th>kind</th><th>knob</th><th>value</th><th>reason / previous</th></tr>
{ev_rows}</table></body></html>"""
    out_html.write_text(page)


def build_report(run_dir: Path, out_html: Path, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Load the runs, draw the PNGs next to ``out_html`` and write the page; returns the PNGs."""
    runs = load_runs(run_dir)
    fig_dir = out_html.parent / (out_html.stem + "_figures")
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs = figures(runs, fig_dir, progress)
    write_html(runs, pngs, out_html)
    return pngs
