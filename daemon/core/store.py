"""The sample store: the latest samples of each source, and a ring buffer per series.

Collectors publish their complete sample set once per tick under their source name; a
source's previous set is replaced, so a series a collector stops returning stops being
served (no stale values). Every published value is also appended to its series' ring
buffer for window queries by the forecaster and tuner; a series no source has published for
``forget_after_s`` loses its history (ranks that left, series the forecaster stopped
tracking), so the rings stay as many as the series that are live. Readers (the exporter, on other
threads) take a consistent snapshot under a lock; the generation counter tells them
whether anything changed since their last look.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Callable, Iterable

from gputuned.collectors.families import Labels, Sample

SeriesKey = tuple[str, Labels]
#: ``listener(source, t, samples)`` after a publish; ``samples`` is None when a source is dropped.
Listener = Callable[[str, float, "list[Sample] | None"], None]


class RingBuffer:
    """Bounded (timestamp, value) history of one series, oldest overwritten first.

    Its arrays grow with the points appended until ``capacity``, so a series that lives a few
    ticks (a rank that left) costs a few points, not a full ring.
    """

    __slots__ = ("_t", "_v", "_cap", "_next")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("ring buffer capacity must be at least 1")
        self._t = array("d")
        self._v = array("d")
        self._cap = capacity
        self._next = 0  # where the next point goes once the ring is full

    def append(self, t: float, v: float) -> None:
        if len(self._t) < self._cap:
            self._t.append(t)
            self._v.append(v)
            return
        i = self._next
        self._t[i] = t
        self._v[i] = v
        self._next = 0 if i + 1 == self._cap else i + 1

    def __len__(self) -> int:
        return len(self._t)

    @property
    def last_t(self) -> float:
        """Timestamp of the newest point (-inf when empty)."""
        return self._t[self._next - 1] if self._t else float("-inf")

    def items(self) -> tuple[list[float], list[float]]:
        """All (timestamps, values), oldest first."""
        i = self._next
        if not i:
            return self._t.tolist(), self._v.tolist()
        return (self._t[i:] + self._t[:i]).tolist(), (self._v[i:] + self._v[:i]).tolist()

    def since(self, t0: float) -> tuple[list[float], list[float]]:
        """(timestamps, values) with timestamp >= t0, oldest first."""
        ts, vs = self.items()
        lo = bisect.bisect_left(ts, t0)
        return ts[lo:], vs[lo:]


class Store:
    """Latest samples per source plus per-series history."""

    def __init__(self, history_samples: int = 600, forget_after_s: float = 900.0) -> None:
        self._history = history_samples
        self._forget_after_s = forget_after_s  # 0: rings stay until forget()
        self._next_sweep = float("-inf")
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, list[Sample]]] = {}
        self._rings: dict[SeriesKey, RingBuffer] = {}
        self._listeners: list[Listener] = []
        self._index: dict[SeriesKey, float] | None = None  # latest value per series, built on demand
        self.generation = 0

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` after every publish and drop (recorder, forecaster)."""
        self._listeners.append(listener)

    def publish(self, source: str, t: float, samples: list[Sample], history: bool = True) -> None:
        """Replace ``source``'s samples with ``samples`` taken at time ``t`` (unix seconds).

        ``history=False``: served only, no ring buffers (series no window query asks for).
        """
        rings = self._rings
        with self._lock:
            self._latest[source] = (t, samples)
            if self._history and history:
                for name, labels, value in samples:
                    key = (name, labels)
                    ring = rings.get(key)
                    if ring is None:
                        ring = rings[key] = RingBuffer(self._history)
                    ring.append(t, value)
                if self._forget_after_s and t >= self._next_sweep:
                    self._sweep(t)
            self.generation += 1
            self._index = None
        for listener in self._listeners:
            listener(source, t, samples)

    def _sweep(self, t: float) -> None:
        """Drop the rings of series published last over ``forget_after_s`` before ``t`` (lock held)."""
        self._next_sweep = t + min(60.0, self._forget_after_s / 2)
        horizon = t - self._forget_after_s
        idle = [k for k, ring in self._rings.items() if ring.last_t < horizon]
        for k in idle:
            del self._rings[k]

    def drop(self, source: str, t: float | None = None) -> None:
        """Stop serving ``source``'s samples (its collector is down)."""
        with self._lock:
            dropped = self._latest.pop(source, None) is not None
            if dropped:
                self.generation += 1
                self._index = None
        if dropped:
            when = time.time() if t is None else t
            for listener in self._listeners:
                listener(source, when, None)

    def snapshot(self) -> tuple[int, list[tuple[str, float, list[Sample]]]]:
        """(generation, [(source, t, samples)]) consistent at one instant."""
        with self._lock:
            return self.generation, [(s, t, smp) for s, (t, smp) in self._latest.items()]

    def latest(self) -> list[Sample]:
        """Every currently served sample."""
        with self._lock:
            return [s for _, smp in self._latest.values() for s in smp]

    def sources(self) -> list[str]:
        with self._lock:
            return list(self._latest)

    def value(self, name: str, labels: Labels) -> float | None:
        """The latest value of one series, or None if not served."""
        with self._lock:
            if self._index is None:  # rebuilt at most once per store generation
                self._index = {(n, lab): v for _, smp in self._latest.values() for n, lab, v in smp}
            return self._index.get((name, labels))

    def window(self, name: str, labels: Labels, seconds: float, now: float) -> tuple[list[float], list[float]]:
        """(timestamps, values) of one series over the last ``seconds`` before ``now``."""
        with self._lock:
            ring = self._rings.get((name, labels))
            if ring is None:
                return [], []
            return ring.since(now - seconds)

    def series(self, name: str) -> list[Labels]:
        """Label sets that have history for family ``name``."""
        with self._lock:
            return [lab for (n, lab) in self._rings if n == name]

    def ring_count(self) -> int:
        """Series with history (bounded by the live series, see ``forget_after_s``)."""
        with self._lock:
            return len(self._rings)

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        """Drop the history of series that will not come back (a lost GPU, an expired rank)."""
        with self._lock:
            for k in keys:
                self._rings.pop(k, None)
