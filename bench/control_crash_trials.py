"""Kill a real `gputuned run` (SIGKILL) at random moments while it rewrites its state file, many
times; after each kill the state file must be absent or complete and `gputuned restore` must bring
every simulated GPU back to its originals. Then kill a process that only rewrites a 64-GPU state
file, at random moments (many land inside a write): the file must parse complete every time.

    .venv/bin/python bench/control_crash_trials.py [--trials 50] [--writer-trials 300]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import BenchParser, nonnegative_int, positive_int

from gputuned.daemon.record.trials import crash_trial, writer_kill_trial


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--trials", type=nonnegative_int, default=50,
                    help="daemons to SIGKILL while they rewrite their state file (seeds 0..N-1)")
    ap.add_argument("--gpus", type=positive_int, default=4, help="simulated GPUs of each daemon")
    ap.add_argument("--writer-trials", type=nonnegative_int, default=300,
                    help="bare 64-GPU state-file writers to SIGKILL at random moments")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gputuned-crash-"))
    results = []
    t0 = time.monotonic()
    try:
        for seed in range(args.trials):
            results.append(crash_trial(root / f"t{seed}", seed, gpus=args.gpus))
        writers = [writer_kill_trial(root / f"w{seed}", seed) for seed in range(args.writer_trials)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    states = Counter(r["state_file"] if not r["state_file"].startswith("corrupt") else "corrupt" for r in results)
    changes = [r["changes_before_kill"] for r in results]
    summary = {
        "trials": len(results), "seconds": round(time.monotonic() - t0, 1),
        "state_file_after_kill": dict(states),
        "restored": sum(r["restored"] for r in results),
        "changes_before_kill_median": statistics.median(changes) if changes else None,
        "changes_before_kill_max": max(changes) if changes else None,
        "failures": [r for r in results if not r["restored"] or r["state_file"] not in ("absent", "complete")],
        "writer_trials": len(writers),
        "writer_killed_mid_write": sum(w["killed_mid_write"] for w in writers),
        "writer_state_file_complete": sum(w["complete"] for w in writers),
    }
    summary["failures"] += [w for w in writers if not w["complete"]]
    print(json.dumps(summary, indent=1))
    ok = not summary["failures"]
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
