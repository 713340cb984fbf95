"""Host collector: CPU, load, memory, swap, disk IO, network interfaces, TCP retransmits, and what
a GPU-training node needs beside them: filesystem fill of configured paths and /dev/shm, pressure
stall information, OOM kills, network link state and speed.

The readings beyond psutil's are optional: a source this kernel or host lacks (no PSI, a volume
not mounted) is one log line and its families absent, never a failed collector.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from operator import add
from pathlib import Path
from typing import TypeVar

import psutil
from pydantic import Field

from gputuned.collectors.families import C, G, Labels, Sample, declare
from gputuned.collectors.network import LINK_FAMILIES, KeptFiles, LinkReader, read_text
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds between two reads of /proc/mounts (a volume mounted later is found within this)
MOUNTS_REFRESH_S = 30.0

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
FS_SIZE = declare("gputuned_host_filesystem_size_bytes", G, "Filesystem size, per mount of a configured path.")
FS_FREE = declare("gputuned_host_filesystem_free_bytes", G, "Free space, root's reserve included.")
FS_AVAIL = declare("gputuned_host_filesystem_avail_bytes", G, "Space available to unprivileged users.")
FS_FILES = declare("gputuned_host_filesystem_files", G, "Inodes of the filesystem.")
FS_FILES_FREE = declare("gputuned_host_filesystem_files_free", G, "Free inodes.")
FS_READONLY = declare("gputuned_host_filesystem_readonly", G, "1 when the filesystem is mounted read-only.")
PSI_WAITING = declare("gputuned_host_pressure_waiting_seconds_total", C,
                      "Time some tasks stalled on the resource (PSI some), per resource.")
PSI_STALLED = declare("gputuned_host_pressure_stalled_seconds_total", C,
                      "Time all non-idle tasks stalled on the resource at once (PSI full), per resource.")
OOM_KILLS = declare("gputuned_host_oom_kills_total", C, "Processes killed by the kernel's OOM killer.")

#: The per-device counter families in the order of the rows read_diskstats and read_net_dev give
_DISK_COUNTERS = (DISK_READ, DISK_WRITTEN, DISK_READS, DISK_WRITES)
_NET_COUNTERS = (NET_RX_BYTES, NET_TX_BYTES, NET_RX_PACKETS, NET_TX_PACKETS, NET_RX_ERRS, NET_TX_ERRS, NET_RX_DROP, NET_TX_DROP)
#: /proc/diskstats fields by line length, as psutil reads them: name, reads, sectors read, writes, sectors written, busy ms
_DISKSTATS = {14: (2, 3, 5, 7, 9, 12), 15: (3, 2, 5, 7, 9, 12), 7: (2, 3, 4, 5, 6, -1)}
#: /proc/net/dev fields after the name: bytes, packets, errors, drops, received then sent, in _NET_COUNTERS' order
_NET_DEV = (0, 8, 1, 9, 2, 10, 3, 11)
Row = tuple[int, ...]
TextRead = Callable[..., str]  # read_text, or a KeptFiles' read: a file's text by its path
#: The modes of /proc/stat's first line, in its order (psutil's cpu_times names; a kernel before 2.6.11 lacks steal)
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_CPU_LABELS = tuple((("mode", mode),) for mode in _CPU_MODES)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_PARTITION = re.compile(r"^(loop|ram|dm-|sr)\d|^(sd[a-z]+|vd[a-z]+|xvd[a-z]+)\d+$|^nvme\d+n\d+p\d+$")


def read_cpu_times(proc: str, read: TextRead = read_text) -> list[float]:
    """Seconds per mode of _CPU_MODES, all CPUs together, from ``proc``/stat's first line, as psutil's cpu_times reads it."""
    line = read(f"{proc}/stat", head=4096).partition("\n")[0].split()  # the first line fits a page on any host
    if not line or line[0] != "cpu":
        raise ValueError(f"no cpu line at the top of {proc}/stat")
    return [float(v) / _CLOCK_TICKS for v in line[1:len(_CPU_MODES) + 1]]


def read_tcp_counters(proc: Path, read: TextRead = read_text) -> dict[str, int]:
    """``Tcp:`` counters from /proc/net/snmp (header line, then value line)."""
    lines = read(f"{proc}/net/snmp").splitlines()
    for head, vals in zip(lines, lines[1:], strict=False):
        if head.startswith("Tcp:") and vals.startswith("Tcp:"):
            return {k: int(v) for k, v in zip(head.split()[1:], vals.split()[1:], strict=True)}
    raise ValueError(f"no Tcp counters in {proc / 'net' / 'snmp'}")


#: PSI line kind -> family; totals are in microseconds
_PSI_LINES = {"some": PSI_WAITING, "full": PSI_STALLED}
_PSI_RESOURCES = ("cpu", "memory", "io")

Mount = tuple[str, str, str]  # device, mount point, filesystem type


#: The /proc/meminfo lines the host collector serves (kB), in psutil's names for them
_MEMINFO = {"MemTotal:": "total", "MemAvailable:": "available", "SwapTotal:": "swap_total", "SwapFree:": "swap_free"}


def read_memory(proc: str, read: TextRead = read_text) -> dict[str, int] | None:
    """Memory and swap (bytes) from ``proc``/meminfo, as psutil's virtual_memory and swap_memory take them;
    None where psutil would estimate instead (a line missing, MemAvailable 0 or above MemTotal)."""
    got: dict[str, int] = {}
    text = "\n" + read(f"{proc}/meminfo")
    for key, name in _MEMINFO.items():  # four lines of fifty: found, not split out
        at = text.rfind(f"\n{key} ")  # the last such line, as a loop over the lines keeps
        if at >= 0:
            start = at + len(key) + 2
            end = text.find("\n", start)
            got[name] = int(text[start:end if end >= 0 else None].split()[0]) * 1024
    if len(got) < len(_MEMINFO) or not 0 < got["available"] <= got["total"]:
        return None
    return got


def read_pressure(proc: Path, read: TextRead = read_text) -> list[Sample]:
    """PSI totals of cpu, memory and io from ``proc``/pressure (kernel 4.20+, psi not disabled)."""
    out: list[Sample] = []
    for resource in _PSI_RESOURCES:
        for line in read(f"{proc}/pressure/{resource}").splitlines():
            kind, _, fields = line.partition(" ")
            total = fields.rpartition("total=")[2]
            if kind in _PSI_LINES and total.isdigit():
                out.append((_PSI_LINES[kind], (("resource", resource),), int(total) / 1e6))
    return out


def read_oom_kills(proc: Path, read: TextRead = read_text) -> list[Sample]:
    """The OOM-kill counter of ``proc``/vmstat (kernel 4.13+); ValueError when the line is absent."""
    text = read(f"{proc}/vmstat")
    at = text.find("oom_kill ")
    if at < 0 or (at > 0 and text[at - 1] != "\n"):
        raise ValueError(f"no oom_kill in {proc}/vmstat")
    end = text.find("\n", at)
    return [(OOM_KILLS, (), float(text[at + 9:end if end >= 0 else len(text)]))]


def read_mounts(proc: Path) -> list[Mount]:
    """(device, mount point, type) of every line of ``proc``/mounts, octal escapes decoded."""
    out = []
    for line in (proc / "mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            device, mountpoint, fstype = (re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), p) for p in parts[:3])
            out.append((device, mountpoint, fstype))
    return out


def mount_of(path: str, mounts: Iterable[Mount]) -> Mount:
    """The mount holding ``path`` (already resolved): the last-mounted of the longest matching mount points."""
    best: Mount | None = None
    for m in mounts:
        mp = m[1]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) >= len(best[1])):
            best = m
    if best is None:
        raise ValueError(f"{path} is on no mount listed")
    return best


def filesystem_samples(mount: Mount, st: os.statvfs_result) -> list[Sample]:
    """node_exporter's filesystem readings of one mount from its statvfs."""
    labels = (("device", mount[0]), ("fstype", mount[2]), ("mountpoint", mount[1]))
    return [(family, labels, float(value)) for family, value in (
        (FS_SIZE, st.f_blocks * st.f_frsize), (FS_FREE, st.f_bfree * st.f_frsize), (FS_AVAIL, st.f_bavail * st.f_frsize),
        (FS_FILES, st.f_files), (FS_FILES_FREE, st.f_ffree), (FS_READONLY, 1 if st.f_flag & os.ST_RDONLY else 0),
    )]


def read_diskstats(proc: str, read: TextRead = read_text) -> dict[str, Row]:
    """Per block device: (bytes read, bytes written, reads, writes, busy ms) from ``proc``/diskstats, as psutil reads them."""
    out: dict[str, Row] = {}
    for line in read(f"{proc}/diskstats").splitlines():
        f = line.split()
        at = _DISKSTATS.get(14 if len(f) >= 18 else len(f))
        if at is None:
            raise ValueError(f"not sure how to interpret line {line!r}")
        name, reads, rsect, writes, wsect, busy = at
        out[f[name]] = (int(f[rsect]) * 512, int(f[wsect]) * 512, int(f[reads]), int(f[writes]), int(f[busy]) if busy > 0 else 0)
    return out


def read_net_dev(proc: str, read: TextRead = read_text) -> dict[str, Row]:
    """Per interface: the counters of _NET_COUNTERS from ``proc``/net/dev."""
    out: dict[str, Row] = {}
    for line in read(f"{proc}/net/dev").splitlines()[2:]:
        name, _, rest = line.rpartition(":")
        f = rest.split()
        if len(f) != 16:
            raise ValueError(f"not sure how to interpret line {line!r}")
        out[name.strip()] = tuple(int(f[i]) for i in _NET_DEV)
    return out


class Unwrapped:
    """Counter rows that never go back, as psutil's ``nowrap`` keeps them: a value below the last read
    adds the last read to that counter's offset; a row's offsets go when its key is no longer read."""

    def __init__(self) -> None:
        self._last: dict[str, Row] = {}
        self._offsets: dict[str, Row] = {}

    def __call__(self, rows: dict[str, Row]) -> dict[str, Row]:
        """``rows`` with each key's offsets added."""
        last, offsets = self._last, self._offsets
        out = rows
        for key, row in rows.items():
            prev = last.get(key)
            if prev is not None and any(map(int.__lt__, row, prev)):  # wrapped (or reset): the rare case
                base = offsets.get(key, (0,) * len(row))
                offsets[key] = tuple(o + (p if r < p else 0) for r, p, o in zip(row, prev, base, strict=True))
        for key in [k for k in offsets if k not in rows]:
            del offsets[key]
        if offsets:
            out = {k: tuple(map(add, row, offsets[k])) if k in offsets else row for k, row in rows.items()}
        self._last = rows
        return out


class HostCollector:
    """Host readings from /proc (psutil where it lacks a file or memory needs estimating) and /sys.

    CPU, load, memory, disk and interface counters are read at every collect; TCP segments, pressure,
    OOM kills, filesystems and links (counters rated over minutes, fill, link state) every
    ``slow_every_ticks`` collects, their last samples served in between: each is a file the kernel
    makes afresh at each read. ``refresh_ticks``: links' carrier and speed every that many reads of the
    links (at once for a link whose state moved).
    """

    name = "host"

    def __init__(
        self,
        proc: str | os.PathLike[str] = "/proc",
        skip_interfaces: tuple[str, ...] = ("lo",),
        *,
        sysfs: str | os.PathLike[str] | None = None,
        paths: Iterable[str | os.PathLike[str]] = (),
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        refresh_ticks: int = 1,
        slow_every_ticks: int = 1,
    ) -> None:
        if slow_every_ticks < 1:
            raise ValueError("slow_every_ticks must be at least 1")
        self._proc = Path(proc)
        self._paths = [os.fspath(p) for p in paths]
        self._statvfs = statvfs
        self._skip_if = set(skip_interfaces)
        self._cpus = float(psutil.cpu_count() or 1)
        self._mounts: list[Mount] = []
        self._mounts_due = -math.inf
        self._held: dict[str, Mount] = {}  # configured path -> the mount holding it, resolved again with the mounts
        self._failing: set[str] = set()  # optional sources whose failure is logged until they read again
        self._disks, self._nics = Unwrapped(), Unwrapped()
        self._links = LinkReader(sysfs, self._skip_if, refresh_ticks) if sysfs is not None else None
        self._label_sets: dict[tuple[str, str], Labels] = {}
        self._files = KeptFiles()  # the /proc files read at every collect, kept open
        self._slow_every, self._ticks = slow_every_ticks, 0
        self._slow: list[Sample] = []  # the slow readings' last samples

    def _labels(self, key: str, value: str) -> Labels:
        """One label set, the same tuple from tick to tick (the store and the exporter compare them by identity first)."""
        lab = self._label_sets.get((key, value))
        if lab is None:
            if len(self._label_sets) > 1024:  # devices that come and go (containers' veths)
                self._label_sets.clear()
            lab = self._label_sets[(key, value)] = ((key, value),)
        return lab

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        try:
            cpu = read_cpu_times(str(self._proc), self._files.read)
        except OSError:  # a /proc tree without stat (a fixture, a sandbox): psutil's own /proc
            ct = psutil.cpu_times()
            cpu = [float(getattr(ct, mode)) for mode in _CPU_MODES if hasattr(ct, mode)]
        out += [(CPU_SECONDS, labels, v) for labels, v in zip(_CPU_LABELS, cpu, strict=False)]
        out.append((CPU_COUNT, (), self._cpus))
        l1, l5, l15 = os.getloadavg()
        out += [(LOAD1, (), l1), (LOAD5, (), l5), (LOAD15, (), l15)]
        out += self._optional("memory", self._memory_samples)
        # each absent (logged once) where a sandboxed /proc lacks its file: the rest of the host is still served
        disks = self._optional("disk counters", lambda p: list(self._disks(read_diskstats(p, self._files.read)).items()), str(self._proc))
        for dev, row in disks:
            if not _PARTITION.match(dev):
                lab = self._labels("device", dev)
                out += [(family, lab, float(v)) for family, v in zip(_DISK_COUNTERS, row[:4], strict=True)]
                out.append((DISK_BUSY, lab, row[4] / 1000.0))
        nics = self._optional("interface counters", lambda p: list(self._nics(read_net_dev(p, self._files.read)).items()), str(self._proc))
        for nic, row in nics:
            if nic not in self._skip_if:
                lab = self._labels("interface", nic)
                out += [(family, lab, float(v)) for family, v in zip(_NET_COUNTERS, row, strict=True)]
        if self._ticks % self._slow_every == 0:
            self._slow = self._slow_samples()
        self._ticks += 1
        return out + self._slow

    def _memory_samples(self) -> list[Sample]:
        """Memory and swap from one read of psutil's meminfo (psutil reads it twice, and /proc/vmstat)."""
        m = read_memory(str(self._proc), self._files.read)
        if m is None:  # psutil's estimates
            vm, sw = psutil.virtual_memory(), psutil.swap_memory()
            m = {"total": vm.total, "available": vm.available, "swap_total": sw.total, "swap_free": sw.total - sw.used}
        return [(MEM_TOTAL, (), float(m["total"])), (MEM_AVAILABLE, (), float(m["available"])),
                (MEM_USED, (), float(m["total"] - m["available"])), (SWAP_TOTAL, (), float(m["swap_total"])),
                (SWAP_USED, (), float(m["swap_total"] - m["swap_free"]))]

    def _slow_samples(self) -> list[Sample]:
        """TCP segments, then pressure, OOM kills, filesystems and links: each of these absent, and logged once,
        while it cannot be read."""
        tcp = read_tcp_counters(self._proc, self._files.read)
        out = [(TCP_RETRANS, (), float(tcp.get("RetransSegs", 0))), (TCP_OUT, (), float(tcp.get("OutSegs", 0)))]
        out += self._optional("pressure stall information", read_pressure, self._proc, self._files.read)
        out += self._optional("OOM kills", read_oom_kills, self._proc, self._files.read)
        if self._paths:
            now = time.monotonic()
            if now >= self._mounts_due:  # mounts change seldom; /proc/mounts is the costliest read here
                self._mounts, self._mounts_due = self._optional("mounts", read_mounts, self._proc), now + MOUNTS_REFRESH_S
                self._held.clear()
            seen: set[str] = set()
            for path in self._paths:
                out += self._optional(f"filesystem of {path}", self._filesystem, path, self._mounts, seen)
        if self._links is not None:
            out += self._optional("network links", self._links.read)
        return out

    def _filesystem(self, path: str, mounts: list[Mount], seen: set[str]) -> list[Sample]:
        """The readings of the mount holding ``path``, once per mount point."""
        st = self._statvfs(path)  # first, so that a path gone missing is logged even beside a served mount
        mount = self._held.get(path)
        if mount is None:
            mount = self._held[path] = mount_of(os.path.realpath(path), mounts)
        if mount[1] in seen:
            return []
        seen.add(mount[1])
        return filesystem_samples(mount, st)

    def _optional(self, what: str, read: Callable[..., list[T]], *args: object) -> list[T]:
        """``read(*args)``, or nothing (logged the first time) when its source is missing or unreadable."""
        try:
            got = read(*args)
        except (OSError, ValueError) as e:
            if what not in self._failing:
                self._failing.add(what)
                logger.warning("host: no %s (%s); its series are not served", what, e)
            return []
        if what in self._failing:
            self._failing.discard(what)
            logger.info("host: %s readable again", what)
        return got

    def close(self) -> None:
        """Close the kept /proc and /sys files."""
        self._files.close()
        if self._links is not None:
            self._links.close()


class HostCollectorConfig(CollectorConfig):
    proc_path: Path = Path("/proc")
    sysfs_path: Path = Path("/sys")
    skip_interfaces: list[str] = ["lo"]
    #: Paths whose filesystem fill is served (checkpoint and data volumes); /dev/shm is served beside them
    paths: list[Path] = []
    shm_path: Path | None = Path("/dev/shm")
    #: Collects between two reads of TCP segments, pressure, OOM kills, filesystems and links, their last
    #: samples served in between (1: every collect)
    slow_every_ticks: int = Field(default=5, ge=1)
    #: Reads of the links between two reads of their carrier and speed (a link whose state moved is read at once)
    refresh_ticks: int = Field(default=5, ge=1)


@register("host", config=HostCollectorConfig, families=(
    CPU_SECONDS, CPU_COUNT, LOAD1, LOAD5, LOAD15, MEM_TOTAL, MEM_AVAILABLE, MEM_USED, SWAP_TOTAL, SWAP_USED,
    DISK_READ, DISK_WRITTEN, DISK_READS, DISK_WRITES, DISK_BUSY, NET_RX_BYTES, NET_TX_BYTES, NET_RX_PACKETS,
    NET_TX_PACKETS, NET_RX_ERRS, NET_TX_ERRS, NET_RX_DROP, NET_TX_DROP, TCP_RETRANS, TCP_OUT,
    FS_SIZE, FS_FREE, FS_AVAIL, FS_FILES, FS_FILES_FREE, FS_READONLY, PSI_WAITING, PSI_STALLED, OOM_KILLS, *LINK_FAMILIES,
))
def build_host_collector(cfg: HostCollectorConfig, ctx: CollectorContext) -> HostCollector:
    """``[collectors.host]``: psutil, /proc and /sys readings of this host."""
    paths = [*cfg.paths, *([cfg.shm_path] if cfg.shm_path is not None else [])]
    return HostCollector(proc=cfg.proc_path, skip_interfaces=tuple(cfg.skip_interfaces), sysfs=cfg.sysfs_path, paths=paths,
                         refresh_ticks=cfg.refresh_ticks, slow_every_ticks=cfg.slow_every_ticks)
