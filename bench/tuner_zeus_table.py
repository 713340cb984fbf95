"""Markdown tables of the Zeus-trace bench for docs/benchmarks.md (shipped and leave-one-GPU-out policies).

Usage: python bench/tuner_zeus_table.py [--seeds N] [--eta 0.5] [--loo DIR]
DIR holds heldout-<gpu>/policy_zeus.npz from bench/tuner_train_loo.py.
"""

from __future__ import annotations

from pathlib import Path

from _common import BenchParser, positive_int, unit_interval

from gputuned.tuner.decision.policy_numpy import NumpyPolicy
from gputuned.tuner.zeus.bench import bench_gpu, savings
from gputuned.tuner.zeus.traces import PACKAGED_TRACES

GPUS = ("a40", "rtx6000", "p100")


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--seeds", type=positive_int, default=5, help="bench seeds per GPU")
    ap.add_argument("--eta", type=unit_interval, default=0.5, help="cost weight of energy against time (Zeus's eta knob)")
    ap.add_argument("--loo", type=Path, default=None,
                    help="folder of heldout-<gpu>/policy_zeus.npz (bench/tuner_train_loo.py) for the held-out columns")
    args = ap.parse_args()
    missing = [str(args.loo / f"heldout-{g}" / "policy_zeus.npz") for g in GPUS
               if args.loo is not None and not (args.loo / f"heldout-{g}" / "policy_zeus.npz").is_file()]
    if missing:
        ap.error(f"--loo: no policy file {', '.join(missing)}")
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
