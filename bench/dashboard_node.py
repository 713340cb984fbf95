"""The scripted node bench/make_dashboard_trace.py records: NVML scenario, sysfs, peers and ranks.

The simulated NVML values follow :func:`scenario` (load ramps, a throttled GPU 1, ECC and row
remapping on GPU 2, GPU 3 lost); :class:`FakeSysfs` keeps a /proc/net/snmp copy (withheld
during ``HOST_DOWN``) and an InfiniBand sysfs tree current; :class:`LoopbackPeers` gives the
peer collector a listening and a refusing port; :class:`ScriptedRanks` reports a DDP job's
scripted step statistics through the real plugin client and control socket.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GPUS = 4
HOST_DOWN = (70.0, 95.0)
JOB = "llama-7b-ddp"
RANKS = 4

# NVML clock-event reason bits
SW_POWER_CAP, HW_SLOWDOWN, SW_THERMAL, HW_THERMAL = 0x4, 0x8, 0x20, 0x40


def _series(gpu: int, field: str, points: list[tuple[float, float]], linear: bool = True) -> dict[str, object]:
    return {"gpu": gpu, "field": field, "points": [list(p) for p in points], "interpolate": "linear" if linear else "step"}


def scenario() -> dict[str, object]:
    """The scripted NVML scenario (times in seconds from the daemon's start)."""
    s: list[dict[str, object]] = []
    for g in range(GPUS):
        s += [
            _series(g, "util_gpu_pct", [(0, 0), (5, 0), (15, 93 + g), (120, 95)]),
            _series(g, "util_mem_pct", [(0, 0), (5, 0), (15, 55 + 2 * g), (120, 58)]),
            _series(g, "power_mw", [(0, 72_000), (5, 75_000), (15, 640_000 + 5_000 * g), (30, 590_000), (60, 545_000),
                                    (80, 590_000), (120, 590_000)]),
            _series(g, "power_limit_mw", [(0, 700_000), (30, 600_000), (60, 550_000), (80, 600_000)], linear=False),
            _series(g, "sm_clock_mhz", [(0, 345), (5, 345), (15, 1980), (30, 1830), (60, 1710), (80, 1830)], linear=False),
            _series(g, "graphics_clock_mhz", [(0, 345), (5, 345), (15, 1980), (30, 1830), (60, 1710), (80, 1830)], linear=False),
            _series(g, "memory_used_bytes", [(0, 600e6), (5, 600e6), (12, 61e9 + 1e9 * g), (120, 63e9)]),
            _series(g, "temperature_c", [(0, 34), (5, 34), (40, 68 + g), (120, 70 + g)]),
            _series(g, "memory_temperature_c", [(0, 38), (5, 38), (40, 74 + g), (120, 76 + g)]),
            _series(g, "pcie_tx_kbps", [(0, 100), (5, 100), (10, 1_800_000), (120, 1_900_000)]),
            _series(g, "pcie_rx_kbps", [(0, 100), (5, 100), (10, 9_500_000), (120, 9_800_000)]),
            _series(g, "nvlink_tx_kib", [(0, 0), (5, 0), (120, 115 * 90_000_000)]),
            _series(g, "nvlink_rx_kib", [(0, 0), (5, 0), (120, 115 * 90_000_000)]),
            _series(g, "pstate", [(0, 8), (5, 0)], linear=False),
        ]
    # GPU 1 overheats: thermal slowdown from t=55 s, clocks drop, violation time accrues.
    s += [
        _series(1, "temperature_c", [(0, 34), (5, 34), (40, 72), (55, 89), (120, 91)]),
        _series(1, "clock_event_reasons", [(0, 0), (55, SW_THERMAL | HW_THERMAL), (100, SW_THERMAL)], linear=False),
        _series(1, "sm_clock_mhz", [(0, 345), (5, 345), (15, 1980), (30, 1830), (55, 1305)], linear=False),
        _series(1, "thermal_violation_ns", [(0, 0), (55, 0), (120, 60e9)]),
    ]
    # GPU 2: corrected ECC errors pile up, one uncorrectable, rows remapped, a remap fails,
    # a hardware slowdown; the power limit caps it for a while.
    s += [
        _series(2, "ecc_corrected", [(0, 0), (30, 0), (90, 400)]),
        _series(2, "ecc_uncorrected", [(0, 0), (75, 1)], linear=False),
        _series(2, "remapped_correctable", [(0, 0), (80, 2)], linear=False),
        _series(2, "remapped_uncorrectable", [(0, 0), (80, 1)], linear=False),
        _series(2, "remap_pending", [(0, 0), (80, 1)], linear=False),
        _series(2, "remap_failure", [(0, 0), (100, 1)], linear=False),
        _series(2, "clock_event_reasons", [(0, 0), (35, SW_POWER_CAP), (90, HW_SLOWDOWN), (110, 0)], linear=False),
        _series(2, "power_violation_ns", [(0, 0), (35, 0), (90, 40e9)]),
    ]
    return {"profile": "h100", "gpus": GPUS, "series": s, "xids": {"3": [[60.0, 79]]}, "lost": {"3": 80.0}}


def _toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def scenario_toml(spec: dict[str, object]) -> str:
    """The scenario as TOML (``sim.script`` reads TOML)."""
    lines = [f'profile = "{spec["profile"]}"', f"gpus = {spec['gpus']}", "", "[xids]"]
    lines += [f'"{k}" = {json.dumps(v)}' for k, v in dict(spec["xids"]).items()]  # type: ignore[call-overload]
    lines += ["", "[lost]"] + [f'"{k}" = {v}' for k, v in dict(spec["lost"]).items()]  # type: ignore[call-overload]
    for s in spec["series"]:  # type: ignore[attr-defined]
        lines += ["", "[[series]]"] + [f"{k} = {_toml_value(v)}" for k, v in s.items()]
    return "\n".join(lines) + "\n"


class FakeSysfs(threading.Thread):
    """Keeps a /proc/net/snmp copy (withheld during HOST_DOWN) and an InfiniBand sysfs tree current."""

    def __init__(self, root: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.t0 = t0
        self.stop = threading.Event()
        (self.proc / "net").mkdir(parents=True)
        (self.proc / "pressure").mkdir()
        (self.proc / "mounts").write_text(f"/dev/vda1 / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n/dev/nvme0n1 {root} xfs rw 0 0\n")
        for nic, state, speed in (("ens1", "up", "100000"), ("ens2", "down", None)):  # a link that went down
            (self.sys / "class" / "net" / nic).mkdir(parents=True)
            (self.sys / "class" / "net" / nic / "operstate").write_text(state + "\n")
            if speed is not None:
                (self.sys / "class" / "net" / nic / "speed").write_text(speed + "\n")
                (self.sys / "class" / "net" / nic / "carrier").write_text("1\n")
        self.ports = {}
        for dev, port, state in (("mlx5_0", "1", "4: ACTIVE"), ("mlx5_1", "1", "4: ACTIVE"), ("mlx5_2", "1", "1: DOWN")):
            p = self.sys / "class" / "infiniband" / dev / "ports" / port
            (p / "counters").mkdir(parents=True)
            (p / "rate").write_text("400 Gb/sec (4X NDR)\n")
            (p / "state").write_text(state + "\n")
            self.ports[dev] = p
        self.tick()

    def tick(self) -> None:
        t = time.monotonic() - self.t0
        snmp = self.proc / "net" / "snmp"
        if HOST_DOWN[0] <= t < HOST_DOWN[1]:
            snmp.unlink(missing_ok=True)
        else:
            tmp = snmp.with_suffix(".tmp")  # replace atomically: the collector never sees half a file
            shutil.copyfile("/proc/net/snmp", tmp)
            os.replace(tmp, snmp)
        for name in ("vmstat", "pressure/cpu", "pressure/memory", "pressure/io"):  # this machine's, where it has them
            with contextlib.suppress(OSError):
                shutil.copyfile(f"/proc/{name}", self.proc / f"{name}.tmp")
                os.replace(self.proc / f"{name}.tmp", self.proc / name)
        busy = max(0.0, t - 5)
        for i, (dev, p) in enumerate(self.ports.items()):
            up = dev != "mlx5_2"
            words = int(busy * 10e9 / 4) if up else 0  # port_*_data counts 4-byte words
            symbol = int(max(0.0, t - 50) * 2) if dev == "mlx5_1" else 0
            for name, v in (("port_rcv_data", words), ("port_xmit_data", words), ("port_rcv_packets", words // 1024),
                            ("port_xmit_packets", words // 1024), ("port_rcv_errors", i), ("port_xmit_discards", 0),
                            ("symbol_error", symbol), ("link_downed", 0 if up else 1)):
                tmp = p / "counters" / f".{name}.tmp"
                tmp.write_text(f"{v}\n")
                os.replace(tmp, p / "counters" / name)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.tick()


class LoopbackPeers:
    """Two loopback peers for the RTT collector: one port that accepts (and closes), one that refuses."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.closed = socket.socket()
        self.closed.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        self.addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in (self.listener, self.closed)]

    def _accept_forever(self) -> None:
        while True:
            try:
                self.listener.accept()[0].close()
            except OSError:  # the listener is closed
                return

    def start(self) -> None:
        """Accept connections on a daemon thread until :meth:`close`."""
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def close(self) -> None:
        """Close both ports (the accepting thread ends)."""
        self.listener.close()
        self.closed.close()


def daemon_toml(work: Path, fake: FakeSysfs, peers: LoopbackPeers) -> str:
    """The daemon's config: sim backend on the scenario in ``work``, the fake trees, the peers."""
    cfg: dict[str, dict[str, Any]] = {
        "daemon": {"interval_seconds": 1.0, "state_file": str(work / "state.json")},
        "gpu": {"backend": "sim"},
        "sim": {"script": str(work / "scenario.toml"), "gpus": GPUS},
        "control": {"socket_path": str(work / "control.sock")},
        "collectors": {
            "host": {"proc_path": str(fake.proc), "sysfs_path": str(fake.sys), "paths": [str(work)]},
            "infiniband": {"sysfs_path": str(fake.sys)},
            "peers": {"peers": peers.addresses, "interval_seconds": 2.0, "timeout_seconds": 0.5},
        },
    }
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                lines += [f"[{section}.{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def ramp(t: float, points: list[tuple[float, float]]) -> float:
    """Piecewise-linear value at t."""
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def _scripted(gpu: int, field: str) -> Callable[[float], float]:
    """The scenario's (last) series for one GPU field, as a function of time."""
    from gputuned.collectors.sim.state import linear_series, step_series

    found = [x for x in scenario()["series"] if x["gpu"] == gpu and x["field"] == field]  # type: ignore[attr-defined]
    x = found[-1]
    make = linear_series if x["interpolate"] == "linear" else step_series
    return make([(float(t), float(v)) for t, v in x["points"]])


class ScriptedRanks(threading.Thread):
    """Four ranks of a DDP job reporting over the daemon's real control socket while it records.

    The statistics are scripted from the scenario (an SM clock drop slows a rank and, in
    lockstep, the job; the host outage shows as data-loader wait), but they reach the trace
    through the real path: plugin client, control socket, job table, store, recorder.
    """

    def __init__(self, socket_path: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.t0 = t0
        self.stop = threading.Event()
        self.clock = {r: _scripted(r, "sm_clock_mhz") for r in range(RANKS)}
        self.samples_total = [0.0] * RANKS
        self.comm_bytes = [0.0] * RANKS
        self.step = [0] * RANKS

    def stats(self, rel: float, dt: float) -> dict[int, dict[str, float]]:
        """Each rank's report at ``rel`` seconds, ``dt`` after the previous one."""
        batch = 512.0 if rel < 40 else 1024.0
        micro = batch / RANKS
        gns = ramp(rel, [(0, 300), (120, 900)])
        # DDP ranks run in lockstep: every rank waits in communication for the slowest one.
        compute = {r: (micro / 600.0) * (1980.0 / max(self.clock[r](rel), 100.0)) ** 0.8 for r in range(RANKS)}
        slowest = max(compute.values())
        overflows = float(rel >= 50) + float(rel >= 51)
        out = {}
        for r in range(RANKS):
            comm = 0.12 * slowest + (slowest - compute[r])
            wait = (0.25 if HOST_DOWN[0] <= rel < HOST_DOWN[1] else 0.02) * slowest
            step_t = compute[r] + comm + wait
            sps = micro / step_t
            steps = max(1, int(dt / step_t))
            self.samples_total[r] += sps * dt
            self.comm_bytes[r] += 2 * 13.5e9 / step_t * dt / 4  # fp16 gradients of 7B parameters, 4x compressed
            self.step[r] += steps
            out[r] = {
                "step_time_s": step_t, "compute_time_s": compute[r], "comm_time_s": comm, "data_wait_s": wait,
                "samples_per_s": sps, "goodput": sps * gns / (gns + batch / 2),
                "loss": 1.6 + 4.0 * math.exp(-(rel - 15) / 60) + 0.02 * math.sin(rel + r),
                "loss_scale": 65536.0 / 2**overflows, "overflows_total": overflows,
                "grad_norm": 1.1 + 0.3 * math.exp(-(rel - 15) / 30) + (2.0 if 50 <= rel < 52 else 0.0),
                "grad_noise_scale": gns, "batch_size": batch, "micro_batch_size": micro, "accumulation_steps": 1.0,
                "samples_total": self.samples_total[r], "comm_bytes_total": self.comm_bytes[r],
                "comm_bytes_uncompressed_total": 4 * self.comm_bytes[r], "oom_total": 0.0,
            }
        return out

    def run(self) -> None:
        from gputuned.trainer_plugin.client import DaemonClient

        while not self.socket_path.exists() and not self.stop.wait(0.1):
            pass
        while time.monotonic() - self.t0 < 15 and not self.stop.wait(0.2):
            pass  # the job starts once the GPUs are loaded
        clients = {r: DaemonClient(str(self.socket_path), job=JOB, rank=r, world_size=RANKS, batch_size=512)
                   for r in range(RANKS)}
        for c in clients.values():
            c.wait_connected(5.0)
        last = time.monotonic() - self.t0
        while not self.stop.wait(0.5):
            rel = time.monotonic() - self.t0
            for r, st in self.stats(rel, rel - last).items():
                c = clients.get(r)
                if c is not None and r == 3 and rel >= 80:  # rank 3's GPU fell off the bus
                    c.close()
                    del clients[r]
                elif c is not None:
                    c.report(self.step[r], max(1, int((rel - last) / st["step_time_s"])), st)
            last = rel
        for c in clients.values():
            c.close()
