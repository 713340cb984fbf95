"""The sample store: latest values per source, history per series, change listeners."""

from __future__ import annotations

import pytest

from gputuned.daemon.core.store import RingBuffer, Store

A = (("gpu", "0"),)
B = (("gpu", "1"),)


def test_ring_buffer_keeps_the_newest_in_order() -> None:
    ring = RingBuffer(3)
    for t in range(5):
        ring.append(float(t), 10.0 * t)
    assert len(ring) == 3
    assert ring.items() == ([2.0, 3.0, 4.0], [20.0, 30.0, 40.0])
    assert ring.since(3.0) == ([3.0, 4.0], [30.0, 40.0])
    with pytest.raises(ValueError):
        RingBuffer(0)


def test_publish_replaces_a_source_and_value_follows() -> None:
    store = Store(10)
    store.publish("gpu", 1.0, [("p", A, 100.0), ("p", B, 200.0)])
    assert store.value("p", A) == 100.0
    store.publish("gpu", 2.0, [("p", A, 150.0)])  # B no longer served
    assert store.value("p", A) == 150.0
    assert store.value("p", B) is None
    assert store.window("p", A, 10.0, 2.0) == ([1.0, 2.0], [100.0, 150.0])
    assert store.window("p", A, 0.5, 2.0) == ([2.0], [150.0])


def test_drop_stops_serving_and_tells_listeners() -> None:
    store = Store(0)
    seen: list[tuple[str, float, object]] = []
    store.subscribe(lambda source, t, samples: seen.append((source, t, samples)))
    store.publish("host", 1.0, [("load", (), 0.5)])
    gen = store.generation
    store.drop("host", 2.0)
    store.drop("host", 3.0)  # already gone: no event
    assert store.value("load", ()) is None and store.latest() == []
    assert store.generation == gen + 1
    assert seen == [("host", 1.0, [("load", (), 0.5)]), ("host", 2.0, None)]
