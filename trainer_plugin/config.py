"""Trainer configuration: a TOML file validated before any training starts."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    kind: Literal["mlp", "cnn"] = "mlp"
    hidden: int = Field(default=128, ge=1)


class DataConfig(_Section):
    dataset: Literal["digits"] = "digits"
    batch_size: int = Field(default=64, ge=1, description="global batch per optimizer step")
    batch_mode: Literal["global", "micro"] = "global"
    min_batch_size: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=4096, ge=1)
    prefetch: int = Field(default=2, ge=1)
    seed: int = 0


class OptimConfig(_Section):
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    lr_scaling: Literal["none", "linear", "sqrt", "adascale"] = "linear"
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)


class TrainConfig(_Section):
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    accumulation_steps: int = Field(default=1, ge=1)
    init_loss_scale: float = Field(default=65536.0, gt=0)
    loss_scale_growth_interval: int = Field(default=2000, ge=1)
    max_grad_norm: float | None = Field(default=None, gt=0, description="clip the unscaled gradients' "
                                        "total norm to this before each optimizer step (None: no clipping)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    log_every: int = Field(default=50, ge=1)
    eval_every_epoch: bool = True


class CompressionConfig(_Section):
    hook: Literal["none", "topk", "int8", "powersgd", "bf16"] = "none"
    topk_ratio: float = Field(default=0.05, gt=0, le=1)
    powersgd_rank: int = Field(default=2, ge=1)
    powersgd_start_iter: int = Field(default=10, ge=2)


class CheckpointConfig(_Section):
    dir: str | None = None
    every_steps: int = Field(default=1000, ge=1)
    keep: int = Field(default=3, ge=1)
    asynchronous: bool = True
    resume: bool = True


class PluginConfig(_Section):
    enabled: bool = True
    socket: str = "/run/gputuned/control.sock"
    job: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    sync_interval: int | None = Field(default=None, ge=1, description="fixed steps between decision exchanges")
    sync_period_s: float = Field(default=1.0, gt=0, description="time between decision exchanges (no sync_interval)")
    norm_every: int | None = Field(default=None, ge=1, description="fixed steps between gradient-norm samples")
    norm_period_s: float = Field(default=0.5, gt=0, description="time between gradient-norm samples (no norm_every)")
    trace_dir: str | None = Field(default=None, description="where each rank keeps its capture traces, rotated "
                                                            "(default gputuned-traces-<uid> in the temp dir)")


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    plugin: PluginConfig = Field(default_factory=PluginConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.data.min_batch_size > self.data.max_batch_size:
            raise ValueError("data.min_batch_size exceeds data.max_batch_size")
        if not self.data.min_batch_size <= self.data.batch_size <= self.data.max_batch_size:
            raise ValueError("data.batch_size outside [data.min_batch_size, data.max_batch_size]")
        return self


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {first['msg']}"


def parse_config(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Validate a config mapping (plus dotted-key overrides); raise ConfigError naming the key."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not isinstance(merged.setdefault(section, {}), dict):
            raise ConfigError(f"{section}: not a table")
        merged[section][key] = value
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return parse_config(data, overrides)
