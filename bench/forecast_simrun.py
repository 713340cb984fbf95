"""One labelled run of the simulated node through the daemon's forecast service (detection only).

Each shipped scenario's event (kind, ramp, magnitude, target GPUs, duration) is replayed with
its start moved to a random time 2 to 3 hours into the run, so the detector has seen the job
settle first. Every tick the GPU collector's samples, rank 0's trainer statistics and the
peer RTTs go to ``ForecastService.observe``; raised alerts are recorded with their time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from gputuned.collectors.families import Sample
from gputuned.tuner.forecast.alerts import Alert
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.service import ForecastService

TRAINER_KEYS = {
    "samples_per_s": "gputuned_trainer_samples_per_second",
    "comm_time_s": "gputuned_trainer_communication_seconds",
    "data_wait_s": "gputuned_trainer_dataloader_wait_seconds",
    "step_time_s": "gputuned_trainer_step_time_seconds",
}
T0 = 1.7e9


@dataclass
class RunResult:
    """Alerts of one run, its event window, when it first cost 5 % throughput or crossed a
    limit (memory full, 85 C, an uncorrectable ECC error), its size, and whether the event
    moved any series the label names at all (``observable``)."""

    kind: str
    workload: str
    seed: int
    start: float
    end: float
    cost_t: float | None
    duration: float
    gpus: int
    ramp_s: float = 0.0
    limit_t: float | None = None
    observable: bool = False
    alerts: list[tuple[float, Alert]] = field(default_factory=list)


def _calibration() -> dict[str, Any]:
    from gputuned.collectors.sim.workload import load_calibration

    cal = load_calibration()
    for g in cal.get("gpus", {}).values():  # tolerate a calibration older than PowerParams
        if isinstance(g, dict):
            g.setdefault("cap_floor_w", 0.0)
    return cal


def _past_limit(samples: list[Sample]) -> bool:
    """A GPU at 98 % of its memory (out of memory next) or at 85 C (slowdown near)."""
    used = {lb: v for f, lb, v in samples if f == "gputuned_gpu_memory_used_bytes"}
    total = {lb: v for f, lb, v in samples if f == "gputuned_gpu_memory_total_bytes"}
    if any(total.get(lb, 0.0) > 0 and v >= 0.98 * total[lb] for lb, v in used.items()):
        return True
    if any(f == "gputuned_gpu_ecc_errors_total" and dict(lb).get("type") == "uncorrected" and v > 0
           for f, lb, v in samples):
        return True  # data lost: the first uncorrectable error is what an ECC storm costs
    return any(f == "gputuned_gpu_temperature_celsius" and v >= 85.0 for f, _, v in samples)


def _watched(kind: str) -> frozenset[str]:
    """Families the label names for ``kind`` (throughput for step time, counters for ECC)."""
    from gputuned.collectors.sim.scenarios import KINDS

    fams = set(KINDS[kind][2])
    if "gputuned_trainer_step_time_seconds" in fams:
        fams.add("gputuned_trainer_samples_per_second")
    if kind == "ecc_storm":
        fams.add("gputuned_gpu_ecc_errors_total")
    return frozenset(fams)


def _note_observable(result: RunResult, before: dict, samples: list[Sample], watched: frozenset[str],
                     t: float, start: float, end: float) -> None:
    """Observable: a watched series leaves its range of the 10 minutes before the event by more
    than half that range plus 2 % of its level (noise alone does not)."""
    for f, lb, v in samples:
        if f not in watched:
            continue
        key = (f, lb)
        if start - 600.0 <= t < start:
            lo, hi = before.get(key, (v, v))
            before[key] = (min(lo, v), max(hi, v))
        elif start <= t <= end and key in before:
            lo, hi = before[key]
            margin = 0.5 * (hi - lo) + 0.02 * max(abs(lo), abs(hi))
            if v < lo - margin or v > hi + margin:
                result.observable = True
                return


def run_scenario(name: str, workload: str, seed: int, gpus: int = 8, tick_s: float = 5.0,
                 after_s: float = 3600.0) -> RunResult:
    """Simulate ``name`` on a node running ``workload`` and return the alerts it raised."""
    from gputuned.collectors.gpu import GPUCollector
    from gputuned.collectors.nvml import open_gpus, open_nvml
    from gputuned.collectors.sim import nvml as sim_nvml
    from gputuned.collectors.sim.node import build_sim_node
    from gputuned.collectors.sim.scenarios import Scenario, load_scenario
    from gputuned.collectors.sim.state import VirtualClock
    from gputuned.collectors.sim.trainer import report_message_stats

    rng = random.Random(seed * 7919 + hash(name) % 1000)
    base = load_scenario(name)
    ev = base.events[0]
    start = rng.uniform(7200.0, 10800.0)
    ev = replace(ev, start_s=start)
    scen = Scenario(base.name, base.description, (ev,))
    clock = VirtualClock()
    backend = build_sim_node("a100", gpus, workload, scen, clock, seed=seed, nodes=2,
                             calibration=_calibration(), labels_path=f"/tmp/gputuned-eval-{name}-{seed}.json")
    sim_nvml.attach(backend)
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml))
    end = start + (ev.duration_s if ev.duration_s is not None else ev.ramp_s + after_s)
    horizon = end + 1800.0
    svc = ForecastService(ForecastConfig(prophet=False))
    # a fault without a duration persists to the end of the run: so does its window
    window_end = end if ev.duration_s is not None else horizon
    result = RunResult(ev.kind, workload, seed, T0 + start, T0 + window_end, None, horizon, gpus, ev.ramp_s)
    svc.add_alert_hook(lambda a: result.alerts.append((now, a)))
    baseline: list[float] = []
    watched = _watched(ev.kind)
    before: dict[tuple, tuple[float, float]] = {}
    t = 0.0
    while t < horizon:
        clock.advance(tick_s)
        t += tick_s
        now = T0 + t
        samples: list[Sample] = collector.collect()
        stats = report_message_stats(backend)
        labels = (("job", "sim"), ("rank", "0"))
        samples += [(fam, labels, float(stats[k])) for k, fam in TRAINER_KEYS.items() if k in stats]
        samples += [("gputuned_peer_rtt_seconds", (("peer", p),), v) for p, v in backend.peer_rtt_s().items()]
        svc.observe(now, samples)
        if not result.observable:
            _note_observable(result, before, samples, watched, t, start, window_end)
        if result.limit_t is None and t >= start and _past_limit(samples):
            result.limit_t = now
        thr = stats.get("samples_per_s")
        if thr is not None:
            if start - 600.0 <= t < start:
                baseline.append(float(thr))
            elif t >= start and baseline and result.cost_t is None:
                ref = sorted(baseline)[len(baseline) // 2]
                if thr < 0.95 * ref:
                    result.cost_t = now
    collector.close()
    return result
