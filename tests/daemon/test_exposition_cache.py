"""What the exporter keeps between scrapes: bodies per store generation, family texts while their values stay."""

from __future__ import annotations

import gzip

from gputuned.collectors import families as F
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.core.dcgm import DcgmLabels
from gputuned.daemon.core.exporter import MetricsRenderer
from gputuned.daemon.core.exposition import Encoder
from gputuned.daemon.core.store import Store

POWER = F.declare("gputuned_test_power_watts", "gauge", "Power.")
LIMIT = F.declare("gputuned_test_limit_watts", "gauge", "Limit.")
CATALOG = F.catalog([POWER, LIMIT])
GPU0 = (("gpu", "0"), ("uuid", "GPU-0"), ("model", "H100"), ("pci_bus_id", "00:18"))
GPU1 = (("gpu", "1"), ("uuid", "GPU-1"), ("model", "H100"), ("pci_bus_id", "00:28"))


def _samples(power0: float, power1: float = 200.0, limit: float = 700.0) -> list[F.Sample]:
    return [(POWER, GPU0, power0), (POWER, GPU1, power1), (LIMIT, GPU0, limit), (LIMIT, GPU1, limit)]


def test_bodies_are_made_once_a_generation_and_change_with_it() -> None:
    store = Store(8)
    store.publish("gpu", 1.0, _samples(100.0))
    r = MetricsRenderer(store, CATALOG)
    gz = r.render(gzipped=True)
    assert r.render(gzipped=True) is gz and r.renders == 2  # the identity body, then its compression
    plain = r.render()
    assert r.renders == 2 and gzip.decompress(gz) == plain  # the gzip body is this generation's text
    assert b'gputuned_test_power_watts{gpu="0",uuid="GPU-0",model="H100",pci_bus_id="00:18"} 100.0\n' in plain

    store.publish("gpu", 2.0, _samples(150.0))  # a new generation
    gz2 = r.render(gzipped=True)
    assert gz2 != gz and r.renders == 4
    assert b"} 150.0\n" in gzip.decompress(gz2) and b"} 100.0\n" not in gzip.decompress(gz2)
    assert gzip.decompress(gz2) == r.render()


def test_a_body_polled_every_tick_is_made_at_the_tick_end_and_one_polled_less_often_on_demand() -> None:
    store = Store(8)
    r = MetricsRenderer(store, CATALOG)

    def tick(t: float, scrape: bool) -> int:
        """A tick's publish and end, then (when ``scrape``) a scrape: the renders that scrape made."""
        store.publish("gpu", t, _samples(100.0 + t))
        r.tick_ended()
        before = r.renders
        if scrape:
            assert b"} %r\n" % (100.0 + t) in gzip.decompress(r.render(openmetrics=True, gzipped=True))
        return r.renders - before

    assert [tick(t, True) for t in range(1, 4)] == [2, 2, 2]  # asked in 1, 2, 3 ticks in a row: on demand
    assert [tick(t, True) for t in range(4, 8)] == [0, 0, 0, 0]  # made at each tick's end, the scrape a lookup
    assert r.render() and r.renders == 2 * 7 + 1  # a text body, never polled: on demand
    made = r.renders
    # every other tick: made while 3 of the last 4 ticks asked (the ends of 8 to 11), then on demand
    assert [tick(t, t % 2 == 0) for t in range(8, 16)] == [0, 0, 0, 0, 2, 0, 2, 0]
    assert r.renders == made + 4 * 2 + 2 * 2
    assert [tick(t, False) for t in range(16, 19)] == [0, 0, 0] and r.renders == made + 12  # nobody asks: none made
    made = r.renders
    # a scraper every tick whose period drifts against the ticks' skips one now and then: still made at tick ends
    asks = [True] * 3 + [True, True, False, True, True, True, False, True, True]
    assert [tick(t, a) for t, a in zip(range(19, 31), asks, strict=True)] == [2, 2, 2] + [0] * 9


def test_a_family_keeps_its_text_only_while_its_values_stay() -> None:
    enc = Encoder(CATALOG)
    steps = [_samples(100.0), _samples(100.0), _samples(101.5), _samples(101.5, limit=650.0),
             _samples(0.0), _samples(-0.0), _samples(0.0), _samples(float("nan")), _samples(float("nan"))]
    for samples in steps:
        assert enc.render(samples) == Encoder(CATALOG).render(samples)  # byte-identical to a fresh encoder
    assert 'gputuned_test_power_watts{gpu="0",uuid="GPU-0",model="H100",pci_bus_id="00:18"} -0.0\n' in enc.render(_samples(-0.0))
    assert "} 650.0\n" in enc.render(_samples(1.0, limit=650.0)) and "} 700.0\n" not in enc.render(_samples(1.0, limit=650.0))


def test_dcgm_series_follow_their_values_too() -> None:
    cat = served_catalog()  # the shipped GPU families carry the DCGM names
    fam = next(f for f in cat.values() if any(d.scale != 1.0 and not d.where and not d.xid for d in f.dcgm))
    d = next(d for d in fam.dcgm if d.scale != 1.0 and not d.where and not d.xid)
    enc = Encoder(cat, dcgm=DcgmLabels("node-1"))
    first = enc.render([(fam.name, GPU0, 2.0)])
    again = enc.render([(fam.name, GPU0, 2.0)])
    moved = enc.render([(fam.name, GPU0, 4.0)])
    assert first == again and moved != first
    assert f" {2.0 * d.scale!r}\n" in first and f" {4.0 * d.scale!r}\n" in moved
    assert moved == Encoder(cat, dcgm=DcgmLabels("node-1")).render([(fam.name, GPU0, 4.0)])


def test_a_change_of_series_between_renders_is_served_as_a_fresh_encoder_serves_it() -> None:
    enc = Encoder(CATALOG, openmetrics=True)
    gpu2 = (("gpu", "2"), ("uuid", "GPU-2"), ("model", "H100"), ("pci_bus_id", "00:38"))
    interleaved = [(POWER, GPU0, 1.0), (LIMIT, GPU0, 700.0), (POWER, GPU1, 2.0), (LIMIT, GPU1, 700.0)]
    steps = [_samples(100.0), interleaved, interleaved[::-1], interleaved[1:], [*interleaved, (POWER, gpu2, 3.0)],
             [(POWER, GPU0, 5.0)], [], _samples(100.0)]
    for samples in steps:
        assert enc.render(samples) == Encoder(CATALOG, openmetrics=True).render(samples)
    body = enc.render(iter(interleaved))  # any iterable, not only a list
    assert body.index("} 700.0\n") < body.index("} 1.0\n") < body.index("} 2.0\n")  # families by name, series in order
