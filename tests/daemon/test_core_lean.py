"""The daemon's core process imports no torch, pandas or prophet."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "pandas", "prophet", "stable_baselines3", "gymnasium", "matplotlib", "grafanalib")

CHECK = f"""
import sys
from gputuned.daemon.commands.cli import build_parser
from gputuned.daemon.app.daemon import Daemon
import gputuned.daemon.app.components, gputuned.daemon.app.tuning, gputuned.tuner.forecast.service
import gputuned.collectors.sim.physics, gputuned.trainer_plugin.client
build_parser()
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print(",".join(heavy))
"""


def test_core_imports_are_lean() -> None:
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
