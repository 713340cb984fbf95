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
    settings_file: Path | None = Field(
        None, description="keep simulated GPU settings in this JSON file, as hardware keeps them across a crash"
    )
    job: bool = Field(True, description="run the workload as a job reporting over the control socket")
    job_name: str = Field("sim-job", pattern=r"^[A-Za-z0-9._:-]{1,128}$")


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


class ControlConfig(_Section):
    enabled: bool = True
    socket_path: Path = Path("/run/gputuned/control.sock")
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="permission bits of the socket")
    socket_group: str = Field("", description="group owning the socket (name or gid); empty: the daemon's")
    allowed_uids: list[int] = Field([], description="uids that may connect, besides root and the daemon's own")
    allowed_gids: list[int] = Field([], description="gids (primary or supplementary) that may connect")
    admin_uids: list[int] = Field([0], description="uids that may set knobs by hand and restore (status is open to allowed peers)")
    max_message_bytes: int = Field(65536, ge=256, le=65536)
    hello_timeout_s: float = Field(5.0, gt=0, le=300)
    frame_timeout_s: float = Field(5.0, gt=0, le=300)
    idle_timeout_s: float = Field(600.0, gt=0, le=86400, description="close connections silent this long")
    max_messages_per_second: int = Field(200, ge=1, le=100_000)
    max_connections: int = Field(256, ge=1, le=65536)
    report_interval_s: float = Field(1.0, gt=0, le=3600, description="told to clients in welcome")
    job_ttl_s: float = Field(60.0, gt=0, le=86400, description="keep a disconnected job's series this long")


Knob = Literal["power_limit", "locked_sm_clocks", "locked_memory_clocks", "applications_clocks"]


class ActuationConfig(_Section):
    enabled: bool = True
    dry_run: bool = Field(False, description="log what would change, change nothing")
    knobs: list[Knob] = ["power_limit", "locked_sm_clocks", "locked_memory_clocks", "applications_clocks"]
    power_limit_min_w: float = Field(0.0, ge=0, description="0: NVML's minimum")
    power_limit_max_w: float = Field(0.0, ge=0, description="0: NVML's maximum")
    sm_clock_min_mhz: int = Field(0, ge=0)
    sm_clock_max_mhz: int = Field(0, ge=0)
    memory_clock_min_mhz: int = Field(0, ge=0)
    memory_clock_max_mhz: int = Field(0, ge=0)
    restore_on_stop: bool = True


class Config(_Section):
    daemon: DaemonConfig = DaemonConfig()
    exporter: ExporterConfig = ExporterConfig()
    gpu: GPUConfig = GPUConfig()
    sim: SimConfig = SimConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    store: StoreConfig = StoreConfig()
    control: ControlConfig = ControlConfig()
    actuation: ActuationConfig = ActuationConfig()
    # The forecaster's and tuner's own dataclasses validate these tables (names in errors).
    forecast: dict[str, Any] = {}
    tuner: dict[str, Any] = {}

    @field_validator("forecast")
    @classmethod
    def _forecast_table(cls, v: dict[str, Any]) -> dict[str, Any]:
        from gputuned.tuner.forecast.config import ForecastConfig

        ForecastConfig.from_mapping(v)
        return v

    @field_validator("tuner")
    @classmethod
    def _tuner_table(cls, v: dict[str, Any]) -> dict[str, Any]:
        enabled = v.get("enabled", "auto")
        if enabled not in (True, False, "auto"):
            raise ValueError(f"tuner.enabled: expected true, false or \"auto\", got {enabled!r}")
        from gputuned.daemon.app.tuning import TuningConfig

        fields = TuningConfig.__dataclass_fields__
        for key, value in v.items():
            if key == "enabled":
                continue
            if key not in fields:
                raise ValueError(f"tuner.{key}: unknown key")
            default = fields[key].default
            if isinstance(default, bool) or default is None or isinstance(default, Path):
                ok = isinstance(value, bool) if isinstance(default, bool) else isinstance(value, str)
            else:
                ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
            if not ok or (isinstance(value, bool) and not isinstance(default, bool)):
                expected = "a path" if default is None or isinstance(default, Path) else type(default).__name__
                raise ValueError(f"tuner.{key}: expected {expected}, got {value!r}")
        TuningConfig(**{k: x for k, x in v.items() if k != "enabled"})
        return v


def _describe(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "value_error":  # our validators' messages usually name the key already
        msg = str(first["msg"]).removeprefix("Value error, ")
        if msg.startswith(str(first["loc"][0]) if first["loc"] else "\0"):
            return f"{where}: {msg}"
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
