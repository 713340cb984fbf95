"""Intended changes in the forecaster: a settle window on every series a knob change moves.

A :class:`~gputuned.intent.Change` (the actuator emits one per applied change: the tuner's,
Perseus's, an operator's ``set``, a restore, a job acknowledging a batch size) opens a window
on the tracked series the knob affects (:func:`affects`): for a GPU knob that GPU's power,
clocks and temperature and the node's trainer series (throughput, step and communication
time, data-loader wait); for a job knob (the batch size) every GPU's power, clocks,
temperature and memory used and that job's trainer series.

While a window is open its series is neither judged nor learned: the transition and the
levels visited on the way are not taken as normal. When it closes, the settled level (the
median of the window's later half) becomes the baseline (``OnlineDetector.rebase``: level
moved there, seen-before ranges started again).

The trainer's throughput under a GPU knob's change is the exception: such a move shows on the
first sample after it (a power limit or clock lock acts within a tick), and whatever it costs is
the tuner's doing: its guard judges that level and keeps the move or rolls it back one interval
later. So that first sample is the move's level (the baseline is rebased there at once) and
every later sample is judged as usual: a fault that starts while the tuner is moving is caught
against the level the move gave, as sensitively as with the tuner off. One allowance: a job's
report taken across the move's tick mixes both levels, so the first sample may show only part of
the move; the next sample, if it goes on in the move's direction and stays within twice the
first sample's step (or ``FOLLOW_FLOOR`` of the old level), is the move's level instead. A
batch-size change restarts the job's steps and keeps the whole window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Literal

from gputuned.collectors.families import Labels
from gputuned.intent import Change
from gputuned.tuner.forecast.config import TRAINER_COMM, TRAINER_DATA_WAIT, TRAINER_THROUGHPUT
from gputuned.tuner.forecast.detector import OnlineDetector

SeriesKey = tuple[str, Labels]
Phase = Literal["settling", "rebased", "judge"]

TRAINER_STEP = "gputuned_trainer_step_time_seconds"
_TRAINER = frozenset({TRAINER_THROUGHPUT, TRAINER_STEP, TRAINER_COMM, TRAINER_DATA_WAIT})
_GPU_KNOB = frozenset({"gputuned_gpu_power_watts", "gputuned_gpu_sm_clock_hertz", "gputuned_gpu_temperature_celsius"})
#: what a job knob (the batch size) moves on every GPU: the above and the memory its batch holds
_JOB_KNOB = _GPU_KNOB | {"gputuned_gpu_memory_used_bytes"}
#: series a GPU knob's move sets on its first sample (judged from the next one on)
_AT_ONCE = frozenset({TRAINER_THROUGHPUT})
#: a sample after the first that goes on in the move's direction by up to this share of the old
#: level (or twice the first sample's step) completes the move rather than being judged
FOLLOW_FLOOR = 0.02


def affects(change: Change, key: SeriesKey) -> bool:
    """Whether ``change`` moves the series ``key`` (family, labels)."""
    family, labels = key
    d = dict(labels)
    if family in _TRAINER:
        return change.gpu is not None or change.job is None or d.get("job") == change.job
    if change.gpu is not None:
        return family in _GPU_KNOB and d.get("gpu") == str(change.gpu)
    return family in _JOB_KNOB


@dataclass
class _Window:
    until: float
    half_s: float
    job_knob: bool
    samples: list[tuple[float, float]] = field(default_factory=list)

    def settled_level(self) -> float:
        late = [x for t, x in self.samples if t >= self.until - self.half_s] or [x for _, x in self.samples[-1:]]
        return median(late)


class SettleWindows:
    """Open settle windows, per series; see the module doc."""

    def __init__(self) -> None:
        self._open: dict[SeriesKey, _Window] = {}
        self._moved: dict[SeriesKey, tuple[float, float]] = {}  # (old level, first sample) of a GPU move

    def open(self, change: Change, detectors: dict[SeriesKey, OnlineDetector]) -> int:
        """Open (or extend) a window on every tracked series ``change`` affects; how many."""
        until = change.t + change.settle_s
        job_knob = change.gpu is None
        n = 0
        for key in detectors:
            if not affects(change, key):
                continue
            n += 1
            w = self._open.get(key)
            if w is None:
                self._open[key] = _Window(until, 0.5 * change.settle_s, job_knob)
            else:
                w.until, w.job_knob = max(w.until, until), w.job_knob or job_knob
        return n

    def step(self, key: SeriesKey, now: float, value: float, detector: OnlineDetector) -> Phase:
        """Where sample ``value`` of ``key`` at ``now`` goes: held in a window, judged after a rebase, or judged."""
        w = self._open.get(key)
        if w is None or not math.isfinite(value):
            return self._follow(key, value, detector) if key in self._moved else "judge"
        if not w.job_knob and key[0] in _AT_ONCE:
            del self._open[key]  # the move's own level: the baseline from now on, later samples judged
            self._moved[key] = (detector.level(), value)
            detector.rebase(value)
            return "rebased"
        w.samples.append((now, value))
        if now < w.until:
            return "settling"
        del self._open[key]
        detector.rebase(w.settled_level())
        return "rebased"

    def _follow(self, key: SeriesKey, value: float, detector: OnlineDetector) -> Phase:
        """The sample after a GPU move's first: the rest of a move its first sample showed in part, or judged."""
        old, first = self._moved.pop(key)
        step, total = first - old, value - old
        if not (math.isfinite(old) and math.isfinite(value)) or step * total < 0 or abs(value - first) < 1e-12:
            return "judge"
        if abs(total) <= max(2.0 * abs(step), FOLLOW_FLOOR * abs(old)) and abs(total) >= abs(step):
            detector.rebase(value)
            return "rebased"
        return "judge"

    def settling(self, key: SeriesKey) -> bool:
        """Whether a window is open on ``key``."""
        return key in self._open

    def forget(self, key: SeriesKey) -> None:
        """Drop the state of a series no longer tracked."""
        self._open.pop(key, None)
        self._moved.pop(key, None)
