"""The throughput-level rule: a job's recent median throughput against the median before it.

A trainer's samples/s swings by tens of percent between reports (a report covers a few
steps, and the host's CPU is shared), so a mean-based z-score sees a halving as two sigma at
most. Medians are robust to that noise: :class:`LevelRule` compares the median of the last
``level_window_s`` seconds with the median of the ``level_reference_s`` seconds before them
(``[forecast]`` keys), and raises a ``throughput_drop`` alert when their ratio stays under
``1 - level_drop`` for ``CONFIRM`` samples in a row. While active, the reference is frozen at
the level before the drop (so a lasting fault does not become the reference); the alert clears
after ``CLEAR_AFTER`` samples back above ``1 - level_drop / 2``.

Intended changes (settle.py) are not faults: samples inside a settle window are skipped, and
when a window closes (the series is rebased) the reference restarts at the new level, clearing
an active alert, since a level the tuner or an operator chose is not a degradation. Judging
starts once the reference spans ``level_min_reference_s``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import median

from gputuned.collectors.families import Labels, Sample, describe_labels
from gputuned.tuner.forecast.alerts import Alert, Transition
from gputuned.tuner.forecast.config import TRAINER_THROUGHPUT, ForecastConfig
from gputuned.tuner.forecast.families import ALERT_ACTIVE

SeriesKey = tuple[str, Labels]
KIND = "throughput_drop"
#: samples in a row under the threshold that raise, and back above half the drop that clear
CONFIRM = 3
CLEAR_AFTER = 5


@dataclass
class LevelRule:
    """One series' recent-against-reference median rule; see the module doc."""

    cfg: ForecastConfig  # its level_* keys
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    active: bool = False
    since: float = math.nan
    reference: float = math.nan  # frozen while active
    ratio: float = math.nan
    _run: int = 0

    def restart(self) -> Transition | None:
        """Forget the reference (an intended change settled): a new level from here on."""
        self.samples.clear()
        self._run = 0
        if self.active:
            self.active = False
            return "cleared"
        return None

    def step(self, now: float, value: float) -> Transition | None:
        """Fold in one sample; the transition it caused, if any."""
        if not math.isfinite(value):
            return None
        cfg = self.cfg
        self.samples.append((now, value))
        cut = now - cfg.level_window_s
        while self.samples[0][0] < cut - cfg.level_reference_s:
            self.samples.popleft()
        if not self.active:
            if cut - self.samples[0][0] < cfg.level_min_reference_s:
                return None  # the reference is too short to judge yet
            self.reference = median(x for t, x in self.samples if t <= cut)
        recent = median(x for t, x in self.samples if t > cut)
        self.ratio = recent / self.reference if self.reference > 0 else 1.0
        if not self.active:
            self._run = self._run + 1 if self.ratio < 1.0 - cfg.level_drop else 0
            if self._run >= CONFIRM:
                self.active, self.since, self._run = True, now, 0
                return "raised"
            return None
        self._run = self._run + 1 if self.ratio >= 1.0 - 0.5 * cfg.level_drop else 0
        if self._run >= CLEAR_AFTER:
            self.active, self._run = False, 0
            return "cleared"
        return None


class LevelWatch:
    """The level rule on every tracked job-throughput series (trainer samples/s per job and rank)."""

    families = frozenset({TRAINER_THROUGHPUT})

    def __init__(self, cfg: ForecastConfig) -> None:
        self.cfg = cfg
        self._rules: dict[SeriesKey, LevelRule] = {}

    def step(self, key: SeriesKey, now: float, value: float, phase: str) -> tuple[Transition, Alert] | None:
        """One sample of ``key`` in settle phase ``phase`` (settle.py); the alert transition it caused, if any."""
        if key[0] not in self.families or self.cfg.level_drop <= 0:
            return None
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = LevelRule(self.cfg)
        if phase == "settling":
            return None  # an intended change's transition: not part of any level
        t = rule.restart() if phase == "rebased" else None
        t = rule.step(now, value) or t
        return (t, self._alert(key, rule)) if t else None

    def forget(self, key: SeriesKey) -> None:
        """Drop a series no longer tracked."""
        self._rules.pop(key, None)

    def alerts(self) -> list[Alert]:
        """The active throughput-drop alerts."""
        return [self._alert(k, r) for k, r in self._rules.items() if r.active]

    def samples(self) -> list[Sample]:
        """One alert-active sample per watched series."""
        return [(ALERT_ACTIVE, (("alert", KIND), ("series", k[0]), *k[1]), 1.0 if r.active else 0.0)
                for k, r in self._rules.items()]

    @staticmethod
    def _alert(key: SeriesKey, rule: LevelRule) -> Alert:
        score = min(1.0, max(0.0, 1.0 - rule.ratio)) if math.isfinite(rule.ratio) else 0.0
        msg = (f"{key[0]} on {describe_labels(key[1])}: recent median at {rule.ratio:.0%} of the "
               f"{rule.reference:.4g} before")
        return Alert(KIND, key[0], key[1], rule.since, score, msg)
