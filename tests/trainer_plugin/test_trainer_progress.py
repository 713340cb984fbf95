"""`gputuned train` draws its steps on stderr when asked, and prints the same result either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gputuned import progress


def _train(tmp_path: Path, name: str, *flags: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[train]\nepochs = 2\nmax_steps = 6\n[checkpoint]\ndir = "{tmp_path / name}"\n'
                   '[plugin]\nenabled = false\n')
    env = {k: v for k, v in os.environ.items() if k != progress.ENV} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gputuned.daemon.commands.cli", "train", str(cfg), "--json", *flags],
                          capture_output=True, text=True, env=env, timeout=120)


def test_train_shows_steps_when_asked_and_nothing_piped(tmp_path: Path) -> None:
    shown, piped = _train(tmp_path, "shown", "--progress"), _train(tmp_path, "piped")
    assert shown.returncode == piped.returncode == 0, shown.stderr + piped.stderr
    assert "training, epoch 1, step 6" in shown.stderr
    assert "training, epoch" not in piped.stderr and "\x1b[" not in piped.stderr
    assert json.loads(shown.stdout)["steps"] == json.loads(piped.stdout)["steps"] == 6
