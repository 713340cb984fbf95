"""Host readings beside node_exporter's: filesystems, PSI, OOM kills and links, from fixture trees."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gputuned.collectors import host as H
from gputuned.collectors import network as N

SNMP = "Tcp: RtoAlgorithm OutSegs RetransSegs\nTcp: 1 5000 42\n"
PSI = {
    "cpu": "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=700\n",
    "io": "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
}


def _proc(root: Path, *, psi: bool = True, oom: bool = True) -> Path:
    proc = root / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "snmp").write_text(SNMP)
    for name in ("meminfo", "diskstats", "net/dev"):  # this host's, read as the collector reads them
        (proc / name).write_text(Path("/proc", name).read_text())
    if psi:
        (proc / "pressure").mkdir()
        for resource, text in PSI.items():
            (proc / "pressure" / resource).write_text(text)
    (proc / "vmstat").write_text("nr_free_pages 100\n" + ("oom_kill 3\n" if oom else "") + "pgfault 9\n")
    (proc / "mounts").write_text(
        "/dev/vda1 / ext4 rw 0 0\n"
        f"/dev/nvme0n1 {root}/ckpt\\040vol xfs rw 0 0\n"
        f"tmpfs {root}/shm tmpfs rw,nosuid 0 0\n"
    )
    return proc


def _sysfs(root: Path) -> Path:
    net = root / "sys" / "class" / "net"
    for nic, state, carrier, speed in (("eth0", "up", "1", "100000"), ("ib0", "down", None, None),
                                       ("veth1", "up", "1", "-1"), ("lo", "unknown", "1", None)):
        (net / nic).mkdir(parents=True)
        (net / nic / "operstate").write_text(state + "\n")
        for name, value in (("carrier", carrier), ("speed", speed)):
            if value is not None:
                (net / nic / name).write_text(value + "\n")
    (net / "bonding_masters").write_text("\n")  # a file, not an interface
    return root / "sys"


def _statvfs(path: str) -> os.statvfs_result:
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", path)
    blocks, bfree, bavail, flag = (1000, 400, 300, os.ST_RDONLY) if "ckpt" in path else (50, 50, 50, 0)
    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
    return os.statvfs_result((4096, 4096, blocks, bfree, bavail, 64, 60, 60, flag, 255))


def _values(samples: list[H.Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(n, lab): v for n, lab, v in samples}


def test_pressure_oom_filesystems_and_links_from_fixture_trees(tmp_path: Path) -> None:
    proc, sysfs = _proc(tmp_path), _sysfs(tmp_path)
    for d in ("ckpt vol/run1", "shm"):
        (tmp_path / d).mkdir(parents=True)
    paths = [tmp_path / "ckpt vol" / "run1", tmp_path / "ckpt vol", tmp_path / "shm"]  # two paths on one volume
    c = H.HostCollector(proc=proc, sysfs=sysfs, paths=paths, statvfs=_statvfs)
    got = _values(c.collect())
    assert got[(H.PSI_WAITING, (("resource", "cpu"),))] == 2.5
    assert got[(H.PSI_STALLED, (("resource", "memory"),))] == pytest.approx(0.0007)
    assert got[(H.PSI_STALLED, (("resource", "io"),))] == 1.0
    assert got[(H.OOM_KILLS, ())] == 3.0
    ckpt = (("device", "/dev/nvme0n1"), ("fstype", "xfs"), ("mountpoint", f"{tmp_path}/ckpt vol"))
    assert got[(H.FS_SIZE, ckpt)] == 1000 * 4096
    assert got[(H.FS_FREE, ckpt)] == 400 * 4096
    assert got[(H.FS_AVAIL, ckpt)] == 300 * 4096
    assert got[(H.FS_FILES, ckpt)] == 64 and got[(H.FS_FILES_FREE, ckpt)] == 60
    assert got[(H.FS_READONLY, ckpt)] == 1.0
    shm = (("device", "tmpfs"), ("fstype", "tmpfs"), ("mountpoint", f"{tmp_path}/shm"))
    assert got[(H.FS_AVAIL, shm)] == 50 * 4096 and got[(H.FS_READONLY, shm)] == 0.0
    assert sum(1 for n, _ in got if n == H.FS_SIZE) == 2  # one per mount, not per path
    assert got[(N.LINK_UP, (("interface", "eth0"),))] == 1.0
    assert got[(N.LINK_CARRIER, (("interface", "eth0"),))] == 1.0
    assert got[(N.LINK_SPEED, (("interface", "eth0"),))] == 100e9 / 8
    assert got[(N.LINK_UP, (("interface", "ib0"),))] == 0.0
    assert (N.LINK_CARRIER, (("interface", "ib0"),)) not in got  # a down link's carrier reads EINVAL
    assert (N.LINK_SPEED, (("interface", "veth1"),)) not in got  # a virtual link reports -1
    assert all(dict(lab).get("interface") != "lo" for n, lab in got if n in N.LINK_FAMILIES)


def test_missing_sources_are_one_log_line_each_and_their_families_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    proc = _proc(tmp_path, psi=False, oom=False)
    c = H.HostCollector(proc=proc, sysfs=tmp_path / "nosys", paths=[tmp_path / "not-mounted"], statvfs=_statvfs)
    with caplog.at_level(logging.WARNING, logger="gputuned.collectors.host"):
        for _ in range(3):
            got = c.collect()
    names = {n for n, _, _ in got}
    assert H.TCP_RETRANS in names  # the rest of the host is served
    assert names.isdisjoint({H.PSI_WAITING, H.PSI_STALLED, H.OOM_KILLS, H.FS_SIZE, *N.LINK_FAMILIES})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 4, warned  # PSI, OOM, the path, the links: once each over three ticks
    assert any("pressure stall" in w for w in warned) and any("not-mounted" in w for w in warned)
    (proc / "pressure").mkdir()
    for resource, text in PSI.items():
        (proc / "pressure" / resource).write_text(text)
    assert H.PSI_WAITING in {n for n, _, _ in c.collect()}  # a source that comes back is served again


def test_mount_of_picks_the_deepest_and_latest_mount() -> None:
    mounts = [("/dev/a", "/", "ext4"), ("/dev/b", "/data", "xfs"), ("/dev/c", "/data", "nfs"), ("/dev/d", "/database", "xfs")]
    assert H.mount_of("/data/ckpt", mounts) == ("/dev/c", "/data", "nfs")
    assert H.mount_of("/database", mounts)[0] == "/dev/d"
    assert H.mount_of("/datum", mounts)[0] == "/dev/a"
    with pytest.raises(ValueError, match="no mount"):
        H.mount_of("/x", [("/dev/b", "/data", "xfs")])


def test_a_volume_mounted_later_is_found_at_the_next_read_of_the_mounts(tmp_path: Path) -> None:
    """A path's mount is kept between reads of /proc/mounts and looked up again at each."""
    proc = _proc(tmp_path)
    (tmp_path / "data").mkdir()
    c = H.HostCollector(proc=proc, paths=[tmp_path / "data"], statvfs=_statvfs)

    def device() -> str:
        return next(dict(lab)["device"] for n, lab, _ in c.collect() if n == H.FS_SIZE)

    assert device() == "/dev/vda1"
    (proc / "mounts").write_text(f"/dev/vda1 / ext4 rw 0 0\n/dev/sdb {tmp_path}/data xfs rw 0 0\n")
    assert device() == "/dev/vda1"  # within MOUNTS_REFRESH_S: the mount kept
    c._mounts_due = 0.0  # the refresh is due
    assert device() == "/dev/sdb"


def test_this_machine_serves_dev_shm_through_the_registered_factory() -> None:
    c = H.build_host_collector(H.HostCollectorConfig(), H.CollectorContext())
    got = c.collect()
    assert any(n == H.FS_SIZE and dict(lab)["mountpoint"] == "/dev/shm" for n, lab, _ in got)


def test_slow_readings_every_slow_every_ticks_collects_served_between(tmp_path: Path) -> None:
    """TCP segments, PSI, OOM kills, filesystems and links are read every ``slow_every_ticks`` collects, their
    last samples served between; memory (and the rest read at every collect) moves at every collect."""
    proc, sysfs = _proc(tmp_path), _sysfs(tmp_path)
    (tmp_path / "shm").mkdir()
    meminfo = "MemTotal: {} kB\nMemFree: 1 kB\nMemAvailable: 1000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    (proc / "meminfo").write_text(meminfo.format(4000))
    c = H.HostCollector(proc=proc, sysfs=sysfs, paths=[tmp_path / "shm"], statvfs=_statvfs, slow_every_ticks=3)
    first = _values(c.collect())
    slow = {k: v for k, v in first.items() if k[0] in {H.TCP_RETRANS, H.TCP_OUT, H.PSI_WAITING, H.PSI_STALLED, H.OOM_KILLS,
                                                       H.FS_SIZE, H.FS_AVAIL, *N.LINK_FAMILIES}}
    assert len(slow) >= 12 and first[(H.OOM_KILLS, ())] == 3.0 and first[(H.TCP_RETRANS, ())] == 42.0
    (proc / "vmstat").write_text("oom_kill 5\n")
    (proc / "net" / "snmp").write_text(SNMP.replace(" 42", " 50"))
    (proc / "pressure" / "cpu").write_text(PSI["cpu"].replace("total=2500000", "total=3500000"))
    (sysfs / "class" / "net" / "eth0" / "operstate").write_text("down\n")
    for total in (5000, 6000):  # the next two collects: memory read, the slow readings served as last read
        (proc / "meminfo").write_text(meminfo.format(total))
        got = _values(c.collect())
        assert got[(H.MEM_TOTAL, ())] == total * 1024
        assert {k: got[k] for k in slow} == slow
    got = _values(c.collect())  # the third after the first: read again
    assert got[(H.OOM_KILLS, ())] == 5.0 and got[(H.TCP_RETRANS, ())] == 50.0
    assert got[(H.PSI_WAITING, (("resource", "cpu"),))] == 3.5 and got[(N.LINK_UP, (("interface", "eth0"),))] == 0.0
    with pytest.raises(ValueError):
        H.HostCollector(proc=proc, slow_every_ticks=0)
