"""The sample store: the latest samples of each source, and a ring buffer per series.

Collectors publish their complete sample set once per tick under their source name; a
source's previous set is replaced, so a series a collector stops returning stops being
served (no stale values). Every published value is also appended to its series' ring
buffer for window queries by the forecaster and tuner. Readers (the exporter, on other
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
    """Fixed-capacity (timestamp, value) history of one series, oldest overwritten first."""

    __slots__ = ("_t", "_v", "_cap", "_next", "_full")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("ring buffer capacity must be at least 1")
        self._t = array("d", bytes(8 * capacity))
        self._v = array("d", bytes(8 * capacity))
        self._cap = capacity
        self._next = 0
        self._full = False

    def append(self, t: float, v: float) -> None:
        i = self._next
        self._t[i] = t
        self._v[i] = v
        i += 1
        if i == self._cap:
            i = 0
            self._full = True
        self._next = i

    def __len__(self) -> int:
        return self._cap if self._full else self._next

    def items(self) -> tuple[list[float], list[float]]:
        """All (timestamps, values), oldest first."""
        if not self._full:
            return self._t[: self._next].tolist(), self._v[: self._next].tolist()
        i = self._next
        return (self._t[i:] + self._t[:i]).tolist(), (self._v[i:] + self._v[:i]).tolist()

    def since(self, t0: float) -> tuple[list[float], list[float]]:
        """(timestamps, values) with timestamp >= t0, oldest first."""
        ts, vs = self.items()
        lo = bisect.bisect_left(ts, t0)
        return ts[lo:], vs[lo:]


class Store:
    """Latest samples per source plus per-series history."""

    def __init__(self, history_samples: int = 600) -> None:
        self._history = history_samples
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, list[Sample]]] = {}
        self._rings: dict[SeriesKey, RingBuffer] = {}
        self._listeners: list[Listener] = []
        self._index: dict[SeriesKey, float] | None = None  # latest value per series, built on demand
        self.generation = 0

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` after every publish and drop (recorder, forecaster)."""
        self._listeners.append(listener)

    def publish(self, source: str, t: float, samples: list[Sample]) -> None:
        """Replace ``source``'s samples with ``samples`` taken at time ``t`` (unix seconds)."""
        rings = self._rings
        with self._lock:
            self._latest[source] = (t, samples)
            if self._history:
                for name, labels, value in samples:
                    key = (name, labels)
                    ring = rings.get(key)
                    if ring is None:
                        ring = rings[key] = RingBuffer(self._history)
                    ring.append(t, value)
            self.generation += 1
            self._index = None
        for listener in self._listeners:
            listener(source, t, samples)

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

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        """Drop the history of series that will not come back (a lost GPU)."""
        with self._lock:
            for k in keys:
                self._rings.pop(k, None)
