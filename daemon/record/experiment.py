"""Tuner off versus on: the same simulated job run twice on a virtual clock, through the real daemon.

Each run builds a physics-backed simulated node (same profile, workload, scenario and seed)
and a :class:`~gputuned.daemon.app.daemon.Daemon` on it from the config a user would write
(:func:`daemon_config`), with the components the daemon attaches from its config: actuation
(state file, verify, restore), the control socket server, the forecaster, the simulated job
(reporting through the torch-free plugin client over a real Unix socket and applying the
batch-size decisions it receives) and, in the tuned run, the tuner. No loop thread and no HTTP
server: each tick advances the virtual clock, steps the job (its reports reach the server),
runs one daemon tick, and lets the job answer the decisions that tick sent, so runs repeat.
Every published sample goes to ``trace.gttrace``, tuner actions, alerts and restores to
``events.jsonl``, figures to ``summary.json``; :func:`run_experiment` writes both runs and
``comparison.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gputuned.daemon.app.config import Config
    from gputuned.daemon.app.daemon import Daemon

logger = logging.getLogger(__name__)

#: Unix time the virtual clock starts at (traces look like real ones, runs stay repeatable).
ORIGIN = 1_767_225_600.0
JOB = "sim-job"
DEFAULT_SLOWDOWN = {"energy_slowdown": 0.03, "energy": 0.10, "cost": 0.10, "throughput": 0.03}
Progress = Callable[[str, float], None]
Emit = Callable[[dict[str, Any]], None]


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
    forecast: str | None = "linear"  # forecast fitter (linear, prophet, none: detector only); None: no detection, no alerts
    all_ranks: bool = False  # every rank reports (per-rank compute times: the tuner's Perseus controller acts)
    tune_clocks: bool = True  # [tuner] tune_clocks: SM- and memory-clock lock moves beside power and batch

    def slowdown(self) -> float:
        return DEFAULT_SLOWDOWN[self.objective] if self.max_slowdown is None else self.max_slowdown


def daemon_config(spec: ExperimentSpec, tuned: bool, out_dir: Path, sockdir: Path) -> Config:
    """The daemon's configuration for one run, as a user would write it in gputuned.toml."""
    from gputuned.daemon.app.config import parse_config

    tuner: dict[str, Any] = {"enabled": tuned, "objective": spec.objective, "interval_s": float(spec.interval_s),
                             "max_slowdown": float(spec.slowdown()), "chooser": spec.chooser,
                             "tune_clocks": spec.tune_clocks}
    # the pause flag lives beside the run's own state file: no pause switch shared with a live daemon
    if spec.policy:
        tuner["policy"] = spec.policy
    return parse_config({
        "daemon": {"interval_seconds": float(spec.tick_s), "state_file": str(out_dir / "state.json")},
        "gpu": {"backend": "sim"},
        "sim": {"profile": spec.profile, "gpus": spec.gpus, "workload": spec.workload, "seed": spec.seed,
                "job_name": JOB, **({"scenario": spec.scenario} if spec.scenario else {})},
        # the simulated node only: the host's own /proc, /sys and network would make runs differ
        "collectors": {"host": {"enabled": False}, "infiniband": {"enabled": False}, "peers": {"enabled": False}},
        "store": {"history_samples": max(64, int(4 * spec.interval_s / spec.tick_s) + 8)},
        "control": {"socket_path": str(sockdir / "control.sock")},
        "actuation": {"knobs": ["power_limit", "locked_sm_clocks", "locked_memory_clocks", "batch_size"]},
        # detection inline (not in a child process), so alerts come on the tick that causes them
        "forecast": {"enabled": spec.forecast is not None, "fitter": spec.forecast or "none",
                     "detect_in_child": False},
        "tuner": tuner,
    }, "experiment")


def build_daemon(cfg: Config, backend: Any, clock: Callable[[], float], emit: Emit) -> Daemon:
    """The daemon on the simulated node, its components attached as ``gputuned run`` attaches them."""
    from gputuned.daemon.app.components import attach_configured
    from gputuned.daemon.app.daemon import Daemon, setup_gpus
    from gputuned.daemon.core.notify import Notifier

    daemon = Daemon(cfg, gpus=setup_gpus(cfg, backend), serve=False, notifier=Notifier({}), clock=clock)
    if daemon.control is not None:
        daemon.control.clock = clock  # ranks' TTLs run on the virtual clock, as the ticks do
    attach_configured(daemon, trainer="sim", stepped_job=True)
    forecast = component(daemon, "forecast")
    if forecast is not None:
        forecast.service.add_alert_hook(lambda a: emit({"t": a.since, "kind": "alert", "knob": a.kind, "target": a.series,
                                                        "value": round(a.score, 3), "reason": a.message}))
    tuner = component(daemon, "tuner")
    if tuner is not None:
        tuner.on_event = emit
    return daemon


def component(daemon: Daemon, name: str) -> Any:
    """The daemon's attached component called ``name``, or None."""
    return next((c for c in daemon.components if c.name == name), None)


def run_once(
    spec: ExperimentSpec, tuned: bool, out_dir: Path, progress: Progress | None = None,
    backend_hook: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run the job once (tuner on or off), write trace, events and summary to ``out_dir``.

    ``backend_hook(backend)`` sees the simulated node before NVML opens it (tests watch its devices).
    """
    from gputuned.collectors.sim.node import build_sim_node
    from gputuned.collectors.sim.state import VirtualClock
    from gputuned.daemon.record.trace import RUN_TRACE, Recorder, TraceWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sockdir = Path(tempfile.mkdtemp(prefix="gputuned-exp-"))
        stack.callback(shutil.rmtree, sockdir, ignore_errors=True)
        cfg = daemon_config(spec, tuned, out_dir, sockdir)  # before the node: a bad setting is named first
        clock = VirtualClock()
        backend = build_sim_node(spec.profile, spec.gpus, spec.workload, spec.scenario, clock, seed=spec.seed,
                                 labels_path=out_dir / "labels.json")
        if backend.job is None:
            raise ValueError(f"workload {spec.workload!r} gives no job")
        if backend_hook is not None:
            backend_hook(backend)
        events_f = stack.enter_context((out_dir / "events.jsonl").open("w"))

        def emit(event: dict[str, Any]) -> None:
            events_f.write(json.dumps(event, default=float) + "\n")

        writer = TraceWriter(out_dir / RUN_TRACE, meta={"experiment": asdict(spec), "tuned": tuned})
        stack.callback(writer.close)
        daemon = build_daemon(cfg, backend, lambda: ORIGIN + clock.now(), emit)
        daemon.store.subscribe(Recorder(writer))
        emit({"t": ORIGIN, "kind": "start", "tuned": tuned, "spec": asdict(spec)})
        summary = _drive(spec, tuned, daemon, backend, clock, emit, progress)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _drive(spec: ExperimentSpec, tuned: bool, daemon: Daemon, backend: Any, clock: Any, emit: Emit,
           progress: Progress | None) -> dict[str, Any]:
    """Start the daemon, tick it over the run on the virtual clock, stop it; the run's figures."""
    job = backend.job
    default_limits = [d.power_limit_mw for d in backend.devices]
    sim_job = component(daemon, "sim-job")
    reached_at: float | None = None
    energy0 = sum(backend.energy_j)
    try:
        daemon.start(background=False)
        if sim_job is None or daemon.control is None:
            raise RuntimeError("the daemon runs no simulated job on a control socket")
        if spec.all_ranks:  # the job's other ranks report their own compute times
            sim_job.reporters += [sim_job.connect(r) for r in range(1, job.world_size)]
        if not all(r.client.wait_connected(10.0) for r in sim_job.reporters):
            raise RuntimeError("the simulated job could not connect to the control socket")
        n_ticks = int(round(spec.duration_s / spec.tick_s))
        for k in range(n_ticks):
            clock.advance(spec.tick_s)
            backend.sync()
            sim_job.step()
            daemon.tick()
            sim_job.settle()
            if reached_at is None and job.progress >= 1.0:
                reached_at = clock.now()
            if progress and k % 50 == 0:
                progress("on" if tuned else "off", (k + 1) / n_ticks)
        duration = clock.now()
        energy = sum(backend.energy_j) - energy0
        final = {"power_limit_w": [d.power_limit_mw / 1000.0 for d in backend.devices], "batch_size": job.batch_size,
                 "sm_clock_mhz": [d.sm_clock_mhz for d in backend.devices],
                 "memory_clock_mhz": [d.memory_clock_mhz for d in backend.devices]}
    finally:
        daemon.stop()  # the tuner gives the batch size back, the actuator restores the GPUs
    restored = [d.power_limit_mw for d in backend.devices] == default_limits and all(
        d.locked_sm_clocks_mhz is None and d.locked_memory_clocks_mhz is None for d in backend.devices)
    emit({"t": ORIGIN + duration, "kind": "restored" if restored else "restore_failed", "knob": "power_limit",
          "target": "all", "value": backend.devices[0].power_limit_mw / 1000.0})
    tuner = component(daemon, "tuner")
    return {
        "tuned": tuned, "spec": asdict(spec), "duration_s": duration, "energy_j": energy,
        **_figures(job, duration, energy),
        "first_target_s": reached_at,
        "final": final, "restored": restored, "decisions_applied": sim_job.reporters[0].decisions["batch_size"],
        "tuner": ({"actions": dict(tuner.guard.actions), "rollbacks": tuner.guard.rollbacks,
                   "interventions": dict(tuner.guard.interventions), "chooser": tuner.chooser.name}
                  if tuner else None),
    }


def _figures(job: Any, duration: float, energy: float) -> dict[str, Any]:
    """Throughput, goodput and energy per sample and to target of one run."""
    need = job.workload.target_epochs * job.workload.dataset_samples
    return {
        "samples": job.samples_total, "progress": job.progress,
        "throughput_samples_per_s": job.samples_total / duration,
        "goodput_samples_per_s": job.progress * need / duration,
        "energy_per_sample_j": energy / max(job.samples_total, 1e-9),
        "energy_to_target_j": energy / max(job.progress, 1e-12),
        # the run's pace (seconds per target): a short job may reach its target before the tuner acts
        "time_to_target_s": duration / max(job.progress, 1e-12),
    }


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
