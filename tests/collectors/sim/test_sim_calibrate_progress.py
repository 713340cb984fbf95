"""`gputuned sim calibrate` counts the GPUs it has fitted on stderr when asked; its stdout stays the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gputuned import progress
from gputuned.collectors.sim.commands import _default_data


@pytest.mark.skipif(_default_data() is None, reason="the Zeus traces are not packaged here")
def test_calibrate_draws_progress_when_asked_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != progress.ENV}
    shown, quiet = (subprocess.run([sys.executable, "-m", "gputuned", "sim", "calibrate", "--gpu", "a40",
                                    "--out", str(tmp_path / f"{name}.json"), flag],
                                   capture_output=True, text=True, env=env, timeout=120)
                    for name, flag in (("shown", "--progress"), ("quiet", "--no-progress")))
    assert shown.returncode == quiet.returncode == 0, shown.stderr + quiet.stderr
    assert "calibrating" in shown.stderr and "\x1b[" in shown.stderr
    assert "calibrating" not in quiet.stderr
    assert shown.stdout.splitlines()[1:] == quiet.stdout.splitlines()[1:]  # the first names the output file
    assert (tmp_path / "shown.json").read_text() == (tmp_path / "quiet.json").read_text()
