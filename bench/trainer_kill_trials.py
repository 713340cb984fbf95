"""Kill -9 trials: a rank dies at a random point (often mid-checkpoint), torchrun restarts, the run resumes.

    .venv/bin/python bench/trainer_kill_trials.py [--trials 20] [--seed 0] [--out runs/kill_trials.json]

Each trial trains the digits example on 2 gloo ranks with a checkpoint every 10 steps and
kills one rank with SIGKILL in the first attempt: either half-way through writing a checkpoint
(rank 0, the writer) or right after a random step (random rank). torchrun restarts the workers;
they resume from the newest checkpoint that verifies. A trial passes when the restarted run
resumed from a complete checkpoint, no corrupt checkpoint was loaded (every loaded file passed
its SHA-256 check), and its final test loss is within 1e-3 (relative) of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BenchParser, free_port, nonnegative_int

STEPS = 92  # 4 epochs of the digits example at batch 64
EVERY = 10


def run(tmp: Path, tag: str, env: dict[str, str], restarts: int) -> tuple[dict, str]:
    """One torchrun of the resume scenario; (rank 0 result, stderr)."""
    cfg = tmp / f"{tag}.toml"
    cfg.write_text(f'[train]\nepochs = 4\n[checkpoint]\ndir = "{tmp / tag}"\nevery_steps = {EVERY}\n')
    out = tmp / f"{tag}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "--max-restarts", str(restarts), "-m", "gputuned.trainer_plugin.scenarios",
           "resume", str(out), str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "GPUTUNED_LOG": "INFO", **env})
    if proc.returncode:
        return {"failed": proc.returncode}, proc.stderr
    return json.loads(Path(f"{out}.rank0").read_text()), proc.stderr


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--trials", type=nonnegative_int, default=20, help="runs with one rank killed (SIGKILL)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points and victims")
    ap.add_argument("--out", default="runs/kill_trials.json", help="where to write the results as JSON")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ref, _ = run(tmp, "ref", {}, 0)
        trials = []
        for i in range(args.trials):
            if rng.random() < 0.5:
                step = rng.randrange(EVERY, STEPS - 1, EVERY)
                env = {"GPUTUNED_KILL_AT_STEP": str(step)}
                kind, rank = "mid-checkpoint", 0
            else:
                step, rank = rng.randrange(1, STEPS - 1), rng.randrange(2)
                env = {"GPUTUNED_KILL_AFTER_STEP": str(step), "GPUTUNED_KILL_RANK": str(rank)}
                kind = "after-step"
            res, err = run(tmp, f"t{i}", env, 1)
            corrupt_skipped = err.count("skipping corrupt checkpoint")
            # newest checkpoint that can be complete: the one before a half-written one, or the
            # last one saved before the step the rank died after (saves follow on_step_end)
            newest = step - EVERY if kind == "mid-checkpoint" else (step - 1) // EVERY * EVERY
            resumed = res.get("resumed_from")
            ok = ("failed" not in res and res["attempt"] == 1 and (resumed or 0) <= newest
                  and (resumed is not None or newest == 0) and corrupt_skipped == 0
                  and abs(res["loss"] - ref["loss"]) <= 1e-3 * abs(ref["loss"]))
            expected_from = newest or None
            trials.append({"trial": i, "kind": kind, "rank": rank, "step": step, "resumed_from": res.get("resumed_from"),
                           "expected_from": expected_from, "loss": res.get("loss"),
                           "corrupt_skipped": corrupt_skipped, "ok": ok})
            print(json.dumps(trials[-1]), flush=True)
    passed = sum(t["ok"] for t in trials)
    summary = {"reference_loss": ref["loss"], "reference_accuracy": ref["accuracy"], "trials": len(trials),
               "passed": passed, "mid_checkpoint_kills": sum(t["kind"] == "mid-checkpoint" for t in trials),
               "corrupt_checkpoints_used": 0 if passed == len(trials) else None,
               "max_abs_loss_diff": max((abs(t["loss"] - ref["loss"]) for t in trials if t["loss"] is not None),
                                        default=None),
               "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "trials": trials}, indent=1))
    print(json.dumps(summary))
    return 0 if passed == len(trials) else 1


if __name__ == "__main__":
    raise SystemExit(main())
