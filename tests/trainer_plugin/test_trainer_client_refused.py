"""A plugin the daemon refuses says so once in the job's log, naming why; an absent daemon stays quiet."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from runtime_kit import wait_for

from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.store import Store
from gputuned.trainer_plugin.client import DaemonClient

FAST = (0.01, 0.02)  # reconnect backoff: many retries within a test


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "gputuned.trainer_plugin.client" and r.levelno >= logging.WARNING]


def test_a_daemon_refusing_again_and_again_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = ControlServer(ControlConfig(socket_path=tmp_path / "c.sock"), Store(60))
    srv.start()
    caplog.set_level(logging.DEBUG, logger="gputuned.trainer_plugin.client")
    try:
        with DaemonClient(str(tmp_path / "c.sock"), job="j", backoff_s=FAST) as first:
            assert first.wait_connected(5)
            with DaemonClient(str(tmp_path / "c.sock"), job="j", backoff_s=FAST) as second:  # the same rank 0
                assert wait_for(lambda: srv.rejected["rank_taken"] >= 5, 10)
                assert not second.connected
    finally:
        srv.stop()
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert f"refused this process (hello refused: job j rank 0 is already connected (pid {os.getpid()}))" in warned[0]
    assert "not monitored" in warned[0]


def test_an_absent_daemon_is_not_a_refusal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gputuned.trainer_plugin.client")
    with DaemonClient(str(tmp_path / "none.sock"), backoff_s=FAST):
        time.sleep(0.2)
    assert _warnings(caplog) == []


def _answer_once_each(path: Path, body: dict[str, object], stop: threading.Event) -> socket.socket:
    """A server answering every connection with one frame (no hello read), then closing it."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    srv.settimeout(0.05)
    frame = json.dumps(body).encode()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.sendall(struct.pack(">I", len(frame)) + frame)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_daemon_of_another_protocol_version_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gputuned.trainer_plugin.client")
    stop = threading.Event()
    srv = _answer_once_each(tmp_path / "v2.sock", {"v": 2, "seq": 0, "type": "welcome", "session": "s",
                                                   "report_interval_s": 1.0, "decisions": True}, stop)
    try:
        with DaemonClient(str(tmp_path / "v2.sock"), backoff_s=FAST) as client:
            time.sleep(0.3)
            assert not client.connected
    finally:
        stop.set()
        srv.close()
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert "protocol version mismatch, v: expected 1, got 2" in warned[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the plugin as another uid")
def test_a_uid_not_allowed_warns_once_naming_permission(open_dir: Path) -> None:
    srv = ControlServer(ControlConfig(socket_path=open_dir / "c.sock", socket_mode=0o666, allowed_uids=[12345]),
                        Store(60))
    srv.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job: uid 65534, its log on the pipe
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            log = logging.getLogger("gputuned.trainer_plugin.client")
            log.handlers = [logging.StreamHandler(os.fdopen(w, "w", buffering=1))]
            log.setLevel(logging.WARNING)
            log.propagate = False
            with DaemonClient(str(open_dir / "c.sock"), backoff_s=FAST):
                time.sleep(0.5)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        lines = f.read().splitlines()
    _, status = os.waitpid(pid, 0)
    rejected = srv.rejected["not_allowed"]
    srv.stop()
    assert os.waitstatus_to_exitcode(status) == 0
    assert rejected >= 3  # retried, yet said once
    assert len(lines) == 1, lines
    assert "refused this process (permission: uid 65534 gid 65534 is not allowed" in lines[0]
