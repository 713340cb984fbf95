"""Stateful alerts: raise once, hold, clear with hysteresis, so one event is one alert.

States and transitions of :class:`AlertState`:

* ``clear`` -> ``active`` when the score reaches ``raise_at`` on ``confirm`` consecutive
  samples, or ``raise_now`` on one sample (an unmistakable spike);
* ``active`` stays active while the score stays at or above ``clear_at``;
* ``active`` -> ``clear`` after ``clear_after`` consecutive samples below ``clear_at``.

The gap between ``raise_at`` and ``clear_at`` plus the clear count is the hysteresis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gputuned.collectors.families import Labels

logger = logging.getLogger(__name__)

Transition = Literal["raised", "cleared"]
AlertKind = Literal["anomaly", "degradation", "forecast", "throughput_drop", "thermal", "ecc", "xid"]
HARDWARE_KINDS: tuple[str, ...] = ("thermal", "ecc", "xid")


class AlertState:
    """Hysteresis state machine over a stream of scores in [0, 1]."""

    def __init__(
        self, raise_at: float, raise_now: float, confirm: int, clear_at: float, clear_after: int
    ) -> None:
        if not 0.0 < clear_at < raise_at <= raise_now <= 1.0:
            raise ValueError("need 0 < clear_at < raise_at <= raise_now <= 1")
        if confirm < 1 or clear_after < 1:
            raise ValueError("confirm and clear_after must be at least 1")
        self.raise_at, self.raise_now, self.confirm = raise_at, raise_now, confirm
        self.clear_at, self.clear_after = clear_at, clear_after
        self.active = False
        self.since = float("nan")
        self.raised_count = 0
        self._above = 0
        self._below = 0

    def step(self, t: float, score: float) -> Transition | None:
        """Advance by one score at time ``t``; return the transition it caused, if any."""
        if not self.active:
            self._above = self._above + 1 if score >= self.raise_at else 0
            if score >= self.raise_now or self._above >= self.confirm:
                self.active, self.since, self._below = True, t, 0
                self.raised_count += 1
                return "raised"
            return None
        self._below = self._below + 1 if score < self.clear_at else 0
        if self._below >= self.clear_after:
            self.active, self._above = False, 0
            return "cleared"
        return None


@dataclass(frozen=True)
class Alert:
    """One active alert as the tuner's guard and the alert hooks see it."""

    kind: str
    series: str
    labels: Labels
    since: float
    score: float
    message: str


AlertHook = Callable[[Alert], None]


def call_hooks(hooks: list[AlertHook], alert: Alert) -> None:
    """Call every hook on a raised alert; a failing hook is logged and never stops the others."""
    for hook in hooks:
        try:
            hook(alert)
        except Exception:
            logger.exception("alert hook %r failed on %s alert for %s", hook, alert.kind, alert.series)
