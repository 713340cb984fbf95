"""Node overview, host side: CPU, memory, disks, network, fabric and peers, and the daemon itself."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.panels import (
    NODE,
    RATE,
    Query,
    high_bad,
    info_only,
    stat,
    steps,
    timeline,
    timeseries,
    value_text,
)


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
        timeseries(
            "Trainer reports received", "ops",
            [Query(f"rate(gputuned_control_reports_total{{{NODE}}}[{RATE}])", "{{instance}}")],
            info_only(), "Step reports accepted on the control socket per second (each rank reports about once a second).",
            min_value=0,
        ),
        stat(
            "Control connections and jobs", "none",
            [
                Query(f"gputuned_control_connections{{{NODE}}}", "{{instance}} connections"),
                Query(f"gputuned_control_jobs{{{NODE}}}", "{{instance}} jobs"),
            ],
            info_only(), "Open control-socket connections (one per rank) and training jobs with a connected rank.",
        ),
    ]
