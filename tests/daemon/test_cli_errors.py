"""Bad input to `gputuned` ends in one line on stderr naming what is wrong, no traceback.

Each case runs ``python -m gputuned`` as a person would (the refused-socket case a forked child
running as nobody) and checks the exit code, that stderr
is exactly one non-empty line naming the culprit, and that nothing was started or written.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.commands import units
from gputuned.daemon.commands.argtypes import gpu_profile
from gputuned.daemon.commands.cli import main
from gputuned.daemon.commands.experiment import print_comparison
from gputuned.daemon.record.trace import TraceWriter

REPO = Path(__file__).resolve().parents[2]
EXIT_DENIED = 4


def gputuned(*args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line in a child process, as a person at a terminal would; with ``uid``, as
    that user (a forked child that drops to it: it needs no access to the checkout)."""
    if uid is not None:
        return _forked_as(uid, list(args))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "gputuned", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _forked_as(uid: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stdout and stderr to the pipes, drop to ``uid``, run the command
        code = 1
        try:
            # first, still as root, the same command against no socket: the modules it loads lazily
            # are loaded before dropping to a uid that may not read the checkout
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                main([args[0], "--socket", "/nonexistent/gputuned.sock"])
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sys.stdout = os.fdopen(1, "w")
            sys.stderr = os.fdopen(2, "w")
            code = main(args)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), stdout, stderr)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert the exit code and a single stderr line, free of tracebacks, holding ``words``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "node.gttrace"
    TraceWriter(path, {"interval_seconds": 1.0}).close()
    return path


@pytest.mark.parametrize("name", ["h100", "H100", "h100-sxm5-80gb", "rtx6000", "quadro-rtx-6000"])
def test_profiles_are_taken_by_short_and_full_name(name: str) -> None:
    assert gpu_profile(name) == name


def test_unknown_profile_names_the_short_names() -> None:
    line = one_line_error(gputuned("run", "--profile", "h200"), 2, "--profile", "'h200'", "h100", "a100")
    assert "full names" in line


def test_record_to_a_missing_directory_is_refused_before_recording(tmp_path: Path) -> None:
    one_line_error(gputuned("record", "-o", "/nonexistent/dir/x.gttrace", "--duration", "1s"),
                   2, "-o/--output", "/nonexistent/dir")
    one_line_error(gputuned("record", "-o", str(tmp_path), "--duration", "1s"), 2, "is a directory")


def test_replay_at_speed_zero_is_refused_before_serving(trace_file: Path) -> None:
    result = gputuned("replay", str(trace_file), "--speed", "0", "--port", "0", "--exit")
    one_line_error(result, 2, "--speed", "'0'")
    assert "serving" not in result.stdout


def test_replay_on_a_port_in_use_says_so(trace_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = gputuned("replay", str(trace_file), "--listen", "127.0.0.1", "--port", str(port), "--exit")
    one_line_error(result, 2, f"127.0.0.1:{port}", "in use")
    assert "serving" not in result.stdout


def test_train_with_no_processes_is_refused() -> None:
    one_line_error(gputuned("train", "--nproc", "0", "examples/digits.toml"), 2, "--nproc", "'0'")


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d.write_text("not a folder\n"), ("is not a directory",)),
    (lambda d: None, ("does not exist",)),
    (lambda d: (d.mkdir(), d.chmod(0o777)), ("group or world writable",)),
], ids=["a-file", "missing", "world-writable"])
def test_pause_without_a_daemon_refuses_a_bad_state_directory(
        tmp_path: Path, make: Callable[[Path], object], words: tuple[str, ...]) -> None:
    state_dir = tmp_path / "state"
    make(state_dir)
    config = tmp_path / "gputuned.toml"
    config.write_text(f'[daemon]\nstate_file = "{state_dir}/state.json"\n'
                      f'[control]\nsocket_path = "{tmp_path}/none.sock"\n')
    before = sorted(tmp_path.rglob("*"))
    one_line_error(gputuned("tuner", "pause", "--config", str(config)), 2, str(state_dir), *words)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no flag, no temp file


@pytest.fixture
def refused_socket() -> Iterator[tuple[Path, int | None, str]]:
    """A bound control socket this test's child may not connect to: (path, uid to run as, hint).

    As root (who passes every permission check) the child runs as nobody and the socket is
    mode 0660 in a group nobody is not in; otherwise the socket is mode 0000.
    """
    folder = Path(tempfile.mkdtemp(prefix="gputuned-cli-"))
    folder.chmod(0o755)
    path = folder / "control.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    try:
        if os.geteuid() == 0:
            group = grp.getgrgid(1)  # a system group (daemon) that nobody is not in
            os.chown(path, 0, group.gr_gid)
            path.chmod(0o660)
            yield path, 65534, f"join group {group.gr_name}"
        else:
            path.chmod(0)
            yield path, None, "mode 0000"
    finally:
        sock.close()
        shutil.rmtree(folder)


def test_status_refused_by_socket_permissions_says_permission_denied(
        refused_socket: tuple[Path, int | None, str]) -> None:
    path, uid, hint = refused_socket
    assert stat.S_ISSOCK(path.stat().st_mode)
    result = gputuned("status", "--socket", str(path), uid=uid)
    line = one_line_error(result, EXIT_DENIED, "permission denied", hint, str(path))
    assert "not running" not in line
    result = gputuned("status", "--socket", str(path), "--json", uid=uid)
    assert result.returncode == EXIT_DENIED and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"].startswith("permission denied")


def test_set_echoes_the_value_in_the_knobs_display_unit(small_daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    sock = str(small_daemon.cfg.control.socket_path)
    assert main(["set", "--socket", sock, "--gpu", "1", "--power-limit-w", "400", "--sm-clocks", "900:1300"]) == 0
    out = capsys.readouterr().out
    assert "gpu 1: power limit = 400 W" in out and "400000" not in out
    assert "900-1300 MHz" in out


@pytest.mark.parametrize(("joules", "text"), [(1.778e7, "17.8 MJ"), (2.5e4, "25 kJ"), (950.0, "950 J"), (3.2e9, "3.2 GJ")])
def test_energies_are_shown_with_a_prefix(joules: float, text: str) -> None:
    assert units.energy(joules) == text


@pytest.mark.parametrize(("seconds", "text"), [(45.0, "45 s"), (750.0, "12.5 min"), (7980.0, "2 h 13 min"), (7200.0, "2 h")])
def test_durations_are_shown_in_h_and_min(seconds: float, text: str) -> None:
    assert units.duration(seconds) == text


def test_experiment_comparison_prints_energies_in_mj_and_times_in_h_min(capsys: pytest.CaptureFixture[str]) -> None:
    side = {"energy_to_target_j": 1.778e7, "energy_per_sample_j": 950.0, "time_to_target_s": 7980.0,
            "throughput_samples_per_s": 1200.0, "goodput_samples_per_s": 1100.0}
    doc = {"spec": {"workload": "w", "gpus": 4, "profile": "a100", "objective": "energy", "duration_s": 3600.0, "seed": 0},
           "off": side, "on": side, "ratio": dict.fromkeys(side, 1.0), "energy_saving": 0.0, "slowdown": 0.0,
           "restored": True}
    print_comparison(doc)
    out = capsys.readouterr().out
    assert "17.8 MJ" in out and "950 J" in out and "2 h 13 min" in out
    assert "e+07" not in out
