"""Host and network collectors, pointed at fixture trees where the host has no such device."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from gputuned.collectors import host as H
from gputuned.collectors import network as N


def test_host_collector_reads_this_machine() -> None:
    samples = H.HostCollector().collect()
    names = {n for n, _, _ in samples}
    assert len(names) >= 10
    modes = {dict(lab)["mode"] for n, lab, _ in samples if n == H.CPU_SECONDS}
    assert {"user", "system", "idle"} <= modes
    total = next(v for n, _, v in samples if n == H.MEM_TOTAL)
    assert total > 2**30
    assert all(dict(lab).get("interface") != "lo" for n, lab, _ in samples if n == H.NET_RX_BYTES)


def test_tcp_counters_from_a_fixture_proc(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "snmp").write_text(
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Tcp: RtoAlgorithm ActiveOpens OutSegs RetransSegs\nTcp: 1 10 5000 42\n"
    )
    samples = H.HostCollector(proc=tmp_path).collect()
    values = {n: v for n, _, v in samples}
    assert values[H.TCP_RETRANS] == 42.0
    assert values[H.TCP_OUT] == 5000.0


def test_broken_proc_raises_so_the_loop_marks_host_down(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        H.HostCollector(proc=tmp_path).collect()


def _ib_port(root: Path, dev: str, port: str, counters: dict[str, int], state: str, rate: str) -> None:
    p = root / "class" / "infiniband" / dev / "ports" / port
    (p / "counters").mkdir(parents=True)
    for k, v in counters.items():
        (p / "counters" / k).write_text(f"{v}\n")
    (p / "state").write_text(state + "\n")
    (p / "rate").write_text(rate + "\n")


def test_infiniband_counters_from_a_fixture_sysfs(tmp_path: Path) -> None:
    _ib_port(tmp_path, "mlx5_0", "1", {"port_rcv_data": 1000, "port_xmit_data": 250, "symbol_error": 3},
             "4: ACTIVE", "200 Gb/sec (4X HDR)")
    _ib_port(tmp_path, "mlx5_1", "1", {"port_rcv_data": 7}, "1: DOWN", "")
    samples = N.InfinibandCollector(sysfs=tmp_path).collect()
    values = {(n, dict(lab)["device"]): v for n, lab, v in samples}
    assert values[(N.IB_RX_BYTES, "mlx5_0")] == 4000.0  # 4-byte words
    assert values[(N.IB_TX_BYTES, "mlx5_0")] == 1000.0
    assert values[(N.IB_SYMBOL_ERRORS, "mlx5_0")] == 3.0
    assert values[(N.IB_STATE, "mlx5_0")] == 1.0
    assert values[(N.IB_STATE, "mlx5_1")] == 0.0
    assert values[(N.IB_RATE, "mlx5_0")] == 25e9


def test_no_infiniband_gives_no_samples(tmp_path: Path) -> None:
    assert N.InfinibandCollector(sysfs=tmp_path).collect() == []


def test_peer_rtt_measured_off_the_tick() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    c = N.PeerRTTCollector([f"127.0.0.1:{port}", f"127.0.0.1:{dead_port}"], interval_seconds=0.05, timeout_seconds=0.5)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = {(n, dict(lab)["peer"]): v for n, lab, v in c.collect()}
            if len(got) >= 3:
                break
            time.sleep(0.05)
        assert got[(N.PEER_UP, f"127.0.0.1:{port}")] == 1.0
        assert 0 < got[(N.PEER_RTT, f"127.0.0.1:{port}")] < 0.5
        assert got[(N.PEER_UP, f"127.0.0.1:{dead_port}")] == 0.0
        assert (N.PEER_RTT, f"127.0.0.1:{dead_port}") not in got
    finally:
        c.close()
        stop.set()
        server.close()


@pytest.mark.parametrize("bad", ["nohost", "host:", ":80", "host:99999", "host:http"])
def test_bad_peer_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="peer"):
        N.parse_peer(bad)
