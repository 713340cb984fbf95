"""Node overview, host side: CPU, memory, disks, network, fabric and peers, and the daemon itself."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.panels import fraction, stat, state_stat, state_timeline, timeseries
from gputuned.dashboards.queries import NODE, RATE, Query
from gputuned.dashboards.thresholds import high_bad, info_only

_PORT = "{{device}}/{{port}}"


def _node(metric: str) -> str:
    return f"{metric}{{{NODE}}}"


def _rate(metric: str, fn: str = "rate") -> str:
    return f"{fn}({metric}{{{NODE}}}[{RATE}])"


def _sum_of(by: str, fn: str, *metrics: str) -> str:
    """``sum by (by) (fn(a) + fn(b) + ...)`` over counters: errors of several kinds as one line."""
    return f"sum by ({by}) (" + " + ".join(_rate(m, fn) for m in metrics) + ")"


def host_panels() -> list[g.Panel]:
    """CPU, memory, disk and network of the host."""
    return [
        fraction(
            "Host CPU busy by mode",
            [Query(
                f'sum by (instance, mode) (rate(gputuned_host_cpu_seconds_total{{{NODE}, mode!="idle"}}[{RATE}]))'
                f" / on (instance) group_left () max by (instance) ({_node('gputuned_host_cpus')})",
                "{{instance}} {{mode}}",
            )],
            high_bad(0.8, 0.95), "CPU time per mode over all CPUs; a saturated host starves data loading.", stack=True,
        ),
        timeseries("Load per CPU", "short", [Query(f"{_node('gputuned_host_load1')} / {_node('gputuned_host_cpus')}", "{{instance}} 1m")],
                   high_bad(1, 2), "1-minute load average divided by the number of CPUs.", min_value=0),
        fraction(
            "Host memory used",
            [
                Query(f"{_node('gputuned_host_memory_used_bytes')} / {_node('gputuned_host_memory_total_bytes')}", "{{instance}} memory"),
                Query(f"{_node('gputuned_host_swap_used_bytes')} / clamp_min({_node('gputuned_host_swap_total_bytes')}, 1)",
                      "{{instance}} swap"),
            ],
            high_bad(0.85, 0.95), "Memory in use (total minus available) and swap in use, as fractions.",
        ),
        timeseries("Disk throughput", "Bps", [
            Query(_sum_of("instance, device", "rate", "gputuned_host_disk_read_bytes_total"), "{{device}} read"),
            Query(_sum_of("instance, device", "rate", "gputuned_host_disk_written_bytes_total"), "{{device}} write"),
        ], info_only(), "Bytes read and written per block device.", min_value=0),
        timeseries("Network throughput", "Bps", [
            Query(_rate("gputuned_host_network_receive_bytes_total"), "{{interface}} rx"),
            Query(_rate("gputuned_host_network_transmit_bytes_total"), "{{interface}} tx"),
        ], info_only(), "Bytes per second per interface.", min_value=0),
        timeseries(
            "Network errors and drops", "pps",
            [Query(_sum_of("instance, interface", "rate", *(
                f"gputuned_host_network_{way}_{what}_total" for what in ("errors", "drop") for way in ("receive", "transmit")
            )), "{{interface}}")],
            high_bad(1, 100), "Packets per second received or sent in error or dropped, per interface.", min_value=0,
        ),
        timeseries(
            "TCP retransmitted segments", "percentunit",
            [Query(f"{_rate('gputuned_host_tcp_retransmitted_segments_total')}"
                   f" / clamp_min({_rate('gputuned_host_tcp_sent_segments_total')}, 1)", "{{instance}}")],
            high_bad(0.01, 0.05), "Retransmitted over sent TCP segments; a few percent slows collective communication.", min_value=0,
        ),
    ]


def fabric_panels() -> list[g.Panel]:
    """InfiniBand/RoCE ports and round-trip time to peer nodes."""
    ways = (("receive", "rx"), ("transmit", "tx"))
    return [
        timeseries("InfiniBand throughput", "Bps", [
            Query(_rate(f"gputuned_infiniband_port_{way}_bytes_total"), f"{_PORT} {tag}") for way, tag in ways
        ], info_only(), "Data bytes per second per InfiniBand or RoCE port.", min_value=0),
        fraction("InfiniBand link utilization", [
            Query(f"{_rate(f'gputuned_infiniband_port_{way}_bytes_total')} / {_node('gputuned_infiniband_port_rate_bytes_per_second')}",
                  f"{_PORT} {tag}")
            for way, tag in ways
        ], high_bad(0.7, 0.9), "Throughput over the negotiated port rate; near 1 the fabric limits communication."),
        timeseries(
            "InfiniBand port errors", "short",
            [Query(_sum_of("instance, device, port", "increase", *(
                f"gputuned_infiniband_port_{kind}_total" for kind in ("symbol_errors", "receive_errors", "transmit_discards", "link_downed")
            )), _PORT)],
            high_bad(1, 100), "Symbol errors, receive errors, transmit discards and link-downs per port.", min_value=0,
        ),
        state_stat("InfiniBand ports active", [Query(_node("gputuned_infiniband_port_active"), _PORT)],
                   "1 when the port state is ACTIVE.", ("DOWN", "red"), ("active", "green")),
        timeseries("Peer round-trip time", "s", [Query(_node("gputuned_peer_rtt_seconds"), "{{instance}} to {{peer}}")],
                   high_bad(0.001, 0.01), "TCP connect time to each configured peer node.", min_value=0),
        state_stat("Peers reachable", [Query(_node("gputuned_peer_up"), "{{peer}}")],
                   "1 when the last connect to the peer succeeded.", ("UNREACHABLE", "red"), ("up", "green")),
    ]


def daemon_panels() -> list[g.Panel]:
    """gputuned's own health."""
    return [
        state_timeline("Collectors up", [Query(_node("gputuned_collector_up"), "{{instance}} {{collector}}")],
                       "1 while the collector's last run succeeded; 0 means its series are not served.",
                       ("down", "red"), ("up", "green"), unit="none"),
        timeseries("Collection tick duration", "s", [
            Query(_node("gputuned_tick_duration_seconds"), "{{instance}} tick"),
            Query(_node("gputuned_collector_duration_seconds"), "{{instance}} {{collector}}"),
        ], high_bad(0.25, 0.8), "Duration of the last tick and of each collector's last run (the period is 1 s by default).",
            min_value=0),
        timeseries("Tick overruns and collector errors", "short", [
            Query(_rate("gputuned_tick_overruns_total", "increase"), "{{instance}} overruns"),
            Query(_rate("gputuned_collector_errors_total", "increase"), "{{instance}} {{collector}} errors"),
        ], high_bad(1, 5), "Ticks that ran past their deadline and collector runs that raised.", min_value=0),
        timeseries("Trainer reports received", "ops", [Query(_rate("gputuned_control_reports_total"), "{{instance}}")],
                   info_only(), "Step reports accepted on the control socket per second (each rank reports about once a second).",
                   min_value=0),
        stat("Control connections and jobs", "none", [
            Query(_node("gputuned_control_connections"), "{{instance}} connections"),
            Query(_node("gputuned_control_jobs"), "{{instance}} jobs"),
        ], info_only(), "Open control-socket connections (one per rank) and training jobs with a connected rank."),
    ]
