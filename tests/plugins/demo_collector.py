"""A collector that exists only in tests: one file that registers itself, as any new collector does.

Importing it is the whole installation: it declares its family, its ``[collectors.demo]``
table (off unless the table turns it on) and its factory, which reads the daemon's context.
"""

from __future__ import annotations

from pydantic import Field

from gputuned.collectors.families import G, Sample, declare
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

DEMO_VALUE = declare("gputuned_demo_value", G, "The configured value, per node, served by the test-only demo collector.")


class DemoCollectorConfig(CollectorConfig):
    enabled: bool = False
    value: float = Field(1.0, ge=0)


class DemoCollector:
    """Serves its configured value, labelled with how many GPUs the daemon opened."""

    name = "demo"

    def __init__(self, value: float, gpus: int) -> None:
        self.value = value
        self.gpus = gpus

    def collect(self) -> list[Sample]:
        return [(DEMO_VALUE, (("gpus", str(self.gpus)),), self.value)]

    def close(self) -> None:
        """Nothing to release."""


@register("demo", config=DemoCollectorConfig, families=(DEMO_VALUE,))
def build_demo_collector(cfg: DemoCollectorConfig, ctx: CollectorContext) -> DemoCollector:
    """``[collectors.demo]``: the demo collector with its value."""
    return DemoCollector(cfg.value, len(ctx.devices))
