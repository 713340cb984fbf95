"""Tuner off versus on: the same simulated job run twice on a virtual clock, through the real path.

Each run builds a physics-backed simulated node (same profile, workload, scenario and seed),
attaches it to the simulated NVML module and opens it with ``open_nvml("sim")`` like a real
host; the GPU collector, the store, the actuator (state file, verify, restore), the control
socket server and, in the tuned run, the :class:`TuningComponent` run as in the daemon. The
simulated job reports through the torch-free plugin client over a real Unix socket and applies
the batch-size decisions it receives. Each tick advances the clock, pumps one report, waits
until the server has it (so runs are repeatable), then ticks the collection loop. Every
published sample goes to ``trace.gtrace``, tuner actions and restores to ``events.jsonl``,
figures to ``summary.json``; :func:`run_experiment` writes both runs and ``comparison.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Unix time the virtual clock starts at (traces look like real ones, runs stay repeatable).
ORIGIN = 1_767_225_600.0
JOB = "sim-job"
DEFAULT_SLOWDOWN = {"energy_slowdown": 0.03, "energy": 0.10, "cost": 0.10, "throughput": 0.03}
Progress = Callable[[str, float], None]


@dataclass
class ExperimentSpec:
    """One simulated job and how the tuner runs on it."""

    workload: str = "imagenet-resnet50"
    objective: str = "energy_slowdown"
    scenario: str | None = None
    seed: int = 0
    duration_s: float = 3600.0
    gpus: int = 4
    profile: str = "a100"
    tick_s: float = 2.0
    interval_s: float = 20.0
    max_slowdown: float | None = None
    chooser: str = "auto"
    policy: str | None = None
    forecast: str | None = "linear"  # forecast fitter (linear, prophet); None: no forecasting, no alerts
    all_ranks: bool = False  # every rank reports (per-rank compute times: the tuner's Perseus controller acts)

    def slowdown(self) -> float:
        return DEFAULT_SLOWDOWN[self.objective] if self.max_slowdown is None else self.max_slowdown


class _JobEndpoint:
    """The simulated job's side of the control socket: reports out, batch decisions in."""

    def __init__(self, backend: Any, client: Any, others: list[Any] | None = None) -> None:
        self.backend, self.client = backend, client
        self.others = others or []  # clients of ranks 1.. (their own compute times)
        self.last_steps = 0.0
        self.decisions = 0

    def report(self) -> int:
        """Send every rank's report; returns how many were sent."""
        from gputuned.collectors.sim.trainer import report_message_stats

        job = self.backend.job
        stats = report_message_stats(self.backend)
        steps = max(1, int(job.steps_total - self.last_steps))
        self.last_steps = job.steps_total
        self.client.report(int(job.steps_total), steps, stats)
        for rank, client in enumerate(self.others, start=1):
            r = job.rank_stats()[rank]
            client.report(int(job.steps_total), steps, {
                "step_time_s": job.step_s, "compute_time_s": r["compute_time_s"], "data_wait_s": r["data_wait_s"],
                "batch_size": float(job.batch_size)})
        return 1 + len(self.others)

    def apply(self, wait_s: float) -> int:
        """Apply decisions, waiting up to ``wait_s`` for the first; returns how many."""
        deadline = time.monotonic() + wait_s
        n = 0
        while True:
            d = self.client.poll_decision()
            if d is None:
                if n or time.monotonic() > deadline:
                    return n
                time.sleep(0.0005)
                continue
            job = self.backend.job
            ok, err = job.set_batch_size(int(d["batch_size"])) if "batch_size" in d else (False, "unsupported")
            self.client.ack(str(d["id"]), ok, applied_step=int(job.steps_total) + 1 if ok else None, error=err or None)
            self.decisions += 1
            n += 1


class _Forecasting:
    """The forecast service as a loop component: observes each tick, publishes bands and alerts."""

    name = "forecast"

    def __init__(self, store: Any, fitter: str, emit: Callable[[dict[str, Any]], None]) -> None:
        from gputuned.tuner.forecast.config import ForecastConfig
        from gputuned.tuner.forecast.service import ForecastService

        self.store = store
        self.service = ForecastService(ForecastConfig(prophet=fitter == "prophet"), fitter=fitter)
        self.service.add_alert_hook(lambda a: emit({"t": a.since, "kind": "alert", "knob": a.kind, "target": a.series,
                                                    "value": round(a.score, 3), "reason": a.message}))

    def start(self) -> None:
        self.service.start()

    def tick(self, now: float) -> None:
        self.service.observe(now, self.store.latest())
        self.store.publish(self.name, now, self.service.samples())

    def stop(self) -> None:
        self.service.close()

    def alert_kinds(self) -> list[str]:
        return [a.kind for a in self.service.active_alerts()]


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def run_once(
    spec: ExperimentSpec, tuned: bool, out_dir: Path, progress: Progress | None = None,
    backend_hook: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run the job once (tuner on or off), write trace, events and summary to ``out_dir``.

    ``backend_hook(backend)`` sees the simulated node before NVML opens it (tests watch its devices).
    """
    from gputuned.collectors.gpu import GPUCollector
    from gputuned.collectors.nvml import open_gpus, open_nvml
    from gputuned.collectors.sim import nvml as sim_nvml
    from gputuned.collectors.sim.node import build_sim_node
    from gputuned.collectors.sim.state import VirtualClock
    from gputuned.daemon.actuation.actuator import Actuator
    from gputuned.daemon.actuation.statefile import StateFile
    from gputuned.daemon.app.tuning import TuningComponent, TuningConfig
    from gputuned.daemon.control.server import ControlServer
    from gputuned.daemon.core.config import ActuationConfig, ControlConfig
    from gputuned.daemon.core.loop import CollectionLoop
    from gputuned.daemon.core.store import Store
    from gputuned.daemon.record.trace import Recorder, TraceWriter
    from gputuned.trainer_plugin.client import DaemonClient

    out_dir.mkdir(parents=True, exist_ok=True)
    events_f = (out_dir / "events.jsonl").open("w")

    def emit(event: dict[str, Any]) -> None:
        events_f.write(json.dumps(event, default=float) + "\n")

    clock = VirtualClock()
    backend = build_sim_node(spec.profile, spec.gpus, spec.workload, spec.scenario, clock, seed=spec.seed,
                             labels_path=out_dir / "labels.json")
    job = backend.job
    if job is None:
        raise ValueError(f"workload {spec.workload!r} gives no job")
    if backend_hook is not None:
        backend_hook(backend)
    sim_nvml.attach(backend)
    nvml, _ = open_nvml("sim", sim_module=sim_nvml)
    devices = open_gpus(nvml)
    default_limits = [d.power_limit_mw for d in backend.devices]
    store = Store(max(64, int(4 * spec.interval_s / spec.tick_s) + 8))
    writer = TraceWriter(out_dir / "trace.gtrace", meta={"experiment": asdict(spec), "tuned": tuned})
    store.subscribe(Recorder(writer))
    loop = CollectionLoop([GPUCollector(devices, "sim", "sim")], store, spec.tick_s,
                          wallclock=lambda: ORIGIN + clock.now())
    sockdir = Path(tempfile.mkdtemp(prefix="gputuned-exp-"))
    actuator = Actuator(devices, ActuationConfig(knobs=["power_limit", "locked_sm_clocks"]),
                        StateFile(out_dir / "state.json"), store)
    control = ControlServer(ControlConfig(socket_path=sockdir / "control.sock"), store)
    components: list[Any] = [actuator, control]
    forecasting = _Forecasting(store, spec.forecast, emit) if spec.forecast else None
    if forecasting is not None:
        components.append(forecasting)
    tuner = None
    if tuned:
        cfg = TuningConfig(objective=spec.objective, interval_s=spec.interval_s, max_slowdown=spec.slowdown(),
                           chooser=spec.chooser, policy=Path(spec.policy) if spec.policy else None, pause_file=None)
        tuner = TuningComponent(store, actuator, control, [d.identity.index for d in devices], cfg, on_event=emit,
                                alerts=forecasting.alert_kinds if forecasting else None)
        components.append(tuner)
    for c in components:
        c.start()
        loop.add_hook(c.tick)
    client = DaemonClient(str(sockdir / "control.sock"), job=JOB, rank=0, world_size=job.world_size,
                          batch_size=job.batch_size, batch_mode="global", backoff_s=(0.01, 0.1))
    others = [DaemonClient(str(sockdir / "control.sock"), job=JOB, rank=r, world_size=job.world_size,
                           batch_size=job.batch_size, batch_mode="global", backoff_s=(0.01, 0.1))
              for r in range(1, job.world_size)] if spec.all_ranks else []
    endpoint = _JobEndpoint(backend, client, others)
    reached_at: float | None = None
    energy0 = sum(backend.energy_j)
    emit({"t": ORIGIN, "kind": "start", "tuned": tuned, "spec": asdict(spec)})
    try:
        if not all(c.wait_connected(10.0) for c in [client, *others]):
            raise RuntimeError("the simulated job could not connect to the control socket")
        n_ticks = int(round(spec.duration_s / spec.tick_s))
        for k in range(n_ticks):
            clock.advance(spec.tick_s)
            backend.sync()
            before = control.reports_total
            sent = endpoint.report()
            _wait(lambda b=before + sent - 1: control.reports_total > b, 2.0)  # type: ignore[misc]
            loop.tick()
            pending = getattr(tuner, "_pending", None) if tuner else None
            if pending is not None and endpoint.apply(2.0):
                control.wait_ack(pending.ident, 2.0)
            if reached_at is None and job.progress >= 1.0:
                reached_at = clock.now()
            if progress and k % 50 == 0:
                progress("on" if tuned else "off", (k + 1) / n_ticks)
        duration = clock.now()
        energy = sum(backend.energy_j) - energy0
        final = {"power_limit_w": [d.power_limit_mw / 1000.0 for d in backend.devices], "batch_size": job.batch_size,
                 "sm_clock_mhz": [d.sm_clock_mhz for d in backend.devices]}
        if tuner is not None:
            tuner.stop()
            endpoint.apply(1.0)
            time.sleep(0.01)
        actuator.stop()
        restored = [d.power_limit_mw for d in backend.devices] == default_limits and all(
            d.locked_sm_clocks_mhz is None for d in backend.devices)
        emit({"t": ORIGIN + duration, "kind": "restored" if restored else "restore_failed", "knob": "power_limit",
              "target": "all", "value": backend.devices[0].power_limit_mw / 1000.0})
    finally:
        for c in [client, *others]:
            c.close()
        control.stop()
        if forecasting is not None:
            forecasting.stop()
        writer.close()
        events_f.close()
        shutil.rmtree(sockdir, ignore_errors=True)
    need = job.workload.target_epochs * job.workload.dataset_samples
    summary = {
        "tuned": tuned, "spec": asdict(spec), "duration_s": duration, "energy_j": energy,
        "samples": job.samples_total, "progress": job.progress,
        "throughput_samples_per_s": job.samples_total / duration,
        "goodput_samples_per_s": job.progress * need / duration,
        "energy_per_sample_j": energy / max(job.samples_total, 1e-9),
        "energy_to_target_j": energy / max(job.progress, 1e-12),
        # the run's pace (seconds per target): a short job may reach its target before the tuner acts
        "time_to_target_s": duration / max(job.progress, 1e-12),
        "first_target_s": reached_at,
        "final": final, "restored": restored, "decisions_applied": endpoint.decisions,
        "tuner": ({"actions": dict(tuner.guard.actions), "rollbacks": tuner.guard.rollbacks,
                   "interventions": dict(tuner.guard.interventions), "chooser": tuner.chooser.name}
                  if tuner else None),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def compare(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """Ratios of the tuned run to the baseline (energy and time: lower is better)."""
    keys = ("energy_per_sample_j", "energy_to_target_j", "time_to_target_s", "throughput_samples_per_s",
            "goodput_samples_per_s", "energy_j")
    ratios = {k: on[k] / off[k] if off[k] else float("nan") for k in keys}
    return {
        "spec": on["spec"], "off": {k: off[k] for k in keys}, "on": {k: on[k] for k in keys}, "ratio": ratios,
        "energy_saving": 1.0 - ratios["energy_to_target_j"], "energy_per_sample_saving": 1.0 - ratios["energy_per_sample_j"],
        "slowdown": ratios["time_to_target_s"] - 1.0, "restored": on["restored"] and off["restored"],
        "tuner": on.get("tuner"), "final": on.get("final"),
    }


def run_experiment(
    spec: ExperimentSpec, out_dir: Path, progress: Progress | None = None,
    backend_hook: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Both runs and their comparison (``out_dir``/off, /on, comparison.json)."""
    off = run_once(spec, False, out_dir / "off", progress, backend_hook)
    on = run_once(spec, True, out_dir / "on", progress, backend_hook)
    doc = compare(off, on)
    (out_dir / "comparison.json").write_text(json.dumps(doc, indent=1))
    return doc
