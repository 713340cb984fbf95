"""Train the shipped policy (all GPUs) and leave-one-GPU-out policies on the Zeus traces.

Usage: python bench/tuner_train_loo.py OUT_DIR TIMESTEPS [all|a40|rtx6000|p100 ...]
"all" trains on every GPU (the shipped policy); a GPU name trains on the other GPUs only.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from gputuned.tuner.train import train
from gputuned.tuner.zeus_traces import PACKAGED_TRACES, available_gpus, load_gpu


def main() -> int:
    out, steps, which = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] or ["all"]
    logging.basicConfig(level=logging.INFO)
    gpus = available_gpus(PACKAGED_TRACES)
    for held in which:
        train_gpus = [g for g in gpus if g != held]
        traces = [t for g in train_gpus for t in load_gpu(PACKAGED_TRACES, g, substitute_default=True).values()]
        t0 = time.process_time()
        train(traces, steps, out / f"heldout-{held}", progress_bar=False)
        print(f"{held}: trained on {train_gpus} for {steps} steps, {time.process_time() - t0:.0f} s CPU", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
