"""Cost of one tuner decision in the daemon: observation + numpy policy, and RSS added by loading it.

Usage: python bench/tuner_inference.py [N_DECISIONS]
Runs in a fresh process so the RSS figure is the policy's alone (no torch is imported).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import numpy as np
from _common import BenchParser, positive_int


def rss_kib() -> int:
    """Current resident set size in KiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("decisions", nargs="?", type=positive_int, default=20_000, metavar="N_DECISIONS",
                    help="decisions to time")
    n = ap.parse_args().decisions
    from gputuned.tuner.zeus.agent import ArmMemory, apply_move, observe

    before = rss_kib()
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy

    policy = NumpyPolicy.load()
    after = rss_kib()
    mem = ArmMemory(
        sizes=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
        default_batch_size=1024,
        epoch_cost={b: 1.0 + abs(np.log2(b / 256)) for b in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)},
        run_costs={1024: [1.0], 512: [0.7, 0.72], 256: [0.6]},
        norm=1.0,
        recurrences=4,
    )
    rng = np.random.default_rng(0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        apply_move(mem, policy(observe(mem)), rng)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({
        "decisions": n,
        "median_us": statistics.median(times) * 1e6,
        "p99_us": times[int(0.99 * n)] * 1e6,
        "rss_added_by_policy_kib": after - before,
        "torch_imported": "torch" in sys.modules,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
