"""Network collectors: InfiniBand/RoCE port counters from sysfs, and RTT to peer nodes; the link
state and speed of network interfaces (read by the host collector)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, field_validator

from gputuned.collectors.base import Collector
from gputuned.collectors.families import C, G, Labels, Sample, declare
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

IB_RX_BYTES = declare("gputuned_infiniband_port_receive_bytes_total", C, "Data bytes received on the port.")
IB_TX_BYTES = declare("gputuned_infiniband_port_transmit_bytes_total", C, "Data bytes sent on the port.")
IB_RX_PACKETS = declare("gputuned_infiniband_port_receive_packets_total", C, "Packets received on the port.")
IB_TX_PACKETS = declare("gputuned_infiniband_port_transmit_packets_total", C, "Packets sent on the port.")
IB_RX_ERRORS = declare("gputuned_infiniband_port_receive_errors_total", C, "Malformed packets received.")
IB_TX_DISCARDS = declare("gputuned_infiniband_port_transmit_discards_total", C, "Outbound packets discarded.")
IB_SYMBOL_ERRORS = declare("gputuned_infiniband_port_symbol_errors_total", C, "Physical-layer symbol errors.")
IB_LINK_DOWNED = declare("gputuned_infiniband_port_link_downed_total", C, "Times the link went down.")
IB_STATE = declare("gputuned_infiniband_port_active", G, "1 when the port state is ACTIVE.")
IB_RATE = declare("gputuned_infiniband_port_rate_bytes_per_second", G, "Negotiated port rate.")
PEER_RTT = declare("gputuned_peer_rtt_seconds", G, "TCP connect round-trip time to a peer node.")
PEER_UP = declare("gputuned_peer_up", G, "1 when the last connect to the peer succeeded.")
LINK_UP = declare("gputuned_host_network_up", G, "1 when the interface's operational state is up.")
LINK_CARRIER = declare("gputuned_host_network_carrier", G, "1 when the interface has a carrier (cable and peer).")
LINK_SPEED = declare("gputuned_host_network_speed_bytes", G, "Negotiated link speed in bytes per second, where the driver reports one.")
LINK_FAMILIES = (LINK_UP, LINK_CARRIER, LINK_SPEED)

# counter file -> (family, multiplier); port_*_data counts 4-byte words.
_IB_COUNTERS = {
    "port_rcv_data": (IB_RX_BYTES, 4.0),
    "port_xmit_data": (IB_TX_BYTES, 4.0),
    "port_rcv_packets": (IB_RX_PACKETS, 1.0),
    "port_xmit_packets": (IB_TX_PACKETS, 1.0),
    "port_rcv_errors": (IB_RX_ERRORS, 1.0),
    "port_xmit_discards": (IB_TX_DISCARDS, 1.0),
    "symbol_error": (IB_SYMBOL_ERRORS, 1.0),
    "link_downed": (IB_LINK_DOWNED, 1.0),
}


def _read_all(fd: int, head: int = 0) -> str:
    """The text of an open file from its start (at most ``head`` bytes, in one read, when above 0)."""
    if head > 0:
        return os.pread(fd, head, 0).decode()
    chunks, at = [], 0
    while chunk := os.pread(fd, 65536, at):  # a seq file may come in several reads
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks).decode()


def read_text(path: str | os.PathLike[str], head: int = 0) -> str:
    """A small /proc or /sys file's text, read with os.pread: open()'s file objects are most of such a read's cost.

    ``head``: when above 0, one read of at most that many bytes (a line at the top of a long file).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_all(fd, head)
    finally:
        os.close(fd)


def _close_all(fds: dict[str, tuple[int, bool]]) -> None:
    for fd, _ in fds.values():
        os.close(fd)
    fds.clear()


class KeptFiles:
    """Small /proc and /sys files kept open and read again from their start, as :func:`read_text` reads them.

    procfs and sysfs make a file's text afresh at each read from offset 0, so a kept descriptor reads
    what a fresh open would, without the open and close (most of such a read's cost). A kept file that
    fails to read (a removed interface's attribute), or a plain file since deleted or replaced (a
    fixture tree's), is opened again; beyond ``limit`` files, the others are read by a fresh open.
    """

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._fds: dict[str, tuple[int, bool]] = {}  # path -> descriptor, whether it is a plain file (size above 0)
        weakref.finalize(self, _close_all, self._fds)  # closed with the object where close() was never called

    def read(self, path: str, head: int = 0) -> str:
        """``path``'s text (see :func:`read_text`); OSError when it cannot be opened or read."""
        kept = self._fds.get(path)
        if kept is not None:
            fd, plain = kept
            try:
                if not plain or os.fstat(fd).st_nlink:
                    return _read_all(fd, head)
            except OSError:
                pass
            self.forget(path)
        if len(self._fds) >= self._limit:
            return read_text(path, head)
        fd = os.open(path, os.O_RDONLY)
        try:
            text = _read_all(fd, head)
        except OSError:
            os.close(fd)
            raise
        self._fds[path] = (fd, os.fstat(fd).st_size > 0)
        return text

    def forget(self, path: str) -> None:
        """Close ``path``'s descriptor, if kept."""
        kept = self._fds.pop(path, None)
        if kept is not None:
            os.close(kept[0])

    def paths(self) -> list[str]:
        """The paths kept open."""
        return list(self._fds)

    def close(self) -> None:
        """Close every kept descriptor."""
        _close_all(self._fds)


def _read(path: str | os.PathLike[str]) -> str | None:
    """A small sysfs file's text, stripped; None when it cannot be read (absent, EINVAL for a down link's carrier)."""
    try:
        return read_text(path).strip()
    except OSError:
        return None


def _carrier_and_speed(base: str, nic: str, labels: Labels) -> list[Sample]:
    """The carrier and speed of ``nic``: a down link's read EINVAL and a virtual link's speed -1, both left out."""
    out: list[Sample] = []
    carrier = _read(f"{base}/{nic}/carrier")
    if carrier is not None and carrier.isdigit():
        out.append((LINK_CARRIER, labels, float(carrier)))
    speed = _read(f"{base}/{nic}/speed")  # Mbit/s
    if speed is not None and speed.isdigit():
        out.append((LINK_SPEED, labels, int(speed) * 125_000.0))
    return out


class LinkReader:
    """Operational state, carrier and speed of every interface under ``sysfs``/class/net, as node_exporter serves them.

    The state is read at every read; carrier and speed (the speed file asks the driver) every
    ``refresh_reads`` reads, and at once for an interface whose state moved, since neither changes
    while the state holds. Raises OSError when there is no class/net.
    """

    def __init__(self, sysfs: str | os.PathLike[str], skip: set[str] | frozenset[str] = frozenset(), refresh_reads: int = 1) -> None:
        if refresh_reads < 1:
            raise ValueError("refresh_reads must be at least 1")
        self._base = f"{os.fspath(sysfs)}/class/net"
        self._skip = skip
        self._refresh = refresh_reads
        self._reads = 0
        self._kept: dict[str, tuple[str, Labels, list[Sample]]] = {}  # by interface: state, labels, carrier and speed
        self._states = KeptFiles()  # the operstate files, read at every read

    def read(self) -> list[Sample]:
        """The link samples of this read, interfaces by name."""
        base, fresh = self._base, self._reads % self._refresh == 0
        self._reads += 1
        out: list[Sample] = []
        kept: dict[str, tuple[str, Labels, list[Sample]]] = {}
        for nic in sorted(os.listdir(base)):
            if nic in self._skip:
                continue
            try:
                state: str | None = self._states.read(f"{base}/{nic}/operstate").strip()
            except OSError:  # a file such as bonding_masters
                state = None
            if state is None:
                continue
            last = self._kept.get(nic)
            labels = last[1] if last is not None else (("interface", nic),)
            more = last[2] if not fresh and last is not None and last[0] == state else _carrier_and_speed(base, nic, labels)
            kept[nic] = (state, labels, more)
            out.append((LINK_UP, labels, 1.0 if state == "up" else 0.0))
            out += more
        for path in self._states.paths():  # interfaces gone (containers' veths): their files closed
            if path[len(base) + 1:].partition("/")[0] not in kept:
                self._states.forget(path)
        self._kept = kept
        return out

    def close(self) -> None:
        """Close the kept state files."""
        self._states.close()


class InfinibandCollector:
    """Port counters of every InfiniBand or RoCE device under ``sysfs``/class/infiniband."""

    name = "infiniband"

    def __init__(self, sysfs: str | os.PathLike[str] = "/sys") -> None:
        self._root = Path(sysfs) / "class" / "infiniband"

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        if not os.path.isdir(self._root):  # a host without InfiniBand: one stat a tick
            return out
        for dev in sorted(self._root.iterdir()):
            for port in sorted((dev / "ports").glob("*")):
                labels = (("device", dev.name), ("port", port.name))
                for fname, (family, mult) in _IB_COUNTERS.items():
                    text = _read(port / "counters" / fname)
                    if text is not None and text.isdigit():
                        out.append((family, labels, int(text) * mult))
                state = _read(port / "state")  # e.g. "4: ACTIVE"
                if state is not None:
                    out.append((IB_STATE, labels, 1.0 if "ACTIVE" in state else 0.0))
                rate = _read(port / "rate")  # e.g. "200 Gb/sec (4X HDR)"
                if rate:
                    with contextlib.suppress(ValueError):
                        out.append((IB_RATE, labels, float(rate.split()[0]) * 1e9 / 8))
        return out

    def close(self) -> None:
        """Nothing to release."""


def parse_peer(peer: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) into a tuple; raises ValueError naming the peer."""
    host, sep, port = peer.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"peer {peer!r} is not host:port")
    return host.strip("[]"), int(port)


class PeerRTTCollector:
    """Measures TCP connect time to each peer on a background thread.

    Connects can take up to ``timeout_seconds``; they never run inside a collection tick.
    ``collect`` returns the last measurement of each peer.
    """

    name = "peers"

    def __init__(self, peers: Sequence[str], interval_seconds: float = 5.0, timeout_seconds: float = 1.0) -> None:
        self._peers = [(p, parse_peer(p)) for p in peers]
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._results: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._peers:
            self._thread = threading.Thread(target=self._run, name="gputuned-peers", daemon=True)
            self._thread.start()

    def measure(self, host: str, port: int) -> float | None:
        """Seconds to complete a TCP handshake, or None on failure."""
        t0 = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=self._timeout):
                return time.perf_counter() - t0
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self._interval
            for name, (host, port) in self._peers:
                rtt = self.measure(host, port)
                with self._lock:
                    prev = self._results.get(name, (float("nan"), False))
                    self._results[name] = (rtt, True) if rtt is not None else (prev[0], False)
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        with self._lock:
            results = dict(self._results)
        for name, (rtt, ok) in results.items():
            lab = (("peer", name),)
            out.append((PEER_UP, lab, 1.0 if ok else 0.0))
            if ok:
                out.append((PEER_RTT, lab, rtt))
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1)


class InfinibandCollectorConfig(CollectorConfig):
    sysfs_path: Path = Path("/sys")


@register("infiniband", config=InfinibandCollectorConfig, families=(*(f for f, _ in _IB_COUNTERS.values()), IB_STATE, IB_RATE))
def build_infiniband_collector(cfg: InfinibandCollectorConfig, ctx: CollectorContext) -> InfinibandCollector:
    """``[collectors.infiniband]``: port counters of the InfiniBand and RoCE devices under sysfs."""
    return InfinibandCollector(sysfs=cfg.sysfs_path)


class PeersCollectorConfig(CollectorConfig):
    peers: list[str] = []
    interval_seconds: float = Field(5.0, gt=0, le=3600)
    timeout_seconds: float = Field(1.0, gt=0, le=60)

    @field_validator("peers")
    @classmethod
    def _peers_are_host_port(cls, v: list[str]) -> list[str]:
        for p in v:
            parse_peer(p)
        return v


@register("peers", config=PeersCollectorConfig, families=(PEER_RTT, PEER_UP))
def build_peers_collector(cfg: PeersCollectorConfig, ctx: CollectorContext) -> Collector | None:
    """``[collectors.peers]``: RTT to the configured peers, else the simulated node's model of its network."""
    if cfg.peers:
        return PeerRTTCollector(cfg.peers, cfg.interval_seconds, cfg.timeout_seconds)
    simulated = ctx.simulated.get("peers")
    return simulated() if simulated is not None else None
