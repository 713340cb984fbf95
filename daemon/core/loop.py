"""The collection loop: runs every collector once per tick on monotonic deadlines.

Deadlines are ``start + k * interval``, so ticks do not drift. A tick that runs past
its deadline is counted as an overrun and the loop moves on to the next deadline still
ahead: ticks never stack up behind a slow one. Each collector runs isolated; one that
raises is marked down and its series are no longer served, the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from gputuned import __version__
from gputuned.collectors import families as F
from gputuned.collectors.base import Collector
from gputuned.collectors.families import Sample
from gputuned.daemon.core.store import Store

logger = logging.getLogger(__name__)

TickHook = Callable[[float], None]


def _call(hook: Callable[..., None], *args: float) -> None:
    """A tick hook's call: one that raises is logged and collection goes on."""
    try:
        hook(*args)
    except Exception:  # noqa: BLE001 - a hook must not stop collection
        logger.exception("tick hook %r failed", hook)


class CollectorRunner:
    """Runs one collector isolated, keeping its health for the self-metrics."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.name = collector.name
        self.up = False
        self.duration = 0.0
        self.errors = 0
        self._last_error: str | None = None

    def run(self, store: Store, t: float) -> None:
        t0 = time.perf_counter()
        try:
            samples = self.collector.collect()
        except Exception as e:  # noqa: BLE001 - any collector fault must stay inside it
            self.duration = time.perf_counter() - t0
            self.errors += 1
            self.up = False
            msg = f"{type(e).__name__}: {e}"
            if msg != self._last_error:  # log each distinct failure once, not every tick
                logger.error("collector %s failed, marked down: %s", self.name, msg)
                self._last_error = msg
            store.drop(self.name, t)
            return
        self.duration = time.perf_counter() - t0
        if not self.up and self._last_error is not None:
            logger.info("collector %s recovered", self.name)
        self.up = True
        self._last_error = None
        store.publish(self.name, t, samples)


class CollectionLoop:
    """Ticks the collectors on a fixed period until stopped."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        store: Store,
        interval: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.runners = [CollectorRunner(c) for c in collectors]
        self.store = store
        self.interval = interval
        self._mono = monotonic
        self._wall = wallclock
        self.ticks = 0
        self.overruns = 0
        self.last_tick_duration = 0.0
        self._hooks: list[TickHook] = []
        self._ended: list[Callable[[], None]] = []
        self.stop_event = threading.Event()

    def add_hook(self, hook: TickHook) -> None:
        """Call ``hook(wall_time)`` after the collectors on every tick (tuner, watchdog)."""
        self._hooks.append(hook)

    def on_tick_end(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` once a tick's samples are all published (the exporter makes the bodies scrapers poll)."""
        self._ended.append(hook)

    def tick(self) -> None:
        t0 = self._mono()
        now = self._wall()
        for r in self.runners:
            r.run(self.store, now)
        for hook in self._hooks:
            _call(hook, now)
        self.ticks += 1
        self.last_tick_duration = self._mono() - t0
        self.store.publish("daemon", now, self.self_samples())
        for end in self._ended:
            _call(end)

    def self_samples(self) -> list[Sample]:
        out: list[Sample] = [
            (F.TICKS, (), float(self.ticks)),
            (F.TICK_OVERRUNS, (), float(self.overruns)),
            (F.TICK_DURATION, (), self.last_tick_duration),
            (F.BUILD_INFO, (("version", __version__),), 1.0),
        ]
        for r in self.runners:
            lab = (("collector", r.name),)
            out.append((F.COLLECTOR_UP, lab, 1.0 if r.up else 0.0))
            out.append((F.COLLECTOR_DURATION, lab, r.duration))
            out.append((F.COLLECTOR_ERRORS, lab, float(r.errors)))
        return out

    def run(self, max_ticks: int | None = None) -> None:
        """Tick until :attr:`stop_event` is set (or ``max_ticks`` ticks ran)."""
        start = self._mono()
        k = 0
        while not self.stop_event.is_set():
            self.tick()
            if max_ticks is not None and self.ticks >= max_ticks:
                return
            k += 1
            now = self._mono()
            deadline = start + k * self.interval
            if now > deadline:
                missed = int((now - deadline) // self.interval) + 1
                self.overruns += 1
                logger.warning("tick %d overran its deadline by %.3f s", self.ticks, now - deadline)
                k += missed
                deadline = start + k * self.interval
            self.stop_event.wait(max(0.0, deadline - now))

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for r in self.runners:
            try:
                r.collector.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing collector %s failed", r.name)
