"""Assemble a simulated GPU node: devices of one profile, a training job, a scenario.

``make run`` (no NVIDIA driver found) does::

    from gputuned.collectors.sim import nvml as sim_nvml
    from gputuned.collectors.sim.node import build_sim_node
    from gputuned.collectors.sim.state import RealClock
    backend = build_sim_node("a100", 4, "imagenet-resnet50", None, RealClock(), seed=0)
    sim_nvml.attach(backend)

and the daemon goes on with ``open_nvml("sim")`` like on a real host.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from gputuned.collectors.sim.gpu_model import PCIE_BANDWIDTH, interconnect_bandwidth
from gputuned.collectors.sim.job import SimJob
from gputuned.collectors.sim.physics import PhysicsBackend
from gputuned.collectors.sim.scenarios import Scenario, load_scenario
from gputuned.collectors.sim.state import Clock, VirtualClock, load_profile, make_devices
from gputuned.collectors.sim.workload import (
    load_calibration,
    load_workload,
    power_params,
    resolve_timing,
)

logger = logging.getLogger(__name__)

DEFAULT_WORKLOAD = "imagenet-resnet50"


def build_sim_node(
    profile: str = "a100",
    gpus: int = 4,
    workload: str | Path | None = DEFAULT_WORKLOAD,
    scenario: str | Path | Scenario | None = None,
    clock: Clock | None = None,
    seed: int = 0,
    *,
    nodes: int = 1,
    batch_size: int | None = None,
    step_s: float = 1.0,
    labels_path: str | Path | None = None,
    calibration: dict[str, Any] | None = None,
    privileged: bool = True,
    node_id: int = 0,
) -> PhysicsBackend:
    """A physics-backed simulated node, synced to time 0; writes the scenario's label file.

    The label file goes to ``labels_path``, by default ``<tmp>/gputuned-sim-<scenario>-labels.json``
    (its path is kept in ``backend.labels_path``).

    ``workload`` names a shipped workload or a TOML path (None: GPUs idle); ``scenario``
    a shipped scenario, a TOML path or a :class:`Scenario`; ``nodes`` how many identical
    nodes the data-parallel job spans (only this one is simulated in detail).
    """
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    prof = load_profile(profile)
    cal = load_calibration() if calibration is None else calibration
    devices = make_devices(prof, gpus, node_id=node_id)
    pp = power_params(profile, cal)
    job = None
    if workload is not None:
        wl = load_workload(workload)
        timing, source = resolve_timing(wl, profile, cal)
        fitted = cal.get("workloads", {}).get(wl.name, {})
        job = SimJob(
            wl, timing, gpus, nodes=nodes, batch_size=batch_size, memory_total_bytes=prof.memory_total_bytes,
            intra_bw=interconnect_bandwidth(prof), pcie_bw=PCIE_BANDWIDTH.get(prof.pcie_gen, 12.0e9),
            seed=seed, noise_scale=fitted.get("grad_noise_scale"),
        )
        logger.debug("simulated job %s on %d x %s (timing %s)", wl.name, gpus, prof.name, source)
    scen = load_scenario(scenario) if isinstance(scenario, str | Path) else scenario
    backend = PhysicsBackend(
        devices, clock or VirtualClock(), [pp] * gpus, job=job, scenario=scen, step_s=step_s,
        privileged=privileged, seed=seed,
    )
    backend.sync()
    if scen is not None:
        if labels_path is None:
            labels_path = Path(tempfile.gettempdir()) / f"gputuned-sim-{scen.name}-labels.json"
        origin = time.time() - backend.clock.now()
        scen.write_labels(labels_path, gpus, origin_unix=origin)
        logger.debug("scenario %s: ground-truth labels in %s", scen.name, labels_path)
    backend.labels_path = Path(labels_path) if scen is not None and labels_path is not None else None
    return backend


def steady_state(
    profile: str, gpus: int, workload: str, seed: int = 0, *, batch_size: int | None = None,
    power_limit_w: float | None = None, sm_clock_mhz: int | None = None, memory_clock_mhz: int | None = None,
    warmup_s: float = 30.0, window_s: float = 300.0,
) -> dict[str, float] | None:
    """One fixed setting on a fresh simulated node, measured over ``window_s`` after ``warmup_s``:
    joules and seconds per whole target of training progress, per step and per sample (all GPUs
    of the node); None when the job refuses the batch size (outside its range, or out of memory).
    A clock is locked as [f, f]."""
    clock = VirtualClock()
    try:
        be = build_sim_node(profile, gpus, workload, None, clock, seed=seed, batch_size=batch_size)
    except ValueError as e:
        if "does not fit" in str(e):
            return None
        raise
    job, prof = be.job, be.devices[0].profile
    assert job is not None
    if batch_size is not None and not job.set_batch_size(batch_size)[0]:
        return None
    for d in be.devices:
        d.power_limit_mw = int((power_limit_w or prof.power_limit_default_w) * 1000)
        if sm_clock_mhz:
            d.locked_sm_clocks_mhz = (sm_clock_mhz, sm_clock_mhz)
        if memory_clock_mhz:
            d.locked_memory_clocks_mhz = (memory_clock_mhz, memory_clock_mhz)
    clock.advance(warmup_s)
    be.sync()
    e0, p0, s0, n0 = sum(be.energy_j), job.progress, job.steps_total, job.samples_total
    clock.advance(window_s)
    be.sync()
    joules = sum(be.energy_j) - e0
    done, steps, samples = max(job.progress - p0, 1e-12), max(job.steps_total - s0, 1e-12), job.samples_total - n0
    return {"energy_per_target_j": joules / done, "time_per_target_s": window_s / done,
            "step_s": window_s / steps, "energy_per_step_j": joules / steps,
            "energy_per_sample_j": joules / max(samples, 1e-12), "samples_per_s": samples / window_s,
            "power_w": joules / window_s}


def measure_fixed(
    profile: str, gpus: int, workload: str, seed: int = 0, *, batch_size: int | None = None,
    power_limit_w: float | None = None, sm_clock_mhz: int | None = None, warmup_s: float = 30.0,
    window_s: float = 300.0,
) -> tuple[float, float] | None:
    """Steady state of one fixed setting: (joules, seconds) per whole target of training progress
    (:func:`steady_state`). The benchmarks' "best fixed setting in hindsight" sweeps this; the
    daemon cannot measure a setting without running it."""
    r = steady_state(profile, gpus, workload, seed, batch_size=batch_size, power_limit_w=power_limit_w,
                     sm_clock_mhz=sm_clock_mhz, warmup_s=warmup_s, window_s=window_s)
    return None if r is None else (r["energy_per_target_j"], r["time_per_target_s"])
