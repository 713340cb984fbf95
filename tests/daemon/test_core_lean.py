"""The daemon's core process imports no torch, pandas or prophet; no numpy on a real node's monitoring."""

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

# A node without the simulator, tuner off (its "auto" on a real node), forecaster on as shipped:
# built, ticked and rendered as `gputuned run` would, then asked which heavy modules it holds.
NO_NUMPY = """
import sys, tempfile
from pathlib import Path
from gputuned.daemon.app.components import attach_configured
from gputuned.daemon.app.config import parse_config
from gputuned.daemon.app.daemon import Daemon, GPUSetup
from gputuned.daemon.commands.cli import build_parser
build_parser()
tmp = Path(tempfile.mkdtemp())
cfg = parse_config({"daemon": {"state_file": str(tmp / "s.json")}, "control": {"socket_path": str(tmp / "c.sock")},
                    "collectors": {"peers": {"enabled": False}}, "tuner": {"enabled": False}}, "lean")
d = Daemon(cfg, gpus=GPUSetup(None, "none"), serve=False)
attach_configured(d)
for _ in range(3):
    d.loop.tick()
d.renderer.render(openmetrics=True, gzipped=True)
print(",".join(type(c).__name__ for c in d.components))
print("heavy:" + ",".join(m for m in ("numpy", "scipy", "gputuned.tuner.decision.kernel") if m in sys.modules))
for c in reversed(d.components):
    c.stop()
"""


def test_core_imports_are_lean() -> None:
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_monitoring_without_tuner_or_simulator_imports_no_numpy() -> None:
    r = subprocess.run([sys.executable, "-c", NO_NUMPY], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    components, heavy = r.stdout.strip().split("\n")
    assert "ForecastComponent" in components and "TuningComponent" not in components
    assert heavy == "heavy:"
