"""The torch-free control-socket client against the in-process fake daemon."""

from __future__ import annotations

import json
import sys
import time

import pytest

from gputuned.trainer_plugin.client import DaemonClient
from gputuned.trainer_plugin.testing import FakeDaemon


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "control.sock")


def test_client_imports_no_torch():
    import subprocess

    code = "import sys, gputuned.trainer_plugin.client; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_hello_report_decision_ack_roundtrip(sock_path):
    script = [(2, {"id": "d-1", "batch_size": 512})]
    with FakeDaemon(sock_path, script=script) as daemon, DaemonClient(
        sock_path, job="job-a", rank=0, world_size=2, batch_size=256
    ) as client:
        assert client.wait_connected(5)
        hello = daemon.hellos[0]
        assert hello["job"] == "job-a" and hello["leader"] is True and hello["seq"] == 0
        assert client.report_interval_s == pytest.approx(0.05)
        decision = None
        for step in range(200):
            client.report(step, 1, {"loss": 1.0, "step_time_s": 0.1, "bad": float("nan")})
            decision = client.poll_decision()
            if decision:
                break
            time.sleep(0.01)
        assert decision == {"id": "d-1", "batch_size": 512}
        client.ack("d-1", True, applied_step=10)
        assert daemon.wait_for(lambda d: d.of_type("ack"))
        ack = daemon.of_type("ack")[0]
        assert ack["ok"] is True and ack["applied_step"] == 10
        report = daemon.of_type("report")[0]
        assert "bad" not in report["stats"] and report["stats"]["loss"] == 1.0
        seqs = [m["seq"] for m in daemon.messages]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_malformed_decisions_are_ignored_and_logged(sock_path, caplog):
    bad = [
        (1, b"{not json"),
        (1, {"id": "d-1", "batch_size": "big"}),
        (1, {"id": "d-2"}),
        (1, {"id": "d-3", "batch_size": -4}),
        (1, json.dumps({"v": 9, "type": "decision", "seq": 1, "id": "x", "batch_size": 8}).encode()),
        (1, {"id": "d-4", "batch_size": 64}),
    ]
    with FakeDaemon(sock_path, script=bad) as daemon, DaemonClient(sock_path, job="j", rank=0) as client:
        assert client.wait_connected(5)
        client.report(1, 1, {"loss": 1.0})
        assert daemon.wait_for(lambda d: len(d.of_type("error")) >= 5)
        deadline = time.monotonic() + 5
        decision = None
        while decision is None and time.monotonic() < deadline:
            decision = client.poll_decision()
            time.sleep(0.01)
        assert decision == {"id": "d-4", "batch_size": 64}
        assert client.poll_decision() is None
        assert client.malformed_total == 5
        assert client.connected
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 5


def test_absent_daemon_never_blocks_and_reconnects(sock_path):
    client = DaemonClient(sock_path, job="j", rank=1, world_size=2, backoff_s=(0.01, 0.05))
    t0 = time.perf_counter()
    for step in range(1000):
        client.report(step, 1, {"loss": 1.0})
        assert client.poll_decision() is None
    assert time.perf_counter() - t0 < 0.5
    assert not client.connected and client.dropped_total == 1000
    daemon = FakeDaemon(sock_path).start()
    assert client.wait_connected(5)
    assert daemon.hellos[0]["leader"] is False
    daemon.stop()  # the daemon dies
    deadline = time.monotonic() + 5
    while client.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client.connected
    client.report(5, 1, {"loss": 1.0})  # still fine while it is gone
    daemon2 = FakeDaemon(sock_path).start()
    assert client.wait_connected(5)
    client.report(6, 1, {"loss": 2.0})
    assert daemon2.wait_for(lambda d: d.of_type("report"))
    assert client.connects_total == 2
    client.close()
    daemon2.stop()
