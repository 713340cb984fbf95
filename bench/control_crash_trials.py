"""Kill a real `gputuned run` (SIGKILL) at random moments while it rewrites its state file, many
times; after each kill the state file must be absent or complete and `gputuned restore` must bring
every simulated GPU back to its originals. Then kill a process that only rewrites a 64-GPU state
file, at random moments (many land inside a write): the file must parse complete every time.

    .venv/bin/python bench/control_crash_trials.py [--trials 50] [--writer-trials 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runtime_kit import crash_trial, writer_kill_trial  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--writer-trials", type=int, default=300)
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
