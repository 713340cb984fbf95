"""Configuration of the forecaster: which series, how often to refit, limits and alerting.

:class:`ForecastConfig` is the pydantic model of the ``[forecast]`` table of the daemon's TOML
config; :meth:`ForecastConfig.from_mapping` reads such a table on its own, raising
``ValueError`` with one line naming the bad key.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    InstanceOf,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from gputuned.tuner.forecast.detector import DetectorConfig, Direction
from gputuned.tuner.forecast.eta import EtaConfig, Limit

logger = logging.getLogger(__name__)

#: Trainer families the trainer plugin reports (names agreed in DESIGN.md's metric list).
TRAINER_THROUGHPUT = "gputuned_trainer_samples_per_second"
TRAINER_COMM = "gputuned_trainer_communication_seconds"
TRAINER_DATA_WAIT = "gputuned_trainer_dataloader_wait_seconds"

#: What fits the forecasts: Prophet, a least-squares trend, or nothing (the online detector alone).
Fitter = Literal["prophet", "linear", "none"]


@dataclass(frozen=True)
class SeriesSpec:
    """One forecast family: the deviations that matter and, for trending series, its limit."""

    family: str
    direction: Direction = "both"
    limit: Limit | None = None
    prophet: bool = True


DEFAULT_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec(TRAINER_THROUGHPUT, "down", Limit("down", "baseline", 0.9)),
    SeriesSpec("gputuned_gpu_power_watts", "both"),
    SeriesSpec("gputuned_gpu_sm_clock_hertz", "down"),
    SeriesSpec("gputuned_gpu_temperature_celsius", "up", Limit("up", "absolute", 85.0)),
    SeriesSpec(
        "gputuned_gpu_memory_used_bytes", "up",
        Limit("up", "reference", 0.98, "gputuned_gpu_memory_total_bytes"),
    ),
    SeriesSpec(TRAINER_COMM, "up"),
    SeriesSpec("gputuned_peer_rtt_seconds", "up"),
    SeriesSpec(TRAINER_DATA_WAIT, "up"),
)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _strict_model(kind: type, name: str) -> type[BaseModel]:
    """A pydantic model of config dataclass ``kind``: its fields and defaults, strictly typed."""
    hints = typing.get_type_hints(kind)
    fields: dict[str, Any] = {
        f.name: (Annotated[hints[f.name], Strict()] if hints[f.name] in (bool, int, float, str) else hints[f.name], f.default)
        for f in dataclasses.fields(kind)
    }
    return create_model(name, __base__=_Table, **fields)


_DetectorTable = _strict_model(DetectorConfig, "DetectorTable")
_EtaTable = _strict_model(EtaConfig, "EtaTable")
_LimitTable = _strict_model(Limit, "LimitTable")


class _SeriesTable(_Table):
    family: StrictStr
    direction: Direction = "both"
    prophet: StrictBool = True
    limit: _LimitTable | None = None  # type: ignore[valid-type]


_SERIES_TABLES = TypeAdapter(list[_SeriesTable])


class ForecastConfig(_Table):
    """Everything the forecast service needs; defaults suit a 1 s collection tick.

    The ``[forecast]`` table of the daemon's config; nested ``detector`` and ``eta`` tables
    and a ``series`` list of tables build the forecaster's own dataclasses.
    """

    enabled: StrictBool = True
    prophet: StrictBool = True
    fitter: Fitter | None = None
    series: tuple[InstanceOf[SeriesSpec], ...] = DEFAULT_SERIES
    downsample_s: StrictFloat = 60.0
    history_s: StrictFloat = 3 * 86400.0
    min_history_points: StrictInt = 30
    refit_period_s: StrictFloat = 3600.0
    first_fit_after_s: StrictFloat = 1800.0
    band_samples: StrictInt = 0
    band_after_s: StrictFloat = 2 * 86400.0
    horizons_s: tuple[StrictFloat, ...] = (300.0, 1800.0, 3600.0)
    interval_width: StrictFloat = 0.8
    worker_nice: StrictInt = 10
    hardware_hold_s: StrictFloat = 600.0
    thermal_clear_s: StrictFloat = 60.0
    ecc_corrected_burst: StrictFloat = 10.0
    ecc_burst_window_s: StrictFloat = 60.0
    forget_after_s: StrictFloat = 3600.0
    max_series: StrictInt = 1024
    max_rank_series: StrictInt = 768  # of max_series, trainer ranks' (256 ranks x 3 families: control.max_ranks_per_uid)
    rank_forget_after_s: StrictFloat = 120.0  # a rank's series silent this long (it left) are dropped
    detect_in_child: StrictBool = True
    # the throughput-level rule (level.py): recent median against the reference median before it
    level_drop: StrictFloat = 0.35  # alert when the recent median is under 1 - level_drop of the reference; 0: off
    level_window_s: StrictFloat = 30.0
    level_reference_s: StrictFloat = 120.0
    level_min_reference_s: StrictFloat = 30.0
    detector: InstanceOf[DetectorConfig] = DetectorConfig()
    eta: InstanceOf[EtaConfig] = EtaConfig()

    @field_validator("detector", mode="before")
    @classmethod
    def _detector_table(cls, v: Any) -> Any:
        return DetectorConfig(**_DetectorTable.model_validate(v).model_dump()) if isinstance(v, Mapping) else v

    @field_validator("eta", mode="before")
    @classmethod
    def _eta_table(cls, v: Any) -> Any:
        return EtaConfig(**_EtaTable.model_validate(v).model_dump()) if isinstance(v, Mapping) else v

    @field_validator("series", mode="before")
    @classmethod
    def _series_tables(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple) or not all(isinstance(s, Mapping) for s in v):
            return v
        return tuple(_series(s) for s in _SERIES_TABLES.validate_python(list(v)))

    @model_validator(mode="after")
    def _consistent(self) -> ForecastConfig:
        for name in ("downsample_s", "history_s", "refit_period_s", "hardware_hold_s", "thermal_clear_s", "forget_after_s",
                     "ecc_corrected_burst", "ecc_burst_window_s", "max_series",
                     "max_rank_series", "rank_forget_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"forecast.{name} must be positive")
        if not 0.0 < self.interval_width < 1.0:
            raise ValueError("forecast.interval_width must be between 0 and 1")
        if not self.horizons_s or any(h <= 0 for h in self.horizons_s):
            raise ValueError("forecast.horizons_s must be a non-empty list of positive seconds")
        if self.min_history_points < 10:
            raise ValueError("forecast.min_history_points must be at least 10")
        if self.history_s / self.downsample_s < self.min_history_points:
            raise ValueError("forecast.history_s holds fewer points than min_history_points")
        if not 0.0 <= self.level_drop < 1.0 or min(self.level_window_s, self.level_reference_s) <= 0:
            raise ValueError("forecast.level_drop must be in [0, 1) and level_window_s, level_reference_s positive")
        if not 0.0 < self.level_min_reference_s <= self.level_reference_s:
            raise ValueError("forecast.level_min_reference_s must be positive and at most level_reference_s")
        if min(self.first_fit_after_s, self.band_samples, self.band_after_s) < 0:
            raise ValueError("forecast.first_fit_after_s, band_samples and band_after_s must not be negative")
        return self

    @property
    def fitter_name(self) -> Fitter:
        """The fitter in use: ``fitter`` when set, else prophet or linear as ``prophet`` says."""
        if self.fitter is not None:
            return self.fitter
        return "prophet" if self.prophet else "linear"

    @property
    def first_fit_s(self) -> float:
        """Seconds after the first sample when the first fit can happen: the configured delay,
        or the time to gather ``min_history_points`` downsampled points if that is longer."""
        return max(self.first_fit_after_s, self.min_history_points * self.downsample_s)

    @property
    def history_points(self) -> int:
        """Bound on the downsampled points kept per series."""
        return int(self.history_s // self.downsample_s)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> ForecastConfig:
        """Build from a TOML table; raises ValueError with one line naming the bad key."""
        try:
            return cls.model_validate(dict(table))
        except ValidationError as e:
            raise ValueError(_one_line(e)) from None


def _series(table: BaseModel) -> SeriesSpec:
    limit = table.limit  # type: ignore[attr-defined]
    return SeriesSpec(table.family, table.direction, Limit(**limit.model_dump()) if limit else None,  # type: ignore[attr-defined]
                      table.prophet)  # type: ignore[attr-defined]


_EXPECTED = {"bool_type": "bool", "int_type": "int", "float_type": "float", "string_type": "str"}


def _one_line(err: ValidationError) -> str:
    """The first error of ``err``, worded as ``forecast.<key>: <what>``."""
    first = err.errors()[0]
    path = "forecast" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        parent, _, key = path.rpartition(".")
        return f"{parent}: unknown key {key!r}"
    if kind in _EXPECTED:
        return f"{path}: expected {_EXPECTED[kind]}, got {first['input']!r}"
    msg = str(first["msg"]).removeprefix("Value error, ")
    return msg if msg.startswith("forecast.") else f"{path}: {msg}"
