"""Host collector: CPU, load, memory, swap, disk IO, network interfaces, TCP retransmits."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from gputuned.collectors.families import C, G, Labels, Sample, declare
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

CPU_SECONDS = declare("gputuned_host_cpu_seconds_total", C, "CPU time spent in each mode, all CPUs together.")
CPU_COUNT = declare("gputuned_host_cpus", G, "Logical CPUs.")
LOAD1 = declare("gputuned_host_load1", G, "1-minute load average.")
LOAD5 = declare("gputuned_host_load5", G, "5-minute load average.")
LOAD15 = declare("gputuned_host_load15", G, "15-minute load average.")
MEM_TOTAL = declare("gputuned_host_memory_total_bytes", G, "Physical memory.")
MEM_AVAILABLE = declare("gputuned_host_memory_available_bytes", G, "Memory available without swapping.")
MEM_USED = declare("gputuned_host_memory_used_bytes", G, "Memory in use (total minus available).")
SWAP_TOTAL = declare("gputuned_host_swap_total_bytes", G, "Swap space.")
SWAP_USED = declare("gputuned_host_swap_used_bytes", G, "Swap in use.")
DISK_READ = declare("gputuned_host_disk_read_bytes_total", C, "Bytes read, per block device.")
DISK_WRITTEN = declare("gputuned_host_disk_written_bytes_total", C, "Bytes written, per block device.")
DISK_READS = declare("gputuned_host_disk_reads_completed_total", C, "Reads completed, per block device.")
DISK_WRITES = declare("gputuned_host_disk_writes_completed_total", C, "Writes completed, per block device.")
DISK_BUSY = declare("gputuned_host_disk_io_time_seconds_total", C, "Time the device was busy with IO.")
NET_RX_BYTES = declare("gputuned_host_network_receive_bytes_total", C, "Bytes received, per interface.")
NET_TX_BYTES = declare("gputuned_host_network_transmit_bytes_total", C, "Bytes sent, per interface.")
NET_RX_PACKETS = declare("gputuned_host_network_receive_packets_total", C, "Packets received, per interface.")
NET_TX_PACKETS = declare("gputuned_host_network_transmit_packets_total", C, "Packets sent, per interface.")
NET_RX_ERRS = declare("gputuned_host_network_receive_errors_total", C, "Receive errors, per interface.")
NET_TX_ERRS = declare("gputuned_host_network_transmit_errors_total", C, "Transmit errors, per interface.")
NET_RX_DROP = declare("gputuned_host_network_receive_drop_total", C, "Received packets dropped, per interface.")
NET_TX_DROP = declare("gputuned_host_network_transmit_drop_total", C, "Outgoing packets dropped, per interface.")
TCP_RETRANS = declare("gputuned_host_tcp_retransmitted_segments_total", C, "TCP segments retransmitted.")
TCP_OUT = declare("gputuned_host_tcp_sent_segments_total", C, "TCP segments sent.")

#: (family, psutil attribute) of the per-device counters: disk_io_counters, net_io_counters
_DISK_COUNTERS = (
    (DISK_READ, "read_bytes"), (DISK_WRITTEN, "write_bytes"), (DISK_READS, "read_count"), (DISK_WRITES, "write_count"),
)
_NET_COUNTERS = (
    (NET_RX_BYTES, "bytes_recv"), (NET_TX_BYTES, "bytes_sent"),
    (NET_RX_PACKETS, "packets_recv"), (NET_TX_PACKETS, "packets_sent"),
    (NET_RX_ERRS, "errin"), (NET_TX_ERRS, "errout"),
    (NET_RX_DROP, "dropin"), (NET_TX_DROP, "dropout"),
)

_PARTITION = re.compile(r"^(loop|ram|dm-|sr)\d|^(sd[a-z]+|vd[a-z]+|xvd[a-z]+)\d+$|^nvme\d+n\d+p\d+$")


def read_tcp_counters(proc: Path) -> dict[str, int]:
    """``Tcp:`` counters from /proc/net/snmp (header line, then value line)."""
    lines = (proc / "net" / "snmp").read_text().splitlines()
    for head, vals in zip(lines, lines[1:], strict=False):
        if head.startswith("Tcp:") and vals.startswith("Tcp:"):
            return {k: int(v) for k, v in zip(head.split()[1:], vals.split()[1:], strict=True)}
    raise ValueError(f"no Tcp counters in {proc / 'net' / 'snmp'}")


def _counters(table: tuple[tuple[str, str], ...], labels: Labels, stats: object) -> list[Sample]:
    """One sample per (family, attribute) of a psutil counters record."""
    return [(family, labels, float(getattr(stats, attr))) for family, attr in table]


class HostCollector:
    """Host readings through psutil (and /proc/net/snmp, which psutil does not expose)."""

    name = "host"

    def __init__(self, proc: str | os.PathLike[str] = "/proc", skip_interfaces: tuple[str, ...] = ("lo",)) -> None:
        self._proc = Path(proc)
        self._skip_if = set(skip_interfaces)
        self._cpus = float(psutil.cpu_count() or 1)

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        ct = psutil.cpu_times()
        for mode in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"):
            v = getattr(ct, mode, None)
            if v is not None:
                out.append((CPU_SECONDS, (("mode", mode),), float(v)))
        out.append((CPU_COUNT, (), self._cpus))
        l1, l5, l15 = os.getloadavg()
        out += [(LOAD1, (), l1), (LOAD5, (), l5), (LOAD15, (), l15)]
        vm = psutil.virtual_memory()
        out += [
            (MEM_TOTAL, (), float(vm.total)),
            (MEM_AVAILABLE, (), float(vm.available)),
            (MEM_USED, (), float(vm.total - vm.available)),
        ]
        sw = psutil.swap_memory()
        out += [(SWAP_TOTAL, (), float(sw.total)), (SWAP_USED, (), float(sw.used))]
        for dev, io in (psutil.disk_io_counters(perdisk=True, nowrap=True) or {}).items():
            if _PARTITION.match(dev):
                continue
            lab = (("device", dev),)
            out += _counters(_DISK_COUNTERS, lab, io)
            busy = getattr(io, "busy_time", None)
            if busy is not None:
                out.append((DISK_BUSY, lab, busy / 1000.0))
        for nic, n in psutil.net_io_counters(pernic=True, nowrap=True).items():
            if nic in self._skip_if:
                continue
            out += _counters(_NET_COUNTERS, (("interface", nic),), n)
        tcp = read_tcp_counters(self._proc)
        out.append((TCP_RETRANS, (), float(tcp.get("RetransSegs", 0))))
        out.append((TCP_OUT, (), float(tcp.get("OutSegs", 0))))
        return out

    def close(self) -> None:
        """Nothing to release."""


class HostCollectorConfig(CollectorConfig):
    proc_path: Path = Path("/proc")
    skip_interfaces: list[str] = ["lo"]


@register("host", config=HostCollectorConfig, families=(
    CPU_SECONDS, CPU_COUNT, LOAD1, LOAD5, LOAD15, MEM_TOTAL, MEM_AVAILABLE, MEM_USED, SWAP_TOTAL, SWAP_USED,
    DISK_READ, DISK_WRITTEN, DISK_READS, DISK_WRITES, DISK_BUSY, NET_RX_BYTES, NET_TX_BYTES, NET_RX_PACKETS,
    NET_TX_PACKETS, NET_RX_ERRS, NET_TX_ERRS, NET_RX_DROP, NET_TX_DROP, TCP_RETRANS, TCP_OUT,
))
def build_host_collector(cfg: HostCollectorConfig, ctx: CollectorContext) -> HostCollector:
    """``[collectors.host]``: psutil and /proc readings of this host."""
    return HostCollector(proc=cfg.proc_path, skip_interfaces=tuple(cfg.skip_interfaces))
