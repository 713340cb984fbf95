"""The sample store: the latest samples of each source, and a ring buffer per series.

Collectors publish their complete sample set once per tick under their source name; a
source's previous set is replaced, so a series a collector stops returning stops being
served (no stale values). Every published value is also appended to its series' ring
buffer for window queries by the forecaster and tuner; the series a source publishes on each of
its publishes share one ring of timestamps (the source's clock) and keep only their values, and a
series that misses one of its source's publishes gets timestamps of its own from then on. A source that publishes
the same series in the same order as last time (every tick, for every source of a monitoring daemon) has
its values kept as one row per publish and pushed onto the rings a column at a time, every
``PENDING_ROWS`` publishes or before anything reads or reshapes the rings. A series no source has published for
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
from operator import itemgetter

from gputuned.collectors.families import Labels, Sample

SeriesKey = tuple[str, Labels]
_NAME, _LABELS, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)
#: ``listener(source, t, samples)`` after a publish; ``samples`` is None when a source is dropped.
Listener = Callable[[str, float, "list[Sample] | None"], None]
#: Publishes a source's clock keeps as rows before pushing them onto its rings (each row a value per series).
PENDING_ROWS = 16


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


class FloatRing:
    """A bounded ring of floats, oldest overwritten first; its array grows with the points up to ``capacity``."""

    __slots__ = ("_a", "_cap", "_next")

    def __init__(self, capacity: int) -> None:
        self._a = array("d")
        self._cap = capacity
        self._next = 0  # where the next point goes once the ring is full

    def push(self, x: float) -> None:
        if len(self._a) < self._cap:
            self._a.append(x)
        else:
            self._a[self._next] = x
            self._next = 0 if self._next + 1 == self._cap else self._next + 1

    def __len__(self) -> int:
        return len(self._a)

    def extend(self, xs: array[float]) -> None:
        """Push ``xs`` in order (as many :meth:`push` calls would)."""
        a, cap = self._a, self._cap
        room = cap - len(a)
        if room > 0:
            a.extend(xs[:room])
            xs = xs[room:]
        n = len(xs)
        if n >= cap:  # all of them overwritten: the newest ``cap`` from the start
            a[:] = xs[n - cap:]
            self._next = 0
            return
        i = self._next
        first = min(n, cap - i)
        a[i:i + first] = xs[:first]
        if first < n:
            a[:n - first] = xs[first:]
        self._next = (i + n) % cap

    def tolist(self) -> list[float]:
        """The points, oldest first."""
        i = self._next
        return self._a.tolist() if not i else (self._a[i:] + self._a[:i]).tolist()


class SourceClock(FloatRing):
    """The timestamps of one source's publishes (with history), newest ``capacity`` kept, shared by its series."""

    __slots__ = ("seq", "rings", "names", "labels", "order", "rows")

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.seq = 0  # publishes so far: the newest timestamp is publish ``seq``'s
        self.rings: dict[SeriesKey, SharedRing] = {}  # the rings on this clock
        # the last publish's series (names, labels) and their rings in its order, while each of them holds
        # exactly that publish's value and every ring on the clock is among them (None: publish the long way)
        self.names: list[str] = []
        self.labels: list[Labels] = []
        self.order: list[RingBuffer | SharedRing] | None = None
        # publishes taken the short way while every ring of ``order`` is shared, not pushed yet (see settle)
        self.rows: list[array[float]] | None = None

    def settle(self) -> None:
        """Push the kept rows onto the rings of ``order``, a column at a time."""
        rows, order, seq = self.rows, self.order, self.seq
        if not rows or order is None:
            return
        self.rows = []
        if len(rows) == 1:
            for ring, value in zip(order, rows[0], strict=True):
                ring.push(value)  # type: ignore[union-attr]
                ring.seq = seq  # type: ignore[union-attr]
            return
        block, width = array("d", b"".join(rows)), len(order)  # row after row: column j is every width-th from j
        for j, ring in enumerate(order):
            ring.extend(block[j::width])  # type: ignore[union-attr]
            ring.seq = seq  # type: ignore[union-attr]

    def append(self, t: float) -> None:
        self.push(t)
        self.seq += 1

    def upto(self, seq: int, n: int) -> list[float]:
        """The timestamps of publishes ``seq - n + 1`` .. ``seq``, oldest first (all still held)."""
        held = len(self._a)
        end = (self._next if held == self._cap else held) - (self.seq - seq)  # index after publish ``seq``'s
        return [self._a[(end - n + k) % held] for k in range(n)] if held else []


class SharedRing(FloatRing):
    """A series' values, published on every one of its source's publishes since its first: its
    timestamps are the source clock's. A series that misses a publish gets its own timestamps
    (:meth:`own`) while the clock still holds them."""

    __slots__ = ("clock", "seq")

    def __init__(self, capacity: int, clock: SourceClock) -> None:
        super().__init__(capacity)
        self.clock = clock
        self.seq = clock.seq  # the publish of the newest value (the store sets it with each push)

    @property
    def last_t(self) -> float:
        return self.clock.upto(self.seq, 1)[0]

    def items(self) -> tuple[list[float], list[float]]:
        vs = self.tolist()
        return self.clock.upto(self.seq, len(vs)), vs

    def since(self, t0: float) -> tuple[list[float], list[float]]:
        ts, vs = self.items()
        lo = bisect.bisect_left(ts, t0)
        return ts[lo:], vs[lo:]

    def own(self) -> RingBuffer:
        """The same points in a ring with timestamps of its own."""
        ring = RingBuffer(self._cap)
        for t, v in zip(*self.items(), strict=True):
            ring.append(t, v)
        return ring


Ring = RingBuffer | SharedRing


class Store:
    """Latest samples per source plus per-series history."""

    def __init__(self, history_samples: int = 600, forget_after_s: float = 900.0) -> None:
        self._history = history_samples
        self._forget_after_s = forget_after_s  # 0: rings stay until forget()
        self._next_sweep = float("-inf")
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, list[Sample]]] = {}
        self._rings: dict[SeriesKey, Ring] = {}
        self._clocks: dict[str, SourceClock] = {}
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
        with self._lock:
            self._latest[source] = (t, samples)
            if self._history and history:
                self._record(source, t, samples)
                if self._forget_after_s and t >= self._next_sweep:
                    self._sweep(t)
            self.generation += 1
            self._index = None
        for listener in self._listeners:
            listener(source, t, samples)

    def _record(self, source: str, t: float, samples: list[Sample]) -> None:
        """Append ``samples`` to their rings (lock held): one timestamp for the source, a value per series."""
        rings, cap = self._rings, self._history
        clock = self._clocks.get(source)
        if clock is None:
            clock = self._clocks[source] = SourceClock(cap + 1)  # + 1: a series that just missed one still finds its times
        names, labels = list(map(_NAME, samples)), list(map(_LABELS, samples))
        same = clock.order is not None and names == clock.names and labels == clock.labels  # the same series again
        if same and clock.rows is not None:  # every ring shared: a row now, the rings later
            clock.append(t)
            row = array("d")
            row.fromlist(list(map(_VALUE, samples)))  # from a list: an iterator would grow the array a value at a time
            clock.rows.append(row)
            if len(clock.rows) >= PENDING_ROWS:
                clock.settle()
            return
        self._settle()  # the rings are read or reshaped below (before this publish moves the clock)
        clock.append(t)
        seq, on_clock = clock.seq, clock.rings
        if same:
            for kept, value in zip(clock.order or (), map(_VALUE, samples), strict=True):
                if kept.__class__ is SharedRing:
                    kept.push(value)
                    kept.seq = seq
                else:
                    kept.append(t, value)  # type: ignore[union-attr]
            return
        order: list[Ring] = []
        shared, replaced = 0, False
        for name, labels_, value in samples:
            key = (name, labels_)
            ring = rings.get(key)
            if ring is None:
                ring = rings[key] = on_clock[key] = SharedRing(cap, clock)
            elif isinstance(ring, SharedRing) and (ring.clock is not clock or ring.seq != seq - 1):
                ring = rings[key] = self._unshare(key, ring)  # published twice, elsewhere or after a gap
                replaced = True  # an earlier push of this publish may have counted (and kept) the ring replaced
            if isinstance(ring, SharedRing):
                ring.push(value)
                ring.seq = seq
                shared += 1
            else:
                ring.append(t, value)
            order.append(ring)
        if replaced or shared != len(on_clock):  # a series of this source was not published: it keeps its times
            for key in [k for k, r in on_clock.items() if r.seq != seq]:
                rings[key] = self._unshare(key, on_clock[key])
        # the short way next time while every ring on the clock was pushed once and none was replaced on the way
        keep = not replaced and shared == len(on_clock)
        clock.names, clock.labels, clock.order = names, labels, order if keep else None
        clock.rows = [] if clock.order is not None and shared == len(order) else None

    def _settle(self) -> None:
        """Push every clock's kept rows onto its rings (lock held): before the rings are read or reshaped."""
        for clock in self._clocks.values():
            if clock.rows:
                clock.settle()

    def _unshare(self, key: SeriesKey, ring: SharedRing) -> RingBuffer:
        del ring.clock.rings[key]
        ring.clock.order = ring.clock.rows = None
        return ring.own()

    def _sweep(self, t: float) -> None:
        """Drop the rings of series published last over ``forget_after_s`` before ``t`` (lock held)."""
        self._next_sweep = t + min(60.0, self._forget_after_s / 2)
        self._settle()
        horizon = t - self._forget_after_s
        idle = [k for k, ring in self._rings.items() if ring.last_t < horizon]
        for k in idle:
            self._drop_ring(k)

    def _drop_ring(self, key: SeriesKey) -> None:
        ring = self._rings.pop(key, None)
        if isinstance(ring, SharedRing):
            del ring.clock.rings[key]
            ring.clock.order = ring.clock.rows = None
        elif ring is not None:  # a ring of its own may be in any source's order
            for clock in self._clocks.values():
                clock.order = clock.rows = None

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
            if isinstance(ring, SharedRing) and ring.clock.rows:
                ring.clock.settle()
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
            self._settle()
            for k in keys:
                self._drop_ring(k)
