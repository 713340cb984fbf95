"""Configuration: the shipped example parses, bad files give one line naming the key, exit 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from testkit import REPO, load_error

from gputuned.daemon.app.config import Config, load_config
from gputuned.daemon.core.config import ConfigError
from gputuned.tuner.decision.config import TuningConfig

GPUTUNED = [sys.executable, "-m", "gputuned"]


def _fields(model: BaseModel) -> dict[str, object]:
    return {name: getattr(model, name) for name in type(model).model_fields} | dict(model.model_extra or {})


def _keys(model: BaseModel, prefix: str = "") -> tuple[list[str], list[str]]:
    """(tables, leaf keys) of a config model, walking sections, collectors' tables and nested tables."""
    tables: list[str] = []
    leaves: list[str] = []
    for name, value in _fields(model).items():
        if isinstance(value, BaseModel):
            more = _keys(value, f"{prefix}{name}.")
            if not all(isinstance(v, BaseModel) for v in _fields(value).values()):  # [collectors] holds tables only
                tables.append(prefix + name)
            tables += more[0]
            leaves += more[1]
        elif dataclasses.is_dataclass(value):  # the forecaster's nested tables
            tables.append(prefix + name)
        else:
            leaves.append(name)
    return tables, leaves


def test_shipped_example_lists_every_key_with_its_default() -> None:
    example = load_config(REPO / "systemd" / "gputuned.toml")
    assert example == Config()
    assert example.tuner.tuning() == TuningConfig()
    text = (REPO / "systemd" / "gputuned.toml").read_text()
    tables, leaves = _keys(Config())
    assert {"collectors.gpu", "collectors.peers", "forecast.detector", "tuner"} <= set(tables)
    for table in tables:
        assert f"[{table}]" in text, table
    for key in leaves:
        assert f"{key} =" in text or f"# {key} =" in text, key


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("[daemon]\ninterval_secs = 1\n", "daemon.interval_secs: unknown key"),
        ("[exporter]\nlisten_port = 70000\n", "exporter.listen_port"),
        ("[exporter]\nlisten_port = \"ninety\"\n", "exporter.listen_port"),
        ("[gpu]\nbackend = \"cuda\"\n", "gpu.backend"),
        ("[daemon]\ninterval_seconds = 0\n", "daemon.interval_seconds"),
        ("[collectors.peers]\npeers = [\"nohost\"]\n", "peer 'nohost'"),
        ("[bogus]\nx = 1\n", "bogus: unknown key"),
        ("[collectors.bogus]\nx = 1\n", "collectors.bogus: unknown key"),
        ("[collectors.host]\nproc_path = 3\n", "collectors.host.proc_path"),
        ("[collectors.peers]\ntimeout_seconds = 0\n", "collectors.peers.timeout_seconds"),
        ("[control]\nmax_connections = 0\n", "control.max_connections"),
        ("[forecast]\nrefit_every = 5\n", "forecast.refit_every: unknown key"),
        ("[forecast]\ndownsample_s = -1\n", "forecast.downsample_s must be positive"),
        ("[forecast.detector]\nwarmup = true\n", "forecast.detector.warmup"),
        ("[[forecast.series]]\nfamily = \"x\"\ndirection = \"sideways\"\n", "forecast.series.0.direction"),
        ("[tuner]\nobjective = \"speed\"\n", "tuner.objective: unknown 'speed'"),
        ("[tuner]\nenabled = \"yes\"\n", "tuner.enabled: expected true, false or \"auto\", got 'yes'"),
        ("[tuner]\ninterval_s = \"5\"\n", "tuner.interval_s"),
        ("[tuner]\npolicy = \"greedy\"\n", "tuner.policy"),
        ("[tuner]\nspeed = 1\n", "tuner.speed: unknown key"),
        ("[daemon\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, body: str, names: str) -> None:
    message = load_error(load_config, tmp_path / "bad.toml", body, ConfigError)
    assert names in message
    assert "\n" not in message


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[exporter]\nlisten_port = -1\n")
    r = subprocess.run([*GPUTUNED, "run", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "exporter.listen_port" in r.stderr and str(path) in r.stderr


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([*GPUTUNED, "run", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "cannot read" in r.stderr


def test_cli_bad_flag_exits_2() -> None:
    r = subprocess.run([*GPUTUNED, "run", "--interval", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "daemon.interval_seconds" in r.stderr


def test_version_and_help() -> None:
    from gputuned import __version__

    r = subprocess.run([*GPUTUNED, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"gputuned {__version__}"
    r = subprocess.run([*GPUTUNED, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in ("run", "record", "replay", "trace"):
        assert cmd in r.stdout
