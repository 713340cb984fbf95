"""Train the shipped policy (all GPUs) and leave-one-GPU-out policies on the Zeus traces.

Usage: python bench/tuner_train_loo.py OUT_DIR TIMESTEPS [all|a40|rtx6000|p100 ...] [--seed N]
"all" trains on every GPU (the shipped policy); a GPU name trains on the other GPUs only.
Each training GPU also contributes SYNTH synthetic GPUs warped from it (tuner/zeus/synth.py,
seeds 500 and up, distinct from the dev-check seeds), never from the held-out GPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from _common import BenchParser, positive_int

from gputuned.tuner.train import train
from gputuned.tuner.zeus.synth import synthetic_gpu
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, available_gpus, load_gpu

SYNTH = 3


def main() -> int:
    gpus = available_gpus(PACKAGED_TRACES)
    ap = BenchParser(description=__doc__)
    ap.add_argument("out", type=Path, metavar="OUT_DIR", help="writes OUT_DIR/heldout-<name>/ for each run")
    ap.add_argument("steps", type=positive_int, metavar="TIMESTEPS", help="PPO timesteps of each run")
    ap.add_argument("which", nargs="*", choices=["all", *gpus], metavar="GPU",
                    help=f"all (every GPU: the shipped policy) or a GPU to hold out ({', '.join(gpus)}); default all")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    args = ap.parse_args()
    out, steps, seed, which = args.out, args.steps, args.seed, args.which or ["all"]
    logging.basicConfig(level=logging.INFO)
    for held in which:
        train_gpus = [g for g in gpus if g != held]
        traces = []
        for i, g in enumerate(train_gpus):
            base = load_gpu(PACKAGED_TRACES, g, substitute_default=True)
            traces += list(base.values())
            for k in range(SYNTH):
                traces += list(synthetic_gpu(base, 500 + 10 * i + k, f"{g}-synth{k}").values())
        t0 = time.process_time()
        train(traces, steps, out / f"heldout-{held}", seed=seed, progress_bar=False)
        print(f"{held}: trained on {train_gpus} (+{SYNTH} synthetic each) for {steps} steps, {time.process_time() - t0:.0f} s CPU", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
