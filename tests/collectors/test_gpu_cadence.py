"""The GPU collector's slow readings: read every ``slow_every_ticks`` ticks, their last samples served in between."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gputuned.collectors import families as F
from gputuned.collectors.device import GPUDevice
from gputuned.collectors.gpu import GPUCollector, GPUConfig, build_gpu_collector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.registry import CollectorContext
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock


class CountingGPU:
    """A GPU whose method calls are counted by name (the collector sees the device it wraps)."""

    def __init__(self, dev: GPUDevice) -> None:
        self._dev = dev
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._dev, name)
        if not callable(attr):
            return attr

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return attr(*args)

        return counted


def _value(samples: list[F.Sample], family: str, **labels: str) -> float | None:
    for name, labs, v in samples:
        if name == family and all(dict(labs).get(k) == want for k, want in labels.items()):
            return v
    return None


def test_slow_readings_are_not_called_between_slow_ticks_and_keep_their_samples(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = [CountingGPU(g) for g in open_gpus(nvml)]
    collector = GPUCollector([gpu], slow_every_ticks=5)  # type: ignore[list-item]
    ticks = [collector.collect() for _ in range(7)]
    assert gpu.calls["power_limit_constraints"] == 2  # ticks 0 and 5
    assert gpu.calls["max_sm_clock_hz"] == 2
    assert gpu.calls["power_w"] == 7  # fast readings every tick
    assert gpu.calls["temperature_c"] == 7
    for samples in ticks[1:]:  # the same series every tick from the second (GPM and NVLink rates need two)
        assert [(n, lab) for n, lab, _ in samples] == [(n, lab) for n, lab, _ in ticks[1]]
        assert _value(samples, F.GPU_POWER_LIMIT_MAX) == 700.0
        assert _value(samples, F.GPU_SM_CLOCK_MAX) == _value(ticks[0], F.GPU_SM_CLOCK_MAX)


def test_a_changed_slow_value_shows_at_the_next_slow_tick(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 1, "series": [
        {"gpu": 0, "field": "ecc_corrected", "points": [[0, 0], [2.5, 7]]},
        {"gpu": 0, "field": "remapped_correctable", "points": [[0, 0], [2.5, 3]]},
        {"gpu": 0, "field": "power_mw", "points": [[0, 100_000], [2.5, 300_000]]},
    ]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml), slow_every_ticks=4)
    seen = []
    for _ in range(6):
        s = collector.collect()
        seen.append((_value(s, F.GPU_ECC, type="corrected"), _value(s, F.GPU_REMAPPED, cause="correctable"),
                     _value(s, F.GPU_POWER)))
        clock.advance(1.0)
    # t = 0..5: the change at 2.5 s shows in power at t = 3 and in the slow readings at tick 4, not before
    assert seen == [(0.0, 0.0, 100.0), (0.0, 0.0, 100.0), (0.0, 0.0, 100.0), (0.0, 0.0, 300.0),
                    (7.0, 3.0, 300.0), (7.0, 3.0, 300.0)]


def test_every_tick_with_slow_every_ticks_1(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = [CountingGPU(g) for g in open_gpus(nvml)]
    collector = GPUCollector([gpu])  # type: ignore[list-item]
    for _ in range(3):
        collector.collect()
    assert gpu.calls["power_limit_constraints"] == 3


def test_lost_gpu_serves_no_kept_slow_samples(sim_node) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 2, "lost": {"1": 1.5}}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml), slow_every_ticks=10)
    collector.collect()
    clock.advance(2.0)
    samples = collector.collect()
    gpu1 = [n for n, lab, _ in samples if dict(lab).get("gpu") == "1"]
    assert gpu1 == [F.GPU_UP]
    assert _value(samples, F.GPU_POWER_LIMIT_MAX, gpu="0") == 700.0


def test_config_default_and_bound() -> None:
    assert GPUConfig().slow_every_ticks == 10
    with pytest.raises(ValueError):
        GPUConfig(slow_every_ticks=0)
    with pytest.raises(ValueError):
        GPUCollector([], slow_every_ticks=0)


def test_factory_passes_the_key(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = build_gpu_collector(GPUConfig(slow_every_ticks=3), CollectorContext(devices=open_gpus(nvml)))
    assert collector is not None and collector.slow_every_ticks == 3
