"""Every degradation kind runs from its shipped file, writes labels, and moves its series.

Readings go through the daemon's real path: the physics backend attached to the simulated
NVML module, ``open_nvml("sim")``, ``open_gpus`` and the GPU collector.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import load_error

from gputuned.collectors.gpu import GPUCollector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.peers import SimPeerRTTCollector
from gputuned.collectors.sim.scenarios import KINDS, available_scenarios, load_scenario
from gputuned.collectors.sim.state import VirtualClock

# scenario file -> [(family, extra labels, gpu, +1 rises / -1 falls)], trainer stat that moves
EXPECT = {
    "cooling-loss": ([("gputuned_gpu_temperature_celsius", (), "1", 1),
                      ("gputuned_gpu_sm_clock_hertz", (), "1", -1),
                      ("gputuned_gpu_clock_event_active", (("reason", "sw_thermal_slowdown"),), "1", 1),
                      ("gputuned_gpu_thermal_violation_seconds_total", (), "1", 1)], ("step_time_s", 1)),
    "power-brake": ([("gputuned_gpu_sm_clock_hertz", (), "0", -1), ("gputuned_gpu_power_watts", (), "3", -1),
                     ("gputuned_gpu_clock_event_active", (("reason", "hw_power_brake_slowdown"),), "2", 1)],
                    ("step_time_s", 1)),
    "memory-leak": ([("gputuned_gpu_memory_used_bytes", (), "0", 1),
                     ("gputuned_gpu_memory_free_bytes", (), "0", -1)], None),
    "ecc-storm": ([("gputuned_gpu_ecc_errors_total", (("type", "corrected"),), "2", 1),
                   ("gputuned_gpu_remapped_rows", (("cause", "correctable"),), "2", 1),
                   ("gputuned_gpu_row_remap_pending", (), "2", 1)], None),
    "pcie-bandwidth-loss": ([("gputuned_gpu_pcie_receive_bytes_per_second", (), "3", -1),
                             ("gputuned_gpu_utilization_ratio", (), "0", -1)], ("step_time_s", 1)),
    "nvlink-bandwidth-loss": ([("gputuned_gpu_nvlink_transmit_bytes_total", (), "0", -1),
                               ("gputuned_gpu_nvlink_receive_bytes_total", (), "5", -1)], ("comm_time_s", 1)),
    "nic-degradation": ([], ("comm_time_s", 1)),
    "dataloader-stall": ([("gputuned_gpu_utilization_ratio", (), "0", -1), ("gputuned_gpu_power_watts", (), "0", -1)],
                         ("data_wait_s", 1)),
    "straggler": ([("gputuned_gpu_utilization_ratio", (), "0", -1)], ("step_time_s", 1)),
    "clock-stuck-low": ([("gputuned_gpu_sm_clock_hertz", (), "4", -1), ("gputuned_gpu_power_watts", (), "4", -1),
                         ("gputuned_gpu_clock_event_reasons_mask", (), "4", 0)], ("step_time_s", 1)),
}


def test_every_kind_has_a_shipped_scenario() -> None:
    kinds = {e.kind for name in available_scenarios() for e in load_scenario(name).events}
    assert kinds == set(KINDS)
    assert set(EXPECT) == set(available_scenarios())


def _index(samples: list) -> dict:
    out = {}
    for family, labels, value in samples:
        d = dict(labels)
        extra = tuple((k, v) for k, v in labels if k not in ("gpu", "uuid", "model", "pci_bus_id"))
        out[(family, extra, d.get("gpu"))] = value
    return out


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_scenario_moves_its_series_and_writes_labels(name: str, tmp_path: Path) -> None:
    clock = VirtualClock()
    labels = tmp_path / "labels.json"
    nodes = 2 if name == "nic-degradation" else 1
    backend = build_sim_node("a100", 8, "imagenet-resnet50", name, clock, seed=3, nodes=nodes, labels_path=labels)
    scen = load_scenario(name)
    ev = scen.events[0]
    sim_nvml.attach(backend)
    try:
        nvml, kind = open_nvml("sim", sim_nvml)
        assert kind == "sim"
        collector = GPUCollector(open_gpus(nvml), backend="sim")
        clock.set(ev.start_s - 90)
        before0 = _index(collector.collect())
        clock.set(ev.start_s - 60)
        before = _index(collector.collect())
        stats_before = backend.job.report_stats()
        peers = SimPeerRTTCollector(backend)
        rtt_before = {dict(lab)["peer"]: v for f, lab, v in peers.collect() if f == "gputuned_peer_rtt_seconds"}
        after_t = ev.start_s + ev.ramp_s + 120
        if ev.duration_s is not None:
            after_t = min(after_t, ev.start_s + ev.duration_s - 1)
        clock.set(after_t - 30)
        after0 = _index(collector.collect())
        clock.set(after_t)
        after = _index(collector.collect())
        stats_after = backend.job.report_stats()
        rtt_after = {dict(lab)["peer"]: v for f, lab, v in peers.collect() if f == "gputuned_peer_rtt_seconds"}
    finally:
        sim_nvml.attach(None)
    doc = json.loads(labels.read_text())
    assert doc["scenario"] == name and doc["events"][0]["kind"] == ev.kind
    assert doc["events"][0]["start_s"] == ev.start_s and doc["events"][0]["series"]
    series, stat = EXPECT[name]
    for family, extra, gpu, sign in series:
        assert family in doc["events"][0]["series"] or family == "gputuned_gpu_clock_event_reasons_mask"
        key = (family, extra, gpu)
        b, a = before[key], after[key]
        if family.endswith("_total") and family != "gputuned_gpu_thermal_violation_seconds_total":
            b, a = b - before0[key], a - after0[key]  # compare rates over 30 s
        if family == "gputuned_gpu_ecc_errors_total":
            b, a = before[key], after[key]
        if sign == 0:  # no reason reported at all while the clock is low
            assert a == 0, (family, gpu)
        else:
            assert (a - b) * sign > 0, (family, gpu, b, a)
    if stat is not None:
        key, sign = stat
        assert (stats_after[key] - stats_before[key]) * sign > 0, (key, stats_before[key], stats_after[key])
    if name == "nic-degradation":
        assert min(rtt_after.values()) > 3 * max(rtt_before.values())
    if name == "memory-leak":
        clock.set(1200)
        backend.sync()
        assert backend.job.report_stats()["oom_total"] >= 1
    if name == "ecc-storm":
        assert 63 in backend.devices[2].pending_xids or after[("gputuned_gpu_xid_events_total", (("xid", "63"),), "2")] > 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[event]]\nkind = "meltdown"\nstart_s = 1\n', "kind"),
        ('[[event]]\nkind = "straggler"\nstart_s = -5\n', "start_s"),
        ('[[event]]\nkind = "straggler"\n', "start_s"),
        ('[[event]]\nkind = "straggler"\nstart_s = 5\ngpus = "all"\n', "gpus"),
        ('[[event]]\nkind = "straggler"\nstart_s = 5\nmagnitde = 2\n', "magnitde"),
        ('name = "x"\n', "event"),
        ('[[event]\n', "not valid TOML"),
    ],
)
def test_malformed_scenario_names_file_and_field(text: str, field: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    message = load_error(load_scenario, path, text)
    assert field in message and str(path) in message


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("dataset_samples = 50000", 'dataset_samples = "many"'), "dataset_samples"),
        (("per_sample_bytes = 4.5e6", "per_sample_bytes = -1"), "per_sample_bytes"),
        (("overlap = 0.5", "overlap = 1.5"), "overlap"),
        (("gradient_bytes = 5.4e6        # ~1.36 M fp32 parameters\n", ""), "gradient_bytes"),
        (("held_out = false", "held_out = false\nbogus = 1"), "bogus"),
        (("[memory]", "[timing]\nreference_gpu = \"a40\"\nbatch_sizes = [1, 2]\nhost_s = [0.1]\n"
          "sm_s = [1, 1]\nmem_s = [1, 1]\ndynamic_power_w = 1\n[memory]"), "host_s"),
    ],
)
def test_malformed_workload_names_file_and_field(edit: tuple[str, str], field: str, tmp_path: Path) -> None:
    from importlib import resources

    from gputuned.collectors.sim.workload import load_workload

    text = (resources.files("gputuned.collectors.sim") / "workloads" / "cifar100-shufflenetv2.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    message = load_error(load_workload, path, text.replace(edit[0], edit[1]))
    assert field in message and str(path) in message


def test_label_series_are_declared_families() -> None:
    from gputuned.daemon.app.catalog import served_catalog

    FAMILIES = served_catalog()

    for kind, (_, _, series) in KINDS.items():
        missing = [s for s in series if s not in FAMILIES]
        assert not missing, (kind, missing)
