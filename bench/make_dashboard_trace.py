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

The scripted node (NVML scenario, fake /proc and sysfs, loopback peers, DDP ranks) is in
bench/dashboard_node.py. The output is checked to stay small (under 1 MB; about 110 kB).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from _common import BenchParser, positive_float
from dashboard_node import (
    GPUS,
    JOB,
    FakeSysfs,
    LoopbackPeers,
    ScriptedRanks,
    daemon_toml,
    ramp,
    scenario,
    scenario_toml,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "dashboard_node.gttrace"
DURATION_S = 120
MAX_BYTES = 1 << 20


def record(out: Path, work: Path, duration_s: float = DURATION_S) -> None:
    """Run the daemon on the scripted node for ``duration_s`` and record every sample to ``out``.

    Like ``gputuned record --config CFG --sim``, but through ``Daemon.start()`` as ``gputuned run``
    does, so the components start too (``gputuned record`` only runs the collection loop, and
    its control socket is never bound, so no trainer could report).
    """
    from gputuned.daemon.app.config import load_config
    from gputuned.daemon.app.daemon import Daemon
    from gputuned.daemon.record.trace import Recorder, TraceWriter

    peers = LoopbackPeers()
    (work / "scenario.toml").write_text(scenario_toml(scenario()))
    t0 = time.monotonic()
    fake = FakeSysfs(work, t0)
    (work / "gputuned.toml").write_text(daemon_toml(work, fake, peers))
    fake.start()
    ranks = ScriptedRanks(work / "control.sock", t0)
    ranks.start()
    peers.start()
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
        peers.close()


# --- synthesized families (see the module docstring) ------------------------------------------
Lab = tuple[tuple[str, str], ...]


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
                  "ecc": float(rel >= 76), "xid": float(rel >= 61), "forecast": float(rel >= 60),
                  "throughput_drop": float(rel >= 66)}
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
            score = ramp(rel, [(0, 0.05), (48, 0.1), (56, 0.92), (70, 0.75), (120, 0.7)]) if hot else 0.08 + 0.04 * math.sin(rel / 7)
            out.append(("gputuned_anomaly_score", sl, score))
            out.append(("gputuned_alert_active", (("alert", "anomaly"), *sl), float(hot and rel >= 52)))
            if family.endswith("celsius"):  # the hot GPU leaves its forecast band; the job slows once GPU 3 is lost
                out.append(("gputuned_alert_active", (("alert", "forecast"), *sl), float(hot and rel >= 60)))
            else:
                out.append(("gputuned_alert_active", (("alert", "throughput_drop"), *sl), float(rel >= 66)))
            if family.endswith("celsius"):
                eta = ramp(rel, [(40, 1200), (55, 60), (120, 45)]) if hot and rel >= 40 else math.inf
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
