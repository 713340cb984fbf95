"""GPUs' NVML calls on a shared worker thread, each call bounded in time, a hung one left its own thread.

NVML can hang inside one GPU's driver call (a stuck set, a GPU falling off the bus) for
tens of seconds. Every call of a GPU goes through its :class:`CallGate`; the gates of a
node share a :class:`Lane`, one worker thread that runs their calls one at a time in the
order they came (one thread to wake a tick, not one per GPU: on a busy host each wake-up
costs more than the call). A caller waits until its call has run; a call that runs longer
than its gate's ``timeout_s`` marks that GPU down (:class:`GPUHungError`, one log line):
the hung call keeps the thread it hangs in, the calls queued behind it move to a new worker
(the hung GPU's own are given up and never run late), and every later call of that GPU fails
at once until the hung call returns (one log line). So a hang costs one thread, and delays
the other GPUs' calls queued behind it once, by at most the call timeout.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from gputuned.collectors.device import GPUError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_this = threading.local()  # .lane: the lane whose worker this thread is


class GPUHungError(GPUError):
    """A GPU's NVML call did not return within the call timeout; the GPU is down until it does."""


class Call(Generic[T]):
    """A queued call and, once it ran, its result or exception: a lock held until then (a Future's condition,
    waiter list and state machine cost about twice the hand-off itself, per GPU and tick)."""

    __slots__ = ("gate", "what", "fn", "worker", "started", "result", "error", "_done")

    def __init__(self, gate: CallGate, what: str, fn: Callable[[], T]) -> None:
        self.gate, self.what, self.fn = gate, what, fn
        self.worker: _Worker | None = None  # the worker whose queue holds it (set and read under the lane's lock)
        self.started: float | None = None  # when the worker began it
        self.result: T | None = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def set_done(self) -> None:
        """Wake the waiter: the result or the error is set."""
        self._done.release()

    def wait_done(self, timeout_s: float) -> bool:
        """Whether the call ran within ``timeout_s`` (asked again, still true)."""
        if not self._done.acquire(timeout=timeout_s):
            return False
        self._done.release()
        return True


class _Worker:
    """A thread running its pending calls in order; once one of them hangs it runs nothing else.

    Calls are queued under the lane's lock and the thread is woken once for a batch (queued while it
    sleeps), so a tick's calls cost it one wake-up and no GIL hand-off while they are being queued.
    """

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.pending: collections.deque[Call[Any]] = collections.deque()  # under the lane's lock
        self.running: Call[Any] | None = None
        self.hung = False  # left to the hung call's GPU: ends once that call returns
        self.ending = False  # closed: ends once nothing is pending, unless a call comes first
        self.gone = False  # ended (or ending): the lane starts another for its next call
        self.asleep = False  # waiting for a wake-up, none sent yet
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=f"gputuned-nvml-{lane.name}", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        """Wake the thread if it sleeps (lock held)."""
        if self.asleep:
            self.asleep = False
            self._wake.put(None)

    def _next(self) -> Call[Any] | None:
        """The next call to run, marked running; None to sleep, or to end when closed (lock held)."""
        if self.pending:
            job = self.running = self.pending.popleft()
            job.started = self.lane.clock()
            return job
        if self.ending:
            self.gone = True
        else:
            self.asleep = True
        return None

    def _work(self) -> None:
        _this.lane = self.lane
        lock = self.lane.lock
        with lock:
            job = self._next()
        while True:
            if job is None:
                if self.gone:
                    return
                self._wake.get()
                with lock:
                    job = self._next()
                continue
            try:
                job.result = job.fn()
            except BaseException as e:  # noqa: BLE001 - the caller re-raises it
                job.error = e
            with lock:
                self.running = None
                hung = self.hung
                back = job.gate.returned(job) if hung else None
                done, job = job, None if hung else self._next()
            done.set_done()  # last before sleeping: the waiter it wakes finds the GIL free
            if hung:  # left to the hung call: its GPU is up again, the lane has another worker
                if back is not None:
                    logger.warning("%s up again: NVML call %s returned after %.1f s", done.gate.name, done.what, back)
                return


class Lane:
    """The worker that several GPUs' gates share: their calls run one at a time, in the order submitted."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.lock = threading.Lock()
        self._worker: _Worker | None = None

    def put(self, jobs: Sequence[Call[Any]]) -> None:
        """Queue ``jobs`` on the current worker (started on first use) and wake it once (lock held)."""
        if not jobs:
            return
        if self._worker is None or self._worker.gone:
            self._worker = _Worker(self)
        worker = self._worker
        worker.ending = False  # closed but not ended yet: it goes on
        for job in jobs:
            job.worker = worker
            worker.pending.append(job)
        worker.wake()

    def leave_to(self, hung: Call[Any], reason: str) -> None:
        """Leave ``hung``'s worker to its call; the calls queued behind it move to a new worker, its own GPU's
        are given up (lock held)."""
        old = hung.worker
        assert old is not None
        old.hung = True
        old.thread.name = f"gputuned-nvml-{hung.gate.name} (hung)"
        if self._worker is old:
            self._worker = None
        moved, old.pending = old.pending, collections.deque()
        for job in moved:
            if job.gate is hung.gate:
                job.error = GPUHungError(reason)
                job.set_done()
        # where no thread can be started, the moved calls stay on the hung worker: their waiters give up
        self.put([job for job in moved if job.gate is not hung.gate])

    def close(self) -> None:
        """Let the worker end once nothing is pending (lock held); a later call keeps it or starts a new one."""
        if self._worker is not None:
            self._worker.ending = True
            self._worker.wake()


class CallGate:
    """One GPU's calls, run on its lane's worker; a call waits for its result until it has run for the bound."""

    def __init__(self, name: str, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                 lane: Lane | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.timeout_s = timeout_s
        self._lane = lane if lane is not None else Lane(name, clock)
        self._clock = self._lane.clock
        self._lock = self._lane.lock
        self._down: str | None = None
        self.hangs = 0

    @property
    def down_reason(self) -> str | None:
        """Why the GPU is down (a call has not returned), or None while it answers."""
        return self._down

    def in_worker(self) -> bool:
        """Whether the caller is a worker of this gate's lane (a call made inside a call runs directly)."""
        return getattr(_this, "lane", None) is self._lane

    def submit(self, what: str, fn: Callable[[], T]) -> Call[T]:
        """Queue ``fn`` on the lane's worker; raises :class:`GPUHungError` at once while the GPU is down."""
        job = Call(self, what, fn)
        with self._lock:
            if self._down is not None:
                raise GPUHungError(self._down)
            self._lane.put((job,))
        return job

    @staticmethod
    def submit_all(calls: Sequence[tuple[CallGate | None, str, Callable[[], T]]]) -> list[Call[T] | GPUError | None]:
        """Each ``(gate, what, fn)`` queued on its gate (None without one, :class:`GPUHungError` while its GPU is
        down): a lane's calls under one hold of its lock, its worker woken once."""
        queued: list[Call[T] | GPUError | None] = [None if g is None else Call(g, what, fn) for g, what, fn in calls]
        for lane in {job.gate._lane: None for job in queued if isinstance(job, Call)}:
            with lane.lock:
                batch = []
                for i, job in enumerate(queued):
                    if isinstance(job, Call) and job.gate._lane is lane:
                        if job.gate._down is not None:
                            queued[i] = GPUHungError(job.gate._down)
                        else:
                            batch.append(job)
                lane.put(batch)
        return queued

    def wait(self, job: Call[T]) -> T:
        """The result of a submitted call (or its exception); :class:`GPUHungError` once the call, or the
        GPU's call ahead of it, has run past the timeout. A call of another GPU that hangs ahead of it is
        left its thread, and the wait goes on on the new worker."""
        while not (job.wait_done(0.0) or job.wait_done(self._patience(job))):  # done already: no lock taken
            self._give_up_on_hung(job)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by the worker: T

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker and wait for it."""
        if self.in_worker():
            return fn()
        return self.wait(self.submit(what, fn))

    def close(self) -> None:
        """Let the lane's worker end once it is idle; a later call starts a new one."""
        with self._lock:
            self._lane.close()

    def returned(self, job: Call[Any]) -> float | None:
        """The hung ``job`` returned (lock held): the GPU is up again; the seconds it took, None if up already."""
        if self._down is None:
            return None
        self._down = None
        return self._clock() - (job.started or self._clock())

    def _patience(self, job: Call[Any]) -> float:
        """How long until the call running ahead of (or as) ``job`` reaches its gate's timeout."""
        with self._lock:
            running = job.worker.running if job.worker is not None else None
            if running is None or running.started is None:
                return self.timeout_s
            return max(0.0, running.started + running.gate.timeout_s - self._clock()) + 1e-3

    def _give_up_on_hung(self, job: Call[Any]) -> None:
        """Mark down the GPU whose call on ``job``'s worker has run past its timeout, if one has."""
        with self._lock:
            worker = job.worker
            if worker is not None and worker.hung:  # marked down by another waiter: the hung call's own waiter,
                # or one whose call stayed on the hung worker (no thread could be started for it)
                raise GPUHungError(self._down or f"{self.name}: NVML call {job.what} was queued behind a hung call")
            running = worker.running if worker is not None else None
            if running is None or running.started is None:
                return
            took = self._clock() - running.started
            gate = running.gate
            if took < gate.timeout_s:
                return
            gate._down = f"{gate.name}: NVML call {running.what} has not returned within {gate.timeout_s:g} s"
            gate.hangs += 1
            self._lane.leave_to(running, gate._down)
        logger.error("%s down: NVML call %s has not returned after %.1f s; skipped until it does",
                     gate.name, running.what, took)
        if running is job:  # its result, if it comes, is dropped
            raise GPUHungError(gate._down or "")


def run_each(calls: Sequence[tuple[CallGate | None, str, Callable[[], T]]]) -> list[T | GPUError]:
    """Each ``(gate, what, fn)``'s result, or the :class:`GPUError` it raised (:class:`GPUHungError` past its
    timeout or while its GPU is down). Those with a gate are queued first and awaited once, on the last:
    a lane runs them in order, so one wake-up sees them all done. Those without one run here, after."""
    queued = CallGate.submit_all(calls)
    last = next((job for job in reversed(queued) if isinstance(job, Call)), None)
    if last is not None:
        last.wait_done(last.gate.timeout_s)
    out: list[T | GPUError] = []
    for (_, _, fn), job in zip(calls, queued, strict=True):
        try:
            out.append(fn() if job is None else job if isinstance(job, GPUError) else job.gate.wait(job))
        except GPUError as e:
            out.append(e)
    return out
