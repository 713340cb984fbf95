"""Admin always gets in: idle clients holding every connection do not block root's status, set
and restore; `gputuned restore` restores offline when the daemon is busy or does not answer;
per-uid and total bounds on jobs and ranks refuse hellos past them, logged once per peer."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import uid_peer

from gputuned import protocol as P
from gputuned.daemon.commands.cli import main
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.child import connect_client, hello


class Admin:
    """An admin handler that answers every request and records the restores."""

    def __init__(self) -> None:
        self.restores: list[int | None] = []

    def status(self) -> dict[str, Any]:
        return {"gpus": []}

    def set(self, gpu: int, knob: str, value: Any) -> dict[str, Any]:
        return {"ok": True, "gpu": gpu, "knob": knob, "value": value}

    def request(self, op: str, msg: dict[str, Any], by: str) -> dict[str, Any]:
        return self.set(msg["gpu"], msg["knob"], msg["value"]) if op == "set" else self.restore(msg.get("gpu"))

    def restore(self, gpu: int | None) -> dict[str, Any]:
        self.restores.append(gpu)
        return {"ok": True, "restored": {"GPU-0": ["power_limit"]}, "failures": []}


def _hello(job: str, rank: int) -> dict[str, Any]:
    return {k: v for k, v in hello(job=job, rank=rank, world=64).items() if k not in ("v", "seq")}


@pytest.mark.skipif(not uid_peer.can_switch_uid(), reason="needs root to run a peer as another uid")
def test_root_status_set_and_restore_answer_while_another_uid_holds_every_connection(
        open_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ControlConfig(socket_path=open_dir / "control.sock", socket_mode=0o666, allowed_uids=[uid_peer.OTHER_UID])
    admin = Admin()
    srv = ControlServer(cfg, Store(10), admin=admin)
    srv.start()
    # 8 jobs of 32 ranks: max_connections (256) idle connections after hello, within the per-uid bounds
    conns = [[{"send": _hello(f"idle-{i // 32}", i % 32)}] for i in range(cfg.max_connections + 1)]
    holder = uid_peer.spawn({"path": str(cfg.socket_path), "conns": conns, "hold": True})
    try:
        got = uid_peer.replies(holder)
        assert all(c[0]["type"] == "welcome" for c in got[:-1]) and len(got) == cfg.max_connections + 1
        assert "too many connections" in got[-1][0]["error"]  # a non-admin peer gets no reserved slot
        assert srv.rejected["too_many_connections"] == 1
        path = cfg.socket_path
        assert P.request(path, P.message("admin", op="status"))["status"] == {"gpus": []}
        assert P.request(path, P.message("admin", op="set", gpu=0, knob="power_limit", value=300000))["ok"] is True
        assert main(["restore", "--socket", str(path)]) == 0
        assert "restored power_limit on GPU-0" in capsys.readouterr().out and admin.restores == [None]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        srv.stop()


def _config_file(tmp_path: Path) -> str:
    conf = tmp_path / "gputuned.toml"
    conf.write_text(f'[daemon]\nstate_file = "{tmp_path / "state.json"}"\n')
    return str(conf)


def test_restore_goes_offline_when_the_daemon_does_not_answer_in_time(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    mute = socket.socket(socket.AF_UNIX)  # listens, never accepts nor answers: a hung daemon
    mute.bind(str(tmp_path / "control.sock"))
    mute.listen(1)
    try:
        code = main(["restore", "--config", _config_file(tmp_path), "--socket", str(tmp_path / "control.sock"),
                     "--timeout", "0.3"])
    finally:
        mute.close()
    out, err = capsys.readouterr()
    assert code == 0 and "nothing to restore" in out  # the offline restore ran (no state file here)
    assert "did not answer within 0.3 s; restoring offline" in err


def test_restore_goes_offline_when_the_daemon_has_no_slot_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = ControlServer(ControlConfig(socket_path=tmp_path / "control.sock", max_connections=1, admin_connections=0),
                        Store(10), admin=Admin())
    srv.start()
    s, _ = connect_client(srv.cfg.socket_path, job="idle")
    try:
        code = main(["restore", "--config", _config_file(tmp_path), "--socket", str(srv.cfg.socket_path)])
    finally:
        s.close()
        srv.stop()
    out, err = capsys.readouterr()
    assert code == 0 and "nothing to restore" in out  # the offline restore ran (no state file here)
    assert srv.rejected["too_many_connections"] == 1
    # the refusal is read when it arrives before the request is sent; else the send finds the socket closed
    assert err == "" or "refused the connection (too many connections); restoring offline" in err


def test_bounds_on_jobs_and_ranks_refuse_past_them_with_one_log_line_per_peer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = ControlConfig(socket_path=tmp_path / "control.sock", max_jobs_per_uid=2, max_ranks_per_uid=5, max_ranks=6,
                        job_ttl_s=0.1)
    srv = ControlServer(cfg, Store(10))
    srv.start()
    caplog.set_level(logging.WARNING, logger="gputuned.daemon.control.server")
    socks: list[socket.socket] = []
    try:
        answers = []
        for job, rank in [("a", 0), ("a", 1), ("b", 0), ("c", 0), ("b", 1), ("b", 2), ("b", 3), ("a", 2)]:
            s, answer = connect_client(srv.cfg.socket_path, job=job, rank=rank, world=8)
            socks.append(s)
            answers.append(answer.get("error", "welcome"))
        assert answers[:3] == ["welcome"] * 3 and answers[4:6] == ["welcome"] * 2
        assert "uid 0 has 2 jobs" in answers[3]  # a third job of the same uid
        assert "uid 0 has 5 ranks" in answers[6] and "uid 0 has 5 ranks" in answers[7]
        assert srv.rejected["too_many_jobs"] == 1 and srv.rejected["too_many_ranks"] == 2
        assert srv.connected_jobs() == {"a": [0, 1], "b": [0, 1, 2]}
        lines = [r.getMessage() for r in caplog.records if "too_many_ranks" in r.getMessage()]
        assert len(lines) == 1  # the second refusal from the same peer is held back
        assert srv.store is not None and len(srv.jobs.samples()) == 5  # one rank_connected series per rank
    finally:
        for s in socks:
            s.close()
        srv.stop()
