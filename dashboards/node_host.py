"""Node overview, host side: CPU, memory, disks, network, fabric and peers, and the daemon itself.

Filesystems, pressure stall information, OOM kills and link state read node_exporter's series
where node_exporter is scraped with the same ``instance`` label (docs/dashboards.md shows the
relabelling) and gputuned's own otherwise: ``node_... or on (instance) gputuned_...``.
"""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.panels import fraction, stat, state_stat, state_timeline, timeseries
from gputuned.dashboards.queries import NODE, RATE, Query
from gputuned.dashboards.thresholds import high_bad, info_only, steps

_PORT = "{{device}}/{{port}}"
_LINK = "{{instance}} {{device}}{{interface}}"  # node_exporter labels the interface device, gputuned interface
_NOT_MEMORY = 'fstype!~"tmpfs|ramfs"'
_PSI = (("cpu", "waiting", "some"), ("memory", "waiting", "some"), ("memory", "stalled", "full"),
        ("io", "waiting", "some"), ("io", "stalled", "full"))

#: The node_exporter series the node dashboard prefers to gputuned's where both exist.
NODE_EXPORTER_SERIES = frozenset({
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_vmstat_oom_kill", "node_network_up",
    "node_network_speed_bytes", *(f"node_pressure_{r}_{w}_seconds_total" for r, w, _ in _PSI),
})


def _node(metric: str) -> str:
    return f"{metric}{{{NODE}}}"


def _rate(metric: str, fn: str = "rate") -> str:
    return f"{fn}({metric}{{{NODE}}}[{RATE}])"


def _sum_of(by: str, fn: str, *metrics: str) -> str:
    """``sum by (by) (fn(a) + fn(b) + ...)`` over counters: errors of several kinds as one line."""
    return f"sum by ({by}) (" + " + ".join(_rate(m, fn) for m in metrics) + ")"


def _either(node_exporter: str, gputuned: str) -> str:
    """node_exporter's series of an instance where it has them, else gputuned's."""
    return f"{node_exporter} or on (instance) {gputuned}"


def _fill(metric: str, matchers: str) -> str:
    """``1 - avail / size`` of the filesystems ``metric`` (node_filesystem or gputuned_host_filesystem) selects."""
    sel = f"{{{NODE}, {matchers}}}"
    return f"1 - {metric}_avail_bytes{sel} / {metric}_size_bytes{sel}"


def host_extra_panels() -> list[g.Panel]:
    """Filesystem fill, /dev/shm, pressure stalls, OOM kills and links: node_exporter's where scraped."""
    return [
        fraction("Filesystem fill", [Query(_either(_fill("node_filesystem", _NOT_MEMORY), _fill("gputuned_host_filesystem", _NOT_MEMORY)),
                                           "{{instance}} {{mountpoint}}")],
                 high_bad(0.85, 0.95), "Share of each filesystem not available to users (checkpoint and data volumes; "
                 "gputuned serves the mounts of [collectors.host] paths)."),
        fraction("Shared memory (/dev/shm) used", [Query(_fill("gputuned_host_filesystem", 'fstype="tmpfs"'), "{{instance}} {{mountpoint}}")],
                 high_bad(0.7, 0.9), "NCCL buffers and data-loader workers live here; full, they fail with bus errors."),
        fraction("Pressure stalls", [
            Query(_either(_rate(f"node_pressure_{r}_{w}_seconds_total"),
                          f'rate(gputuned_host_pressure_{w}_seconds_total{{{NODE}, resource="{r}"}}[{RATE}])'), f"{{{{instance}}}} {r} {kind}")
            for r, w, kind in _PSI
        ], high_bad(0.1, 0.3), "Share of time some (or all) tasks stalled on CPU, memory or IO (PSI)."),
        timeseries("OOM kills", "short", [Query(_either(_rate("node_vmstat_oom_kill", "increase"), _rate("gputuned_host_oom_kills_total", "increase")),
                                                "{{instance}}")],
                   steps("green", ("red", 1)), "Processes the kernel's OOM killer ended (a data-loader worker, a rank).", min_value=0),
        state_timeline("Network links up", [Query(_either(f'node_network_up{{{NODE}, device!="lo"}}', _node("gputuned_host_network_up")), _LINK)],
                       "1 while the interface's operational state is up.", ("down", "red"), ("up", "green"), unit="none"),
        timeseries("Link speed", "Bps", [Query(_either(f"node_network_speed_bytes{{{NODE}}} > 0", _node("gputuned_host_network_speed_bytes")), _LINK)],
                   info_only(), "Negotiated speed of each interface; a link that renegotiated lower slows every collective.",
                   min_value=0),
    ]


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
        *host_extra_panels(),
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


def node_exporter_section() -> list[str]:
    """The docs page's section on running node_exporter beside gputuned."""
    prefer = ", ".join(f"`{n}`" for n in sorted(NODE_EXPORTER_SERIES))
    return [
        "## Beside node_exporter",
        "",
        "gputuned serves what a GPU-training SRE needs of the host (CPU, load, memory, swap, disks, interfaces,",
        "TCP retransmits, InfiniBand/RoCE ports, and from `[collectors.host]`: the fill of the filesystems holding",
        "`paths` (checkpoint and data volumes) and of `shm_path` (/dev/shm, where NCCL and data loaders keep their",
        "buffers), PSI totals from /proc/pressure, OOM kills from /proc/vmstat, link state, carrier and speed",
        "from /sys/class/net). A source the kernel lacks (no PSI, a path not mounted) is one log line and its",
        "series absent. For everything else (hundreds of families: NUMA, hwmon, conntrack, filesystems not",
        "listed, ...) run Prometheus' node_exporter beside gputuned on port 9100: on Debian 12",
        "`apt-get install prometheus-node-exporter` (on Kubernetes, its DaemonSet). The two do not overlap in",
        "names, so both can be scraped at full rate.",
        "",
        f"The node dashboard's host row reads node_exporter's series where they exist ({prefer}) and",
        "gputuned's otherwise: each such query is `node_... or on (instance) gputuned_host_...`. For node_exporter's",
        "series to be chosen they must carry the gputuned target's `instance`; `dashboards/prometheus.yml` scrapes",
        "node_exporter with a relabelling that writes `<host>:9735` into `instance` (job `node`). Without it the",
        "panels show gputuned's series. /dev/shm is gputuned's alone: node_exporter excludes /dev by default.",
        "gputuned's series follow node_exporter's semantics: `gputuned_host_filesystem_{size,free,avail}_bytes`,",
        "`_files`, `_files_free`, `_readonly` with `device`, `fstype` and `mountpoint` (one per mount however",
        "many paths it holds); `gputuned_host_pressure_waiting_seconds_total` (PSI some) and",
        "`_stalled_seconds_total` (PSI full) with a `resource` label; `gputuned_host_oom_kills_total`;",
        "`gputuned_host_network_up`, `_carrier` and `_speed_bytes` per `interface` (a virtual link's speed of",
        "-1, which node_exporter serves as -125000, is left out).",
    ]
