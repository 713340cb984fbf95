"""promtool (Debian's prometheus package) accepts the shipped rule files and scrape config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gputuned.dashboards.rules import PROMETHEUS_CONFIG, RULES_DIR, rule_files

pytestmark = pytest.mark.integration


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_every_shipped_rule_file(promtool: str) -> None:
    files = rule_files()
    assert RULES_DIR / "hardware.yml" in files
    r = _promtool(promtool, "check", "rules", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files)


def test_promtool_accepts_the_scrape_config_and_finds_the_rules(promtool: str) -> None:
    r = _promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_files())} rule files found" in r.stdout


def test_promtool_check_would_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    shutil.copy(RULES_DIR / "hardware.yml", bad)
    bad.write_text(bad.read_text().replace("expr: gputuned_gpu_up == 0", "expr: gputuned_gpu_up == (0"))
    r = _promtool(promtool, "check", "rules", str(bad))
    assert r.returncode != 0
