"""The report's input: runs decoded from a trace file, a run folder or an experiment folder.

A run folder holds ``trace.gttrace`` (``trace.gtrace`` in folders written before the one
extension), optionally ``events.jsonl`` (tuner actions, rollbacks, alerts, restores) and
``summary.json``. An experiment folder holds two run folders, ``off`` and ``on``. A bare
trace file (``gputuned record -o node.gttrace``) has no events file: its tuner actions,
rollbacks and hardware alerts are read from the counters and alert series it recorded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gputuned.collectors import families as F
from gputuned.daemon.control.reports import STAT_FAMILIES as TRAINER
from gputuned.daemon.record.trace import find_run_trace
from gputuned.tuner.decision.guard import ACTIONS, ROLLBACKS
from gputuned.tuner.forecast.service import ALERT_ACTIVE, FORECAST_VALUE

logger = logging.getLogger(__name__)

SAMPLES_PER_S, GOODPUT = TRAINER["samples_per_s"], TRAINER["goodput"]
BATCH_SIZE, SAMPLES = TRAINER["batch_size"], TRAINER["samples_total"]
#: The families the figures and the derived marks need.
WANTED = (
    SAMPLES_PER_S, GOODPUT, BATCH_SIZE, SAMPLES, F.GPU_POWER, F.GPU_POWER_LIMIT, F.GPU_SM_CLOCK, F.GPU_ENERGY,
    FORECAST_VALUE, ALERT_ACTIVE, F.GPU_TEMP, ACTIONS, ROLLBACKS,
)
HARDWARE_ALERTS = ("thermal", "ecc", "xid")
SOFT_ALERTS = ("anomaly", "degradation")
#: Event kinds that make a run's active period (where the tuner moves or alerts happen).
ACTIVE_KINDS = ("action", "applied", "rollback", "alert")
Series = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]]


class ReportError(ValueError):
    """A path that cannot be reported on; the message names the file."""


@dataclass
class RunData:
    """One run's series, events and summary; times in minutes from ``t0``."""

    name: str
    series: Series
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def get(self, family: str, **labels: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """Every series of ``family`` whose labels include ``labels``: (labels, minutes, values)."""
        out = []
        for (name, lab), (t, v) in sorted(self.series.items()):
            d = dict(lab)
            if name == family and all(d.get(k) == w for k, w in labels.items()):
                out.append((d, (t - self.t0) / 60.0, v))
        return out

    def minute(self, event: dict[str, Any]) -> float:
        """When an event happened, in minutes from the run's start."""
        return (float(event.get("t", self.t0)) - self.t0) / 60.0

    def span(self) -> tuple[float, float]:
        """The run's first and last minute (0, 1 for a run without samples)."""
        ends = [float(t[-1]) for t, _ in self.series.values() if len(t)]
        ends += [float(e["t"]) for e in self.events if "t" in e]
        last = (max(ends) - self.t0) / 60.0 if ends else 0.0
        return 0.0, last if last > 0 else 1.0


def _read_series(trace_path: Path) -> tuple[Series, float, dict[str, Any]]:
    from gputuned.daemon.record.trace import Publish, TraceError, read_trace

    try:
        trace = read_trace(trace_path, strict=False)
    except (TraceError, OSError) as e:
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
    return series, t0 or 0.0, trace.meta


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            events.append(json.loads(line))
        except ValueError:
            raise ReportError(f"{path}:{n}: not a JSON line") from None
    return events


def _steps(t: np.ndarray, v: np.ndarray) -> list[float]:
    """The times at which a counter (or an on/off series) went up."""
    if len(v) < 2:
        return []
    return [float(x) for x in t[1:][np.diff(v) > 0]]


def events_from_series(series: Series) -> list[dict[str, Any]]:
    """Tuner actions, rollbacks and alert raises read from a recording's counters and alert series."""
    out: list[dict[str, Any]] = []
    for (family, labels), (t, v) in series.items():
        lab = dict(labels)
        if family == ACTIONS:
            out += [{"t": x, "kind": "action", "knob": lab.get("knob", "")} for x in _steps(t, v)]
        elif family == ROLLBACKS:
            out += [{"t": x, "kind": "rollback", "knob": lab.get("knob", "")} for x in _steps(t, v)]
        elif family == ALERT_ACTIVE:
            raised = _steps(t, v) + ([float(t[0])] if len(v) and v[0] > 0.5 else [])
            out += [{"t": x, "kind": "alert", "knob": lab.get("alert", ""), "gpu": lab.get("gpu", "")} for x in raised]
    return sorted(out, key=lambda e: e["t"])


def load_run(name: str, trace_path: Path, folder: Path | None = None) -> RunData:
    """Decode one trace; ``folder`` (a run folder) adds its events and summary files."""
    series, t0, meta = _read_series(trace_path)
    events: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    if folder is not None and (folder / "events.jsonl").is_file():
        events = _read_events(folder / "events.jsonl")
    if folder is not None and (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text())
    if not events:
        events = events_from_series(series)
    return RunData(name, series, events, summary, t0, meta)


def load_runs(path: Path) -> list[RunData]:
    """The runs at ``path``: an experiment folder (off, on), a run folder or a trace file."""
    if path.is_file():
        folder = path.parent if path.stem == "trace" else None  # a run folder's own trace brings its events
        return [load_run("run", path, folder)]
    if not path.is_dir():
        raise ReportError(f"{path}: no such file or folder (give a trace file or an experiment folder)")
    parts = [(n, path / n, find_run_trace(path / n)) for n in ("off", "on")]
    found = [(n, folder, trace) for n, folder, trace in parts if trace is not None]
    if found:
        return [load_run(n, trace, folder) for n, folder, trace in found]
    trace = find_run_trace(path)
    if trace is None:
        raise ReportError(f"{path}: no trace file (run `gputuned experiment`, or give a file from `gputuned record`)")
    return [load_run("run", trace, path)]


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


def first_series(run: RunData, family: str, scale: float = 1.0, **labels: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The first series of ``family`` matching ``labels``, values times ``scale``."""
    found = run.get(family, **labels)
    return (found[0][1], found[0][2] * scale) if found else None


def mean_series(run: RunData, family: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean over every series of ``family`` (e.g. over GPUs), on the first one's times."""
    found = run.get(family)
    if not found:
        return None
    t = found[0][1]
    return t, np.mean([np.interp(t, tt, vv) for _, tt, vv in found], axis=0) * scale


def active_period(run: RunData, pad_fraction: float = 0.1, zoom_below: float = 0.75) -> tuple[float, float] | None:
    """The minutes where the tuner moves or alerts happen, padded; None where that is most of the run."""
    marks = [run.minute(e) for e in run.events if e.get("kind") in ACTIVE_KINDS]
    for lab, t, v in run.get(ALERT_ACTIVE):
        if lab.get("alert") in HARDWARE_ALERTS + SOFT_ALERTS:
            marks += [float(x) for x in t[1:][np.diff(v > 0.5) != 0]]
    start, end = run.span()
    if not marks:
        return None
    pad = max(1.0, pad_fraction * (max(marks) - min(marks)))
    lo, hi = max(start, min(marks) - pad), min(end, max(marks) + pad)
    if hi - lo >= zoom_below * (end - start):
        return None
    return lo, hi
