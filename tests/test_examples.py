"""The examples the README points to run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testkit import REPO


def test_own_loop_example_trains_without_a_daemon(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(REPO / "examples" / "own_loop.py"), "--epochs", "2",
                        "--socket", str(tmp_path / "absent.sock")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    accuracy = float(r.stdout.strip().rsplit(" ", 1)[1])
    assert accuracy > 0.85
