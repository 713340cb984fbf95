"""Share of the oracle's saving on synthetic GPUs warped from a measured one (tuner/zeus/synth.py).

Usage: python bench/tuner_unseen_gpu.py --base GPU[,GPU...] [--policy NPZ] [--warps 4] [--seeds 5] [--first-warp 100]
                                        [--eta 0.5]

Each base GPU gives ``--warps`` synthetic GPUs (warp seeds from ``--first-warp``; training uses
seeds 500 and up, so these are never trained on). With a leave-one-GPU-out policy of the base GPU,
neither the base GPU nor anything derived from it was seen in training: an unseen-GPU check.
Prints one markdown row per synthetic GPU and the mean.
"""

from __future__ import annotations

import numpy as np
from _common import (
    BenchParser,
    csv_choices,
    existing_file,
    nonnegative_int,
    positive_int,
    unit_interval,
)

from gputuned.tuner.decision.policy_numpy import NumpyPolicy
from gputuned.tuner.zeus.bench import bench_traces, savings
from gputuned.tuner.zeus.synth import synthetic_gpu
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, available_gpus, load_gpu


def main() -> int:
    gpus = available_gpus(PACKAGED_TRACES)
    ap = BenchParser(description=__doc__)
    ap.add_argument("--base", required=True, type=csv_choices(gpus),
                    help=f"comma-separated measured GPUs to warp ({','.join(gpus)})")
    ap.add_argument("--policy", type=existing_file, default=None, help="numpy policy file (default: the shipped one)")
    ap.add_argument("--warps", type=positive_int, default=4, help="synthetic GPUs per base GPU")
    ap.add_argument("--seeds", type=positive_int, default=5, help="bench seeds per synthetic GPU")
    ap.add_argument("--first-warp", type=nonnegative_int, default=100, help="warp seed of the first synthetic GPU")
    ap.add_argument("--eta", type=unit_interval, default=0.5, help="cost weight of energy against time (Zeus's eta knob)")
    args = ap.parse_args()
    chooser = NumpyPolicy.load(args.policy) if args.policy else NumpyPolicy.load()
    print("| synthetic GPU | oracle saving | zeus / oracle | gputuned / oracle |")
    print("|---|---:|---:|---:|")
    shares: list[tuple[float, float]] = []
    for base in args.base.split(","):
        measured = load_gpu(PACKAGED_TRACES, base)
        for k in range(args.warps):
            name = f"{base}-warp{args.first_warp + k}"
            doc = bench_traces(synthetic_gpu(measured, args.first_warp + k, name), name, args.eta,
                               range(args.seeds), chooser=chooser)
            s = savings(doc)
            shares.append((s["zeus"] / s["oracle"], s["gputuned"] / s["oracle"]))
            print(f"| {name} | {s['oracle']:.1%} | {shares[-1][0]:.2f} | {shares[-1][1]:.2f} |", flush=True)
    z, g = np.mean(shares, axis=0)
    print(f"| mean | | {z:.2f} | {g:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
