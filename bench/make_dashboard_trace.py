"""Record tests/data/dashboard_node.gttrace: the trace the dashboard and alert-rule check replays.

    .venv/bin/python bench/make_dashboard_trace.py [-o tests/data/dashboard_node.gttrace]

Two parts, kept apart on purpose:

1. **Recorded**: the real daemon (``Daemon.start()`` as ``gputuned run`` does, without HTTP:
   collectors, loop, store, control socket, actuation, with a recorder on the store) runs for
   2 minutes on a 4-GPU simulated H100 node whose NVML values follow a scripted scenario with
   the faults the alert rules exist for: load ramps, a thermally throttled GPU (1), ECC
   errors, row remapping and a hardware slowdown (2), XID 79 and the GPU falling off the bus
   (3), power limits a tuner would lower and roll back. The host collector reads this machine
   through psutil; its /proc/net/snmp comes from a copy the script refreshes and withholds
   from t=70 s to t=95 s, so the collector really goes down and recovers. InfiniBand counters
   come from a synthetic sysfs tree (this machine has no HCA) read by the real collector; peer
   RTT is measured to a listening and a closed loopback port. Four ranks of a DDP job report
   scripted step statistics through the real plugin client and control socket from t=15 s;
   rank 3 disconnects when its GPU is lost.
2. **Synthesized**: the tuner (``gputuned_tuner_*`` with the labels daemon/app/tuning.py's
   component publishes, ``gputuned_actuation_changes_total`` and ``..._refusals_total``) and
   forecaster (``gputuned_forecast_*``, ``gputuned_anomaly_*``, ``gputuned_alert*``,
   ``gputuned_degradation_*``) series are not produced by a daemon run yet (the daemon does not
   attach the tuner or the forecaster from its config), so this script writes them into the
   trace beside the recorded samples under the sources ``synth-tuner`` and ``synth-forecast``,
   one publish per recorded GPU tick, consistent with the scenario. A
   series the recording already holds is never synthesized. Replace them by a closed-loop
   recording once the daemon runs the tuner and forecaster.

The output is checked to stay small (under 1 MB; about 110 kB).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import BenchParser, positive_float

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "dashboard_node.gttrace"
DURATION_S = 120
GPUS = 4
MAX_BYTES = 1 << 20
HOST_DOWN = (70.0, 95.0)

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


def record(out: Path, work: Path, duration_s: float = DURATION_S) -> None:
    """Run the daemon on the scripted node for ``duration_s`` and record every sample to ``out``.

    Like ``gputuned record --config CFG --sim``, but through ``Daemon.start()`` as ``gputuned run``
    does, so the components start too (``gputuned record`` only runs the collection loop, and
    its control socket is never bound, so no trainer could report).
    """
    from gputuned.daemon.app.config import load_config
    from gputuned.daemon.app.daemon import Daemon
    from gputuned.daemon.record.trace import Recorder, TraceWriter

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
    (work / "scenario.toml").write_text(scenario_toml(scenario()))
    t0 = time.monotonic()
    fake = FakeSysfs(work, t0)
    cfg: dict[str, dict[str, Any]] = {
        "daemon": {"interval_seconds": 1.0, "state_file": str(work / "state.json")},
        "gpu": {"backend": "sim"},
        "sim": {"script": str(work / "scenario.toml"), "gpus": GPUS},
        "control": {"socket_path": str(work / "control.sock")},
        "collectors": {
            "host": {"proc_path": str(fake.proc)},
            "infiniband": {"sysfs_path": str(fake.sys)},
            "peers": {"peers": [f"127.0.0.1:{listener.getsockname()[1]}", f"127.0.0.1:{closed.getsockname()[1]}"],
                      "interval_seconds": 2.0, "timeout_seconds": 0.5},
        },
    }
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                lines += [f"[{section}.{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    (work / "gputuned.toml").write_text("\n".join(lines) + "\n")
    fake.start()
    ranks = ScriptedRanks(work / "control.sock", t0)
    ranks.start()

    def accept_forever() -> None:
        while True:
            try:
                listener.accept()[0].close()
            except OSError:
                return

    accept = threading.Thread(target=accept_forever, daemon=True)
    accept.start()
    daemon = Daemon(load_config(work / "gputuned.toml"), serve=False)
    writer = TraceWriter(out, {"interval_seconds": 1.0, "source": daemon.describe(),
                               "recorded_by": "bench/make_dashboard_trace.py (Daemon.start without HTTP)"})
    daemon.store.subscribe(Recorder(writer))
    print(f"recording {duration_s:g} s of {daemon.describe()}", file=sys.stderr)
    try:
        daemon.start()
        time.sleep(duration_s)
    finally:
        daemon.stop()
        writer.close()
        ranks.stop.set()
        ranks.join(timeout=5)
        fake.stop.set()
        listener.close()
        closed.close()


# --- synthesized families (see the module docstring) ------------------------------------------
JOB = "llama-7b-ddp"
RANKS = 4
Lab = tuple[tuple[str, str], ...]


def _ramp(t: float, points: list[tuple[float, float]]) -> float:
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
        gns = _ramp(rel, [(0, 300), (120, 900)])
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


class Synth:
    """Tuner, actuation and forecaster samples consistent with the recorded node."""

    def __init__(self, gpu_labels: dict[str, Lab]) -> None:
        self.gpu_labels = gpu_labels
        self.temps: dict[str, list[tuple[float, float]]] = {g: [] for g in gpu_labels}
        self.tput: list[tuple[float, float]] = []

    def tuner(self, rel: float, t: float) -> list[tuple[str, Lab, float]]:
        """What daemon/app/tuning.py's TuningComponent and the actuator would publish for the scripted moves.

        Labels follow the live tuner: one power limit for every GPU (gpu="all"), the batch size
        per job (gpu="job"), measurements per job from the reference interval (t=20 s) on.
        """
        pl = 700.0 if rel < 30 else 600.0 if rel < 60 else 550.0 if rel < 80 else 600.0
        moves = [(30, "p-1b+0"), (40, "p+0b+1"), (60, "p-1b+0"), (100, "p+0b+0")]
        actions = {"power_limit": (rel >= 30) + (rel >= 60) + (rel >= 80), "batch_size": float(rel >= 40)}
        last_action = max((t - rel + m for m in (30, 40, 60, 80) if rel >= m), default=0.0)
        out: list[tuple[str, Lab, float]] = [
            ("gputuned_tuner_guard_interventions_total", (("reason", "min_interval"),), float(rel >= 45)),
            ("gputuned_tuner_guard_interventions_total", (("reason", "hardware_alert"),),
             float(int((rel - 55) // 10) + 1) if rel >= 55 else 0.0),
            ("gputuned_tuner_rollbacks_total", (), float(rel >= 80)),
            ("gputuned_tuner_knob_value", (("knob", "power_limit"), ("gpu", "all")), pl),
            ("gputuned_tuner_knob_value", (("knob", "batch_size"), ("gpu", "job")), 512.0 if rel < 40 else 1024.0),
            ("gputuned_tuner_paused", (), 0.0),
            ("gputuned_tuner_last_action_timestamp_seconds", (), last_action),
            ("gputuned_actuation_refusals_total", (("knob", "power_limit"), ("reason", "gpu_lost")), float(rel >= 80)),
        ]
        for move in sorted({m for _, m in moves}):
            out.append(("gputuned_tuner_decisions_total", (("move", move),), float(sum(rel >= w for w, m in moves if m == move))))
        out += [("gputuned_tuner_actions_total", (("knob", k),), float(n)) for k, n in actions.items()]
        out += [("gputuned_actuation_changes_total", (("knob", k),), float(n) * (GPUS if k != "batch_size" else 1))
                for k, n in actions.items()]
        if rel >= 20:
            job: Lab = (("job", JOB),)
            eps = 2.40 if rel < 30 else 2.21 if rel < 60 else 2.12 if rel < 80 else 2.26
            ratio = 1.0 if rel < 30 else 0.988 if rel < 60 else 0.955 if rel < 80 else 0.984
            out += [
                ("gputuned_tuner_energy_per_sample_joules", job, eps + 0.01 * math.sin(rel)),
                ("gputuned_tuner_reference_energy_per_sample_joules", job, 2.40),
                ("gputuned_tuner_goodput_ratio", job, ratio),
            ]
        return out

    def forecast(self, rel: float, latest: dict[tuple[str, Lab], float]) -> list[tuple[str, Lab, float]]:
        out: list[tuple[str, Lab, float]] = []
        fits = sum(rel >= f for f in (20, 50, 80, 110))
        raised = {"anomaly": float(rel >= 52), "degradation": float(rel >= 45), "thermal": float(rel >= 57),
                  "ecc": float(rel >= 76), "xid": float(rel >= 61)}
        tracked: list[tuple[str, Lab, list[tuple[float, float]]]] = []
        for g, lab in self.gpu_labels.items():
            v = latest.get(("gputuned_gpu_temperature_celsius", lab))
            if v is not None and g != "3":
                self.temps[g].append((rel, v))
                tracked.append(("gputuned_gpu_temperature_celsius", lab, self.temps[g]))
        tput = latest.get(("gputuned_trainer_samples_per_second", (("job", JOB), ("rank", "0"))))
        if tput is not None:
            self.tput.append((rel, tput))
            tracked.append(("gputuned_trainer_samples_per_second", (("job", JOB), ("rank", "0")), self.tput))
        for family, lab, hist in tracked:
            sl: Lab = (("series", family), *lab)
            hot = family.endswith("celsius") and dict(lab).get("gpu") == "1"
            score = _ramp(rel, [(0, 0.05), (48, 0.1), (56, 0.92), (70, 0.75), (120, 0.7)]) if hot else 0.08 + 0.04 * math.sin(rel / 7)
            out.append(("gputuned_anomaly_score", sl, score))
            out.append(("gputuned_alert_active", (("alert", "anomaly"), *sl), float(hot and rel >= 52)))
            if family.endswith("celsius"):
                eta = _ramp(rel, [(40, 1200), (55, 60), (120, 45)]) if hot and rel >= 40 else math.inf
                out.append(("gputuned_degradation_eta_seconds", sl, eta))
                out.append(("gputuned_alert_active", (("alert", "degradation"), *sl), float(hot and rel >= 45)))
            if fits and len(hist) >= 2:
                (t0, v0), (t1, v1) = hist[max(0, len(hist) - 10)], hist[-1]
                slope = (v1 - v0) / max(t1 - t0, 1.0)
                for h in (300, 1800, 3600):
                    yhat = v1 + slope * min(h, 120) * 0.5
                    width = abs(v1) * (0.02 + 0.03 * h / 3600)
                    for bound, val in (("yhat", yhat), ("lower", yhat - width), ("upper", yhat + width)):
                        out.append(("gputuned_forecast_value", (*sl, ("horizon", str(h)), ("bound", bound)), val))
        for kind, gpu, since in (("thermal", "1", 57), ("ecc", "2", 76), ("xid", "3", 61)):
            if gpu in self.gpu_labels:
                lab = (("alert", kind), *self.gpu_labels[gpu])
                out.append(("gputuned_alert_active", lab, float(rel >= since)))
        out += [("gputuned_alerts_raised_total", (("alert", k),), v) for k, v in raised.items()]
        out += [
            ("gputuned_forecast_worker_up", (), 0.0 if 100 <= rel < 112 else 1.0),
            ("gputuned_forecast_fits_total", (), float(fits)),
            ("gputuned_forecast_fit_duration_seconds", (), 11.5 if fits else 0.0),
        ]
        return out


#: Source names of the synthesized samples, apart from the daemon's own (which may publish
#: empty ``trainer`` or ``tuner`` sources when nothing is connected).
SYNTH_SOURCES = ("synth-tuner", "synth-forecast")


def synthesize(raw: Path, out: Path) -> None:
    """Copy the recorded trace to ``out`` with the synthesized sources published at each GPU tick.

    A synthesized series the recording already holds (the daemon produced it itself) is left out.
    """
    from gputuned.daemon.record.trace import Publish, TraceWriter, read_trace

    trace = read_trace(raw)
    recorded = set(trace.series)
    gpu_labels = {dict(lab)["gpu"]: lab for name, lab in trace.series if name == "gputuned_gpu_up"}
    synth = Synth(gpu_labels)
    meta = dict(trace.meta)
    meta["synthesized_sources"] = list(SYNTH_SOURCES)
    meta["note"] = ("tuner/actuation/forecast samples synthesized by bench/make_dashboard_trace.py for the "
                    "dashboard check; replace with a closed-loop recording")
    writer = TraceWriter(out, meta)
    latest: dict[tuple[str, Lab], float] = {}
    t_first = trace.events[0].t
    for ev in trace.events:
        if not isinstance(ev, Publish):
            writer.drop(ev.source, ev.t)
            continue
        samples = trace.samples(ev)
        writer.publish(ev.source, ev.t, samples)
        for name, lab, v in samples:
            latest[(name, lab)] = v
        if ev.source == "gpu":
            rel = ev.t - t_first
            made = (synth.tuner(rel, ev.t), synth.forecast(rel, latest))
            for source, samples in zip(SYNTH_SOURCES, made, strict=True):
                writer.publish(source, ev.t, [x for x in samples if (x[0], x[1]) not in recorded])
    writer.close()
    print(f"{out}: {writer.samples_written} samples, {writer.bytes_written} bytes", file=sys.stderr)
    if writer.bytes_written > MAX_BYTES:
        raise SystemExit(f"{out} is {writer.bytes_written} bytes, over the {MAX_BYTES} byte budget")


def main() -> int:
    p = BenchParser(description=__doc__)
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="trace file to write")
    p.add_argument("--raw", type=Path, help="keep the recorded trace here; if it exists, only re-synthesize from it")
    p.add_argument("--duration", type=positive_float, default=DURATION_S, help="seconds to record (the scenario spans 120)")
    args = p.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gputuned-dash-") as tmp:
        work = Path(tmp)
        raw = args.raw or work / "raw.gttrace"
        if not raw.exists():
            record(raw, work, args.duration)
        synthesize(raw, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
