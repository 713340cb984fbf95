"""Configuration of the forecaster: which series, how often to refit, limits and alerting.

:meth:`ForecastConfig.from_mapping` reads the ``[forecast]`` table of the daemon's TOML
config; unknown keys and bad values raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gputuned.tuner.forecast.detector import DetectorConfig, Direction
from gputuned.tuner.forecast.eta import EtaConfig, Limit

logger = logging.getLogger(__name__)

#: Trainer families the trainer plugin reports (names agreed in DESIGN.md's metric list).
TRAINER_THROUGHPUT = "gputuned_trainer_samples_per_second"
TRAINER_COMM = "gputuned_trainer_communication_seconds"
TRAINER_DATA_WAIT = "gputuned_trainer_dataloader_wait_seconds"


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


@dataclass(frozen=True)
class ForecastConfig:
    """Everything the forecast service needs; defaults suit a 1 s collection tick."""

    enabled: bool = True
    prophet: bool = True
    series: tuple[SeriesSpec, ...] = DEFAULT_SERIES
    downsample_s: float = 60.0
    history_s: float = 3 * 86400.0
    min_history_points: int = 30
    refit_period_s: float = 3600.0
    first_fit_after_s: float = 1800.0
    horizons_s: tuple[float, ...] = (300.0, 1800.0, 3600.0)
    interval_width: float = 0.8
    worker_nice: int = 10
    hardware_hold_s: float = 600.0
    thermal_clear_s: float = 60.0
    ecc_corrected_burst: float = 10.0
    ecc_burst_window_s: float = 60.0
    forget_after_s: float = 3600.0
    detect_in_child: bool = True
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    eta: EtaConfig = field(default_factory=EtaConfig)

    def __post_init__(self) -> None:
        for name in ("downsample_s", "history_s", "refit_period_s", "hardware_hold_s", "thermal_clear_s", "forget_after_s",
                     "ecc_corrected_burst", "ecc_burst_window_s"):
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

    @property
    def history_points(self) -> int:
        """Bound on the downsampled points kept per series."""
        return int(self.history_s // self.downsample_s)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> ForecastConfig:
        """Build from a TOML table; nested ``detector``, ``eta`` tables and a ``series`` list."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ValueError(f"forecast: unknown key {key!r}")
            if key == "detector":
                kwargs[key] = _sub(DetectorConfig, value, "forecast.detector")
            elif key == "eta":
                kwargs[key] = _sub(EtaConfig, value, "forecast.eta")
            elif key == "series":
                kwargs[key] = tuple(_series(v, i) for i, v in enumerate(value))
            elif key == "horizons_s":
                kwargs[key] = tuple(float(h) for h in value)
            else:
                kwargs[key] = _typed(cls, key, value, "forecast")
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"forecast: {e}") from None


def _typed(kind: type, key: str, value: Any, where: str) -> Any:
    """``value`` if it has the type of the field's scalar default (an int is a float too), else ValueError."""
    default = next(f.default for f in dataclasses.fields(kind) if f.name == key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and (isinstance(default, float) or isinstance(value, int))
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # tables and lists are checked where they are built
        return value
    if not ok:
        raise ValueError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
    return value


def _sub(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a table")
    known = {f.name for f in dataclasses.fields(kind)}
    for key in value:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}")
    try:
        return kind(**{key: _typed(kind, key, v, where) for key, v in value.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _series(value: Any, index: int) -> SeriesSpec:
    where = f"forecast.series[{index}]"
    if not isinstance(value, Mapping) or "family" not in value:
        raise ValueError(f"{where} must be a table with a family")
    unknown = set(value) - {"family", "direction", "prophet", "limit"}
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    limit = None
    if "limit" in value:
        lim = value["limit"]
        try:
            limit = Limit(lim["direction"], lim["kind"], float(lim["value"]), lim.get("reference", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}.limit: {e}") from None
    direction = value.get("direction", "both")
    if direction not in ("both", "up", "down"):
        raise ValueError(f"{where}.direction must be both, up or down")
    return SeriesSpec(str(value["family"]), direction, limit, bool(value.get("prophet", True)))
