"""Configuration: the shipped example parses, bad files give one line naming the key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO

from gputuned.daemon.core.config import Config, ConfigError, load_config

GPUTUNED = [sys.executable, "-m", "gputuned"]


def test_shipped_example_lists_every_key_with_its_default() -> None:
    from gputuned.daemon.app.tuning import TuningConfig
    from gputuned.tuner.forecast.config import ForecastConfig

    example = load_config(REPO / "systemd" / "gputuned.toml")
    assert example.model_copy(update={"forecast": {}, "tuner": {}}) == Config()
    assert ForecastConfig.from_mapping(example.forecast) == ForecastConfig()
    tuner = {k: v for k, v in example.tuner.items() if k != "enabled"}
    tuner["pause_file"] = Path(tuner["pause_file"])
    assert TuningConfig(**tuner) == TuningConfig()
    text = (REPO / "systemd" / "gputuned.toml").read_text()

    def keys(model: object, prefix: str = "") -> list[str]:
        out = []
        for name in type(model).model_fields:
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                out += keys(value, f"{prefix}{name}.")
            else:
                out.append(name)
        return out

    for key in keys(Config()):
        if isinstance(getattr(Config(), key, None), dict):  # tables validated by their owners
            assert f"[{key}]" in text, key
        else:
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
        ("[daemon\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, body: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(path)
    assert names in str(err.value)
    assert "\n" not in str(err.value)


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
