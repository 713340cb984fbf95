"""The plugin against the daemon's real control server: reports accepted, decisions applied and acked."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer, NoLeaderError
from gputuned.daemon.core.store import Store
from gputuned.trainer_plugin.plugin import TrainingPlugin


def test_plugin_with_the_real_control_server(tmp_path):
    torch.set_num_threads(1)
    srv = ControlServer(ControlConfig(socket_path=tmp_path / "control.sock", report_interval_s=0.05), Store(60))
    srv.start()
    applied = []
    plugin = TrainingPlugin(job="e2e-job", batch_size=32, socket_path=str(tmp_path / "control.sock"),
                            sync_interval=2, max_batch_size=256, on_batch_size=lambda g, m, a: applied.append(g))
    stop = threading.Event()
    model = torch.nn.Linear(8, 4)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))

    def loop() -> None:
        while not stop.is_set():
            with plugin.step():
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                plugin.record(loss=loss)
            time.sleep(0.002)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        assert plugin.client.wait_connected(5)
        ident = None
        deadline = time.monotonic() + 5
        while ident is None and time.monotonic() < deadline:
            try:
                ident = srv.send_decision("e2e-job", {"batch_size": 64})
            except NoLeaderError:
                time.sleep(0.02)
        ack = srv.wait_ack(ident, 10)
        assert ack is not None and ack["ok"] is True and ack["applied_step"] > 0
        refused = srv.wait_ack(srv.send_decision("e2e-job", {"batch_size": 1000}), 10)
        assert refused["ok"] is False and "outside" in refused["error"]
        prof = srv.send_decision("e2e-job", {"profile_steps": 3})
        assert srv.wait_ack(prof, 20)["ok"] is True
        deadline = time.monotonic() + 5
        while prof not in srv.book.profile_results and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.book.profile_results[prof]["top_ops"]
        deadline = time.monotonic() + 5
        while srv.reports_total < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.reports_total >= 3
        assert not srv.rejected, srv.rejected  # nothing the plugin sent was refused as malformed
    finally:
        stop.set()
        worker.join()
        plugin.close()
        srv.stop()
    assert applied == [64] and plugin.lr_factor == pytest.approx(1.0)
