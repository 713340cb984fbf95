"""The GPU collector's slow readings: read every ``slow_every_ticks`` ticks, their last samples served in between."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gputuned.collectors import families as F
from gputuned.collectors.device import GPUDevice
from gputuned.collectors.gpu import GPUCollector, GPUConfig, build_gpu_collector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.nvml_fields import FIELD_IDS
from gputuned.collectors.registry import CollectorContext
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock


class CountingGPU:
    """A GPU whose method calls are counted by name, and each value asked of read_values by its key (the typed
    read's name): the collector sees the device it wraps."""

    def __init__(self, dev: GPUDevice) -> None:
        self._dev = dev
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._dev, name)
        if not callable(attr):
            return attr

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            if name == "read_values":
                self.calls.update(args[0])
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
    assert gpu.calls["encoder_decoder_utilization"] == 2
    assert gpu.calls["power_w"] == 7  # fast readings every tick
    assert gpu.calls["temperature_c"] == 7
    assert gpu.calls["read_values"] == 7  # one device call a tick for all of them
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


def test_slow_readings_are_read_again_after_a_tick_without_an_answer(sim_node) -> None:
    """A GPU hung past its call timeout may come back with new ECC or remap counts (an Xid): no kept samples then."""
    import time

    backend = sim_node({"profile": "h100", "gpus": 1})
    nvml, _ = open_nvml("sim", sim_nvml)
    (gpu,) = [CountingGPU(g) for g in open_gpus(nvml, call_timeout_s=0.2)]
    collector = GPUCollector([gpu], slow_every_ticks=10)  # type: ignore[list-item]
    collector.collect()
    backend.devices[0].hang_until = time.monotonic() + 0.5
    assert [n for n, _, _ in collector.collect()] == [F.GPU_UP]  # no answer within 0.2 s
    time.sleep(0.6)
    for _ in range(50):  # the hung call returns once the hang ends
        if gpu.calls["read_values"] == 2:
            break
        time.sleep(0.02)
    samples = collector.collect()
    assert _value(samples, F.GPU_UP) == 1.0
    assert gpu.calls["power_limit_constraints"] == 2  # read again at the first answered tick, not at tick 10
    collector.close()


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


# --- field values: several counters of a GPU in one call ------------------------------------------------------
def _counting_field_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    asked: list[list[int]] = []
    real = sim_nvml.nvmlDeviceGetFieldValues

    def counted(handle: Any, fieldIds: list[int]) -> Any:  # noqa: N803
        asked.append(list(fieldIds))
        return real(handle, fieldIds)

    monkeypatch.setattr(sim_nvml, "nvmlDeviceGetFieldValues", counted)
    return asked


def test_field_ids_and_the_call_match_nvidia_ml_py() -> None:
    import inspect

    import pynvml

    for name, _ in FIELD_IDS.values():
        assert getattr(sim_nvml, name) == getattr(pynvml, name), name
    sim = [p.name for p in inspect.signature(sim_nvml.nvmlDeviceGetFieldValues).parameters.values()]
    assert sim == [p.name for p in inspect.signature(pynvml.nvmlDeviceGetFieldValues).parameters.values()]


def test_one_field_values_call_per_gpu_and_tick_serves_every_counter(sim_node, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 2, "series": [
        {"gpu": 1, "field": "energy_mj", "points": [[0, 5_000_000]]},
        {"gpu": 1, "field": "ecc_uncorrected", "points": [[0, 2]]},
        {"gpu": 1, "field": "remap_pending", "points": [[0, 1]]},
        {"gpu": 1, "field": "nvlink_rx_kib", "points": [[0, 4]]},
    ]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    asked = _counting_field_calls(monkeypatch)
    collector = GPUCollector(open_gpus(nvml), slow_every_ticks=3)
    s = collector.collect()
    assert len(asked) == 2 and len(asked[0]) == 13  # the slow tick: every field of a GPU in its one call
    assert (_value(s, F.GPU_ENERGY, gpu="1"), _value(s, F.GPU_ECC, gpu="1", type="uncorrected")) == (5000.0, 2.0)
    assert (_value(s, F.GPU_REMAP_PENDING, gpu="1"), _value(s, F.GPU_NVLINK_RX, gpu="1")) == (1.0, 4096.0)
    assert _value(s, F.GPU_MEM_TEMP, gpu="0") is not None
    asked.clear()
    collector.collect()
    assert [len(ids) for ids in asked] == [6, 6]  # between slow ticks: energy, memory temperature, NVLink, violations


def test_a_field_the_driver_lacks_is_read_by_its_single_call(sim_node, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 2, "unsupported": {"1": ["field:83", "field:5"]}, "series": [
        {"gpu": 1, "field": "power_mw", "points": [[0, 300_000]]},
        {"gpu": 1, "field": "ecc_corrected", "points": [[0, 9]]},
    ]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    asked = _counting_field_calls(monkeypatch)
    collector = GPUCollector(open_gpus(nvml))
    e0 = _value(collector.collect(), F.GPU_ENERGY, gpu="1")
    clock.advance(10.0)
    s = collector.collect()
    assert e0 is not None and _value(s, F.GPU_ENERGY, gpu="1") == pytest.approx(e0 + 3000.0)
    assert _value(s, F.GPU_ECC, gpu="1", type="corrected") == 9.0
    assert 83 not in asked[-1] and 5 not in asked[-1]  # not asked again once the driver said no


def test_violation_fields_give_the_seconds_of_their_single_calls_to_the_last_bit(
    sim_node, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Perf-policy fields 74 and 75 count what nvmlDeviceGetViolationStatus reports; GPU 1's driver lacks them."""
    ns = 2_500_000_003  # a count whose product with 1e-9 differs from its quotient by 1e9 (as is ns + 1's)
    assert ns * 1e-9 != ns / 1e9 and (ns + 1) * 1e-9 != (ns + 1) / 1e9
    sim_node({"profile": "h100", "gpus": 2, "unsupported": {"1": ["field:74", "field:75"]}, "series": [
        {"gpu": g, "field": f, "points": [[0, ns + k]]}
        for g in (0, 1) for k, f in enumerate(("power_violation_ns", "thermal_violation_ns"))]})
    nvml, _ = open_nvml("sim", sim_nvml)
    asked = _counting_field_calls(monkeypatch)
    gpus = open_gpus(nvml)
    s = GPUCollector(gpus).collect()
    single = [(nvml.nvmlDeviceGetViolationStatus(g._h, nvml.NVML_PERF_POLICY_POWER).violationTime / 1e9,
               nvml.nvmlDeviceGetViolationStatus(g._h, nvml.NVML_PERF_POLICY_THERMAL).violationTime / 1e9) for g in gpus]
    served = [(_value(s, F.GPU_POWER_VIOLATION, gpu=i), _value(s, F.GPU_THERMAL_VIOLATION, gpu=i)) for i in ("0", "1")]
    assert served == single == [(ns / 1e9, (ns + 1) / 1e9)] * 2 == [g.violation_seconds() for g in gpus]
    assert {74, 75} <= set(asked[0]) and {74, 75} <= set(asked[1])  # one call each, then the fallback on GPU 1
    asked.clear()
    GPUCollector(gpus).collect()
    assert {74, 75} <= set(asked[0]) and not {74, 75} & set(asked[1])


def test_unsupported_counters_drop_their_readings_on_that_gpu_only(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 2, "unsupported": {"1": ["nvmlDeviceGetTotalEccErrors", "field:82"]}})
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml))
    for _ in range(2):
        s = collector.collect()
    gpus = {fam: {dict(lab)["gpu"] for n, lab, _ in s if n == fam} for fam in (F.GPU_ECC, F.GPU_MEM_TEMP, F.GPU_ENERGY)}
    assert gpus == {F.GPU_ECC: {"0"}, F.GPU_MEM_TEMP: {"0"}, F.GPU_ENERGY: {"0", "1"}}


def test_a_driver_without_field_values_reads_the_single_calls(sim_node) -> None:
    sim_node({"profile": "h100", "gpus": 1, "unsupported": {"0": ["nvmlDeviceGetFieldValues"]},
              "series": [{"gpu": 0, "field": "remapped_uncorrectable", "points": [[0, 2]]}]})
    nvml, _ = open_nvml("sim", sim_nvml)
    s = GPUCollector(open_gpus(nvml)).collect()
    assert _value(s, F.GPU_REMAPPED, cause="uncorrectable") == 2.0
    assert _value(s, F.GPU_ENERGY) is not None and _value(s, F.GPU_ECC, type="corrected") == 0.0
    assert _value(s, F.GPU_MEM_TEMP) is None and _value(s, F.GPU_NVLINK_TX) is None  # fields only


def test_gpm_activity_follows_each_interval_with_its_request_and_two_samples_reused(sim_node, monkeypatch) -> None:
    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 1, "series": [
        {"gpu": 0, "field": "util_gpu_pct", "points": [[0, 80], [1.5, 20]]}]}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    calls: Counter[str] = Counter()
    for name in ("nvmlGpmSampleAlloc", "nvmlGpmSampleFree", "nvmlGpmSampleGet", "nvmlGpmMetricsGet"):
        fn = getattr(sim_nvml, name)
        monkeypatch.setattr(sim_nvml, name, lambda *a, _fn=fn, _name=name: (calls.update([_name]), _fn(*a))[1])
    (gpu,) = open_gpus(nvml)
    ratios = []
    for _ in range(5):
        a = gpu.gpm_activity()
        ratios.append(None if a is None else round(a.graphics_engine, 3))
        clock.advance(1.0)
    assert ratios == [None, 0.8, 0.5, 0.2, 0.2]  # a metric is the mean of its interval's two samples
    assert calls == {"nvmlGpmSampleAlloc": 2, "nvmlGpmSampleGet": 5, "nvmlGpmMetricsGet": 4}  # two buffers in turn


# --- one wide read: the record equals the typed reads ----------------------------------------------------------
def test_read_values_equals_the_typed_reads_it_stands_for(sim_node) -> None:
    from gputuned.collectors.device import VALUES

    clock = VirtualClock()
    sim_node({"profile": "h100", "gpus": 2}, clock=clock)
    nvml, _ = open_nvml("sim", sim_nvml)
    gpus = open_gpus(nvml, call_timeout_s=5.0)
    keys = [k for k in VALUES if k != "gpm_activity"]  # GPM's activity is between two samples: not read twice
    for g in gpus:
        wide = g.read_values(keys)
        one_by_one = GPUDevice.read_values(g, keys)  # the default: each typed read alone
        assert wide.keys() == one_by_one.keys() == set(keys)
        for k in keys:
            got, want = wide[k], one_by_one[k]
            if isinstance(want, Exception):
                assert type(got) is type(want), k
            else:
                assert got == want, k
    assert [g.read_values(["gpm_activity"])["gpm_activity"] for g in gpus] == [None, None]  # H100: GPM's first sample


def test_nvlink_fields_read_the_link_their_scope_names_and_all_links_at_uint_max(sim_node) -> None:
    """nvml.h: scopeId is the link (a bare id is link 0); UINT_MAX sums every link, which the collector asks for."""
    from gputuned.collectors.nvml_fields import ALL_LINKS

    sim_node({"profile": "h100", "gpus": 1, "series": [{"gpu": 0, "field": "nvlink_tx_kib", "points": [[0, 1800]]}]})
    sim_nvml.nvmlInit()
    h = sim_nvml.nvmlDeviceGetHandleByIndex(0)
    tx = sim_nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
    bare, link3, every, past = sim_nvml.nvmlDeviceGetFieldValues(h, [tx, (tx, 3), (tx, ALL_LINKS), (tx, 18)])
    assert (bare.value.ullVal, link3.value.ullVal, every.value.ullVal) == (100, 100, 1800)  # 18 links, evenly loaded
    assert past.nvmlReturn == sim_nvml.NVML_ERROR_INVALID_ARGUMENT
    nvml, _ = open_nvml("sim", sim_nvml)
    assert _value(GPUCollector(open_gpus(nvml)).collect(), F.GPU_NVLINK_TX) == 1800 * 1024.0
