"""The safety guard every tuner action passes through.

Checks, in order, for each proposed knob value: the kill switch (a pause-flag file, written by
``gputuned tuner pause``), a freeze while a hardware alert is active (thermal, ECC, XID),
bounds, the out-of-memory ceiling for batch sizes (after an OOM at b, never b or larger again),
and a minimum interval between changes of one knob. After an action it watches the objective:
when the cost rate measured after the change is worse than before by more than the noise
tolerance, it asks for a rollback to the previous values. Every change committed within the
settling time of the action's first one belongs to it (a move of two knobs, or a batch size
acknowledged a tick after the power limit moved) and is rolled back with it: undoing one half
of a harmful move leaves the other half in place, and a policy repeating that move walks the
job down. Every intervention is counted by reason and logged; counters and knob values are
exposed as samples.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gputuned.collectors.families import Sample, declare

logger = logging.getLogger(__name__)

INTERVENTIONS = declare(
    "gputuned_tuner_guard_interventions_total", "counter", "Tuner actions the safety guard refused or undid, by reason."
)
ACTIONS = declare("gputuned_tuner_actions_total", "counter", "Tuner actions applied, by knob.")
ROLLBACKS = declare("gputuned_tuner_rollbacks_total", "counter", "Tuner actions rolled back because the objective got worse.")
KNOB_VALUE = declare(
    "gputuned_tuner_knob_value", "gauge", "Current tuner knob value (watts, hertz or samples per batch), by knob and GPU."
)
PAUSED = declare("gputuned_tuner_paused", "gauge", "1 while the tuner kill switch (pause flag file) is set.")

#: Default kill-switch path; ``gputuned tuner pause`` creates it, ``resume`` removes it.
DEFAULT_PAUSE_FILE = Path("/run/gputuned/tuner.paused")
KNOBS = ("power_limit", "sm_clock", "memory_clock", "batch_size")
#: Alert kinds that freeze the tuner while active.
FREEZE_ALERTS = frozenset({"thermal", "ecc", "xid"})


@dataclass(frozen=True)
class Decision:
    """The guard's answer to a proposal."""

    allowed: bool
    reason: str = "ok"


@dataclass
class GuardConfig:
    """Limits of the guard (values in the knob's base unit; intervals in seconds)."""

    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    min_interval_s: dict[str, float] = field(
        default_factory=lambda: {"power_limit": 2.0, "sm_clock": 2.0, "memory_clock": 2.0, "batch_size": 2.0}
    )
    #: Relative worsening of the cost rate, beyond noise, that triggers a rollback.
    rollback_tolerance: float = 0.05
    #: Seconds to wait after an action before judging it.
    settle_s: float = 2.0
    pause_file: Path | None = DEFAULT_PAUSE_FILE


@dataclass
class _Watch:
    previous: dict[tuple[str, str], float]  # (knob, gpu) -> value before the action
    baseline: float
    opened: float  # the action's first change
    since: float  # its last change


class SafetyGuard:
    """Bounds, rate limits, OOM ceiling, rollback, alert freeze and kill switch around tuner actions."""

    def __init__(self, config: GuardConfig | None = None, alerts: Callable[[], Iterable[str]] | None = None) -> None:
        self.config = config or GuardConfig()
        self._alerts = alerts or (lambda: ())
        self.oom_ceiling: int | None = None
        self.interventions: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.rollbacks = 0
        self._last_change: dict[tuple[str, str], float] = {}
        self._values: dict[tuple[str, str], float] = {}
        self._watch: _Watch | None = None

    def paused(self) -> bool:
        """Whether the kill switch is set."""
        path = self.config.pause_file
        return path is not None and path.exists()

    def _refuse(self, reason: str, knob: str, gpu: str, value: float) -> Decision:
        self.interventions[reason] += 1
        logger.info("guard refused %s=%s on gpu %s: %s", knob, value, gpu, reason)
        return Decision(False, reason)

    def propose(self, knob: str, gpu: str, value: float, now: float) -> Decision:
        """Check one proposed knob value at monotonic time ``now``."""
        if knob not in KNOBS:
            return self._refuse("unknown_knob", knob, gpu, value)
        if self.paused():
            return self._refuse("paused", knob, gpu, value)
        active = FREEZE_ALERTS.intersection(a.lower() for a in self._alerts())
        if active:
            return self._refuse("alert_" + sorted(active)[0], knob, gpu, value)
        if not math.isfinite(value):
            return self._refuse("out_of_bounds", knob, gpu, value)
        lo, hi = self.config.bounds.get(knob, (-math.inf, math.inf))
        if not lo <= value <= hi:
            return self._refuse("out_of_bounds", knob, gpu, value)
        if knob == "batch_size" and self.oom_ceiling is not None and value >= self.oom_ceiling:
            return self._refuse("oom_ceiling", knob, gpu, value)
        last = self._last_change.get((knob, gpu))
        if last is not None and now - last < self.config.min_interval_s.get(knob, 0.0):
            return self._refuse("rate_limit", knob, gpu, value)
        return Decision(True)

    def commit(self, knob: str, gpu: str, value: float, now: float, baseline: float | None = None,
               previous: float | None = None) -> None:
        """Record an applied value; with ``baseline`` (the cost rate before), watch it for rollback.

        ``previous`` is the value before, for a knob the guard has not seen set yet (its first
        change would otherwise have nothing to roll back to).
        """
        key = (knob, gpu)
        previous = self._values.get(key, previous)
        if previous == value:
            return
        self._values[key] = value
        self._last_change[key] = now
        self.actions[knob] += 1
        if baseline is None or previous is None:
            return
        if self._watch is None or now - self._watch.opened > self.config.settle_s:
            self._watch = _Watch({}, baseline, now, now)  # a new action (an unjudged old one is dropped)
        self._watch.previous.setdefault(key, previous)  # the value before the action, not before its first half
        self._watch.since = now

    def record_oom(self, batch_size: int) -> None:
        """An out-of-memory at ``batch_size``: never propose it or anything larger again."""
        if self.oom_ceiling is None or batch_size < self.oom_ceiling:
            self.oom_ceiling = batch_size
        self.interventions["oom"] += 1
        logger.warning("out of memory at batch size %d; ceiling set", batch_size)

    def evaluate(self, cost_rate: float, now: float, noise: float = 0.0) -> list[tuple[str, str, float]]:
        """Judge the watched action with the cost rate measured since; returns the (knob, gpu, value)
        to restore, every knob the action changed, or nothing."""
        w = self._watch
        if w is None or now - w.since < self.config.settle_s:
            return []
        self._watch = None
        tolerance = max(self.config.rollback_tolerance, 3.0 * noise)
        if cost_rate <= w.baseline * (1.0 + tolerance):
            return []
        self.rollbacks += 1
        self.interventions["rollback"] += 1
        for key, value in w.previous.items():
            self._values[key] = value
            self._last_change[key] = now
            logger.warning("rollback %s on gpu %s to %s: cost rate %.4g vs %.4g before", *key, value, cost_rate, w.baseline)
        return [(knob, gpu, value) for (knob, gpu), value in w.previous.items()]

    def samples(self) -> list[Sample]:
        """Counters and knob values as samples."""
        out: list[Sample] = [(INTERVENTIONS, (("reason", r),), float(n)) for r, n in sorted(self.interventions.items())]
        out += [(ACTIONS, (("knob", k),), float(n)) for k, n in sorted(self.actions.items())]
        out.append((ROLLBACKS, (), float(self.rollbacks)))
        out += [(KNOB_VALUE, (("knob", k), ("gpu", g)), float(v)) for (k, g), v in sorted(self._values.items())]
        out.append((PAUSED, (), 1.0 if self.paused() else 0.0))
        return out


def set_paused(path: Path, paused: bool) -> None:
    """Create (pause) or remove (resume) the kill-switch flag file."""
    path = Path(path)
    if paused:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("paused by gputuned tuner pause\n")
    else:
        path.unlink(missing_ok=True)
