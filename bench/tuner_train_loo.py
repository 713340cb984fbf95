"""Train the shipped policy (all GPUs) and leave-one-GPU-out policies on the Zeus traces.

Usage: python bench/tuner_train_loo.py OUT_DIR TIMESTEPS [all|a40|rtx6000|p100 ...] [--seed N]
"all" trains on every GPU (the shipped policy); a GPU name trains on the other GPUs only.
Each training GPU also contributes SYNTH synthetic GPUs warped from it (tuner/zeus/synth.py,
seeds 500 and up, distinct from the dev-check seeds), never from the held-out GPU.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from gputuned.tuner.train import train
from gputuned.tuner.zeus.synth import synthetic_gpu
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, available_gpus, load_gpu

SYNTH = 3


def main() -> int:
    args = sys.argv[1:]
    seed = 0
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i : i + 2]
    out, steps, which = Path(args[0]), int(args[1]), args[2:] or ["all"]
    logging.basicConfig(level=logging.INFO)
    gpus = available_gpus(PACKAGED_TRACES)
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
