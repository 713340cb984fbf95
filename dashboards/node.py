"""Node overview: is any GPU slow, hot, throttled or failing, and is the host keeping up."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.board import dashboard, knob_change_annotations
from gputuned.dashboards.node_host import daemon_panels, fabric_panels, host_panels
from gputuned.dashboards.panels import fraction, stat, state_stat, state_timeline, timeseries
from gputuned.dashboards.queries import GPU, NODE, RANGE, RATE, Query, gpu_ratio, on_gpus
from gputuned.dashboards.thresholds import high_bad, info_only, low_bad, steps, value_text

UID = "gputuned-node"
_THROTTLE = 'reason!~"gpu_idle|applications_clocks_setting|display_clock_setting|sync_boost"'


def _per_node(expr: str) -> list[Query]:
    return [Query(expr, "{{instance}}")]


def glance_panels() -> list[g.Panel]:
    """One number each: lost GPUs, throttled GPUs, hottest GPU, mean load, power, collectors down."""
    return [stat(title, unit, _per_node(expr), thresholds, description, width=4) for title, unit, expr, thresholds, description in (
        ("GPUs lost", "none", f"sum by (instance) (1 - gputuned_gpu_up{{{GPU}}})", steps("green", ("red", 1)),
         "GPUs that stopped answering NVML (fell off the bus) on each node."),
        ("GPUs throttled now", "none",
         f"sum by (instance) (max by (instance, gpu) (gputuned_gpu_clock_event_active{{{GPU}, {_THROTTLE}}}))",
         steps("green", ("orange", 1), ("red", 2)), "GPUs with a power, thermal or hardware clock-event reason active."),
        ("Hottest GPU", "celsius", f"max by (instance) (gputuned_gpu_temperature_celsius{{{GPU}}})", high_bad(80, 87),
         "Highest GPU core temperature on each node."),
        ("Mean GPU utilization", "percentunit", f"avg by (instance) (gputuned_gpu_utilization_ratio{{{GPU}}})",
         low_bad(0.3, 0.7), "Mean utilization over the selected GPUs of each node."),
        ("Power against limits", "percentunit",
         f"sum by (instance) (gputuned_gpu_power_watts{{{GPU}}}) / sum by (instance) (gputuned_gpu_power_limit_watts{{{GPU}}})",
         high_bad(0.9, 0.98), "Board power of the selected GPUs over the sum of their enforced limits."),
        ("Collectors down", "none", f"sum by (instance) (1 - gputuned_collector_up{{{NODE}}})", steps("green", ("red", 1)),
         "gputuned collectors whose last run failed (their series are not served)."),
    )]


def gpu_panels() -> list[g.Panel]:
    """Per-GPU load, power, clocks, temperature and memory."""
    return [
        fraction("GPU utilization", on_gpus(("gputuned_gpu_utilization_ratio", "")), low_bad(0.3, 0.7),
                 "Fraction of time a kernel ran (NVML). Low on a training node means the GPU waits."),
        fraction("Memory activity", on_gpus(("gputuned_gpu_memory_activity_ratio", "")), high_bad(0.8, 0.95),
                 "Fraction of time device memory was read or written."),
        state_stat("GPUs up", on_gpus(("gputuned_gpu_up", "")), "1 while the GPU answers NVML; 0 once it fell off the bus.",
                   ("LOST", "red"), ("up", "green")),
        timeseries("Power draw against limit", "watt",
                   on_gpus(("gputuned_gpu_power_watts", "draw"), ("gputuned_gpu_power_limit_watts", "limit")), info_only(),
                   "Board power and the enforced power limit; draw pinned at the limit means power capping.", min_value=0),
        fraction("Power as fraction of limit", gpu_ratio("gputuned_gpu_power_watts", "gputuned_gpu_power_limit_watts"),
                 high_bad(0.9, 0.98), "Draw over the enforced limit; near 1 the GPU throttles on power."),
        fraction("SM clock against maximum", gpu_ratio("gputuned_gpu_sm_clock_hertz", "gputuned_gpu_sm_clock_max_hertz"),
                 low_bad(0.6, 0.85), "Current SM clock over the highest the GPU supports; low under load means throttling."),
        timeseries("Clocks", "hertz", on_gpus(("gputuned_gpu_sm_clock_hertz", "SM"), ("gputuned_gpu_memory_clock_hertz", "memory")),
                   info_only(), "SM and memory clocks.", min_value=0),
        timeseries("Temperature", "celsius",
                   on_gpus(("gputuned_gpu_temperature_celsius", "core"), ("gputuned_gpu_memory_temperature_celsius", "HBM")),
                   high_bad(80, 87), "Core and memory temperature; datacenter GPUs slow down from about 87-90 C."),
        fraction("Fan speed", on_gpus(("gputuned_gpu_fan_speed_ratio", "")), high_bad(0.8, 0.95),
                 "Fan speed as a fraction of its maximum (absent on passively cooled boards)."),
        fraction("Memory used", gpu_ratio("gputuned_gpu_memory_used_bytes", "gputuned_gpu_memory_total_bytes"),
                 high_bad(0.9, 0.97), "Device memory in use over its size; near 1 a job risks out-of-memory."),
        timeseries("Memory used (bytes)", "bytes", on_gpus(("gputuned_gpu_memory_used_bytes", "")), info_only(),
                   "Device memory in use.", min_value=0),
        timeseries("Performance state", "none", on_gpus(("gputuned_gpu_performance_state", "")), steps("green", ("orange", 2)),
                   "P-state: P0 is fastest; a loaded GPU in P2 or above is held back.", min_value=0, max_value=15),
    ]


def throttle_panels() -> list[g.Panel]:
    """Clock-event (throttle) reasons and the time clocks were held down."""
    return [
        state_timeline(
            "Throttle reasons",
            [Query(f"max by (gpu, reason) (gputuned_gpu_clock_event_active{{{GPU}, {_THROTTLE}}})", "GPU {{gpu}} {{reason}}")],
            "One band per GPU and clock-event reason that slows the GPU (power cap, thermal, hardware slowdown, power brake).",
            ("off", "green"), ("active", "red"), width=16,
        ),
        fraction(
            "Time held down by power or temperature",
            [
                Query(f"rate(gputuned_gpu_power_violation_seconds_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} power"),
                Query(f"rate(gputuned_gpu_thermal_violation_seconds_total{{{GPU}}}[{RATE}])", "GPU {{gpu}} thermal"),
            ],
            high_bad(0.05, 0.25), "Fraction of time the driver held clocks down because of the power limit or temperature.",
        ),
    ]


def interconnect_panels() -> list[g.Panel]:
    """PCIe and NVLink traffic."""
    return [
        timeseries("PCIe throughput", "Bps",
                   on_gpus(("gputuned_gpu_pcie_transmit_bytes_per_second", "tx"), ("gputuned_gpu_pcie_receive_bytes_per_second", "rx")),
                   info_only(), "PCIe transmit and receive throughput (NVML 20 ms sampling window).", min_value=0),
        timeseries("NVLink throughput", "Bps", [
            Query(f"rate(gputuned_gpu_nvlink_{way}_bytes_total{{{GPU}}}[{RATE}])", f"GPU {{{{gpu}}}} {tag}")
            for way, tag in (("transmit", "tx"), ("receive", "rx"))
        ], info_only(), "NVLink data bytes per second, all links of the GPU together.", min_value=0),
    ]


def error_panels() -> list[g.Panel]:
    """ECC, row remapping and XID errors."""
    return [
        stat("ECC errors in range", "short",
             [Query(f"sum by (gpu, type) (increase(gputuned_gpu_ecc_errors_total{{{GPU}}}[{RANGE}]))", "GPU {{gpu}} {{type}}")],
             high_bad(1, 10), "Corrected and uncorrected ECC errors over the dashboard's time range."),
        stat(
            "Remapped rows", "short",
            [
                Query(f"gputuned_gpu_remapped_rows{{{GPU}}}", "GPU {{gpu}} {{cause}}"),
                Query(f"gputuned_gpu_row_remap_pending{{{GPU}}} + gputuned_gpu_row_remap_failed{{{GPU}}}", "GPU {{gpu}} pending/failed"),
            ],
            high_bad(1, 8), "Memory rows remapped by cause, and remaps waiting for a reset or failed (reset or replace the GPU).",
        ),
        stat("Last XID", "none", on_gpus(("gputuned_gpu_last_xid", "")), steps("green", ("red", 1)),
             "Code of the most recent XID error since the daemon started (0: none). 79: fell off the bus; 48: double-bit ECC.",
             mappings=value_text({0: ("none", "green")})),
        stat("XID events since daemon start", "short",
             [Query(f"sum by (gpu, xid) (gputuned_gpu_xid_events_total{{{GPU}}})", "GPU {{gpu}} XID {{xid}}")],
             high_bad(1, 3), "XID error events counted since the daemon started, by GPU and XID code.", reduce="max"),
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
        annotations=knob_change_annotations(),
    )
