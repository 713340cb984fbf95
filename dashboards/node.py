"""Node overview: is any GPU slow, hot, throttled or failing, and is the host keeping up."""

from __future__ import annotations

from grafanalib import core as g

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


def host_panels() -> list[g.Panel]:
    """CPU, memory, disk and network of the host."""
    return [
        timeseries(
            "Host CPU busy by mode", "percentunit",
            [Query(
                f'sum by (instance, mode) (rate(gputuned_host_cpu_seconds_total{{{NODE}, mode!="idle"}}[{RATE}]))'
                f" / on (instance) group_left () max by (instance) (gputuned_host_cpus{{{NODE}}})",
                "{{instance}} {{mode}}",
            )],
            high_bad(0.8, 0.95), "CPU time per mode over all CPUs; a saturated host starves data loading.",
            min_value=0, max_value=1, stack=True,
        ),
        timeseries(
            "Load per CPU", "short",
            [Query(f"gputuned_host_load1{{{NODE}}} / gputuned_host_cpus{{{NODE}}}", "{{instance}} 1m")],
            high_bad(1, 2), "1-minute load average divided by the number of CPUs.", min_value=0,
        ),
        timeseries(
            "Host memory used", "percentunit",
            [
                Query(f"gputuned_host_memory_used_bytes{{{NODE}}} / gputuned_host_memory_total_bytes{{{NODE}}}", "{{instance}} memory"),
                Query(f"gputuned_host_swap_used_bytes{{{NODE}}} / clamp_min(gputuned_host_swap_total_bytes{{{NODE}}}, 1)", "{{instance}} swap"),
            ],
            high_bad(0.85, 0.95), "Memory in use (total minus available) and swap in use, as fractions.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Disk throughput", "Bps",
            [
                Query(f"sum by (instance, device) (rate(gputuned_host_disk_read_bytes_total{{{NODE}}}[{RATE}]))", "{{device}} read"),
                Query(f"sum by (instance, device) (rate(gputuned_host_disk_written_bytes_total{{{NODE}}}[{RATE}]))", "{{device}} write"),
            ],
            info_only(), "Bytes read and written per block device.", min_value=0,
        ),
        timeseries(
            "Network throughput", "Bps",
            [
                Query(f"rate(gputuned_host_network_receive_bytes_total{{{NODE}}}[{RATE}])", "{{interface}} rx"),
                Query(f"rate(gputuned_host_network_transmit_bytes_total{{{NODE}}}[{RATE}])", "{{interface}} tx"),
            ],
            info_only(), "Bytes per second per interface.", min_value=0,
        ),
        timeseries(
            "Network errors and drops", "pps",
            [Query(
                f"sum by (instance, interface) (rate(gputuned_host_network_receive_errors_total{{{NODE}}}[{RATE}])"
                f" + rate(gputuned_host_network_transmit_errors_total{{{NODE}}}[{RATE}])"
                f" + rate(gputuned_host_network_receive_drop_total{{{NODE}}}[{RATE}])"
                f" + rate(gputuned_host_network_transmit_drop_total{{{NODE}}}[{RATE}]))",
                "{{interface}}",
            )],
            high_bad(1, 100), "Packets per second received or sent in error or dropped, per interface.", min_value=0,
        ),
        timeseries(
            "TCP retransmitted segments", "percentunit",
            [Query(
                f"rate(gputuned_host_tcp_retransmitted_segments_total{{{NODE}}}[{RATE}])"
                f" / clamp_min(rate(gputuned_host_tcp_sent_segments_total{{{NODE}}}[{RATE}]), 1)",
                "{{instance}}",
            )],
            high_bad(0.01, 0.05), "Retransmitted over sent TCP segments; a few percent slows collective communication.",
            min_value=0,
        ),
    ]


def fabric_panels() -> list[g.Panel]:
    """InfiniBand/RoCE ports and round-trip time to peer nodes."""
    return [
        timeseries(
            "InfiniBand throughput", "Bps",
            [
                Query(f"rate(gputuned_infiniband_port_receive_bytes_total{{{NODE}}}[{RATE}])", "{{device}}/{{port}} rx"),
                Query(f"rate(gputuned_infiniband_port_transmit_bytes_total{{{NODE}}}[{RATE}])", "{{device}}/{{port}} tx"),
            ],
            info_only(), "Data bytes per second per InfiniBand or RoCE port.", min_value=0,
        ),
        timeseries(
            "InfiniBand link utilization", "percentunit",
            [
                Query(
                    f"rate(gputuned_infiniband_port_receive_bytes_total{{{NODE}}}[{RATE}])"
                    f" / gputuned_infiniband_port_rate_bytes_per_second{{{NODE}}}",
                    "{{device}}/{{port}} rx",
                ),
                Query(
                    f"rate(gputuned_infiniband_port_transmit_bytes_total{{{NODE}}}[{RATE}])"
                    f" / gputuned_infiniband_port_rate_bytes_per_second{{{NODE}}}",
                    "{{device}}/{{port}} tx",
                ),
            ],
            high_bad(0.7, 0.9), "Throughput over the negotiated port rate; near 1 the fabric limits communication.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "InfiniBand port errors", "short",
            [Query(
                f"sum by (instance, device, port) (increase(gputuned_infiniband_port_symbol_errors_total{{{NODE}}}[{RATE}])"
                f" + increase(gputuned_infiniband_port_receive_errors_total{{{NODE}}}[{RATE}])"
                f" + increase(gputuned_infiniband_port_transmit_discards_total{{{NODE}}}[{RATE}])"
                f" + increase(gputuned_infiniband_port_link_downed_total{{{NODE}}}[{RATE}]))",
                "{{device}}/{{port}}",
            )],
            high_bad(1, 100), "Symbol errors, receive errors, transmit discards and link-downs per port.", min_value=0,
        ),
        stat(
            "InfiniBand ports active", "none",
            [Query(f"gputuned_infiniband_port_active{{{NODE}}}", "{{device}}/{{port}}")],
            steps("red", ("green", 1)), "1 when the port state is ACTIVE.",
            mappings=value_text({0: ("DOWN", "red"), 1: ("active", "green")}),
        ),
        timeseries(
            "Peer round-trip time", "s",
            [Query(f"gputuned_peer_rtt_seconds{{{NODE}}}", "{{instance}} to {{peer}}")],
            high_bad(0.001, 0.01), "TCP connect time to each configured peer node.", min_value=0,
        ),
        stat(
            "Peers reachable", "none",
            [Query(f"gputuned_peer_up{{{NODE}}}", "{{peer}}")],
            steps("red", ("green", 1)), "1 when the last connect to the peer succeeded.",
            mappings=value_text({0: ("UNREACHABLE", "red"), 1: ("up", "green")}),
        ),
    ]


def daemon_panels() -> list[g.Panel]:
    """gputuned's own health."""
    return [
        timeline(
            "Collectors up", [Query(f"gputuned_collector_up{{{NODE}}}", "{{instance}} {{collector}}")],
            steps("red", ("green", 1)), "1 while the collector's last run succeeded; 0 means its series are not served.",
            mappings=value_text({0: ("down", "red"), 1: ("up", "green")}), unit="none",
        ),
        timeseries(
            "Collection tick duration", "s",
            [
                Query(f"gputuned_tick_duration_seconds{{{NODE}}}", "{{instance}} tick"),
                Query(f"gputuned_collector_duration_seconds{{{NODE}}}", "{{instance}} {{collector}}"),
            ],
            high_bad(0.25, 0.8), "Duration of the last tick and of each collector's last run (the period is 1 s by default).",
            min_value=0,
        ),
        timeseries(
            "Tick overruns and collector errors", "short",
            [
                Query(f"increase(gputuned_tick_overruns_total{{{NODE}}}[{RATE}])", "{{instance}} overruns"),
                Query(f"increase(gputuned_collector_errors_total{{{NODE}}}[{RATE}])", "{{instance}} {{collector}} errors"),
            ],
            high_bad(1, 5), "Ticks that ran past their deadline and collector runs that raised.", min_value=0,
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
