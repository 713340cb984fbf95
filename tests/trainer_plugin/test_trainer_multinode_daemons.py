"""Two nodes x two ranks of the shipped trainer, each node's ranks reporting to a real `gputuned run`
on a simulated node of two GPUs: both daemons tune their own GPUs, only the leader's daemon
decides the batch size (applied on all four ranks at the same step), and a straggler on node 1
makes node 0's daemon lower only GPUs off the job's critical path.

The simulated NVML lists only the simulated job's process, never a CPU trainer's: the process
collector is off, so each daemon places its ranks on its GPUs in order (the k-th local rank on
GPU k) and the straggler, node 1's first rank, runs on node 1's GPU 0.

Run as a test file by pytest; run as a script by torchrun it is one rank of the job
(``torchrun ... test_trainer_multinode_daemons.py SOCKET OUT STOP_FILE STRAGGLER``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SLOW_S = 0.25  # extra compute per step of the straggler (node 1's first rank)
JOB = "gputuned-train-mn-daemons"  # the trainer's default name for torchrun's --rdzv-id mn-daemons
TOP_MW = 700_000  # the simulated H100s' default power limit


def _start_daemon(root: Path) -> Any:
    """A real `gputuned run` on a simulated node of two GPUs (physics model), tuner on, acting every second."""
    from testkit import free_port

    from gputuned.daemon.record.child import DaemonProcess, runtime_config

    data = runtime_config(root, gpus=2, interval=0.5,
                          tuner={"enabled": True, "interval_s": 1.0, "objective": "throughput", "tune_clocks": False},
                          sim={"job": False}, forecast={"enabled": False}, control={"report_interval_s": 0.25},
                          exporter={"listen_port": free_port()})
    data["sim"].pop("script")  # the physics model: energy counters advance
    data["collectors"]["processes"] = {"enabled": False}
    return DaemonProcess(root, config=data)


def _changes(daemon: Any) -> dict[tuple[str, str, str], float]:
    """gputuned_knob_changes_total from the daemon's /metrics, by (knob, gpu or job, origin)."""
    from prometheus_client.parser import text_string_to_metric_families
    from testkit import http_get

    port = daemon.data["exporter"]["listen_port"]
    out = {}
    for fam in text_string_to_metric_families(http_get(f"http://127.0.0.1:{port}/metrics").decode()):
        for s in fam.samples:
            if s.name == "gputuned_knob_changes_total":
                lab = s.labels
                out[(lab["knob"], lab.get("gpu", lab.get("job", "")), lab["origin"])] = s.value
    return out


def _power_limits(daemon: Any) -> list[int]:
    """Each GPU's power limit (mW) as `gputuned status` reports it."""
    return [int(g["current"]["power_limit"]) for g in daemon.admin("status")["status"]["gpus"]]


@dataclass
class Seen:
    """Both daemons as last read: knob changes from /metrics, power limits (mW) from `gputuned status`."""

    changes: list[dict[tuple[str, str, str], float]] = field(default_factory=list)
    limits: list[list[int]] = field(default_factory=list)

    def read(self, daemons: list[Any]) -> Seen:
        self.changes = [_changes(d) for d in daemons]
        self.limits = [_power_limits(d) for d in daemons]
        return self

    def tuned(self) -> bool:
        """Node 0's daemon decided a batch and lowers both its GPUs, node 1's lowers its rank 3's alone."""
        batch = any(k == "batch_size" and o == "tuner" for k, _, o in self.changes[0])
        (a, b), (c, d) = self.limits
        return batch and a < TOP_MW and b < TOP_MW and c == TOP_MW and d < TOP_MW


def test_a_rank_whose_steps_only_waited_keeps_its_place_off_the_critical_path() -> None:
    """A fast rank's compute can read 0 (its whole step waited for the straggler): the exchange, the
    daemon's local ranks and Perseus keep it, rather than plan this node's GPUs from its ranks alone."""
    import torch

    from gputuned.daemon.app.rank_times import COMPUTE_SECONDS, job_timings, local_ranks
    from gputuned.daemon.core.store import Store
    from gputuned.trainer_plugin.exchange import DecisionExchange
    from gputuned.tuner.decision.perseus import plan_steps

    ex = DecisionExchange(False, True, torch.device("cpu"), rank=1, world=3)
    ex.add_step(0.0, 0.05)
    ex.start(0, 0, 1.0, 10, False, None)
    assert ex.finish().rank_times == {1: (0.0, 0.05)}
    store = Store(10)
    store.publish("trainer", 1.0, [(COMPUTE_SECONDS, (("job", "j"), ("rank", str(r))), c) for r, c in ((0, 0.0), (1, 0.02))])
    local = local_ranks(store, "j")
    assert local == [(0, 0.0), (1, 0.02)]
    timings = job_timings(local, {0: "0", 1: "1"}, {0: (0.0, 0.05), 1: (0.02, 0.03), 2: (0.06, 0.0)})
    assert [t.rank for t in timings] == [0, 1, 2]
    top = {"0": (100.0, 400.0), "1": (100.0, 400.0)}
    assert plan_steps(timings, {"0": 400.0, "1": 400.0}, top, 10.0) == {"0": 390.0, "1": 390.0}  # rank 2 is critical


@pytest.mark.slow
def test_two_real_daemons_tune_their_own_gpus_and_only_the_leaders_decides_the_batch(tmp_path: Path) -> None:
    from runtime_kit import wait_for
    from testkit import free_port

    from gputuned.trainer_plugin.commands import torchrun_args

    daemons = [_start_daemon(tmp_path / f"node{k}") for k in (0, 1)]
    stop_file, out = tmp_path / "stop", tmp_path / "out.json"
    procs: list[subprocess.Popen[str]] = []
    try:
        port = free_port()  # the ranks start beside the daemons: their plugins connect once the sockets listen
        for k, d in enumerate(daemons):
            launch = torchrun_args(argparse.Namespace(nproc=2, max_restarts=0, nnodes=2, node_rank=k,
                                                      rdzv_endpoint=f"127.0.0.1:{port}", rdzv_id="mn-daemons"))
            cmd = [sys.executable, "-m", "torch.distributed.run", *launch, __file__, str(d.socket_path), str(out),
                   str(stop_file), "1" if k == 1 else "0"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"}))
        for d in daemons:
            d.wait_ready(30)
        seen = Seen()
        assert wait_for(lambda: seen.read(daemons).tuned(), 75, 0.5), (seen, [d.log()[-3000:] for d in daemons])
        jobs = [d.admin("status")["status"]["jobs"] for d in daemons]
    finally:
        stop_file.write_text("stop")
        logs = [p.communicate(timeout=60)[0] for p in procs]
        for d in daemons:
            d.signal(signal.SIGTERM)
        for d in daemons:
            d.stop()
            d.close()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    # both daemons changed their own GPUs; node 1's straggling rank 2 (its GPU 0) holds the job's critical
    # path: node 0 slows both its GPUs, node 1 only rank 3's (Seen.tuned), and nothing else moved a power limit
    c0, c1 = seen.changes
    assert not any(k == "power_limit" and g == "0" for k, g, _ in c1), c1
    assert {o for k, _, o in (*c0, *c1) if k == "power_limit"} == {"perseus"}, (c0, c1)
    # the batch: decided by the leader's daemon alone, on node 0
    assert any(k == "batch_size" and g == JOB and o == "tuner" for k, g, o in c0), (c0, jobs)
    assert not any(k == "batch_size" for k, _, _ in c1), c1
    results = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(4)]
    assert [r["local_rank"] for r in results] == [0, 1, 0, 1] and {r["job"] for r in results} == {JOB}
    batches = [r["batches"] for r in results]
    # every rank ran each batch size from the same step: [step, size] at each change, the first the job's own
    assert len(batches[0]) > 1 and batches[0][0][1] == 64 and all(b == batches[0] for b in batches), batches


def worker(socket_path: str, out: str, stop_file: str, straggler: bool) -> None:
    """One rank of the digits trainer; node 1's first rank computes SLOW_S longer each step."""
    import torch

    from gputuned.trainer_plugin.config import parse_config
    from gputuned.trainer_plugin.process_group import exit_distributed
    from gputuned.trainer_plugin.trainer import Callbacks, Trainer

    torch.set_num_threads(1)
    slow = straggler and int(os.environ["LOCAL_RANK"]) == 0
    deadline = time.monotonic() + 100
    batches: list[list[int]] = []

    def on_loss(trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        if slow:
            time.sleep(SLOW_S)  # before backward: the other ranks wait for it in the gradient all-reduce
        return loss

    def on_step_end(trainer: Trainer) -> None:
        size = trainer.plugin.batch_size  # what the next step runs with
        if not batches or batches[-1][1] != size:
            batches.append([trainer.step, size])
        if trainer.rank == 0 and (os.path.exists(stop_file) or time.monotonic() > deadline):
            trainer.plugin.request_stop()

    cfg = parse_config({}, {"plugin.socket": socket_path, "plugin.sync_period_s": 0.5, "train.epochs": 100_000,
                            "train.eval_every_epoch": False, "train.log_every": 1_000_000, "data.max_batch_size": 512})
    trainer = Trainer(cfg, Callbacks(on_loss=on_loss, on_step_end=on_step_end))
    trainer.fit()
    client = trainer.plugin.client
    Path(f"{out}.rank{trainer.rank}").write_text(json.dumps({
        "batches": batches, "job": client.job if client else None, "local_rank": client.local_rank if client else None}))
    trainer.close()
    exit_distributed(0)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1")
