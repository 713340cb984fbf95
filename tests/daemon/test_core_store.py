"""The sample store: latest values per source, history per series, change listeners."""

from __future__ import annotations

import pytest

from gputuned.collectors.families import Labels, Sample
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


def _publish_and_check(store: Store, ref: dict[tuple[str, Labels], RingBuffer], keys: list[tuple[str, Labels]],
                       publish: tuple[str, float, list[Sample]], forget: tuple[str, Labels] | None, span: float) -> None:
    """Publish into ``store`` and into the per-series reference rings, forget one series, compare every window."""
    source, t, samples = publish
    store.publish(source, t, samples)
    for n, lab, v in samples:
        ref.setdefault((n, lab), RingBuffer(store._history)).append(t, v)
    if forget is not None:
        store.forget([forget])
        ref.pop(forget, None)
    for n, lab in keys:
        want = ref[(n, lab)].since(t - span) if (n, lab) in ref else ([], [])
        assert store.window(n, lab, span, t) == want, (t, lab)


def test_shared_timestamps_give_each_series_the_history_of_its_own_ring() -> None:
    """Series sharing their source's clock, coming and going, published twice or by two sources,
    answer every window as rings with their own timestamps do."""
    import random

    from gputuned.daemon.core.store import SharedRing

    rnd = random.Random(7)
    store, ref = Store(5), {}
    keys = [("p", (("gpu", str(i)),)) for i in range(6)]
    for step in range(200):
        source = "other" if rnd.random() < 0.02 else "gpu"
        t = float(step)
        samples = [(n, lab, float(step * 10 + i)) for i, (n, lab) in enumerate(keys) if rnd.random() < (0.97 if i < 3 else 0.6)]
        if rnd.random() < 0.05 and samples:
            samples.append(samples[0])  # the same series twice in one publish
        _publish_and_check(store, ref, keys, (source, t, samples), rnd.choice(keys) if rnd.random() < 0.08 else None, 3.5)
        assert sorted(store.series("p")) == sorted(lab for _, lab in ref)
    steady = Store(600)
    for t in range(700):
        steady.publish("gpu", float(t), [("p", lab, 1.0) for _, lab in keys])
    assert all(isinstance(steady._rings[k], SharedRing) for k in keys)  # one timestamp ring for all four
    assert steady.window("p", keys[0][1], 10.0, 699.0) == ([float(t) for t in range(689, 700)], [1.0] * 11)


def test_a_series_that_stops_keeps_its_timestamps_while_its_source_goes_on() -> None:
    store = Store(5)
    for t in range(10):
        store.publish("gpu", float(t), [("p", A, float(t)), ("p", B, 10.0 * t)])
    for t in range(10, 13):
        store.publish("gpu", float(t), [("p", A, float(t))])  # B stopped; the source's clock moves on
    assert store.window("p", B, 100.0, 12.0) == ([5.0, 6.0, 7.0, 8.0, 9.0], [50.0, 60.0, 70.0, 80.0, 90.0])
    assert store.window("p", A, 100.0, 12.0) == ([8.0, 9.0, 10.0, 11.0, 12.0], [8.0, 9.0, 10.0, 11.0, 12.0])


def test_a_source_that_publishes_the_same_series_again_and_again_keeps_every_window_right() -> None:
    """Long runs of the same series in the same order (the store's short way), broken now and then by a
    series left out, a new order, a series twice, another source publishing one, a forget, a served-only publish."""
    import random

    rnd = random.Random(11)
    store, ref = Store(7), {}
    keys = [("p", (("gpu", str(i)),)) for i in range(5)]
    current = list(keys)
    for step in range(400):
        t, event = float(step), rnd.random()
        if event < 0.03:
            current = rnd.sample(keys, len(keys))  # a new order
        elif event < 0.05:
            current = [k for k in keys if k != rnd.choice(keys)]  # one left out
        elif event < 0.07:
            current = list(keys)
        samples = [(n, lab, float(step * 10 + i)) for i, (n, lab) in enumerate(current)]
        if 0.07 <= event < 0.08:
            samples.append(samples[0])  # the same series twice in one publish
        if 0.08 <= event < 0.09:
            n, lab = rnd.choice(keys)
            store.publish("other", t, [(n, lab, -1.0)])
            ref.setdefault((n, lab), RingBuffer(7)).append(t, -1.0)
        if 0.09 <= event < 0.10:
            store.publish("gpu", t, samples, history=False)  # served only: no history
            continue
        _publish_and_check(store, ref, keys, ("gpu", t, samples), rnd.choice(keys) if 0.10 <= event < 0.12 else None, 5.5)
    twice = Store(7)  # a source that publishes one series twice every time: both values kept, in order
    for step in range(4):
        twice.publish("gpu", float(step), [("p", A, float(step)), ("p", B, 1.0), ("p", A, step + 0.5)])
    assert twice.window("p", A, 10.0, 3.0) == ([0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


def test_a_series_twice_while_another_is_left_out_loses_nothing() -> None:
    """[A, B, C, D] then [A, B, C, A] again and again: A keeps both values of each publish, D its own times."""
    store, ref = Store(7), {}
    keys = [("p", (("gpu", str(i)),)) for i in range(4)]
    a, b, c, _d = keys
    for step in range(30):
        current = keys if step == 0 else [a, b, c, a]
        samples = [(n, lab, float(step * 10 + i)) for i, (n, lab) in enumerate(current)]
        _publish_and_check(store, ref, keys, ("gpu", float(step), samples), None, 100.0)


@pytest.mark.parametrize("capacity", [1, 3, 7, 16, 40])
def test_rows_kept_between_reads_are_pushed_onto_the_rings_in_order(capacity: int) -> None:
    """A source taking the short way for long runs read at random gaps (fewer, as many or more publishes
    than the rings hold, more than a clock keeps as rows): every window as per-series rings answer it."""
    import random

    rnd = random.Random(capacity)
    store, ref = Store(capacity), {}
    keys = [("p", (("gpu", str(i)),)) for i in range(4)]
    step = 0
    for _ in range(30):
        for _ in range(rnd.choice([1, 2, capacity, capacity + 1, 17, 50])):
            t = float(step)
            samples = [(n, lab, float(step * 10 + i)) for i, (n, lab) in enumerate(keys)]
            store.publish("gpu", t, samples)
            for n, lab, v in samples:
                ref.setdefault((n, lab), RingBuffer(capacity)).append(t, v)
            step += 1
        for n, lab in keys:
            assert store.window(n, lab, 1e9, t) == ref[(n, lab)].since(-1e9), (capacity, step)
