"""One owner of the GPUs per host: next to a live `gputuned run` that changed GPUs, `record`, `replay`,
a second daemon and an offline `restore` leave its state file and the GPUs untouched, and its
crash still leaves the originals to restore. An actuator's start-up restore waits for its
previous run to be dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend
from gputuned.daemon.actuation.actuator import Actuator
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.owner import EXIT_OWNED, live_owner, runs_gputuned
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.record.child import DaemonProcess, run_gputuned, runtime_config, toml_dump
from gputuned.daemon.record.trace import read_trace


@dataclass
class Live:
    """A live daemon that changed GPUs: the GPUs' settings before, and its state file and GPUs now."""

    d: DaemonProcess
    originals: dict[str, dict[str, Any]]
    state: bytes
    copy: bytes
    changed: dict[str, dict[str, Any]]

    def assert_untouched(self) -> None:
        assert self.d.proc.poll() is None, self.d.log()[-2000:]
        assert self.d.state_path.read_bytes() == self.state
        assert self.d.state_path.with_name("state.json.1").read_bytes() == self.copy
        assert self.d.sim_settings() == self.changed
        assert self.d.sim_settings() != self.originals


def _change(d: DaemonProcess) -> None:
    for gpu in (0, 1):
        assert d.admin("set", gpu=gpu, knob="power_limit", value=300_000 + 10_000 * gpu)["ok"]
    assert d.admin("set", gpu=1, knob="locked_sm_clocks", value=[900, 1200])["ok"]


def _daemon(tmp_path: Path) -> DaemonProcess:
    return DaemonProcess(tmp_path, config=runtime_config(tmp_path, gpus=2, tuner={"enabled": False}))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    d = _daemon(tmp_path)
    try:
        d.wait_ready()
        originals = d.sim_settings()
        _change(d)
        assert json.loads(d.state_path.read_text())["pid"] == d.proc.pid
        yield Live(d, originals, d.state_path.read_bytes(), d.state_path.with_name("state.json.1").read_bytes(),
                   d.sim_settings())
    finally:
        d.close()


def _owned(pid: int, text: str) -> bool:
    return f"another daemon, pid {pid}, owns the GPUs" in text


def test_record_next_to_a_live_daemon_collects_without_actuating(live: Live, tmp_path: Path) -> None:
    trace = tmp_path / "node.gttrace"
    r = run_gputuned("record", "--config", str(live.d.config_path), "--duration", "1", "-o", str(trace))
    assert r.returncode == 0, r.stderr
    assert _owned(live.d.proc.pid, r.stderr) and "recording without actuation" in r.stderr
    assert "previous run did not restore" not in r.stderr
    assert read_trace(trace).sample_count > 0
    live.assert_untouched()
    live.d.kill()  # a crash after the recording still leaves the originals to restore
    r = run_gputuned("restore", "--config", str(live.d.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert live.d.sim_settings() == live.originals and not live.d.state_path.exists()


def test_replay_next_to_a_live_daemon_touches_nothing(live: Live, tmp_path: Path) -> None:
    trace = tmp_path / "node.gttrace"
    assert run_gputuned("record", "--config", str(live.d.config_path), "--duration", "1", "-o", str(trace)).returncode == 0
    r = run_gputuned("replay", str(trace), "--speed", "inf", "--exit", "--listen", "127.0.0.1", "--port", "0")
    assert r.returncode == 0, r.stderr
    live.assert_untouched()


def test_a_second_daemon_refuses_to_start(live: Live, tmp_path: Path) -> None:
    pid = live.d.proc.pid
    other = dict(live.d.data, control={"socket_path": str(tmp_path / "other.sock")})  # another port and socket
    other_conf = tmp_path / "other.toml"
    other_conf.write_text(toml_dump(other))
    for conf in (live.d.config_path, other_conf):
        r = run_gputuned("run", "--config", str(conf), "--port", "0", timeout=30)
        assert r.returncode == EXIT_OWNED, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [f"gputuned: another daemon, pid {pid}, owns the GPUs "
                                                 f"(it wrote {live.d.state_path}); not starting"]
        live.assert_untouched()


def test_a_second_daemon_refuses_to_start_before_the_first_changed_anything(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    try:
        d.wait_ready()
        r = run_gputuned("run", "--config", str(d.config_path), "--port", "0", timeout=30)
        assert r.returncode == EXIT_OWNED and _owned(d.proc.pid, r.stderr) and "listens on" in r.stderr
        assert d.proc.poll() is None and d.wait_ready()
    finally:
        d.close()


def test_offline_restore_refuses_behind_a_live_daemon_and_restore_goes_through_it(live: Live) -> None:
    r = run_gputuned("restore", "--offline", "--config", str(live.d.config_path))
    assert r.returncode == EXIT_OWNED and _owned(live.d.proc.pid, r.stderr), r.stdout + r.stderr
    live.assert_untouched()
    r = run_gputuned("restore", "--config", str(live.d.config_path))
    assert r.returncode == 0 and "restored power_limit" in r.stdout, r.stdout + r.stderr
    assert live.d.sim_settings() == live.originals and live.d.proc.poll() is None


# -- the actuator's start-up restore, in this process ---------------------------------------------

SimNode = Callable[..., ScriptedBackend]


def _fake_daemon() -> subprocess.Popen[bytes]:
    """A live process running a script named gputuned (what an installed daemon's pid shows in /proc)."""
    script = Path(tempfile.mkdtemp(prefix="gputuned-owner-")) / "gputuned"
    script.write_text("import time\ntime.sleep(60)\n")
    return subprocess.Popen([sys.executable, str(script), "run"])


def test_a_gputuned_command_line_is_told_from_a_path_that_names_it() -> None:
    for line in (b"/usr/bin/gputuned\0run\0", b"/opt/gputuned/bin/python3\0/usr/bin/gputuned\0run\0",
                 b"python\0-m\0gputuned\0run\0", b"python\0-m\0gputuned.daemon.commands.cli\0restore\0"):
        assert runs_gputuned(line), line
    for line in (b"/srv/gputuned/.venv/bin/python\0-m\0pytest\0", b"python\0-c\0pass\0gputuned\0",
                 b"/usr/bin/vim\0/etc/gputuned/gputuned.toml\0", b""):
        assert not runs_gputuned(line), line


def test_start_up_restore_waits_for_the_previous_run_to_be_dead(sim_node: SimNode, tmp_path: Path) -> None:
    backend = sim_node({"profile": "h100", "gpus": 2})
    nvml, _ = open_nvml("sim", sim_nvml)
    gpus = open_gpus(nvml)
    sf = StateFile(tmp_path / "state" / "state.json")
    first = Actuator(gpus, ActuationConfig(), sf)
    first.start()
    assert first.set_power_limit(0, 350).ok
    owner = _fake_daemon()
    try:
        state = json.loads(sf.path.read_text())
        state["pid"] = owner.pid  # the file's writer is now a live gputuned process
        sf.path.write_text(json.dumps(state))
        written = sf.path.read_bytes()
        found = live_owner(sf)
        assert found is not None and found.pid == owner.pid
        second = Actuator(gpus, ActuationConfig(), sf)
        second.start()
        assert not second.set_power_limit(1, 300).ok
        second.tick(0.0)
        second.stop()
        assert sf.path.read_bytes() == written and backend.devices[0].power_limit_mw == 350_000
        assert backend.devices[1].power_limit_mw != 300_000
    finally:
        owner.kill()
        owner.wait(10)
    assert live_owner(sf) is None  # dead (and reaped): the next start restores what it left
    third = Actuator(gpus, ActuationConfig(), sf)
    third.start()
    assert backend.devices[0].power_limit_mw != 350_000 and not sf.path.exists()


def test_a_live_process_that_is_not_gputuned_or_this_process_is_no_owner(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (other.pid, os.getpid()):
            sf.path.write_text(json.dumps({"version": 1, "pid": pid, "gpus": {}}))
            assert live_owner(sf) is None
    finally:
        other.kill()
        other.wait(10)


def test_restore_with_a_live_owner_that_does_not_answer_restores_nothing(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from gputuned.daemon.commands.cli import main

    state = tmp_path / "state.json"
    conf = tmp_path / "gputuned.toml"
    conf.write_text(f'[daemon]\nstate_file = "{state}"\n')
    owner = _fake_daemon()
    mute = socket.socket(socket.AF_UNIX)  # listens, never answers: a hung daemon
    mute.bind(str(tmp_path / "control.sock"))
    mute.listen(1)
    try:
        state.write_text(json.dumps({"version": 1, "pid": owner.pid, "gpus": {}}))
        written = state.read_bytes()
        code = main(["restore", "--config", str(conf), "--socket", str(tmp_path / "control.sock"), "--timeout", "0.3"])
    finally:
        mute.close()
        owner.kill()
        owner.wait(10)
    out, err = capsys.readouterr()
    assert code == EXIT_OWNED and _owned(owner.pid, err) and "restoring offline" not in err, out + err
    assert state.read_bytes() == written
