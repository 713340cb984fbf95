"""One GPU's NVML calls on its own worker thread, each awaited for a bounded time.

NVML can hang inside one GPU's driver call (a stuck set, a GPU falling off the bus) for
tens of seconds. A :class:`CallGate` runs every call for its GPU in order on one worker
thread; the caller waits up to ``timeout_s``. A call that does not return in time marks
the GPU down (:class:`GPUHungError`, one log line) and every later call fails at once,
until the hung call returns and the GPU is up again (one log line). The worker is never
replaced while it hangs, so a hung GPU costs one thread, and calls on different GPUs run
in parallel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gputuned.collectors.device import GPUError

logger = logging.getLogger(__name__)

T = TypeVar("T")



class GPUHungError(GPUError):
    """A GPU's NVML call did not return within the call timeout; the GPU is down until it does."""


class Call(Generic[T]):
    """A queued call and, once it ran, its result or exception: a lock held until then (a Future's condition,
    waiter list and state machine cost about twice the hand-off itself, per GPU and tick)."""

    __slots__ = ("what", "fn", "cancelled", "result", "error", "_done")

    def __init__(self, what: str, fn: Callable[[], T]) -> None:
        self.what, self.fn = what, fn
        self.cancelled = False  # given up on before it started: it never will (set and read under the gate's lock)
        self.result: T | None = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def set_done(self) -> None:
        """Wake the waiter: the worker has set the result or the error."""
        self._done.release()

    def wait_done(self, timeout_s: float) -> bool:
        """Whether the call ran within ``timeout_s``."""
        return self._done.acquire(timeout=timeout_s)


class CallGate:
    """Runs one GPU's calls in order on its worker thread; a call waits for its result up to a bound."""

    def __init__(self, name: str, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Call[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running: tuple[str, float] | None = None  # (what, started) of the call in progress
        self._down: str | None = None
        self.hangs = 0

    @property
    def down_reason(self) -> str | None:
        """Why the GPU is down (a call has not returned), or None while it answers."""
        return self._down

    def in_worker(self) -> bool:
        """Whether the caller is this gate's worker (a call made inside a call runs directly)."""
        return threading.current_thread() is self._thread

    def submit(self, what: str, fn: Callable[[], T]) -> Call[T]:
        """Queue ``fn`` on the worker; raises :class:`GPUHungError` at once while the GPU is down."""
        job = Call(what, fn)
        with self._lock:
            if self._down is not None:
                raise GPUHungError(self._down)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"gputuned-nvml-{self.name}", daemon=True)
                self._thread.start()
            self._jobs.put(job)
        return job

    def wait(self, job: Call[T], timeout_s: float | None = None) -> T:
        """The result of a submitted call (or its exception); :class:`GPUHungError` past the timeout."""
        if not job.wait_done(self.timeout_s if timeout_s is None else max(0.0, timeout_s)):
            with self._lock:
                job.cancelled = True  # not yet started: it never will; started: its result is dropped
            raise GPUHungError(self._mark_down()) from None
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by the worker: T

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker and wait for it up to the timeout."""
        if self.in_worker():
            return fn()
        return self.wait(self.submit(what, fn))

    def close(self) -> None:
        """Let the worker end once it is idle; a later call starts a new one unless the GPU is down."""
        with self._lock:
            if self._thread is not None and self._down is None:
                self._jobs.put(None)
                self._thread = None

    def _mark_down(self) -> str:
        with self._lock:
            if self._down is not None:
                return self._down
            running = self._running
            if running is None:  # it returned while we gave up: not hung
                return f"{self.name}: NVML call returned just after {self.timeout_s:g} s"
            what, started = running
            self._down = f"{self.name}: NVML call {what} has not returned within {self.timeout_s:g} s"
            self.hangs += 1
        logger.error("%s down: NVML call %s has not returned after %.1f s; skipped until it does",
                     self.name, what, self._clock() - started)
        return self._down

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                if job.cancelled:
                    continue
                self._running = (job.what, self._clock())
            try:
                job.result = job.fn()
            except BaseException as e:  # noqa: BLE001 - the caller re-raises it
                job.error = e
            job.set_done()
            self._returned(job.what)

    def _returned(self, what: str) -> None:
        with self._lock:
            started = self._running[1] if self._running is not None else self._clock()
            self._running = None
            was_down = self._down is not None
            self._down = None
        if was_down:
            logger.warning("%s up again: NVML call %s returned after %.1f s", self.name, what, self._clock() - started)
