"""Node overview: is any GPU slow, hot, throttled or failing, and is the host keeping up."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.node_host import daemon_panels, fabric_panels, host_panels
from gputuned.dashboards.panels import (
    GPU,
    NODE,
    RANGE,
    RATE,
    Query,
    dashboard,
    high_bad,
    info_only,
    low_bad,
    stat,
    steps,
    timeline,
    timeseries,
    value_text,
)

UID = "gputuned-node"
_G = "GPU {{gpu}}"
_THROTTLE = 'reason!~"gpu_idle|applications_clocks_setting|display_clock_setting|sync_boost"'


def glance_panels() -> list[g.Panel]:
    """One number each: lost GPUs, throttled GPUs, hottest GPU, mean load, power, collectors down."""
    return [
        stat(
            "GPUs lost", "none",
            [Query(f"sum by (instance) (1 - gputuned_gpu_up{{{GPU}}})", "{{instance}}")],
            steps("green", ("red", 1)), "GPUs that stopped answering NVML (fell off the bus) on each node.", width=4,
        ),
        stat(
            "GPUs throttled now", "none",
            [Query(f"sum by (instance) (max by (instance, gpu) (gputuned_gpu_clock_event_active{{{GPU}, {_THROTTLE}}}))", "{{instance}}")],
            steps("green", ("orange", 1), ("red", 2)), "GPUs with a power, thermal or hardware clock-event reason active.",
            width=4,
        ),
        stat(
            "Hottest GPU", "celsius",
            [Query(f"max by (instance) (gputuned_gpu_temperature_celsius{{{GPU}}})", "{{instance}}")],
            high_bad(80, 87), "Highest GPU core temperature on each node.", width=4,
        ),
        stat(
            "Mean GPU utilization", "percentunit",
            [Query(f"avg by (instance) (gputuned_gpu_utilization_ratio{{{GPU}}})", "{{instance}}")],
            low_bad(0.3, 0.7), "Mean utilization over the selected GPUs of each node.", width=4,
        ),
        stat(
            "Power against limits", "percentunit",
            [Query(
                f"sum by (instance) (gputuned_gpu_power_watts{{{GPU}}}) / sum by (instance) (gputuned_gpu_power_limit_watts{{{GPU}}})",
                "{{instance}}",
            )],
            high_bad(0.9, 0.98), "Board power of the selected GPUs over the sum of their enforced limits.", width=4,
        ),
        stat(
            "Collectors down", "none",
            [Query(f"sum by (instance) (1 - gputuned_collector_up{{{NODE}}})", "{{instance}}")],
            steps("green", ("red", 1)), "gputuned collectors whose last run failed (their series are not served).", width=4,
        ),
    ]


def gpu_panels() -> list[g.Panel]:
    """Per-GPU load, power, clocks, temperature and memory."""
    return [
        timeseries(
            "GPU utilization", "percentunit",
            [Query(f"gputuned_gpu_utilization_ratio{{{GPU}}}", _G)],
            low_bad(0.3, 0.7), "Fraction of time a kernel ran (NVML). Low on a training node means the GPU waits.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Memory activity", "percentunit",
            [Query(f"gputuned_gpu_memory_activity_ratio{{{GPU}}}", _G)],
            high_bad(0.8, 0.95), "Fraction of time device memory was read or written.",
            min_value=0, max_value=1,
        ),
        stat(
            "GPUs up", "none",
            [Query(f"gputuned_gpu_up{{{GPU}}}", _G)],
            steps("red", ("green", 1)), "1 while the GPU answers NVML; 0 once it fell off the bus.",
            mappings=value_text({0: ("LOST", "red"), 1: ("up", "green")}),
        ),
        timeseries(
            "Power draw against limit", "watt",
            [
                Query(f"gputuned_gpu_power_watts{{{GPU}}}", "GPU {{gpu}} draw"),
                Query(f"gputuned_gpu_power_limit_watts{{{GPU}}}", "GPU {{gpu}} limit"),
            ],
            info_only(), "Board power and the enforced power limit; draw pinned at the limit means power capping.",
            min_value=0,
        ),
        timeseries(
            "Power as fraction of limit", "percentunit",
            [Query(f"gputuned_gpu_power_watts{{{GPU}}} / gputuned_gpu_power_limit_watts{{{GPU}}}", _G)],
            high_bad(0.9, 0.98), "Draw over the enforced limit; near 1 the GPU throttles on power.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "SM clock against maximum", "percentunit",
            [Query(f"gputuned_gpu_sm_clock_hertz{{{GPU}}} / gputuned_gpu_sm_clock_max_hertz{{{GPU}}}", _G)],
            low_bad(0.6, 0.85), "Current SM clock over the highest the GPU supports; low under load means throttling.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Clocks", "hertz",
            [
                Query(f"gputuned_gpu_sm_clock_hertz{{{GPU}}}", "GPU {{gpu}} SM"),
                Query(f"gputuned_gpu_memory_clock_hertz{{{GPU}}}", "GPU {{gpu}} memory"),
            ],
            info_only(), "SM and memory clocks.", min_value=0,
        ),
        timeseries(
            "Temperature", "celsius",
            [
                Query(f"gputuned_gpu_temperature_celsius{{{GPU}}}", "GPU {{gpu}} core"),
                Query(f"gputuned_gpu_memory_temperature_celsius{{{GPU}}}", "GPU {{gpu}} HBM"),
            ],
            high_bad(80, 87), "Core and memory temperature; datacenter GPUs slow down from about 87-90 C.",
        ),
        timeseries(
            "Fan speed", "percentunit",
            [Query(f"gputuned_gpu_fan_speed_ratio{{{GPU}}}", _G)],
            high_bad(0.8, 0.95), "Fan speed as a fraction of its maximum (absent on passively cooled boards).",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Memory used", "percentunit",
            [Query(f"gputuned_gpu_memory_used_bytes{{{GPU}}} / gputuned_gpu_memory_total_bytes{{{GPU}}}", _G)],
            high_bad(0.9, 0.97), "Device memory in use over its size; near 1 a job risks out-of-memory.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Memory used (bytes)", "bytes",
            [Query(f"gputuned_gpu_memory_used_bytes{{{GPU}}}", _G)],
            info_only(), "Device memory in use.", min_value=0,
        ),
        timeseries(
            "Performance state", "none",
            [Query(f"gputuned_gpu_performance_state{{{GPU}}}", _G)],
            steps("green", ("orange", 2)), "P-state: P0 is fastest; a loaded GPU in P2 or above is held back.",
            min_value=0, max_value=15,
        ),
    ]


def throttle_panels() -> list[g.Panel]:
    """Clock-event (throttle) reasons and the time clocks were held down."""
    return [
        timeline(
            "Throttle reasons", [
                Query(f"max by (gpu, reason) (gputuned_gpu_clock_event_active{{{GPU}, {_THROTTLE}}})", "GPU {{gpu}} {{reason}}"),
            ],
            steps("green", ("red", 1)),
            "One band per GPU and clock-event reason that slows the GPU (power cap, thermal, hardware slowdown, power brake).",
            mappings=value_text({0: ("off", "green"), 1: ("active", "red")}), width=16,
        ),
        timeseries(
            "Time held down by power or temperature", "percentunit",
            [
                Query(f"rate(gputuned_gpu_power_violation_seconds_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} power"),
                Query(f"rate(gputuned_gpu_thermal_violation_seconds_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} thermal"),
            ],
            high_bad(0.05, 0.25), "Fraction of time the driver held clocks down because of the power limit or temperature.",
            min_value=0, max_value=1,
        ),
    ]


def interconnect_panels() -> list[g.Panel]:
    """PCIe and NVLink traffic."""
    return [
        timeseries(
            "PCIe throughput", "Bps",
            [
                Query(f"gputuned_gpu_pcie_transmit_bytes_per_second{{{GPU}}}", "GPU {{gpu}} tx"),
                Query(f"gputuned_gpu_pcie_receive_bytes_per_second{{{GPU}}}", "GPU {{gpu}} rx"),
            ],
            info_only(), "PCIe transmit and receive throughput (NVML 20 ms sampling window).", min_value=0,
        ),
        timeseries(
            "NVLink throughput", "Bps",
            [
                Query(f"rate(gputuned_gpu_nvlink_transmit_bytes_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} tx"),
                Query(f"rate(gputuned_gpu_nvlink_receive_bytes_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} rx"),
            ],
            info_only(), "NVLink data bytes per second, all links of the GPU together.", min_value=0,
        ),
    ]


def error_panels() -> list[g.Panel]:
    """ECC, row remapping and XID errors."""
    return [
        stat(
            "ECC errors in range", "short",
            [Query(f"sum by (gpu, type) (increase(gputuned_gpu_ecc_errors_total{{{GPU}}}[{RANGE}]))", "GPU {{gpu}} {{type}}")],
            high_bad(1, 10), "Corrected and uncorrected ECC errors over the dashboard's time range.",
        ),
        stat(
            "Remapped rows", "short",
            [
                Query(f"gputuned_gpu_remapped_rows{{{GPU}}}", "GPU {{gpu}} {{cause}}"),
                Query(f"gputuned_gpu_row_remap_pending{{{GPU}}} + gputuned_gpu_row_remap_failed{{{GPU}}}", "GPU {{gpu}} pending/failed"),
            ],
            high_bad(1, 8), "Memory rows remapped by cause, and remaps waiting for a reset or failed (reset or replace the GPU).",
        ),
        stat(
            "Last XID", "none",
            [Query(f"gputuned_gpu_last_xid{{{GPU}}}", _G)],
            steps("green", ("red", 1)), "Code of the most recent XID error since the daemon started (0: none). 79: fell off the bus; 48: double-bit ECC.",
            mappings=value_text({0: ("none", "green")}),
        ),
        stat(
            "XID events since daemon start", "short",
            [Query(f"sum by (gpu, xid) (gputuned_gpu_xid_events_total{{{GPU}}})", "GPU {{gpu}} XID {{xid}}")],
            high_bad(1, 3), "XID error events counted since the daemon started, by GPU and XID code.",
            reduce="max",
        ),
    ]


def build() -> g.Dashboard:
    """The node overview dashboard."""
    return dashboard(
        "gputuned / Node overview",
        UID,
        "Per-GPU load, power, clocks, temperature, memory, throttling, interconnect and errors; host and daemon health.",
        [
            ("At a glance", glance_panels()),
            ("GPU load, power and clocks", gpu_panels()),
            ("Throttling", throttle_panels()),
            ("PCIe and NVLink", interconnect_panels()),
            ("ECC and XID errors", error_panels()),
            ("Host", host_panels()),
            ("Fabric and peers", fabric_panels()),
            ("gputuned daemon", daemon_panels()),
        ],
        tags=["node"],
    )
