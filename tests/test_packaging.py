"""A normal (non-editable) install carries every subpackage and its data files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit import REPO


def test_normal_install_imports_and_finds_its_data(tmp_path: Path) -> None:
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    check = (
        "import gputuned, gputuned.daemon.commands.cli, gputuned.collectors.sim.nvml;"
        "from gputuned.collectors.sim.state import available_profiles;"
        "print(gputuned.__file__); print(','.join(available_profiles()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    where, profiles = r.stdout.split()
    assert where.startswith(str(site))
    assert {"a100-sxm4-80gb", "h100-sxm5-80gb", "v100-sxm2-32gb", "a40"} <= set(profiles.split(","))
    for sub in ("daemon", "collectors", "collectors/sim", "tuner", "tuner/forecast", "trainer_plugin", "dashboards"):
        assert (site / "gputuned" / sub / "__init__.py").exists(), sub
    assert not (site / "daemon").exists() and not (site / "tuner").exists()  # nothing generic in site-packages
