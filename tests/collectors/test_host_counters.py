"""Disk and network counters read from /proc directly equal psutil's (nowrap included); links' carrier and speed
are read again when their state moves or every ``refresh_ticks`` collects."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from gputuned.collectors import host as H
from gputuned.collectors import network as N

DISKSTATS = (
    "   7       0 loop0 {r} 0 {rs} 3 0 0 0 0 0 4 3 0 0 0 0 0 0\n"  # 4.18+: 18 fields (skipped: a loop device)
    " 259       0 nvme0n1 {r} 50 {rs} 900 {w} 40 {ws} 800 0 {busy} 1700 0 0 0 0 10 20\n"  # 5.5+: 20 fields
    " 259       1 nvme0n1p1 {r} 0 {rs} 100 {w} 0 {ws} 80 0 {busy} 180\n"  # 14 fields (skipped: a partition)
    "   8       0 sda {r} 1 {rs} 2 {w} 3 {ws} 4 0 {busy} 6\n"  # 14 fields
    "   8       1 sda1 {r} {rs} {w} {ws}\n"  # a partition in the 2.6 short form
)
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
    "    lo: 9000 90 0 0 0 0 0 0 9000 90 0 0 0 0 0 0\n"
    "  eth0: {rx} 1200 3 4 0 0 0 7 {tx} 1100 5 6 0 0 0 0\n"
    "ib0.8001: 10 2 0 0 0 0 0 0 20 4 0 0 0 0 0 0\n"
)


def _write(proc: Path, r: int, rs: int, w: int, ws: int, busy: int, rx: int, tx: int) -> None:
    (proc / "net").mkdir(parents=True, exist_ok=True)
    (proc / "diskstats").write_text(DISKSTATS.format(r=r, rs=rs, w=w, ws=ws, busy=busy))
    (proc / "net" / "dev").write_text(NET_DEV.format(rx=rx, tx=tx))


def _served(c: H.HostCollector) -> dict[tuple[str, H.Labels], float]:
    return {(n, lab): v for n, lab, v in c.collect() if n in (*H._DISK_COUNTERS, H.DISK_BUSY, *H._NET_COUNTERS)}


def _psutil(nowrap: bool) -> dict[tuple[str, H.Labels], float]:
    out: dict[tuple[str, H.Labels], float] = {}
    for dev, io in psutil.disk_io_counters(perdisk=True, nowrap=nowrap).items():
        if not H._PARTITION.match(dev):
            lab = (("device", dev),)
            for fam, attr in zip(H._DISK_COUNTERS, ("read_bytes", "write_bytes", "read_count", "write_count"), strict=True):
                out[(fam, lab)] = float(getattr(io, attr))
            out[(H.DISK_BUSY, lab)] = io.busy_time / 1000.0
    attrs = ("bytes_recv", "bytes_sent", "packets_recv", "packets_sent", "errin", "errout", "dropin", "dropout")
    for nic, n in psutil.net_io_counters(pernic=True, nowrap=nowrap).items():
        if nic != "lo":
            for fam, attr in zip(H._NET_COUNTERS, attrs, strict=True):
                out[(fam, (("interface", nic),))] = float(getattr(n, attr))
    return out


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    (root / "net" / "snmp").write_text("Tcp: OutSegs RetransSegs\nTcp: 5 1\n")
    for name in ("stat", "meminfo"):  # psutil's CPU times and memory read them
        (root / name).write_text(Path("/proc", name).read_text())
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(root))
    psutil.disk_io_counters.cache_clear()
    psutil.net_io_counters.cache_clear()
    return root


def test_counters_equal_psutils_through_wraps_and_resets(proc: Path) -> None:
    c = H.HostCollector(proc=proc)
    # (reads, sectors read, writes, sectors written, busy ms, rx bytes, tx bytes) tick by tick: rises, a 32-bit
    # wrap of rx, a reset of every disk counter, rises again, and a second wrap on top of the first
    steps = [(10, 200, 30, 400, 50, 4_000_000_000, 100), (12, 260, 31, 500, 70, 4_200_000_000, 150),
             (13, 300, 31, 520, 90, 1_000, 160), (1, 8, 0, 0, 2, 5_000, 170), (4, 40, 2, 16, 9, 6_000, 180),
             (5, 48, 3, 24, 11, 10, 190)]
    for step in steps:
        _write(proc, *step)
        got, want = _served(c), _psutil(nowrap=True)
        assert got == want, step
    assert got[(H.NET_RX_BYTES, (("interface", "eth0"),))] == 4_200_000_000 + 6_000 + 10  # two wraps added
    assert (H.DISK_READS, (("device", "nvme0n1p1"),)) not in got and (H.DISK_READS, (("device", "sda"),)) in got


def test_a_device_that_goes_loses_its_offsets_as_in_psutil(proc: Path) -> None:
    c = H.HostCollector(proc=proc)
    for step in [(10, 200, 30, 400, 50, 900, 100), (1, 20, 3, 40, 5, 90, 10)]:
        _write(proc, *step)
        assert _served(c) == _psutil(nowrap=True)
    (proc / "net" / "dev").write_text("".join(NET_DEV.splitlines(keepends=True)[:3]))  # eth0 and ib0.8001 gone
    assert _served(c) == _psutil(nowrap=True)
    _write(proc, 1, 20, 3, 40, 5, 50, 5)  # back, below its last read: served as read
    assert _served(c) == _psutil(nowrap=True)
    assert _served(c)[(H.NET_RX_BYTES, (("interface", "eth0"),))] == 50.0


def test_an_unknown_diskstats_line_is_an_error_as_in_psutil(proc: Path) -> None:
    _write(proc, 1, 2, 3, 4, 5, 6, 7)
    (proc / "diskstats").write_text("   8       0 sda 1 2 3 4 5 6 7 8 9 10\n")  # 13 fields
    with pytest.raises(ValueError):
        H.read_diskstats(str(proc))
    with pytest.raises(ValueError):
        psutil.disk_io_counters(perdisk=True)


def test_a_proc_without_diskstats_or_net_dev_still_serves_the_rest_of_the_host(proc: Path) -> None:
    """A sandboxed /proc may lack them: those families are absent (logged once), CPU, memory and TCP are served."""
    c = H.HostCollector(proc=proc)
    names = {n for n, _, _ in c.collect()}
    assert H.TCP_RETRANS in names and H.CPU_SECONDS in names
    assert names.isdisjoint({*H._DISK_COUNTERS, H.DISK_BUSY, *H._NET_COUNTERS})
    _write(proc, 1, 2, 3, 4, 5, 6, 7)  # they come back
    assert {*H._DISK_COUNTERS, *H._NET_COUNTERS} <= {n for n, _, _ in c.collect()}


def _nic(sysfs: Path, nic: str, state: str, carrier: str, speed: str) -> None:
    d = sysfs / "class" / "net" / nic
    d.mkdir(parents=True, exist_ok=True)
    for name, value in (("operstate", state), ("carrier", carrier), ("speed", speed)):
        (d / name).write_text(value + "\n")


def test_links_state_at_every_read_carrier_and_speed_when_the_state_moves_or_every_refresh(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _nic(sysfs, "eth0", "up", "1", "100000")
    links = N.LinkReader(sysfs, refresh_reads=3)
    eth0 = (("interface", "eth0"),)

    def read() -> dict[tuple[str, H.Labels], float]:
        return {(n, lab): v for n, lab, v in links.read()}

    assert read()[(N.LINK_SPEED, eth0)] == 100e9 / 8
    _nic(sysfs, "eth0", "up", "1", "25000")  # renegotiated without a state change: seen at the refresh
    assert read()[(N.LINK_SPEED, eth0)] == 100e9 / 8
    assert read()[(N.LINK_SPEED, eth0)] == 100e9 / 8
    assert read()[(N.LINK_SPEED, eth0)] == 25e9 / 8
    _nic(sysfs, "eth0", "down", "0", "-1")  # the state moved: every reading at once
    now = read()
    assert now[(N.LINK_UP, eth0)] == 0.0 and now[(N.LINK_CARRIER, eth0)] == 0.0 and (N.LINK_SPEED, eth0) not in now
    _nic(sysfs, "eth1", "up", "1", "1000")  # a new interface is read whole
    assert read()[(N.LINK_SPEED, (("interface", "eth1"),))] == 125e6
    every = N.LinkReader(sysfs)  # refresh_reads=1: all three files at every read
    assert {(n, lab): v for n, lab, v in every.read()} == {(n, lab): v for n, lab, v in N.LinkReader(sysfs).read()}
    with pytest.raises(ValueError):
        N.LinkReader(sysfs, refresh_reads=0)


def test_cpu_times_read_from_proc_stat_equal_psutils(proc: Path) -> None:
    """The same /proc/stat (a long first page of per-CPU and intr lines after it) gives psutil's seconds per mode."""
    (proc / "stat").write_text("cpu  4705 356 1584 3032 217 0 98 7 0 0\n"
                               + "".join(f"cpu{i} 1 2 3 4 5 6 7 8 0 0\n" for i in range(512)) + "intr " + "0 " * 5000 + "\n")
    _write(proc, 1, 2, 3, 4, 5, 6, 7)
    got = {dict(lab)["mode"]: v for n, lab, v in H.HostCollector(proc=proc).collect() if n == H.CPU_SECONDS}
    ct = psutil.cpu_times()
    want = {mode: getattr(ct, mode) for mode in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")}
    assert got == want and got["user"] == 4705 / H._CLOCK_TICKS
    (proc / "stat").unlink()  # a /proc without stat: psutil's own (the fixture's PROCFS_PATH, also without): an error
    with pytest.raises(OSError):
        H.HostCollector(proc=proc).collect()


def test_kept_files_read_what_a_fresh_open_reads(tmp_path: Path) -> None:
    """procfs makes the text afresh at each read from the start; a plain file rewritten, replaced or deleted is
    opened again (or fails) as a fresh open would; beyond the limit files are read without being kept."""
    kept = N.KeptFiles(limit=2)
    before = kept.read("/proc/self/statm")
    grown = bytearray(64 << 20)  # resident pages move
    grown[::4096] = b"\1" * len(grown[::4096])
    assert kept.read("/proc/self/statm") != before
    f = tmp_path / "counters"
    f.write_text("1 2 3\n")
    assert kept.read(str(f)) == "1 2 3\n"
    f.write_text("4 5\n")  # rewritten in place, shorter
    assert kept.read(str(f)) == "4 5\n"
    (tmp_path / "next").write_text("6\n")
    (tmp_path / "next").replace(f)  # replaced: the kept descriptor's file is gone
    assert kept.read(str(f)) == "6\n" and kept.paths() == ["/proc/self/statm", str(f)]
    (tmp_path / "third").write_text("7\n")
    assert kept.read(str(tmp_path / "third")) == "7\n" and len(kept.paths()) == 2  # over the limit: not kept
    f.unlink()
    with pytest.raises(OSError):
        kept.read(str(f))
    assert kept.paths() == ["/proc/self/statm"]
    kept.close()
    assert kept.paths() == [] and grown[0] == 1


def test_links_of_an_interface_that_goes_are_closed(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    for nic in ("eth0", "veth1"):
        _nic(sysfs, nic, "up", "1", "1000")
    links = N.LinkReader(sysfs)
    assert len(links.read()) == 6 and len(links._states.paths()) == 2
    for name in ("operstate", "carrier", "speed"):
        (sysfs / "class" / "net" / "veth1" / name).unlink()
    (sysfs / "class" / "net" / "veth1").rmdir()
    _nic(sysfs, "eth0", "down", "0", "-1")
    assert {(n, dict(lab)["interface"]) for n, lab, _ in links.read()} == {(N.LINK_UP, "eth0"), (N.LINK_CARRIER, "eth0")}
    assert links._states.paths() == [f"{sysfs}/class/net/eth0/operstate"]
    links.close()
    assert links._states.paths() == []
