"""A job belongs to the uid that opened it: a second uid cannot pose as its ranks, its leader, or
disconnect them; one connection per (job, rank); acks and profile results only from the leader;
and it cannot get itself placed on (and so tuned on) a GPU another uid's process uses.

The second uid is real: the peer is a child of the test that drops to uid 65534 with no groups
(tests/uid_peer.py), so the daemon sees its credentials through SO_PEERCRED exactly as it would
see another user's trainer. The real job runs as this process (root). These tests need root,
and are skipped without it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uid_peer
from runtime_kit import wait_for

from gputuned import protocol as P
from gputuned.collectors.attribution import attribute
from gputuned.collectors.device import GPUProcess
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.child import connect_client, hello, read_frame

pytestmark = pytest.mark.skipif(not uid_peer.can_switch_uid(), reason="needs root to run a peer as another uid")
OTHER = uid_peer.OTHER_UID


@pytest.fixture
def srv(open_dir: Path) -> Iterator[ControlServer]:
    """A control server on a socket the other uid may reach (directory 0755, socket 0666, uid allowed)."""
    server = ControlServer(ControlConfig(socket_path=open_dir / "control.sock", socket_mode=0o666,
                                         allowed_uids=[OTHER]), Store(60))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sim_job(srv: ControlServer) -> Iterator[list[socket.socket]]:
    """The real job, "sim-job": rank 0 (its leader) and rank 1, connected as this process's uid."""
    socks = []
    for rank in (0, 1):
        s, welcome = connect_client(srv.cfg.socket_path, job="sim-job", rank=rank, world=4)
        assert welcome["type"] == "welcome"
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def _hello(job: str, rank: int, leader: bool | None = None) -> dict[str, Any]:
    msg = hello(job=job, rank=rank, world=4, leader=leader)
    return {k: v for k, v in msg.items() if k not in ("v", "seq")}


def _report(loss: float) -> dict[str, Any]:
    return {"send": {"type": "report", "step": 1, "steps": 1, "stats": {"loss": loss}}, "reply": False}


def _sends_on_rank_0(srv: ControlServer, sim_job: list[socket.socket]) -> None:
    """The real rank 0 still holds its rank: its report counts and it receives the job's decisions."""
    before = srv.reports_total
    sim_job[0].sendall(P.encode({"v": 1, "type": "report", "seq": 1, "step": 5, "steps": 1, "stats": {"loss": 2.0}}))
    assert wait_for(lambda: srv.reports_total == before + 1)
    ident = srv.send_decision("sim-job", {"batch_size": 128})
    assert read_frame(sim_job[0]) == {"v": 1, "type": "decision", "seq": 1, "id": ident, "batch_size": 128}


def test_a_second_uid_cannot_join_a_job_it_does_not_own(srv: ControlServer, sim_job: list[socket.socket]) -> None:
    (got,) = uid_peer.run(srv.cfg.socket_path, [[{"send": _hello("sim-job", 2)}, _report(1e9)]])
    assert got[0]["type"] == "error" and "belongs to uid 0" in got[0]["error"] and f"uid {OTHER}" in got[0]["error"]
    assert srv.rejected["not_owner"] == 1
    assert srv.reports_total == 0  # its report was never taken
    assert srv.connected_jobs() == {"sim-job": [0, 1]}
    owner = srv.jobs.owner("sim-job")
    assert owner is not None and owner.uid == 0 and owner.pid == os.getpid() and owner.ranks == 2
    srv.tick(time.time())
    assert srv.store is not None and srv.store.series("gputuned_trainer_loss") == []


def test_a_second_uid_cannot_take_over_a_connected_rank(srv: ControlServer, sim_job: list[socket.socket]) -> None:
    conns = [[{"send": _hello("sim-job", 0)}, _report(9.0)], [{"send": _hello("sim-job", 1, leader=False)}]]
    got = uid_peer.run(srv.cfg.socket_path, conns)
    assert all(c[0]["type"] == "error" and "belongs to uid 0" in c[0]["error"] for c in got)
    assert srv.rejected["not_owner"] == 2
    _sends_on_rank_0(srv, sim_job)
    # and the owner itself cannot open a second connection for a rank that is connected
    dup, err = connect_client(srv.cfg.socket_path, job="sim-job", rank=1, world=4)
    assert err["type"] == "error" and "already connected" in err["error"] and srv.rejected["rank_taken"] == 1
    dup.close()
    assert srv.connected_jobs() == {"sim-job": [0, 1]}


def test_a_second_uid_cannot_pose_as_leader_nor_answer_for_it(srv: ControlServer, sim_job: list[socket.socket]) -> None:
    ident = srv.send_decision("sim-job", {"batch_size": 2000})
    assert read_frame(sim_job[0])["id"] == ident
    profile = srv.send_decision("sim-job", {"profile_steps": 5})
    assert read_frame(sim_job[0])["id"] == profile
    nack = {"type": "ack", "id": ident, "ok": False, "error": "CUDA out of memory"}
    fake = {"type": "profile_result", "id": profile, "summary": {"data_loader_share": 0.9}}
    conns = [[{"send": _hello("sim-job", 0, leader=True)}],  # the job's leader: refused
             [{"send": _hello("evil", 0, leader=True)}, {"send": nack}, {"send": fake}]]  # its own job's leader
    (as_leader, own_job) = uid_peer.run(srv.cfg.socket_path, conns)
    assert as_leader[0]["type"] == "error" and "belongs to uid 0" in as_leader[0]["error"]
    assert own_job[0]["type"] == "welcome" and own_job[0]["decisions"] is True
    assert "not a decision sent on this connection" in own_job[1]["error"]
    assert "not a profile request sent to job evil" in own_job[2]["error"]
    assert srv.rejected["unknown_decision"] == 2
    assert srv.wait_ack(ident, 0.1) is None and profile not in srv.profile_results
    # rank 1 of the real job is not its leader either: its acks are refused
    sim_job[1].sendall(P.encode({"v": 1, "seq": 1, **nack}))
    assert "only the leader" in read_frame(sim_job[1])["error"] and srv.rejected["not_leader"] == 1
    # the real leader's ack and profile result are taken
    sim_job[0].sendall(P.encode({"v": 1, "seq": 1, "type": "ack", "id": ident, "ok": True}))
    sim_job[0].sendall(P.encode({"v": 1, "seq": 2, "type": "profile_result", "id": profile, "summary": {"x": 1}}))
    ack = srv.wait_ack(ident, 5)
    assert ack is not None and ack["ok"] is True
    assert wait_for(lambda: srv.profile_results.get(profile) == {"x": 1})


def test_a_second_uid_disconnecting_clears_none_of_the_jobs_ranks(srv: ControlServer, sim_job: list[socket.socket]) -> None:
    conns = [[{"send": _hello("sim-job", 1, leader=False)}], [{"send": _hello("evil", 1, leader=False)}]]
    got = uid_peer.run(srv.cfg.socket_path, conns)  # the peer exits: every connection of it closes
    assert got[0][0]["type"] == "error" and got[1][0]["type"] == "welcome"
    assert wait_for(lambda: srv.connected_jobs() == {"sim-job": [0, 1]})  # evil's rank 1 went, sim-job's stayed
    _sends_on_rank_0(srv, sim_job)
    sim_job[1].close()  # the owner's own disconnect clears its own rank only
    assert wait_for(lambda: srv.connected_jobs() == {"sim-job": [0]})


def test_a_profile_result_for_an_unknown_id_and_a_job_name_with_a_newline_are_refused(srv: ControlServer,
                                                                                        sim_job: list[socket.socket]) -> None:
    sim_job[0].sendall(P.encode({"v": 1, "seq": 1, "type": "profile_result", "id": "d-999", "summary": {}}))
    assert "not a profile request" in read_frame(sim_job[0])["error"]
    assert srv.profile_results == {}
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(srv.cfg.socket_path))
    s.sendall(P.encode({**hello(job="sim-job\n", rank=0), "seq": 0}))
    assert "hello.job: must match" in read_frame(s)["error"]
    s.close()
    assert srv.rejected["malformed"] == 1 and srv.connected_jobs() == {"sim-job": [0, 1]}


def test_a_second_uid_cannot_get_placed_on_a_gpu_the_owners_process_uses(srv: ControlServer,
                                                                         sim_job: list[socket.socket]) -> None:
    # its own job's rank claims the owner's pid and the UUID of the owner's GPU; a rank of the owner's job the same
    claim = {"pid": os.getpid(), "cuda_uuid": "GPU-b"}
    plan = {"path": str(srv.cfg.socket_path), "hold": True,
            "conns": [[{"send": {**_hello("evil", 0), **claim}}], [{"send": {**_hello("sim-job", 2), **claim}}]]}
    peer = uid_peer.spawn(plan)
    try:
        own, joined = uid_peer.replies(peer)
        assert own[0]["type"] == "welcome" and "belongs to uid 0" in joined[0]["error"]
        assert wait_for(lambda: len(srv.jobs.claims()) == 3)
        claims = {c.job: c.pid for c in srv.jobs.claims()}
        # NVML: the owner's process (this one) on GPU 1, the peer's on GPU 3
        gpus = {0: ("GPU-a", []), 1: ("GPU-b", [GPUProcess(os.getpid(), 1)]), 2: ("GPU-c", []),
                3: ("GPU-d", [GPUProcess(peer.pid, 1)])}
        att = attribute(srv.jobs.claims(), gpus)
    finally:
        peer.stdin.close()
        peer.wait()
    assert claims["evil"] == peer.pid  # SO_PEERCRED's pid, not the claimed one
    assert att.gpus_of("evil") == {3} and att.rank_map("evil") == {0: 3}  # where its own process runs, only
    assert att.gpus_of("sim-job") == {1} and att.rank_map("sim-job") == {0: 1, 1: 1}
