"""Cost of forecasting: Prophet refit of an 8-GPU node on one core, detector and per-tick cost.

    .venv/bin/python bench/forecast_bench.py [--ticks 600] [--history-days 3] [--rounds 3] [--no-refit]

1. Prophet refit of every default series of an 8-GPU node (5 per GPU, 2 trainer node series,
   3 peers' RTT = 45 series) with ``history_days`` of 60 s points, pinned to one core
   (cmdstan's child processes inherit the pinning), against the default refit period.
2. Online detector cost per sample.
3. The daemon core's tick on a simulated 8-GPU node (GPU + host collectors, plus trainer
   and peer samples) without forecasting, with ``ForecastService.observe`` inline as a tick
   hook, and with ``OffloadedForecastService.observe`` (detection in a child process, the
   daemon's default), interleaved; median tick and core-process CPU per tick.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from typing import Any

from _common import BenchParser, positive_float, positive_int, sim_nvml_on_clock

from gputuned.collectors.families import Sample
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.detector import OnlineDetector
from gputuned.tuner.forecast.service import ForecastService
from gputuned.tuner.forecast.worker import cpu_seconds, run_job

GPU_SERIES = (
    "gputuned_trainer_samples_per_second", "gputuned_gpu_power_watts", "gputuned_gpu_sm_clock_hertz",
    "gputuned_gpu_temperature_celsius", "gputuned_gpu_memory_used_bytes",
)
NODE_SERIES = ("gputuned_trainer_communication_seconds", "gputuned_trainer_dataloader_wait_seconds")


def gpu_labels(i: int) -> tuple[tuple[str, str], ...]:
    return (("gpu", str(i)), ("uuid", f"GPU-{i:08d}"), ("model", "NVIDIA H100"), ("pci_bus_id", f"0000:{i + 1:02x}:00.0"))


def refit_cost(history_days: float) -> dict[str, float]:
    """Wall time and CPU (the worker's own and CmdStan's) of one refit of all 45 series, on one pinned core.

    ``fit_seconds`` is what ``gputuned_forecast_fit_duration_seconds`` reports (both);
    ``cpu_self_s`` alone is what it reported before CmdStan's CPU was counted.
    """
    cfg = ForecastConfig()
    rng = random.Random(0)
    n = int(history_days * 86400 / cfg.downsample_s)
    t = [1.7e9 + cfg.downsample_s * k for k in range(n)]
    keys = [(f, gpu_labels(i)) for i in range(8) for f in GPU_SERIES]
    keys += [(f, ()) for f in NODE_SERIES] + [("gputuned_peer_rtt_seconds", (("peer", f"node{p}"),)) for p in range(3)]
    series = {
        k: (t, [100.0 + 10 * math.sin(2 * math.pi * x / 86400) + rng.gauss(0, 1) for x in t]) for k in keys
    }
    job = {
        "id": 1, "fitter": "prophet", "series": series, "step_s": cfg.downsample_s,
        "until": t[-1] + cfg.refit_period_s + max(cfg.horizons_s), "interval_width": cfg.interval_width,
    }
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import logging

    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    run_job({**job, "series": dict(list(series.items())[:1])}, lambda m: None)  # import and compile warm-up
    t0 = time.perf_counter()
    own0, kids0 = cpu_seconds()
    stats = run_job(job, lambda m: None)
    own1, kids1 = cpu_seconds()
    wall = time.perf_counter() - t0
    return {"series": stats["series"], "points": n, "wall_s": wall, "period_s": cfg.refit_period_s,
            "cpu_self_s": own1 - own0, "cpu_cmdstan_s": kids1 - kids0, "fit_seconds": stats["fit_seconds"]}


def detector_cost(n: int = 200_000) -> float:
    """Microseconds per OnlineDetector.update on noisy samples."""
    rng = random.Random(1)
    xs = [100.0 + rng.gauss(0, 1) for _ in range(n)]
    det = OnlineDetector()
    t0 = time.perf_counter()
    for i, x in enumerate(xs):
        det.update(float(i), x)
    return 1e6 * (time.perf_counter() - t0) / n


class NodeExtras:
    """Trainer per-rank throughput, node trainer series and peer RTTs, as the daemon would hold them."""

    name = "extras"

    def __init__(self) -> None:
        self._rng = random.Random(2)

    def collect(self) -> list[Sample]:
        g = self._rng.gauss
        out: list[Sample] = [(GPU_SERIES[0], gpu_labels(i), 1000.0 + g(0, 10)) for i in range(8)]
        out += [(f, (), 0.05 + abs(g(0, 0.005))) for f in NODE_SERIES]
        out += [("gputuned_peer_rtt_seconds", (("peer", f"node{p}"),), 1e-4 + abs(g(0, 1e-5))) for p in range(3)]
        return out

    def close(self) -> None:
        pass


def _tick_loop(mode: str, nvml: Any, clock: Any, services: dict[str, Any], hook_ms: dict[str, list[float]]) -> Any:
    """A fresh daemon core loop on the simulated node; unless ``mode`` is off, a tick hook has
    ``services[mode]`` observe the store and times that call into ``hook_ms[mode]``."""
    from gputuned.collectors.gpu import GPUCollector
    from gputuned.collectors.host import HostCollector
    from gputuned.collectors.nvml import open_gpus
    from gputuned.daemon.core.loop import CollectionLoop
    from gputuned.daemon.core.store import Store

    store = Store(0)
    loop = CollectionLoop([GPUCollector(open_gpus(nvml)), HostCollector(), NodeExtras()], store, 1.0,
                          wallclock=lambda: 1.7e9 + clock.now())
    if mode != "off":
        svc = services[mode]

        def hook(now: float, svc: Any = svc, store: Store = store, mode: str = mode) -> None:
            t0 = time.perf_counter()
            svc.observe(now, store.latest())
            hook_ms[mode].append(1e3 * (time.perf_counter() - t0))

        loop.add_hook(hook)
    return loop


def _timed_ticks(loop: Any, clock: Any, ticks: int, pause_s: float) -> tuple[list[float], float]:
    """Run ``ticks`` ticks ``pause_s`` apart: each tick's duration and the process CPU per tick (ms)."""
    cpu0 = time.process_time()
    durations = []
    for _ in range(ticks):
        loop.tick()
        durations.append(1e3 * loop.last_tick_duration)
        clock.advance(1.0)
        time.sleep(pause_s)
    return durations, 1e3 * (time.process_time() - cpu0) / ticks


def tick_cost(ticks: int, rounds: int = 3, pause_s: float = 0.05, settle_s: float = 5.0) -> dict[str, float]:
    """Median daemon tick and core-process CPU per tick, without forecasting, with it inline
    and with detection in its child process, interleaved in ``rounds`` on one simulated node.

    The loop pauses ``pause_s`` between ticks (the daemon ticks every second), so threads that
    work after a tick (the child queue's feeder, the reader) run inside the measured CPU time;
    after each child round it waits ``settle_s`` so the child's backlog does not load the next.
    """
    from gputuned.tuner.forecast.offload import OffloadedForecastService

    nvml, clock = sim_nvml_on_clock(8)
    cfg = ForecastConfig(prophet=False)
    services = {"inline": ForecastService(cfg), "child": OffloadedForecastService(cfg)}
    services["child"].start()
    time.sleep(3.0)  # let the child import and settle
    ticks_ms: dict[str, list[float]] = {m: [] for m in ("off", "inline", "child")}
    cpu_ms: dict[str, list[float]] = {m: [] for m in ticks_ms}
    hook_ms: dict[str, list[float]] = {m: [] for m in ("inline", "child")}
    rounds_ms: dict[str, list[float]] = {m: [] for m in ticks_ms}
    try:
        for _ in range(rounds):
            for mode in ("off", "inline", "child"):
                loop = _tick_loop(mode, nvml, clock, services, hook_ms)
                this_round, cpu = _timed_ticks(loop, clock, ticks, pause_s)
                cpu_ms[mode].append(cpu)
                if mode == "child":
                    time.sleep(settle_s)  # let the child finish the round's ticks before the next mode
                ticks_ms[mode] += this_round
                rounds_ms[mode].append(statistics.median(this_round))
        time.sleep(1.0)
        alive = services["child"].alive
        got_state = bool(services["child"].samples())
    finally:
        services["child"].close()
    out: dict[str, float] = {"child_alive": float(alive), "child_state": float(got_state)}
    for m in ticks_ms:
        out[f"tick_{m}_ms"] = statistics.median(ticks_ms[m])
        out[f"cpu_{m}_ms"] = statistics.median(cpu_ms[m])
        for r, v in enumerate(rounds_ms[m]):
            out[f"tick_{m}_round{r}_ms"] = v
    for m in hook_ms:
        out[f"observe_{m}_ms"] = statistics.median(hook_ms[m])
    return out


def main() -> int:
    """Run all three measurements and print them."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--ticks", type=positive_int, default=600, help="daemon ticks per mode and round")
    ap.add_argument("--history-days", type=positive_float, default=3.0, help="days of 60 s history each Prophet refit fits")
    ap.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds of the three tick modes")
    ap.add_argument("--no-refit", action="store_true", help="skip the Prophet refit measurement")
    args = ap.parse_args()
    tick = tick_cost(args.ticks, args.rounds)
    print("tick:", {k: round(v, 3) for k, v in tick.items()})
    print(f"detector: {detector_cost():.2f} us/sample")
    if args.no_refit:
        return 0
    refit = refit_cost(args.history_days)
    print("refit:", {k: round(v, 2) for k, v in refit.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
