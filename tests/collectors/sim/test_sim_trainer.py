"""The simulated job talks to a daemon through the real torch-free control-socket client."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.state import VirtualClock
from gputuned.collectors.sim.trainer import connect
from gputuned.protocol import STAT_KEYS
from gputuned.trainer_plugin.client import DaemonClient
from gputuned.trainer_plugin.testing import FakeDaemon


def test_reports_reach_daemon_and_batch_decisions_apply() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "c.sock")
        script = [(2, {"id": "d-1", "batch_size": 512}), (4, {"id": "d-2", "batch_size": 2048}),
                  (6, {"id": "d-3", "profile_steps": 5})]
        with FakeDaemon(path, script=script) as daemon:
            clock = VirtualClock()
            backend = build_sim_node("a40", 2, "imagenet-resnet50", None, clock, seed=0)
            reporter = connect(backend, path, job_name="sim-resnet", make_client=DaemonClient)
            try:
                assert reporter.client.wait_connected(5.0)
                def done(fd: FakeDaemon) -> bool:
                    return len(fd.of_type("ack")) >= 3 and bool(fd.of_type("profile_result"))

                for i in range(100):
                    clock.advance(5.0)
                    reporter.pump()
                    daemon.wait_for(lambda fd, n=i + 1: len(fd.of_type("report")) >= n, 1.0)
                    if done(daemon):
                        break
                    time.sleep(0.02)  # let the client thread receive scripted decisions
                assert daemon.wait_for(done, 5.0)
            finally:
                reporter.client.close()
            reports = daemon.of_type("report")
            acks = {a["id"]: a for a in daemon.of_type("ack")}
    assert acks["d-1"]["ok"] and not acks["d-2"]["ok"] and "out of memory" in acks["d-2"]["error"]
    assert backend.job.batch_size == 512
    last = reports[-1]["stats"]
    assert set(last) & set(STAT_KEYS) >= {"step_time_s", "samples_per_s", "goodput", "oom_total", "batch_size",
                                          "grad_noise_scale", "samples_total", "comm_time_s", "data_wait_s"}
    assert last["oom_total"] == 1.0 and last["batch_size"] == 512.0
    assert reports[-1]["steps"] >= 1 and reports[-1]["step"] > reports[0]["step"]
