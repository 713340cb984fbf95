"""Ranks placed on GPUs from NVML's process lists: by pid, by UUID among the pid's GPUs, never by a claim alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testkit import StillNode

from gputuned import protocol as P
from gputuned.collectors.attribution import PROCESS_INFO, ProcessCollector, RankClaim, attribute
from gputuned.collectors.device import GPUProcess
from gputuned.collectors.nvml import open_gpus
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.record.child import hello, read_frame


def uuid(be: StillNode, i: int) -> str:
    return be.devices[i].uuid


def test_the_simulated_nvml_lists_each_gpus_processes_with_their_memory(still_node: StillNode) -> None:
    still_node.devices[2].process_pids = [4242, 4343]
    still_node.devices[2].memory_used_bytes = 8 << 30
    gpus = open_gpus(sim_nvml)
    assert gpus[2].processes() == [GPUProcess(4242, 4 << 30), GPUProcess(4343, 4 << 30)]
    assert gpus[0].processes() == []


def test_ranks_are_placed_by_pid_in_an_order_unlike_rank_order() -> None:
    gpus = {0: ("GPU-a", [GPUProcess(200, 1)]), 1: ("GPU-b", []), 2: ("GPU-c", [GPUProcess(100, 1)]),
            3: ("GPU-d", [])}
    att = attribute([RankClaim("j", 0, 100), RankClaim("j", 1, 200)], gpus)
    assert att.rank_map("j") == {0: 2, 1: 0}
    assert att.gpus_of("j") == {0, 2}
    assert [r.by for r in att.ranks] == ["pid", "pid"]


def test_a_uuid_picks_only_among_the_gpus_the_ranks_own_process_is_on() -> None:
    everywhere = [GPUProcess(100, 1)]
    gpus = {0: ("GPU-a", everywhere), 1: ("GPU-b", everywhere), 2: ("GPU-c", []), 3: ("GPU-d", everywhere)}
    att = attribute([RankClaim("j", 0, 100, "GPU-d"), RankClaim("j", 1, 100, "GPU-c")], gpus)
    assert att.rank_map("j") == {0: 3}  # rank 1 claims GPU-c, which its process does not use: not placed
    assert att.gpus_of("j") == {0, 1, 3}


RANK_SCRIPT = """
import json, socket, sys, time
from gputuned import protocol as P
msg = json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(P.encode(msg))
print("connected", flush=True)
time.sleep(30)
"""


def rank_process(path: Path, msg: dict[str, Any]) -> subprocess.Popen[str]:
    """A rank in its own process, holding its connection after hello."""
    import json

    proc = subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(path), json.dumps(msg)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
    return proc


def claims_when(srv: ControlServer, n: int) -> list[RankClaim]:
    deadline = time.monotonic() + 5
    while len(srv.jobs.claims()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return srv.jobs.claims()


def test_ranks_in_their_own_processes_are_matched_by_pid_through_the_control_socket(
        still_node: StillNode, control_server: ControlServer) -> None:
    procs = [rank_process(control_server.cfg.socket_path, {**hello(job="j", rank=r, world=2), "cuda_uuid": uuid(still_node, 1)})
             for r in (0, 1)]
    try:
        still_node.devices[2].process_pids = [procs[0].pid]  # rank 0 on GPU 2, rank 1 on GPU 0
        still_node.devices[0].process_pids = [procs[1].pid]
        collector = ProcessCollector(open_gpus(sim_nvml), control_server.jobs.claims)
        claims_when(control_server, 2)
        samples = collector.collect()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert collector.latest.rank_map("j") == {0: 2, 1: 0}  # the UUID they both claimed (GPU 1) is not used
    info = {dict(lab)["rank"]: dict(lab) for name, lab, _ in samples if name == PROCESS_INFO}
    assert info["0"] == {"gpu": "2", "uuid": uuid(still_node, 2), "job": "j", "rank": "0", "pid": str(procs[0].pid)}
    assert info["1"]["gpu"] == "0"


def test_ranks_of_one_process_on_several_gpus_are_matched_by_uuid(still_node: StillNode, control_server: ControlServer) -> None:
    for d in still_node.devices:
        d.process_pids = [os.getpid()]
    socks = []
    for rank, gpu in ((0, 3), (1, 1)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(control_server.cfg.socket_path))
        s.sendall(P.encode({**hello(job="j", rank=rank, world=2), "cuda_uuid": uuid(still_node, gpu)}))
        assert read_frame(s)["type"] == "welcome"
        socks.append(s)
    collector = ProcessCollector(open_gpus(sim_nvml), control_server.jobs.claims)
    collector.collect()
    for s in socks:
        s.close()
    assert collector.latest.rank_map("j") == {0: 3, 1: 1}
    assert {r.by for r in collector.latest.ranks} == {"uuid"}


def test_a_rank_claiming_another_processes_pid_is_not_placed_on_its_gpu(still_node: StillNode, control_server: ControlServer) -> None:
    still_node.devices[1].process_pids = [os.getpid()]  # the real rank's process (this one) runs on GPU 1
    spoof = {**hello(job="j", rank=0, world=1), "pid": os.getpid(), "cuda_uuid": uuid(still_node, 1)}
    proc = rank_process(control_server.cfg.socket_path, spoof)
    try:
        claims = claims_when(control_server, 1)
        collector = ProcessCollector(open_gpus(sim_nvml), control_server.jobs.claims)
        collector.collect()
    finally:
        proc.kill()
        proc.wait()
    assert [c.pid for c in claims] == [proc.pid]  # the peer's pid (SO_PEERCRED), not the claimed one
    assert collector.latest.rank_map("j") == {} and collector.latest.gpus_of("j") == set()


class CountingGPU:
    """A GPU whose process list is scripted and whose reads are counted."""

    def __init__(self, index: int) -> None:
        from gputuned.collectors.device import GPUIdentity

        self.identity = GPUIdentity(index, f"GPU-{index}", "H100", f"0000:0{index}:00.0", 80 << 30)
        self.pids: list[int] = []
        self.reads = 0

    def processes(self) -> list[GPUProcess]:
        self.reads += 1
        return [GPUProcess(pid, 1 << 30) for pid in self.pids]


def test_process_lists_are_read_every_refresh_ticks_and_at_once_when_a_rank_comes_or_goes() -> None:
    gpus = [CountingGPU(0), CountingGPU(1)]
    claims: list[RankClaim] = []
    collector = ProcessCollector(gpus, lambda: list(claims), refresh_ticks=3)  # type: ignore[arg-type]
    first = collector.collect()
    gpus[1].pids = [100]  # the rank's process starts; the lists are not read again yet
    assert collector.collect() == first and gpus[0].reads == 1
    claims.append(RankClaim("j", 0, 100))  # its hello: read at once, so the rank is placed this tick
    placed = collector.collect()
    assert gpus[0].reads == 2 and collector.latest.rank_map("j") == {0: 1}
    assert [s for s in placed if s[0] == PROCESS_INFO] == [
        (PROCESS_INFO, (("gpu", "1"), ("uuid", "GPU-1"), ("job", "j"), ("rank", "0"), ("pid", "100")), 1.0)]
    gpus[0].pids = [7]
    collector.collect()
    collector.collect()
    assert gpus[0].reads == 2  # 3 ticks since the last read: due now
    assert any(s[1][:1] == (("gpu", "0"),) and s[1][-1:] == (("pid", "7"),) for s in collector.collect())
    assert gpus[0].reads == 3
    claims.clear()  # the rank left: read at once, and its info series goes
    assert not [s for s in collector.collect() if s[0] == PROCESS_INFO] and gpus[0].reads == 4


def test_every_tick_reads_with_refresh_ticks_1() -> None:
    gpus = [CountingGPU(0)]
    collector = ProcessCollector(gpus, refresh_ticks=1)  # type: ignore[list-item]
    for _ in range(4):
        collector.collect()
    assert gpus[0].reads == 4


def test_between_reads_the_joined_samples_are_served_again_label_sets_and_all() -> None:
    """Neither the lists nor the ranks moved: the same label tuples (the store compares them by identity first)."""
    gpus = [CountingGPU(0)]
    gpus[0].pids = [100]
    collector = ProcessCollector(gpus, lambda: [RankClaim("j", 0, 100)], refresh_ticks=3)  # type: ignore[list-item]
    first, again = collector.collect(), collector.collect()
    assert again == first and again is not first and all(a[1] is b[1] for a, b in zip(again, first, strict=True))
    assert len(first) == 3 and collector.latest.rank_map("j") == {0: 0}
    gpus[0].pids = [100, 200]
    collector.collect()
    assert len(collector.collect()) == 4 and gpus[0].reads == 2  # the read when due is joined afresh
