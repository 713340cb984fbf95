"""Configuration of the daemon's core: the sections every node has, and how errors are worded.

Every key has a default, so an empty file (or none) is a valid configuration. Unknown
keys, wrong types and out-of-range values are errors that name the key; the CLI turns
them into one line and exit code 2. systemd/gputuned.toml lists every key. Each part's
own section lives beside the part; :mod:`gputuned.daemon.app.config` composes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATH = Path("/etc/gputuned/gputuned.toml")


class ConfigError(ValueError):
    """A configuration problem, worded for one line of output."""


class Section(BaseModel):
    """A table of the config file: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(Section):
    interval_seconds: float = Field(1.0, ge=0.05, le=3600, description="collection period")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_file: Path = Path("/var/lib/gputuned/state.json")


class ExporterConfig(Section):
    listen_address: str = "0.0.0.0"
    listen_port: int = Field(9735, ge=0, le=65535)
    metric_names: Literal["gputuned", "dcgm"] = "gputuned"
    dcgm_version: str = Field(
        "4.5.3-4.8.2", pattern=r"^\d+\.\d+\.\d+-\d+\.\d+\.\d+$",
        description="dcgm-exporter release whose series the dcgm names copy (the host label: Hostname up to 4.5.3-4.8.2, hostname after)")
    max_connections: int = Field(64, ge=1, le=65536, description="HTTP connections held at once; past it the one idle longest is closed")
    workers: int = Field(4, ge=1, le=64, description="threads answering HTTP requests (idle connections hold none)")
    read_timeout_seconds: float = Field(
        5.0, gt=0, le=3600, description="a request head must arrive within this of connecting or of the previous response"
    )
    write_timeout_seconds: float = Field(10.0, gt=0, le=3600, description="a response must be sent within this")
    reserved_fds: int = Field(
        256, ge=0, le=1 << 20, description="no HTTP connection is kept while fewer file descriptors are free (at most half the limit)"
    )
    web_config_file: Path | None = Field(None, description="TLS and basic auth, in Prometheus exporter-toolkit's format")


class GPUConfig(Section):
    backend: Literal["auto", "nvml", "sim"] = "auto"
    call_timeout_seconds: float = Field(
        2.0, gt=0, le=600, description="an NVML call on one GPU that takes longer marks that GPU down until it returns"
    )


class SimConfig(Section):
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


class StoreConfig(Section):
    history_samples: int = Field(600, ge=0, le=1_000_000, description="ring-buffer length per series")
    forget_after_s: float = Field(
        900.0, ge=0, le=30 * 86400,
        description="drop the history of a series not published this long (a rank that left, a series no longer "
                    "forecast); 0: keep it for the daemon's lifetime")


def describe_error(err: ValidationError, where: str) -> str:
    """One line naming the first bad key of ``err`` (``where: section.key: what``)."""
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


def resolve_config_path(explicit: str | None) -> Path | None:
    """The file to load: the explicit one, else the default path if it exists, else none."""
    if explicit:
        return Path(explicit)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None
