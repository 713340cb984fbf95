"""Replay: feeds a trace's events into a store at the recorded pace, scaled by ``speed``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gputuned.daemon.core.store import Store
from gputuned.daemon.record.trace import Drop, Trace

logger = logging.getLogger(__name__)


class Replayer:
    """Publishes a trace's events into ``store`` in file order.

    Event ``i`` is published ``(t_i - t_0) / speed`` seconds after the start; ``speed``
    of ``inf`` publishes as fast as possible. The same trace always leads the store
    through the same states, so a replay is deterministic.
    """

    def __init__(
        self,
        trace: Trace,
        store: Store,
        speed: float = 1.0,
        *,
        sleep: Callable[[float], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.trace = trace
        self.store = store
        self.speed = speed
        self.stop_event = threading.Event()
        self._sleep = sleep or self.stop_event.wait
        self._mono = monotonic
        self.published = 0

    def run(self) -> None:
        events = self.trace.events
        if not events:
            return
        t0 = events[0].t
        start = self._mono()
        for ev in events:
            if self.stop_event.is_set():
                return
            if self.speed != float("inf"):
                delay = start + (ev.t - t0) / self.speed - self._mono()
                if delay > 0 and self._sleep(delay):
                    return
            if isinstance(ev, Drop):
                self.store.drop(ev.source, ev.t)
            else:
                self.store.publish(ev.source, ev.t, self.trace.samples(ev))
            self.published += 1
        logger.info("replay finished: %d events", self.published)

    def stop(self) -> None:
        self.stop_event.set()
