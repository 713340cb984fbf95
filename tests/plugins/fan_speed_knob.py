"""A knob plugin for tests: a GPU's fan speed, in percent, on devices that offer fan control.

Nothing else in gputuned names it: importing this module registers it, and from then on
the actuator records, applies, verifies and restores it, ``[actuation]`` accepts its keys,
``gputuned set --fan-percent`` sets it, ``gputuned status`` shows it and /metrics serves
its family while it is changed. NVML's device layer has no fan control, so the device
must offer :class:`FanControl` (the tests' scripted fake does); on any other GPU its read
raises NotSupportedError and its original is recorded as unknown.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gputuned.collectors.device import GPUDevice, NotSupportedError
from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs import Bounds, CliOption, Knob, Value, intersect, register

FAMILY = declare("gputuned_actuation_fan_speed_ratio", "gauge",
                 "Fan speed gputuned set on a GPU (setting=target) and its recorded original, while changed.")


@runtime_checkable
class FanControl(Protocol):
    """What a device needs for this knob."""

    def fan_percent(self) -> int: ...

    def set_fan_percent(self, percent: int) -> None: ...

    def reset_fan(self) -> None: ...


class FanSpeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fan_speed_min_percent: int = Field(30, ge=0, le=100, description="never set the fan below this")
    fan_speed_max_percent: int = Field(100, ge=0, le=100)


def _fan(dev: GPUDevice) -> FanControl:
    if not isinstance(dev, FanControl):
        raise NotSupportedError(f"gpu {dev.identity.index}: no fan control")
    return dev


@register
class FanSpeedKnob(Knob):
    name = "fan_speed"
    config_model = FanSpeedConfig
    default_enabled = False
    restore_rank = 40
    raw_unit = "%"
    label = "fan"
    display = "{0} %"
    family = FAMILY
    base_scale = 0.01
    cli = CliOption("--fan-percent", "PCT", "fan speed (percent)", int)

    def read(self, dev: GPUDevice) -> Value:
        return int(_fan(dev).fan_percent())

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        _fan(dev)
        return intersect((0, 100), cfg.fan_speed_min_percent, cfg.fan_speed_max_percent)

    def apply(self, dev: GPUDevice, value: Value) -> None:
        _fan(dev).set_fan_percent(int(value))

    def reset(self, dev: GPUDevice) -> None:
        _fan(dev).reset_fan()
