"""Every node of a multi-node job tuned: each node's daemon tunes its own GPUs from its own ranks,
the leader's daemon alone decides the batch size, and Perseus slows only GPUs off the job-wide
critical path.

Run as a test file by pytest; run as a script by torchrun it is the worker of the two-node test
(``torchrun ... tests/trainer_plugin/test_trainer_multinode.py SOCKET OUT STOP_FILE STRAGGLER``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors import families as F
from gputuned.daemon.actuation.actuator import Result
from gputuned.daemon.app.components import RealTrainerComponent
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer, NoLeaderError
from gputuned.daemon.core.store import Store
from gputuned.trainer_plugin.commands import torchrun_args
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.moves import move

TOP_W = 400.0
FAST_S, SLOW_S = 0.015, 0.06  # compute per step of a rank and of the straggler


@dataclass
class NodeGPUs:
    """Two GPUs of one node as the tuner sees them: series in the store, an actuator recording each change."""

    decider: Any = None  # the control server (batch decisions go through it)
    limits: dict[int, float] = field(default_factory=lambda: {0: TOP_W, 1: TOP_W})
    energy: dict[int, float] = field(default_factory=lambda: {0: 0.0, 1: 0.0})
    changes: list[tuple[int, float, str]] = field(default_factory=list)  # (gpu, watts, origin)
    batch_asked: list[int] = field(default_factory=list)

    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Result:
        self.changes.append((gpu, watts, origin))
        self.limits[gpu] = watts
        return Result(True, "ok", "", watts)

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]:
        return {"power_limit": (100_000, 400_000)}

    def change(self, target: int | str, knob_name: str, value: Any, origin: str = "operator") -> Result:
        self.batch_asked.append(int(value))
        ident = self.decider.send_decision(str(target), {knob_name: int(value)})
        return Result(True, "pending", "", value, ident)

    def acknowledged(self, ident: str) -> Result | None:
        ack = self.decider.wait_ack(ident, 0.0)
        return None if ack is None else Result(bool(ack.get("ok")), "ok", "", None, ident)

    def publish(self, store: Store, t: float, dt: float) -> None:
        out = []
        for i, limit in self.limits.items():
            lab = (("gpu", str(i)), ("uuid", f"GPU-{i}"))
            power = 0.8 * limit
            self.energy[i] += power * dt
            out += [(F.GPU_POWER_LIMIT, lab, limit), (F.GPU_POWER_LIMIT_MIN, lab, 100.0),
                    (F.GPU_POWER_LIMIT_MAX, lab, TOP_W), (F.GPU_SM_CLOCK_MAX, lab, 1.98e9),
                    (F.GPU_SM_CLOCK, lab, 1.98e9), (F.GPU_POWER, lab, power), (F.GPU_ENERGY, lab, self.energy[i]),
                    (F.GPU_UTIL, lab, 0.9), (F.GPU_CLOCK_EVENT_MASK, lab, 0.0)]
        store.publish("gpu", t, out)

    def lowered(self, gpu: int) -> bool:
        """Whether Perseus lowered this GPU's limit below the top."""
        return any(g == gpu and w < TOP_W and o == "perseus" for g, w, o in self.changes)


@dataclass
class Ranks:
    """The control server as the tuner sees it on one node: the job's ranks here and every rank's times."""

    here: list[int]
    times: dict[int, tuple[float, float]]
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        self.sent.append(payload)
        return f"d-{len(self.sent)}"

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None:
        return {"ok": True}

    def connected_jobs(self) -> dict[str, list[int]]:
        return {"j": list(self.here)}

    def rank_times(self, job: str) -> dict[int, tuple[float, float]]:
        return dict(self.times)


def _drive(tmp_path: Path, here: list[int], times: dict[int, tuple[float, float]],
           chooser: int = move(0, 0)) -> tuple[TuningComponent, NodeGPUs, Ranks]:
    """One node's tuner over 60 scripted seconds; its ranks ``here`` report compute times from ``times``."""
    ranks = Ranks(here, times)
    gpus = NodeGPUs(decider=ranks)
    store = Store(200)
    conf = TuningConfig(objective="energy_slowdown", interval_s=2.0, chooser="climber",
                        pause_file=tmp_path / "tuner.pause", tune_clocks=False)
    tuner = TuningComponent(store, gpus, ranks, [0, 1], conf, chooser=lambda obs: chooser)
    local = {0: (0.02, 0.0), 1: (0.03, 0.0), 2: (0.06, 0.0), 3: (0.02, 0.0)}
    for s in range(60):
        t = 1000.0 + s
        gpus.publish(store, t, 1.0)
        store.publish("trainer", t, [(name, (("job", "j"), ("rank", str(r))), v) for r in here for name, v in (
            ("gputuned_trainer_samples_total", 1000.0 * s), ("gputuned_trainer_samples_per_second", 1000.0),
            ("gputuned_trainer_goodput_samples_per_second", 1000.0), ("gputuned_trainer_batch_size", 64.0),
            ("gputuned_trainer_compute_seconds", local[r][0]))])
        tuner.tick(t)
    return tuner, gpus, ranks


JOB_TIMES = {0: (0.02, 0.04), 1: (0.03, 0.03), 2: (0.06, 0.0), 3: (0.02, 0.04)}


def test_a_node_without_the_leader_tunes_its_gpus_and_leaves_the_batch_to_the_leader(tmp_path: Path) -> None:
    tuner, gpus, ranks = _drive(tmp_path, [2, 3], JOB_TIMES, chooser=move(0, +1))
    assert tuner.node is not None and tuner.node.rank == 2 and not tuner.node.leader
    assert ranks.sent == [] and gpus.batch_asked == []  # the chooser's batch moves are not this node's to make
    with pytest.raises(ValueError, match="leader"):
        tuner.node.request_batch(128)
    # rank 2 (GPU 0) is the job's critical path: only rank 3's GPU slows down
    assert gpus.lowered(1) and not gpus.lowered(0)
    leader, _, leader_ranks = _drive(tmp_path, [0, 1], JOB_TIMES, chooser=move(0, +1))
    assert leader.node is not None and leader.node.leader and leader_ranks.sent  # the leader's daemon decides


def test_perseus_on_a_node_off_the_critical_path_lowers_all_its_gpus(tmp_path: Path) -> None:
    _, gpus, _ = _drive(tmp_path, [0, 1], JOB_TIMES)
    assert gpus.lowered(0) and gpus.lowered(1)
    # an older plugin (no job-wide times): this node's slower rank looks critical and keeps its GPU
    _, alone, _ = _drive(tmp_path, [0, 1], {})
    assert alone.lowered(0) and not alone.lowered(1)


def test_gputuned_train_launches_each_node_with_its_rendezvous(tmp_path: Path) -> None:
    def args(**kw: Any) -> argparse.Namespace:
        base = {"nproc": 2, "max_restarts": 3, "nnodes": 1, "node_rank": None, "rdzv_endpoint": None, "rdzv_id": None}
        return argparse.Namespace(**{**base, **kw})

    one, two = torchrun_args(args()), torchrun_args(args())
    run_id = one[one.index("--rdzv-id") + 1]
    assert run_id != two[two.index("--rdzv-id") + 1]  # two runs of one node never share a job name
    node1 = torchrun_args(args(nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400", rdzv_id="exp7"))
    assert node1 == ["--nnodes", "2", "--nproc-per-node", "2", "--max-restarts", "3", "--rdzv-backend", "static",
                     "--rdzv-endpoint", "10.0.0.1:29400", "--node-rank", "1", "--rdzv-id", "exp7"]
    c10d = torchrun_args(args(nnodes=2, rdzv_endpoint="10.0.0.1:29400"))
    assert "c10d" in c10d and "--rdzv-id" not in c10d  # rank 0 draws the id and sends it to every rank
    for bad in ({"nnodes": 2}, {"nnodes": 2, "rdzv_endpoint": "h:0"}, {"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"},
                {"rdzv_id": "a b"}):
        with pytest.raises(ValueError):
            torchrun_args(args(**bad))
    trainer = RealTrainerComponent(Path("examples/digits.toml"), str(tmp_path / "c.sock"))
    assert not any("runs/digits" in part for part in trainer.cmd) and any("checkpoint.dir=" in p for p in trainer.cmd)


def test_reports_carry_the_job_wide_rank_times_bounded_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from gputuned import protocol as P
    from gputuned.daemon.control.reports import JobTable
    from gputuned.trainer_plugin.exchange import DecisionExchange, agreed_run_id

    ex = DecisionExchange(False, True, torch.device("cpu"), rank=1, world=3)
    ex.add_step(0.04, 0.01)
    ex.add_step(0.02, 0.03)
    ex.start(0, 0, 1.0, 10, False, None)
    assert ex.finish().rank_times == {1: (pytest.approx(0.03), pytest.approx(0.02))}
    ex.rank_times = {r: (0.01 * r, 0.0) for r in range(400)}
    sent = ex.report_times()
    assert len(sent) == P.MAX_RANK_TIMES and [1, 0.01, 0.0] in sent and [399, 3.99, 0.0] in sent
    P.message("report", step=1, steps=1, stats={}, rank_times=sent)
    P.message("report", step=1, steps=1, stats={})  # an older plugin sends none
    for bad in ([[0, 0.1]], [[0, 0.1, 0.0], [0, 0.2, 0.0]], [[0, -1.0, 0.0]], [[1 << 20, 0.1, 0.0]], sent + [[999, 1, 1]]):
        with pytest.raises(P.ProtocolError):
            P.message("report", step=1, steps=1, stats={}, rank_times=bad)
    table = JobTable()
    for rank in (2, 3):
        table.connect("j", rank, uid=1, pid=10 + rank, cid=rank)
    table.update("j", 2, 5, 100.0, {}, {0: (0.02, 0.0), 2: (0.06, 0.0)})
    table.update("j", 3, 5, 101.0, {}, {})  # a report without times keeps the rank's last ones
    assert table.rank_times("j") == {0: (0.02, 0.0), 2: (0.06, 0.0)}
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert agreed_run_id(False) != agreed_run_id(False)  # torchrun's default id names no job
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "exp7")
    assert agreed_run_id(False) == "exp7"


# -- two nodes x two ranks under torchrun, a daemon each ----------------------------------------


class NodeDaemon:
    """One node's daemon parts: its control server, store, scripted GPUs and live tuner, ticked by a thread."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.store = Store(300)
        self.server = ControlServer(ControlConfig(socket_path=root / "control.sock", report_interval_s=0.2), self.store)
        self.gpus = NodeGPUs(decider=self.server)
        conf = TuningConfig(objective="energy_slowdown", interval_s=1.0, chooser="climber",
                            pause_file=root / "tuner.pause", tune_clocks=False)
        self.tuner = TuningComponent(self.store, self.gpus, self.server, [0, 1], conf, chooser=lambda obs: move(0, 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.server.start()
        self._thread.start()

    def _run(self) -> None:
        last = time.time()
        while not self._stop.wait(0.1):
            now = time.time()
            self.gpus.publish(self.store, now, now - last)
            self.server.tick(now)
            self.tuner.tick(now)
            last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.1)
    return bool(pred())


@pytest.mark.slow
def test_two_nodes_each_tuned_by_their_daemon_with_one_global_batch(tmp_path: Path) -> None:
    nodes = [NodeDaemon(tmp_path / f"node{k}") for k in (0, 1)]
    for node in nodes:
        node.start()
    stop_file, out = tmp_path / "stop", tmp_path / "out.json"
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    try:
        for k, node in enumerate(nodes):
            launch = torchrun_args(argparse.Namespace(nproc=2, max_restarts=0, nnodes=2, node_rank=k,
                                                      rdzv_endpoint=f"127.0.0.1:{port}", rdzv_id="mn-run"))
            cmd = [sys.executable, "-m", "torch.distributed.run", *launch, __file__,
                   str(node.server.cfg.socket_path), str(out), str(stop_file), "1" if k == 1 else "0"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"}))
        job = "gputuned-train-mn-run"
        assert _wait(lambda: all(n.server.connected_jobs().get(job) for n in nodes)
                     and all(len(n.server.connected_jobs()[job]) == 2 for n in nodes), 60), [p.poll() for p in procs]
        assert nodes[0].server.connected_jobs()[job] == [0, 1] and nodes[1].server.connected_jobs()[job] == [2, 3]
        with pytest.raises(NoLeaderError):  # node 1's daemon cannot decide the batch: the leader is not its
            nodes[1].server.send_decision(job, {"batch_size": 128})
        ack = nodes[0].server.wait_ack(nodes[0].server.send_decision(job, {"batch_size": 128}), 20)
        assert ack is not None and ack["ok"], ack
        # the straggler (rank 2, GPU 0 of node 1) holds the job's critical path: node 0 lowers both its
        # GPUs, node 1 only rank 3's
        done = _wait(lambda: nodes[0].gpus.lowered(0) and nodes[0].gpus.lowered(1) and nodes[1].gpus.lowered(1), 40)
        assert done, (nodes[0].gpus.changes, nodes[1].gpus.changes, nodes[0].server.rank_times(job))
        assert not nodes[1].gpus.lowered(0)
        tuned = [n.tuner.node for n in nodes]
        assert tuned[0] is not None and tuned[0].leader and tuned[1] is not None and (tuned[1].rank, tuned[1].leader) == (2, False)
        assert nodes[0].gpus.batch_asked == nodes[1].gpus.batch_asked == []  # decisions here came from the test
    finally:
        stop_file.write_text("stop")
        logs = [p.communicate(timeout=60)[0] for p in procs]
        for node in nodes:
            node.stop()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    results = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(4)]
    assert [r["local_rank"] for r in results] == [0, 1, 0, 1]
    applied = [r["applied"] for r in results]
    assert applied[0] and [a[1] for a in applied[0]] == [128] and all(a == applied[0] for a in applied)


def worker(socket_path: str, out: str, stop_file: str, straggler: bool) -> None:
    """One rank: steps of FAST_S compute (SLOW_S on node 1's first rank), a gradient all-reduce, the plugin."""
    import torch
    import torch.distributed as dist

    from gputuned.trainer_plugin.exchange import agreed_run_id
    from gputuned.trainer_plugin.plugin import TrainingPlugin
    from gputuned.trainer_plugin.process_group import exit_distributed, init_distributed

    torch.set_num_threads(1)
    init_distributed()
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    applied: list[list[int]] = []
    plugin = TrainingPlugin(job=f"gputuned-train-{agreed_run_id(True)}", batch_size=64, socket_path=socket_path,
                            max_batch_size=256, sync_period_s=0.2,
                            on_batch_size=lambda g, m, a: applied.append([plugin.step_count, g]))
    grad = torch.ones(256)
    deadline = time.monotonic() + 120
    while not plugin.stop_agreed:
        with plugin.step():
            time.sleep(SLOW_S if straggler and local == 0 else FAST_S)
        dist.all_reduce(grad)  # the gradient exchange: a fast rank waits here for the slowest
        if rank == 0 and (os.path.exists(stop_file) or time.monotonic() > deadline):
            plugin.request_stop()
    assert plugin.client is not None
    Path(f"{out}.rank{rank}").write_text(json.dumps({"applied": applied, "local_rank": plugin.client.local_rank}))
    plugin.close()
    exit_distributed(0)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1")
