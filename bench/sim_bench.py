"""Benchmark: CPU seconds to simulate one hour of an 8-GPU node at 1 s resolution.

Usage: .venv/bin/python bench/sim_bench.py [--profile a100] [--gpus 8] [--seconds 3600] [--repeats 3]

Prints CPU seconds for (a) the physics backend alone (one sync per simulated second) and
(b) the same plus a full GPU-collector scrape of every GPU through the simulated NVML each
second (the daemon's real read path), and the median of 3 runs of each.
"""

from __future__ import annotations

import statistics
import time

from _common import BenchParser, gpu_profile, positive_int

from gputuned.collectors.gpu import GPUCollector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.state import VirtualClock


def run(profile: str, gpus: int, seconds: int, scrape: bool) -> float:
    clock = VirtualClock()
    backend = build_sim_node(profile, gpus, "imagenet-resnet50", "straggler", clock, seed=0)
    collector = None
    if scrape:
        sim_nvml.attach(backend)
        nvml, _ = open_nvml("sim", sim_nvml)
        collector = GPUCollector(open_gpus(nvml), backend="sim")
    t0 = time.process_time()
    for _ in range(seconds):
        clock.advance(1.0)
        backend.sync()
        if collector is not None:
            collector.collect()
    cpu = time.process_time() - t0
    sim_nvml.attach(None)
    return cpu


def main() -> None:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--profile", type=gpu_profile, default="a100", help="simulated GPU model")
    ap.add_argument("--gpus", type=positive_int, default=8, help="simulated GPUs of the node")
    ap.add_argument("--seconds", type=positive_int, default=3600, help="simulated seconds per run")
    ap.add_argument("--repeats", type=positive_int, default=3, help="runs of each mode (the median is printed)")
    args = ap.parse_args()
    for scrape in (False, True):
        runs = [run(args.profile, args.gpus, args.seconds, scrape) for _ in range(args.repeats)]
        what = "physics + GPU collector scrape each second" if scrape else "physics only"
        print(f"{args.gpus} x {args.profile}, {args.seconds} simulated s at 1 s, {what}: "
              f"median {statistics.median(runs):.2f} CPU s (runs: {', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
