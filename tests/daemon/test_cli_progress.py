"""Long commands draw a progress line on stderr when asked or on a terminal, and nothing when piped."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gputuned import progress

GPUTUNED = [sys.executable, "-m", "gputuned", "--log-level", "warning"]


def _record(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != progress.ENV}
    return subprocess.run([*GPUTUNED, "record", "--sim", "--gpus", "2", "--interval", "0.2", "--duration", "2s",
                           "-o", str(tmp_path / "node.gttrace"), *flags],
                          capture_output=True, text=True, timeout=120, env=env)


def test_record_draws_its_progress_when_asked_even_piped(tmp_path: Path) -> None:
    r = _record(tmp_path, "--progress")
    assert r.returncode == 0, r.stderr
    assert "recording, " in r.stderr and " samples" in r.stderr
    assert "\x1b[" in r.stderr  # drawn as on a terminal
    assert r.stdout == ""
    assert "bytes/sample" in r.stderr


def test_record_piped_prints_no_progress(tmp_path: Path) -> None:
    r = _record(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "recording, " not in r.stderr
    assert "\x1b[" not in r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith("gputuned ") and "recording 2 s of" in lines[0]
    assert lines[-1].startswith("wrote ") and "bytes/sample" in lines[-1]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("flag", "env", "tty", "shown"), [
    (None, None, True, True), (None, None, False, False), (True, None, False, True), (False, None, True, False),
    (None, "1", False, True), (None, "0", True, False), (False, "1", True, False),
])
def test_a_flag_beats_the_environment_which_beats_the_terminal(
        monkeypatch: pytest.MonkeyPatch, flag: bool | None, env: str | None, tty: bool, shown: bool) -> None:
    if env is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, env)
    assert progress.wanted(flag, _Stream(tty)) is shown


def test_track_yields_every_item_and_draws_only_when_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    quiet = _Stream(False)
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(progress.track(range(5), "items")) == [0, 1, 2, 3, 4]
    assert quiet.getvalue() == ""
    drawn = _Stream(False)
    monkeypatch.setattr(sys, "stderr", drawn)
    assert list(progress.track(iter(range(3)), "things", total=3, flag=True)) == [0, 1, 2]
    assert "things" in drawn.getvalue()
