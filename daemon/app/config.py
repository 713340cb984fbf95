"""The daemon's whole configuration: one TOML file, each table validated by its part's model.

The core sections come from :mod:`gputuned.daemon.core.config`, ``[control]`` from the
control socket's room, ``[actuation]`` from actuation's, ``[forecast]`` and ``[tuner]`` from
the forecaster and the decision kernel, and ``[collectors]`` from the collector registry: one
table per registered collector. Only this composition root imports them all.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gputuned.collectors.registry import CollectorConfig, plugins
from gputuned.daemon.actuation.config import ActuationConfig, PluginTables
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.core.config import (
    ConfigError,
    DaemonConfig,
    ExporterConfig,
    GPUConfig,
    Section,
    SimConfig,
    StoreConfig,
    describe_error,
)
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.forecast.config import ForecastConfig


class CollectorsConfig(PluginTables):
    """``[collectors]``: one table per registered collector, each checked by that collector's model.

    Every registered collector has its table, given or defaulted; read one with :meth:`table`
    (or as an attribute: ``cfg.collectors.host``).
    """

    table_name = "collectors"

    @classmethod
    def _known_keys(cls) -> Collection[str]:
        return {p.name for p in plugins()}

    @classmethod
    def _compose(cls, data: Mapping[str, Any], errors: list[InitErrorDetails]) -> dict[str, Any]:
        tables: dict[str, Any] = {}
        for p in plugins():
            try:
                tables[p.name] = p.config.model_validate(data.get(p.name, {}))
            except ValidationError as e:
                errors += [InitErrorDetails(type=PydanticCustomError(d["type"], d["msg"]), loc=(p.name, *d["loc"]),
                                            input=d["input"]) for d in e.errors()]
        return tables

    def table(self, name: str) -> CollectorConfig:
        """The validated ``[collectors.<name>]`` table of a registered collector."""
        value = (self.model_extra or {}).get(name)
        if not isinstance(value, CollectorConfig):
            raise KeyError(name)
        return value

    def tables(self) -> dict[str, CollectorConfig]:
        """Every collector's table by name."""
        return {k: v for k, v in (self.model_extra or {}).items() if isinstance(v, CollectorConfig)}


class TunerSection(TuningConfig):
    """``[tuner]``: whether the tuner runs ("auto": on a simulated node only), and its settings."""

    enabled: bool | Literal["auto"] = "auto"

    @field_validator("enabled", mode="before")
    @classmethod
    def _true_false_or_auto(cls, v: Any) -> Any:
        if v is not True and v is not False and v != "auto":
            raise ValueError(f"tuner.enabled: expected true, false or \"auto\", got {v!r}")
        return v

    def tuning(self, **overrides: Any) -> TuningConfig:
        """The tuner's own settings; ``overrides`` apply to keys the file does not set."""
        fields = self.model_dump(exclude={"enabled"})
        fields.update({k: v for k, v in overrides.items() if k not in self.model_fields_set})
        return TuningConfig(**fields)


class Config(Section):
    daemon: DaemonConfig = DaemonConfig()
    exporter: ExporterConfig = ExporterConfig()
    gpu: GPUConfig = GPUConfig()
    sim: SimConfig = SimConfig()
    collectors: CollectorsConfig = Field(default_factory=CollectorsConfig)
    store: StoreConfig = StoreConfig()
    control: ControlConfig = ControlConfig()
    actuation: ActuationConfig = ActuationConfig()
    forecast: ForecastConfig = ForecastConfig()
    tuner: TunerSection = TunerSection()


def parse_config(data: dict[str, Any], where: str = "config") -> Config:
    """Validate a parsed TOML mapping; raises ConfigError naming the first bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_error(e, where)) from None
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
