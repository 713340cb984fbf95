"""The power limit of a GPU, in mW: NVML's constraints intersected with the config's watts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gputuned.collectors.device import GPUDevice
from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import Bounds, CliOption, Knob, Value, intersect
from gputuned.daemon.actuation.knobs.registry import register

FAMILY = declare("gputuned_actuation_power_limit_watts", "gauge",
                 "Power limit gputuned set on a GPU (setting=target) and its recorded original, while changed.")


class PowerLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    power_limit_min_w: float = Field(0.0, ge=0, description="0: NVML's minimum")
    power_limit_max_w: float = Field(0.0, ge=0, description="0: NVML's maximum")


def _watts(text: str) -> int:
    return int(round(float(text) * 1000))


@register
class PowerLimitKnob(Knob):
    name = "power_limit"
    config_model = PowerLimitConfig
    restore_rank = 90  # after the clocks
    raw_unit = "mW"
    label = "power limit"
    display = "{0:g} W"
    display_scale = 1e-3
    family = FAMILY
    base_scale = 1e-3
    cli = CliOption("--power-limit-w", "W", "power limit (watts)", _watts)

    def read(self, dev: GPUDevice) -> Value:
        # The management limit is what a set call changes and restore must put back; the
        # enforced limit can be lower (an out-of-band cap).
        return int(round(dev.power_management_limit_w() * 1000))

    def bounds(self, dev: GPUDevice, cfg: Any) -> Bounds:
        c = dev.power_limit_constraints()
        return intersect((c.min_mw, c.max_mw), cfg.power_limit_min_w * 1000, cfg.power_limit_max_w * 1000)

    def check(self, dev: GPUDevice, value: Value, cfg: Any) -> str | None:
        lo, hi = self.bounds(dev, cfg)
        if lo > hi:
            return f"no power limit allowed: config range does not meet NVML's {lo / 1000:g}-{hi / 1000:g} W"
        if not lo <= value <= hi:
            return f"power limit {value / 1000:g} W outside {lo / 1000:g}-{hi / 1000:g} W"
        return None

    def apply(self, dev: GPUDevice, value: Value) -> None:
        dev.set_power_limit_mw(int(value))

    def verify(self, dev: GPUDevice, value: Value) -> bool | None:
        # NVML may round the limit to whole watts.
        return abs(self.read(dev) - int(value)) < 1000

    def default(self, dev: GPUDevice) -> Value:
        return int(dev.power_limit_constraints().default_mw)

    def reset(self, dev: GPUDevice) -> None:
        dev.set_power_limit_mw(int(dev.power_limit_constraints().default_mw))
