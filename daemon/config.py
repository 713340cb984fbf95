"""Configuration: one TOML file validated against a typed schema.

Every key has a default, so an empty file (or none) is a valid configuration. Unknown
keys, wrong types and out-of-range values are errors that name the key; the CLI turns
them into one line and exit code 2. systemd/gputuned.toml lists every key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PATH = Path("/etc/gputuned/gputuned.toml")


class ConfigError(ValueError):
    """A configuration problem, worded for one line of output."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(_Section):
    interval_seconds: float = Field(1.0, ge=0.05, le=3600, description="collection period")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_file: Path = Path("/var/lib/gputuned/state.json")


class ExporterConfig(_Section):
    listen_address: str = "0.0.0.0"
    listen_port: int = Field(9735, ge=0, le=65535)
    metric_names: Literal["gputuned", "dcgm"] = "gputuned"


class GPUConfig(_Section):
    backend: Literal["auto", "nvml", "sim"] = "auto"


class SimConfig(_Section):
    profile: str = "h100"
    gpus: int = Field(4, ge=1, le=64)
    script: Path | None = Field(None, description="scripted-values TOML (tests); physics model otherwise")
    workload: str | None = "resnet50"
    scenario: Path | None = None
    seed: int = 0
    privileged: bool = Field(True, description="whether simulated set calls are allowed")


class ToggleConfig(_Section):
    enabled: bool = True


class HostCollectorConfig(ToggleConfig):
    proc_path: Path = Path("/proc")
    skip_interfaces: list[str] = ["lo"]


class InfinibandCollectorConfig(ToggleConfig):
    sysfs_path: Path = Path("/sys")


class PeersCollectorConfig(ToggleConfig):
    peers: list[str] = []
    interval_seconds: float = Field(5.0, gt=0, le=3600)
    timeout_seconds: float = Field(1.0, gt=0, le=60)

    @field_validator("peers")
    @classmethod
    def _peers_are_host_port(cls, v: list[str]) -> list[str]:
        from gputuned.collectors.network import parse_peer

        for p in v:
            parse_peer(p)
        return v


class CollectorsConfig(_Section):
    gpu: ToggleConfig = ToggleConfig()
    host: HostCollectorConfig = HostCollectorConfig()
    infiniband: InfinibandCollectorConfig = InfinibandCollectorConfig()
    peers: PeersCollectorConfig = PeersCollectorConfig()


class StoreConfig(_Section):
    history_samples: int = Field(600, ge=0, le=1_000_000, description="ring-buffer length per series")


class Config(_Section):
    daemon: DaemonConfig = DaemonConfig()
    exporter: ExporterConfig = ExporterConfig()
    gpu: GPUConfig = GPUConfig()
    sim: SimConfig = SimConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    store: StoreConfig = StoreConfig()


def _describe(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    else:
        msg = first["msg"]
        if "input" in first and not isinstance(first["input"], dict):
            msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    return f"{where}: {key}: {msg}" + (f" (and {more} more)" if more else "")


def parse_config(data: dict[str, Any], where: str = "config") -> Config:
    """Validate a parsed TOML mapping; raises ConfigError naming the first bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, where)) from None
    except ValueError as e:  # validators that raise plain ValueError
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: Path | None) -> Config:
    """Load ``path``; ``None`` means built-in defaults. Raises ConfigError."""
    if path is None:
        return Config()
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, str(path))


def resolve_config_path(explicit: str | None) -> Path | None:
    """The file to load: the explicit one, else the default path if it exists, else none."""
    if explicit:
        return Path(explicit)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None
