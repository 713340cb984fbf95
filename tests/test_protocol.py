"""The control protocol's one module: every message kind round-trips, bad input is refused with a
reason naming the field, and the daemon, the plugin's client and the test fake refuse alike."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gputuned import protocol as P
from gputuned.daemon.commands.status import AdminError, admin_request
from gputuned.daemon.control.server import ControlServer
from gputuned.trainer_plugin.client import DaemonClient
from gputuned.trainer_plugin.testing import FakeDaemon

HELLO: dict[str, Any] = {"type": "hello", "job": "bert-1", "rank": 1, "local_rank": 1, "world_size": 2, "pid": 42,
                         "leader": False, "batch_size": 64, "batch_mode": "global"}
EXAMPLES: dict[str, dict[str, Any]] = {
    "hello": HELLO,
    "welcome": {"type": "welcome", "session": "c1", "report_interval_s": 0.5, "decisions": True},
    "report": {"type": "report", "step": 10, "steps": 5, "time": 1.7e9, "stats": {"loss": 1.5, "batch_size": 64}},
    "decision": {"type": "decision", "id": "d-1", "profile_steps": 3},
    "ack": {"type": "ack", "id": "d-1", "ok": False, "applied_step": 12, "error": "too big"},
    "profile_result": {"type": "profile_result", "id": "d-1", "summary": {"top_ops": [["aten::mm", 0.4]]}},
    "error": {"type": "error", "error": "report.stats.loss: not a number"},
    "admin": {"type": "admin", "op": "set", "gpu": 0, "knob": "locked_sm_clocks", "value": [900, 1400]},
    "admin_reply": {"type": "admin_reply", "op": "restore", "ok": True, "restored": {}, "failures": []},
}


def body(msg: dict[str, Any], seq: int = 0) -> bytes:
    return P.encode({"v": P.VERSION, "seq": seq, **msg})[P.HEADER.size:]


def test_every_kind_is_covered_and_round_trips_through_frames() -> None:
    assert set(EXAMPLES) == set(P.MESSAGE_TYPES) == set(P.CHECKS)
    built = [P.message(m["type"], **{k: v for k, v in m.items() if k != "type"}) for m in EXAMPLES.values()]
    stream = b"".join(P.encode({"v": 1, "seq": i, **m}) for i, m in enumerate(built))
    decoder = P.FrameDecoder()
    bodies = [b for i in range(0, len(stream), 7) for b in decoder.feed(stream[i:i + 7], float(i))]
    got = [P.decode(b) for b in bodies]
    assert got == [{"v": 1, "seq": i, **m} for i, m in enumerate(EXAMPLES.values())]
    assert decoder.partial_since is None


def test_each_receiver_accepts_only_its_kinds() -> None:
    assert P.decode(body(HELLO), P.TO_DAEMON)["job"] == "bert-1"
    with pytest.raises(P.ProtocolError, match="type: unknown 'hello'"):
        P.decode(body(HELLO), P.TO_TRAINER)
    with pytest.raises(P.ProtocolError, match="type: unknown 'decision'"):
        P.decode(body(EXAMPLES["decision"]), P.TO_DAEMON)


BAD_BODIES = {
    "rank not below world_size": (json.dumps({**HELLO, "v": 1, "seq": 0, "rank": 2}).encode(),
                                  "hello.rank: 2 not below world_size 2"),
    "NaN": (b'{"v":1,"type":"report","seq":1,"step":1,"steps":1,"stats":{"loss":NaN}}', "body: NaN is not JSON"),
    "Infinity": (b'{"v":1,"type":"report","seq":1,"step":1,"steps":1,"stats":{},"x":-Infinity}',
                 "body: -Infinity is not JSON"),
    "inf by overflow": (b'{"v":1,"type":"report","seq":1,"step":1,"steps":1,"stats":{"loss":1e400}}',
                        "body: number '1e400' is not finite"),
    "400-digit integer": (b'{"v":1,"type":"report","seq":1,"step":1' + b"0" * 400 + b',"steps":1,"stats":{}}',
                          "body: integer '1000.* out of range"),
    "job name with a newline": (json.dumps({**HELLO, "v": 1, "seq": 0, "job": "bert-1\n"}).encode(),
                                r"hello.job: must match .* \('bert-1\\n'\)"),
    "job name with a control character": (json.dumps({**HELLO, "v": 1, "seq": 0, "job": "a\x1bb"}).encode(),
                                          "hello.job: must match"),
    "decision id with a newline": (b'{"v":1,"type":"decision","seq":1,"id":"d-1\\n","batch_size":8}', "decision.id"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "body: not UTF-8 JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_are_refused_with_the_field_named(name: str) -> None:
    data, reason = BAD_BODIES[name]
    with pytest.raises(P.ProtocolError, match=reason):  # and no other exception type
        P.decode(data)


def test_bad_messages_are_refused_when_built_too() -> None:
    with pytest.raises(P.ProtocolError, match="hello.rank: 2 not below world_size 2"):
        P.check({**HELLO, "rank": 2})
    with pytest.raises(P.ProtocolError, match=r"report.stats.loss: not a number \(nan\)"):
        P.check({**EXAMPLES["report"], "stats": {"loss": float("nan")}})
    with pytest.raises(P.ProtocolError, match="report.time: not a number"):
        P.check({**EXAMPLES["report"], "time": float("inf")})
    with pytest.raises(P.ProtocolError, match="hello.pid: .* above 4611686018427387904"):
        P.check({**HELLO, "pid": 10**400})
    with pytest.raises(P.ProtocolError, match="cannot be encoded"):
        P.encode({"type": "x", "value": float("nan")})
    assert P.clean_stats({"loss": 1.0, "bad": float("inf"), "big": 10**400, "s": "x", "b": True}) == {"loss": 1.0}


def test_oversized_frames_are_refused_unread() -> None:
    with pytest.raises(P.FrameTooLarge, match="exceeds 65536"):
        P.encode({"type": "report", "x": "a" * 70_000})
    assert len(P.encode({"type": "admin_reply", "x": "a" * 70_000})) > 70_000  # a node's status may be long
    with pytest.raises(P.FrameTooLarge, match="frame length 65537 exceeds 65536"):
        list(P.FrameDecoder().feed(struct.pack(">I", 65537), 0.0))
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 1 << 30))
        with pytest.raises(P.FrameTooLarge, match="exceeds 1024"):
            P.read_body(b, 1024)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    with FakeDaemon(str(tmp_path / "fake.sock")) as fd:
        yield fd


def first_answer(path: str | Path, data: bytes) -> tuple[dict[str, Any], bool]:
    """Send raw bytes as a first message; return the answer and whether the server then closed."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        answer = P.read_message(s, P.TO_TRAINER)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:  # closed with our bytes unread
            closed = True
        return answer, closed


BAD_HELLOS = {
    "rank not below world_size": P.frame(BAD_BODIES["rank not below world_size"][0]),
    "job name with a newline": P.frame(BAD_BODIES["job name with a newline"][0]),
    "NaN batch size": P.frame(json.dumps({**HELLO, "v": 1, "seq": 0}).replace('"batch_size": 64', '"batch_size": NaN')
                              .encode()),
    "400-digit pid": P.frame(json.dumps({**HELLO, "v": 1, "seq": 0, "pid": 10**399}).encode()),
    "oversized": struct.pack(">I", 1 << 20) + b"{",
    "report before hello": P.encode({"v": 1, "seq": 0, **EXAMPLES["report"]}),
}


@pytest.mark.parametrize("name", sorted(BAD_HELLOS))
def test_the_daemon_and_the_fake_refuse_a_bad_hello_alike(name: str, control_server: ControlServer, fake: FakeDaemon) -> None:
    real, real_closed = first_answer(control_server.cfg.socket_path, BAD_HELLOS[name])
    faked, fake_closed = first_answer(fake.path, BAD_HELLOS[name])
    assert real["type"] == faked["type"] == "error"
    assert real["error"] == faked["error"] == fake.refused[0]
    assert real_closed and fake_closed
    assert control_server.connected_jobs() == {} and fake.hellos == []


@pytest.mark.parametrize("kwargs", [{"rank": 2, "world_size": 2}, {"job": "bert-1\n"}, {"world_size": 0}])
def test_the_client_refuses_the_hello_the_daemon_refuses(kwargs: dict[str, Any], control_server: ControlServer) -> None:
    answer, _ = first_answer(control_server.cfg.socket_path, P.frame(json.dumps({**HELLO, "v": 1, "seq": 0, **kwargs}).encode()))
    assert answer["type"] == "error"
    with pytest.raises(P.ProtocolError) as refused:
        DaemonClient(str(control_server.cfg.socket_path), start=False, **{"job": "bert-1", "rank": 1, "world_size": 2, **kwargs})
    assert str(refused.value) == answer["error"]
    with pytest.raises(P.ProtocolError, match="hello.batch_size: .* above"):  # on the wire: refused as a body
        DaemonClient(str(control_server.cfg.socket_path), start=False, batch_size=10**400)


def test_admin_requests_go_through_the_same_checks(control_server: ControlServer) -> None:
    reply = P.request(control_server.cfg.socket_path, P.message("admin", op="status"))
    assert reply == {"v": 1, "seq": 0, "type": "admin_reply", "op": "status", "ok": False, "error": "no admin handler"}
    with pytest.raises(AdminError, match="protocol error: admin.gpu: -1 below 0") as e:
        admin_request(control_server.cfg.socket_path, "restore", gpu=-1)
    assert e.value.reached  # refused here: no fallback that skips the daemon
    with pytest.raises(AdminError, match="cannot reach") as e:
        admin_request(control_server.cfg.socket_path.parent / "absent.sock", "status")
    assert not e.value.reached
