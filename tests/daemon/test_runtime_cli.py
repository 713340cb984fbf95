"""`gputuned status`, `set` and `restore` against a daemon running in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.commands.cli import main


def test_status_json_shows_gpus_knobs_collectors_and_jobs(small_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    sock = str(small_daemon.cfg.control.socket_path)
    assert main(["set", "--socket", sock, "--gpu", "1", "--power-limit-w", "400", "--sm-clocks", "900:1300"]) == 0
    capsys.readouterr()
    assert main(["status", "--socket", sock, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["running"] is True and st["backend"] == "sim"
    g1 = st["gpus"][1]
    assert g1["current"]["power_limit"] == 400_000 and g1["originals"]["power_limit"] == 700_000
    assert g1["current"]["locked_sm_clocks"] == [900, 1300]
    assert g1["changed"] == ["power_limit", "locked_sm_clocks"]
    assert st["gpus"][0]["changed"] == []
    assert {c["name"] for c in st["collectors"]} >= {"gpu", "host"}
    assert st["jobs"] == {}
    assert main(["status", "--socket", sock]) == 0
    table = capsys.readouterr().out
    assert "GPUs (current / original)" in table and "400 W / 700 W" in table


def test_set_out_of_bounds_is_refused_with_reason(small_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    sock = str(small_daemon.cfg.control.socket_path)
    assert main(["set", "--socket", sock, "--gpu", "0", "--power-limit-w", "5000"]) == 1
    assert "outside 200-700 W" in capsys.readouterr().err
    assert main(["set", "--socket", sock, "--gpu", "0"]) == 2


def test_restore_through_the_running_daemon(small_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    sock = str(small_daemon.cfg.control.socket_path)
    assert main(["set", "--socket", sock, "--gpu", "0", "--power-limit-w", "300"]) == 0
    assert small_daemon.cfg.daemon.state_file.exists()
    assert main(["restore", "--socket", sock]) == 0
    assert "restored power_limit" in capsys.readouterr().out
    assert not small_daemon.cfg.daemon.state_file.exists()
    assert small_daemon.actuator.describe()[0]["current"]["power_limit"] == 700_000


def test_status_without_a_daemon_exits_3_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--socket", str(tmp_path / "none.sock"), "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["running"] is False and "cannot reach the daemon" in out["error"]
