"""A rank flood cannot grow the daemon: ranks past the control socket's per-uid bound are refused
and their series never enter the store or the forecaster; the forecaster tracks at most
``max_rank_series`` ranks' series (the GPUs' keep their room); a departed rank's series leave the
store at its expiry and the forecaster after ``rank_forget_after_s``; forecast outputs are served
without history; and five floods in a row leave the same counts as one.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_kit import wait_for

from gputuned import protocol as P
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.reports import SERIES_PER_RANK, STEP
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.store import RingBuffer, Store
from gputuned.daemon.record.child import connect_client
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.service import ANOMALY_SCORE, ForecastService

RANKS_PER_UID, TTL_S, RANK_FORGET_S, MAX_RANK_SERIES = 16, 5.0, 10.0, 24
GPUS = [(("gpu", str(i)),) for i in range(2)]
STATS = {"samples_per_s": 100.0, "comm_time_s": 0.01, "data_wait_s": 0.001, "loss": 1.0}


class Node:
    """A control server, the store and an in-process forecaster, ticked by hand on wall-clock times."""

    def __init__(self, folder: Path) -> None:
        cfg = ControlConfig(socket_path=folder / "control.sock", job_ttl_s=TTL_S, max_ranks_per_uid=RANKS_PER_UID,
                            max_jobs_per_uid=4)
        self.store = Store(60, forget_after_s=30.0)
        self.server = ControlServer(cfg, self.store)
        self.now = time.time()
        self.server.clock = lambda: self.now  # ranks leave at the ticks' time
        self.forecast = ForecastService(ForecastConfig(fitter="none", max_series=40, max_rank_series=MAX_RANK_SERIES,
                                                       rank_forget_after_s=RANK_FORGET_S))

    def tick(self) -> None:
        """One daemon tick, a second after the last: the GPUs and the control socket publish, the forecaster
        observes and publishes."""
        self.now = t = self.now + 1.0
        self.store.publish("gpu", t, [("gputuned_gpu_power_watts", lab, 300.0) for lab in GPUS])
        self.server.tick(t)
        self.forecast.observe(t, self.store.latest())
        self.store.publish("forecast", t, self.forecast.samples(), history=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.server.start()
    yield n
    n.server.stop()


def flood(node: Node, cycle: int, ranks: int = 64) -> int:
    """``ranks`` fake ranks over 8 jobs say hello, report once and leave; returns how many were welcomed."""
    welcomed, reports = 0, node.server.jobs.reports
    for i in range(ranks):
        s, answer = connect_client(node.server.cfg.socket_path, job=f"flood-{cycle}-{i % 8}", rank=i // 8, world=8)
        if answer["type"] == "welcome":
            welcomed += 1
            s.sendall(P.encode({"v": 1, "seq": 1, "type": "report", "step": 1, "steps": 1, "time": time.time(),
                                "stats": STATS}))
        else:
            assert answer["type"] == "error" and "the most allowed (control.max_" in answer["error"]
        s.shutdown(socket.SHUT_WR)
        s.close()
    assert wait_for(lambda: node.server.jobs.reports - reports >= welcomed and not node.server.jobs.jobs()), \
        (node.server.jobs.reports - reports, node.server.rejected)
    return welcomed


def test_five_rank_floods_stay_within_the_bounds_and_leave_nothing(node: Node) -> None:
    node.tick()
    gpu_tracks = node.forecast.tracked
    rings = node.store.ring_count()
    assert gpu_tracks == (2, 0)
    counts = []
    for cycle in range(5):
        assert flood(node, cycle) == RANKS_PER_UID  # the rest refused: per-uid job and rank bounds
        assert node.server.rejected["too_many_ranks"] + node.server.rejected["too_many_jobs"] == 48 * (cycle + 1)
        node.tick()
        in_flood = (node.store.ring_count(), node.forecast.tracked)
        assert in_flood[0] - rings <= SERIES_PER_RANK * RANKS_PER_UID
        assert len(node.store.series(STEP)) == RANKS_PER_UID
        assert in_flood[1] == (2 + MAX_RANK_SERIES, MAX_RANK_SERIES)  # 16 ranks x 3 families, capped; GPUs kept
        assert node.store.series(ANOMALY_SCORE) == []  # forecast outputs: served, no ring
        for _ in range(int(TTL_S + RANK_FORGET_S + 12)):
            node.tick()
        after = (node.store.ring_count(), node.forecast.tracked)
        assert node.store.series(STEP) == []  # expired ranks' rings dropped with them
        assert after[1] == gpu_tracks  # and their forecaster tracks after rank_forget_after_s
        assert after[0] <= rings + 2  # what stays: the counters of the two refusal reasons
        counts.append((in_flood, after))
    assert all(c == counts[0] for c in counts)


def test_a_series_not_published_for_forget_after_s_loses_its_ring() -> None:
    store = Store(10, forget_after_s=100.0)
    store.publish("a", 0.0, [("x", (), 1.0), ("y", (), 1.0)])
    for t in range(1, 200):
        store.publish("a", float(t), [("x", (), 1.0)])
    assert store.series("x") == [()] and store.series("y") == []
    keep = Store(10, forget_after_s=0.0)  # 0: kept for the daemon's lifetime
    keep.publish("a", 0.0, [("y", (), 1.0)])
    keep.publish("a", 1e6, [("x", (), 1.0)])
    assert keep.series("y") == [()]


def test_a_ring_grows_with_its_points_up_to_capacity() -> None:
    ring = RingBuffer(600)
    for t in range(3):
        ring.append(float(t), float(t))
    assert len(ring) == 3 and ring.last_t == 2.0
    assert ring._t.buffer_info()[1] == 3  # three points held, not 600 preallocated
    for t in range(3, 1000):
        ring.append(float(t), float(t))
    ts, vs = ring.items()
    assert len(ring) == 600 and ts == [float(t) for t in range(400, 1000)] and vs == ts and ring.last_t == 999.0
