"""When a rank exchanges decisions and samples gradient norms: spaced in time, or every N steps.

Each exchange (a small all-reduce) and each gradient-norm sample (two dot products over every
gradient) costs about the same whatever the step, so a fixed step count made them several
percent of a 2 ms CPU step and rare on a 1 s GPU step. They are therefore spaced by a period in
seconds, turned into steps at the recent step time: the wall time from one step's end to the
next, data wait and the loop's own work included (an exponential moving average that takes a
slowdown at once). A stop request rides on the next exchange, so it is honoured within about
``sync_period_s`` plus one step whatever the loop spends outside ``plugin.step()``. An explicit
step count (tests, reproducible runs) overrides the period.

Every rank keeps its own :class:`Cadence` for norm samples, but the spacing of exchanges is the
leader's: it sends the steps to the next exchange with each one (see
:mod:`gputuned.trainer_plugin.exchange`), so all ranks start the next one at the same step.
"""

from __future__ import annotations

from typing import Any

#: Spacing, in steps, of the first exchange or norm sample, while the step time is not known yet.
FIRST_SPACING = 10
#: Longest spacing of exchanges and norm samples, in steps.
MAX_SPACING = 10_000
#: Weight of the newest step time in the moving average of step times, ``Cadence.step_ema``.
STEP_EMA_WEIGHT = 0.1
#: A step this many times longer than the average replaces it (a slowdown shortens the spacing at once).
SLOWDOWN_JUMP = 2.0


class Cadence:
    """The steps at which the next decision exchange starts and the next gradient-norm sample is taken.

    The plugin compares its step count with ``next_sync`` and ``next_norm`` and folds each step's
    time into ``step_ema`` itself (``STEP_EMA_WEIGHT``): those run on every step, where a method
    call would cost as much as the work. It calls the methods below when an exchange or a sample
    happens.
    """

    def __init__(self, sync_interval: int | None = None, sync_period_s: float = 1.0,
                 norm_every: int | None = None, norm_period_s: float = 0.5) -> None:
        for name, period in (("sync_period_s", sync_period_s), ("norm_period_s", norm_period_s)):
            if not period > 0:
                raise ValueError(f"{name}: must be positive, got {period!r}")
        self.sync_interval = max(1, sync_interval) if sync_interval else None
        self.sync_period_s = sync_period_s
        self.norm_every = max(1, norm_every) if norm_every else None
        self.norm_period_s = norm_period_s
        self.step_ema: float | None = None  # the recent step-to-step time, seconds (None before a step)
        # the first step at which the next exchange starts, and the next norm sample is taken
        self.next_sync = self.sync_interval or FIRST_SPACING
        self.next_norm = 0
        self._sync_started = 0

    def norm_sampled(self, step: int) -> None:
        """Note gradient norms sampled at ``step`` (due from ``next_norm`` on); schedule the next sample."""
        self.next_norm = step + self.spacing(self.norm_every, self.norm_period_s)

    def start_sync(self, step: int) -> int:
        """Note an exchange starting at ``step``; the steps to the next one, as this rank proposes."""
        self._sync_started = step
        return self.spacing(self.sync_interval, self.sync_period_s)

    def agree_sync(self, interval: int) -> None:
        """Schedule the next exchange ``interval`` steps after the last one started (the agreed spacing)."""
        self.next_sync = self._sync_started + max(1, interval)

    def restart(self, step: int) -> None:
        """Resume at ``step`` (from a checkpoint): every rank agrees on the first exchange again."""
        self.next_sync = step + (self.sync_interval or FIRST_SPACING)
        self.next_norm = step

    def spacing(self, steps: int | None, period_s: float) -> int:
        """Steps to the next exchange or sample: the fixed count, else period_s at the recent step time."""
        if steps:
            return steps
        if not self.step_ema:
            return FIRST_SPACING
        return max(1, min(MAX_SPACING, round(period_s / self.step_ema)))


def _setting(name: str, doc: str) -> Any:
    """A read-write attribute forwarded to the cadence kept in ``_cadence``."""

    def get(self: CadenceSettings) -> Any:
        return getattr(self._cadence, name)

    def put(self: CadenceSettings, value: Any) -> None:
        setattr(self._cadence, name, value)

    return property(get, put, doc=doc)


class CadenceSettings:
    """A cadence's settings as read-write attributes of the object that keeps it in ``_cadence``."""

    _cadence: Cadence

    sync_interval = _setting("sync_interval", "Fixed steps between decision exchanges; None spaces them "
                                              "``sync_period_s`` apart.")
    sync_period_s = _setting("sync_period_s", "Seconds between decision exchanges, unless ``sync_interval`` is set.")
    norm_every = _setting("norm_every", "Fixed steps between gradient-norm samples; None spaces them "
                                        "``norm_period_s`` apart.")
    norm_period_s = _setting("norm_period_s", "Seconds between gradient-norm samples, unless ``norm_every`` is set.")
