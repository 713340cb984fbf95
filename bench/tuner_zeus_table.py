"""Markdown tables of the Zeus-trace bench for docs/benchmarks.md (shipped and leave-one-GPU-out policies).

Usage: python bench/tuner_zeus_table.py [--seeds N] [--loo DIR]
DIR holds heldout-<gpu>/policy_zeus.npz from bench/tuner_train_loo.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gputuned.tuner.decision.policy_numpy import NumpyPolicy
from gputuned.tuner.zeus.bench import bench_gpu, savings
from gputuned.tuner.zeus.traces import PACKAGED_TRACES

GPUS = ("a40", "rtx6000", "p100")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--eta", type=float, default=0.5)
    ap.add_argument("--loo", type=Path, default=None)
    args = ap.parse_args()
    shipped = NumpyPolicy.load()
    print("| GPU | job | policy | energy_j | time_s | cost |")
    print("|---|---|---|---:|---:|---:|")
    summary = []
    for gpu in GPUS:
        doc = bench_gpu(PACKAGED_TRACES, gpu, args.eta, args.seeds, chooser=shipped)
        for r in doc["results"]:
            print(f"| {gpu} | {r['job']} | {r['policy']} | {r['energy_j']:.4g} | {r['time_s']:.4g} | {r['cost']:.4g} |")
        s = savings(doc)
        row = [gpu, s["oracle"], s["zeus"], s["zeus"] / s["oracle"], s["gputuned"], s["gputuned"] / s["oracle"]]
        if args.loo is not None:
            held = NumpyPolicy.load(args.loo / f"heldout-{gpu}" / "policy_zeus.npz")
            s2 = savings(bench_gpu(PACKAGED_TRACES, gpu, args.eta, args.seeds, chooser=held, policies=("default", "gputuned")))
            row += [s2["gputuned"], s2["gputuned"] / s["oracle"]]
        summary.append(row)
    print()
    head = "| GPU | oracle saving | zeus saving | zeus / oracle | gputuned saving | gputuned / oracle |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if args.loo is not None:
        head += " gputuned held-out-GPU saving | held-out / oracle |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for row in summary:
        print("| " + row[0] + " | " + " | ".join(f"{v:.1%}" if i in (0, 1, 3, 5) else f"{v:.2f}" for i, v in enumerate(row[1:], 0)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
