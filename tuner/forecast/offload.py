"""The forecast service with its online detection moved out of the daemon's core process.

:class:`OffloadedForecastService` has :class:`ForecastService`'s interface. Per tick,
:meth:`~OffloadedForecastService.observe` keeps the samples of the forecast families, and
every ``BATCH_TICKS`` ticks hands that batch to a child process with ``put_nowait`` (the
queue's feeder thread pickles it after the tick; one hand-off per batch keeps the thread
wake-ups and pipe writes off most ticks). The child runs an ordinary :class:`ForecastService` (detectors, ETAs,
hardware alerts, and its own Prophet worker) on the ticks in order, exactly as the daemon
would in-process, and sends back raised alerts at once and its exported series and active
alerts every ``STATE_EVERY_S`` seconds of tick time (and on every transition). A reader
thread in the core receives them, so the tick thread only reads the last state and runs the
alert hooks (the profile capture) for raised alerts. Log records of the child are forwarded
and handled by the core's loggers. Results come up to a batch late (5 s at a 1 s tick); every
sample keeps its own time, so the child judges exactly what the in-process service would.
Nothing the core does waits on the child.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import threading
import time
from collections import deque
from typing import Any

from gputuned.collectors.families import Sample
from gputuned.intent import Change
from gputuned.tuner.forecast.alerts import Alert, AlertHook, call_hooks
from gputuned.tuner.forecast.child import close_queues, spawn_child, stop_child
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.hardware import FAMILIES as HW_FAMILIES
from gputuned.tuner.forecast.service import ForecastService

logger = logging.getLogger(__name__)

STATE_EVERY_S = 10.0
PARENT_CHECK_S = 2.0
QUEUE_TICKS = 600  # ticks buffered for a slow child before new ones are dropped (and counted)
RESTART_AFTER_S = 30.0  # a dead child is started again at most this often
BATCH_TICKS = 5  # ticks handed over together: one queue hand-off (feeder wake-up, pipe write) per batch
DETECT_NICE = 5


class _ChildService(ForecastService):
    """The child's service: every transition also goes back to the core."""

    def __init__(self, config: ForecastConfig, fitter: str | None, out: Any) -> None:
        super().__init__(config, fitter)
        self._out = out
        self.changed = False

    def _on_transition(self, transition: str, alert: Alert) -> None:
        super()._on_transition(transition, alert)
        self.changed = True
        if transition == "raised":
            self._out.put(("raised", alert))


def detect_main(ticks: Any, out: Any, config: ForecastConfig, fitter: str | None, parent: int) -> None:
    """Child process entry: serve ticks until ``None`` arrives or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(DETECT_NICE)  # the core's collection comes first; detection may lag a tick
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(out)]
    root.setLevel(logging.INFO)
    svc = _ChildService(config, fitter, out)
    svc.start()
    next_state = float("-inf")
    try:
        while True:
            try:
                item = ticks.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if item is None:
                return
            for entry in item:
                if isinstance(entry, Change):  # an intended change, in order with the ticks around it
                    svc.note_change(entry)
                    continue
                now, samples = entry
                svc.observe(now, samples)
                if svc.changed or now >= next_state:
                    svc.changed = False
                    next_state = now + STATE_EVERY_S
                    out.put(("state", svc.samples(), svc.active_alerts()))
    finally:
        svc.close()


class OffloadedForecastService:
    """ForecastService's interface, its work done in a child process (see the module doc)."""

    def __init__(self, config: ForecastConfig | None = None, fitter: str | None = None,
                 backlog: int = QUEUE_TICKS, batch_ticks: int = BATCH_TICKS) -> None:
        self.config = config or ForecastConfig()
        self.backlog = backlog
        self.batch_ticks = max(1, batch_ticks)
        self._batch: list[tuple[float, list[Sample]] | Change] = []
        self._fitter = fitter
        refs = {s.limit.reference for s in self.config.series if s.limit and s.limit.kind == "reference"}
        self._wanted = frozenset(s.family for s in self.config.series) | refs | HW_FAMILIES
        self._proc: Any = None
        self._ticks: Any = None
        self._out: Any = None
        self._reader: threading.Thread | None = None
        self._hooks: list[AlertHook] = []
        self._raised: deque[Alert] = deque()
        self._state: tuple[list[Sample], list[Alert]] = ([], [])
        self.dropped = 0
        self.restarts = 0
        self._next_restart = 0.0

    def start(self) -> None:
        """Start the child (spawned) and the thread that reads what it sends back."""
        if not self.config.enabled or self._proc is not None:
            return
        self._proc, self._ticks, self._out = spawn_child(
            detect_main, "gputuned-detect", self.config, self._fitter, os.getpid(),
            inbox_size=max(1, self.backlog // self.batch_ticks),
        )
        self._reader = threading.Thread(target=self._read, args=(self._out,), name="forecast-reader", daemon=True)
        self._reader.start()
        atexit.register(self.close)
        logger.info("forecast detection process started (pid %s)", self._proc.pid)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child (it stops its Prophet worker), then the reader."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        batch, self._batch = self._batch, []
        stop_child(proc, self._ticks, timeout_s, *([batch] if batch else []))
        with contextlib.suppress(ValueError, OSError):
            self._out.put(None)
        if self._reader is not None:
            self._reader.join(timeout_s)
        close_queues(self._ticks, self._out)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        logger.info("forecast detection process stopped")

    def add_alert_hook(self, hook: AlertHook) -> None:
        """Call ``hook(alert)`` on every raised alert, on the tick thread."""
        self._hooks.append(hook)

    def note_change(self, change: Change) -> None:
        """An applied knob change: goes to the child with the next batch, before the ticks after it."""
        if self._proc is not None:
            self._batch.append(change)

    def observe(self, now: float, samples: list[Sample]) -> None:
        """Hand the tick's forecast samples to the child; run hooks of alerts raised since."""
        if self._proc is None:
            return
        if self._proc.exitcode is not None:
            self._restart()
            return
        wanted = self._wanted
        self._batch.append((now, [s for s in samples if s[0] in wanted]))
        if len(self._batch) >= self.batch_ticks:
            batch, self._batch = self._batch, []
            try:
                self._ticks.put_nowait(batch)
            except (queue.Full, ValueError, OSError):
                before = self.dropped
                self.dropped += len(batch)
                if before == 0 or before // self.backlog != self.dropped // self.backlog:
                    logger.warning("forecast detection is behind: %d ticks dropped so far", self.dropped)
        while self._raised:
            call_hooks(self._hooks, self._raised.popleft())

    def _restart(self) -> None:
        """The child died: serve no stale state, and start a new one at most every RESTART_AFTER_S."""
        now = time.monotonic()
        if now < self._next_restart:
            return
        logger.error("forecast detection process exited (code %s); restarting it", self._proc.exitcode)
        self._next_restart = now + RESTART_AFTER_S
        self.close(timeout_s=1.0)
        self._state = ([], [])
        self.restarts += 1
        self.start()

    def _read(self, out: Any) -> None:
        while True:
            try:
                msg = out.get()
            except (EOFError, OSError, ValueError):
                return
            if msg is None:
                return
            if isinstance(msg, logging.LogRecord):
                logging.getLogger(msg.name).handle(msg)
            elif msg[0] == "raised":
                self._raised.append(msg[1])
            elif msg[0] == "state":
                self._state = (msg[1], msg[2])

    def samples(self) -> list[Sample]:
        """The child's last exported series (scores, alerts, ETAs, forecasts, worker)."""
        return self._state[0]

    def active_alerts(self) -> list[Alert]:
        """The child's active alerts as of its last state."""
        return self._state[1]

    @property
    def alive(self) -> bool:
        """True while the child process runs."""
        return self._proc is not None and self._proc.is_alive()


def open_service(config: ForecastConfig) -> ForecastService | OffloadedForecastService:
    """The service the daemon attaches: detection offloaded unless the config keeps it inline."""
    return OffloadedForecastService(config) if config.detect_in_child else ForecastService(config)
