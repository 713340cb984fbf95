"""The control socket against real clients: the trainer plugin's client, raw protocol clients that
misbehave (malformed, oversized, slow, flooding), and a client running as a uid not allowed."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_kit import wait_for

from gputuned import protocol as P
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer, NoLeaderError
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.child import connect_client, read_frame
from gputuned.trainer_plugin.client import DaemonClient

Make = Callable[..., ControlServer]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Make]:
    started: list[ControlServer] = []

    def make(open_dir: Path | None = None, **cfg: Any) -> ControlServer:
        path = (open_dir or tmp_path) / "control.sock"
        srv = ControlServer(ControlConfig(socket_path=path, **cfg), Store(60))
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _closed(s: socket.socket, timeout: float = 3.0) -> bool:
    """True once the daemon closed the connection (frames it sent first are skipped)."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _report(seq: int, step: int = 1, **stats: float) -> bytes:
    return P.encode({"v": 1, "type": "report", "seq": seq, "step": step, "steps": 1, "time": time.time(),
                     "stats": stats or {"step_time_s": 0.1}})


def test_plugin_client_reports_become_series_and_decisions_are_acked(server: Make) -> None:
    srv = server()
    with DaemonClient(str(srv.cfg.socket_path), job="bert-1", rank=0, world_size=2, batch_size=64) as leader, \
            DaemonClient(str(srv.cfg.socket_path), job="bert-1", rank=1, world_size=2, batch_size=64) as other:
        assert leader.wait_connected(5) and other.wait_connected(5)
        leader.report(10, 10, {"step_time_s": 0.25, "samples_per_s": 256.0, "loss": 1.5, "comm_time_s": 0.05,
                               "data_wait_s": 0.01, "overflows_total": 2, "batch_size": 64})
        other.report(10, 10, {"step_time_s": 0.3})
        assert wait_for(lambda: srv.reports_total == 2)
        srv.tick(time.time())
        lab0 = (("job", "bert-1"), ("rank", "0"))
        assert srv.store is not None
        assert srv.store.value("gputuned_trainer_step_time_seconds", lab0) == 0.25
        assert srv.store.value("gputuned_trainer_samples_per_second", lab0) == 256.0
        assert srv.store.value("gputuned_trainer_communication_seconds", lab0) == 0.05
        assert srv.store.value("gputuned_trainer_overflows_total", lab0) == 2.0
        assert srv.store.value("gputuned_trainer_step_time_seconds", (("job", "bert-1"), ("rank", "1"))) == 0.3
        assert srv.store.value("gputuned_control_reports_total", ()) == 2.0
        assert srv.connected_jobs() == {"bert-1": [0, 1]}
        acks: list[tuple[str, dict[str, Any]]] = []
        srv.on_ack(lambda job, ack: acks.append((job, ack)))
        ident = srv.send_decision("bert-1", {"batch_size": 128})
        assert wait_for(lambda: (d := leader.poll_decision()) is not None and acks.append(("polled", d)) is None)
        polled = acks.pop()[1]
        assert polled == {"id": ident, "batch_size": 128}
        assert other.poll_decision() is None  # only the leader receives decisions
        leader.ack(ident, True, applied_step=12)
        ack = srv.wait_ack(ident, 5)
        assert ack is not None and ack["ok"] is True and ack["applied_step"] == 12
        assert acks == [("bert-1", ack)]
        assert srv.decisions["acked"] == 1


def test_decision_needs_a_connected_leader_and_a_valid_payload(server: Make) -> None:
    srv = server()
    with pytest.raises(NoLeaderError):
        srv.send_decision("nobody", {"batch_size": 8})
    s, welcome = connect_client(srv.cfg.socket_path, job="j", rank=0, world=1)
    assert welcome["type"] == "welcome" and welcome["decisions"] is True
    for bad in ({}, {"batch_size": 0}, {"batch_size": 8, "profile_steps": 2}, {"batch_size": True}):
        with pytest.raises(ValueError):
            srv.send_decision("j", bad)
    s.close()


def test_malformed_messages_are_answered_and_the_connection_goes_on(server: Make) -> None:
    srv = server()
    s, _ = connect_client(srv.cfg.socket_path)
    s.sendall(_frame(b"{not json"))
    assert "not UTF-8 JSON" in read_frame(s)["error"]
    s.sendall(P.encode({"v": 1, "type": "report", "seq": 2, "step": 1, "steps": 1, "stats": {"loss": "x"}}))
    assert read_frame(s)["error"].startswith("report.stats.loss: not a number")
    s.sendall(_frame(b'{"v":1,"type":"report","seq":3,"step":1,"steps":1,"stats":{"loss":NaN}}'))
    assert "NaN" in read_frame(s)["error"]
    s.sendall(_report(4, loss=0.5))
    assert wait_for(lambda: srv.reports_total == 1)
    assert srv.rejected["malformed"] == 3
    s.close()


def test_oversized_frame_is_refused_unread_and_disconnected(server: Make) -> None:
    srv = server(max_message_bytes=1024)
    s, _ = connect_client(srv.cfg.socket_path)
    s.sendall(struct.pack(">I", 10_000_000) + b"x" * 100)
    err = read_frame(s)
    assert "exceeds 1024" in err["error"]
    assert _closed(s)
    assert srv.rejected["oversized"] == 1


def test_slowloris_and_silent_clients_are_disconnected_while_others_go_on(server: Make) -> None:
    srv = server(frame_timeout_s=0.3, hello_timeout_s=0.3)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(srv.cfg.socket_path))
    slow, _ = connect_client(srv.cfg.socket_path, job="slow")
    frame = _report(1)
    good, _ = connect_client(srv.cfg.socket_path, job="good")
    t0 = time.monotonic()
    sent = 0
    for i, byte in enumerate(frame[:8]):
        good.sendall(_report(i + 1, step=i))
        sent += 1
        try:
            slow.send(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
    assert _closed(slow) and _closed(silent)
    assert time.monotonic() - t0 < 3.0
    assert srv.rejected["frame_timeout"] == 1 and srv.rejected["hello_timeout"] == 1
    assert wait_for(lambda: srv.reports_total == sent)
    good.close()


def test_a_flooding_client_is_rate_limited_then_cut_off(server: Make) -> None:
    srv = server(max_messages_per_second=50)
    flood, _ = connect_client(srv.cfg.socket_path, job="flood")
    calm, _ = connect_client(srv.cfg.socket_path, job="calm")
    try:
        flood.sendall(b"".join(_report(i + 1) for i in range(1000)))
    except OSError:
        pass
    assert _closed(flood)
    assert srv.rejected["rate_limited"] > 0 and srv.rejected["flooding"] == 1
    # the burst allowance (twice the rate) plus what refilled while the flood was read
    assert srv.reports_total < 400
    before = srv.reports_total
    for i in range(5):
        calm.sendall(_report(i + 1))
    assert wait_for(lambda: srv.reports_total == before + 5)
    calm.close()


def _as_uid(uid: int, path: Path, msg: dict[str, Any]) -> dict[str, Any]:
    """Connect from a forked child running as ``uid``; returns the first frame it got."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to uid and talk to the daemon
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(str(path))
            try:
                s.sendall(P.encode(msg))
            except OSError:
                pass
            import json

            os.write(w, json.dumps(read_frame(s)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child could not talk to the daemon"
    import json

    return dict(json.loads(data))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_a_client_from_a_uid_not_allowed_is_refused(server: Make, open_dir: Path) -> None:
    srv = server(open_dir, socket_mode=0o666)
    hello = {"v": 1, "type": "hello", "seq": 0, "job": "x", "rank": 0, "local_rank": 0, "world_size": 1,
             "pid": 1, "leader": True, "batch_size": 1, "batch_mode": "global"}
    got = _as_uid(65534, srv.cfg.socket_path, hello)
    assert got["type"] == "error" and "uid 65534" in got["error"] and "not allowed" in got["error"]
    assert srv.rejected["not_allowed"] == 1
    assert srv.connected_jobs() == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_an_allowed_uid_reports_and_reads_status_but_may_not_set(server: Make, open_dir: Path) -> None:
    srv = server(open_dir, socket_mode=0o666, allowed_uids=[65534])
    hello = {"v": 1, "type": "hello", "seq": 0, "job": "x", "rank": 0, "local_rank": 0, "world_size": 1,
             "pid": 1, "leader": True, "batch_size": 1, "batch_mode": "global"}
    assert _as_uid(65534, srv.cfg.socket_path, hello)["type"] == "welcome"
    status = _as_uid(65534, srv.cfg.socket_path, {"v": 1, "type": "admin", "seq": 0, "op": "status"})
    assert status["type"] == "admin_reply" and status["op"] == "status"  # read-only: allowed
    got = _as_uid(65534, srv.cfg.socket_path, {"v": 1, "type": "admin", "seq": 0, "op": "set", "gpu": 0,
                                               "knob": "power_limit", "value": 100000})
    assert got["type"] == "error" and "admin_uids" in got["error"]
    assert srv.rejected["not_admin"] == 1


def test_fuzzed_malformed_input_never_stops_the_server(server: Make) -> None:
    """A few hundred hypothesis cases here; bench/control_fuzz.py sends 10,000+ to a real daemon."""
    from hypothesis import HealthCheck, given, settings

    from gputuned.daemon.record.trials import fuzz_strategies, send_fuzz_case

    srv = server()
    sent = [0]

    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(fuzz_strategies())
    def fuzz(case: tuple[bool, list[bytes]]) -> None:
        sent[0] += send_fuzz_case(srv.cfg.socket_path, case)

    fuzz()
    assert sent[0] >= 250
    assert srv._thread is not None and srv._thread.is_alive()
    assert sum(srv.rejected.values()) > 0
    s, welcome = connect_client(srv.cfg.socket_path, job="after-fuzz")
    assert welcome["type"] == "welcome"
    before = srv.reports_total
    s.sendall(_report(1))
    assert wait_for(lambda: srv.reports_total == before + 1)
    s.close()


class BrokenAdmin:
    """An admin handler whose status raises, as a bug deep in a status read would."""

    def status(self) -> dict[str, Any]:
        raise KeyError("boom")

    def set(self, gpu: int, knob: str, value: Any) -> dict[str, Any]:
        return {"ok": False, "code": "disabled", "reason": "scripted"}

    def request(self, op: str, msg: dict[str, Any], by: str) -> dict[str, Any]:
        return self.set(msg["gpu"], msg["knob"], msg["value"]) if op == "set" else self.restore(msg.get("gpu"))

    def restore(self, gpu: int | None) -> dict[str, Any]:
        return {"ok": True, "restored": {}, "failures": []}


def test_a_bug_reached_by_one_message_drops_that_connection_only(tmp_path: Path) -> None:
    srv = ControlServer(ControlConfig(socket_path=tmp_path / "c.sock"), Store(10), admin=BrokenAdmin())
    srv.start()
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(str(srv.cfg.socket_path))
            s.sendall(P.encode({"v": 1, "type": "admin", "seq": 0, "op": "status"}))
            assert read_frame(s)["error"] == "internal error: KeyError"
            assert _closed(s)
        assert srv.rejected["internal_error"] == 3
        c, welcome = connect_client(srv.cfg.socket_path)
        assert welcome["type"] == "welcome"
        c.close()
    finally:
        srv.stop()


def test_departed_ranks_expire_with_their_history_and_the_table_is_bounded(server: Make) -> None:
    srv = server(job_ttl_s=0.2)
    srv.jobs.max_ranks = 2
    a, _ = connect_client(srv.cfg.socket_path, job="a")
    a.sendall(_report(1, loss=1.0))
    assert wait_for(lambda: srv.reports_total == 1)
    b, _ = connect_client(srv.cfg.socket_path, job="b")
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(5)
    c.connect(str(srv.cfg.socket_path))
    c.sendall(P.encode({"v": 1, "type": "hello", "seq": 0, "job": "c", "rank": 0, "local_rank": 0, "world_size": 1,
                        "pid": os.getpid(), "leader": True, "batch_size": 1, "batch_mode": "global"}))
    assert "ranks known" in read_frame(c)["error"] and srv.rejected["too_many_ranks"] == 1
    assert srv.store is not None
    lab = (("job", "a"), ("rank", "0"))
    srv.tick(time.time())
    assert srv.store.value("gputuned_trainer_loss", lab) == 1.0
    assert srv.store.series("gputuned_trainer_loss") == [lab]
    a.close()
    assert wait_for(lambda: srv.connected_jobs() == {"b": [0]})
    time.sleep(0.3)
    srv.tick(time.time())
    assert srv.store.value("gputuned_trainer_loss", lab) is None
    assert srv.store.series("gputuned_trainer_loss") == []  # ring buffer forgotten too
    b.close()
    c.close()
