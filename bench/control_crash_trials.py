"""Kill a real `gputuned run` (SIGKILL) at random moments while it rewrites its state file, many
times; after each kill the state file must be absent or complete and `gputuned restore` must bring
every simulated GPU back to its originals.

    .venv/bin/python bench/control_crash_trials.py [--trials 50]
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

from runtime_kit import crash_trial  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--gpus", type=int, default=4)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gputuned-crash-"))
    results = []
    t0 = time.monotonic()
    try:
        for seed in range(args.trials):
            results.append(crash_trial(root / f"t{seed}", seed, gpus=args.gpus))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    states = Counter(r["state_file"] if not r["state_file"].startswith("corrupt") else "corrupt" for r in results)
    changes = [r["changes_before_kill"] for r in results]
    summary = {
        "trials": len(results), "seconds": round(time.monotonic() - t0, 1),
        "state_file_after_kill": dict(states),
        "restored": sum(r["restored"] for r in results),
        "changes_before_kill_median": statistics.median(changes), "changes_before_kill_max": max(changes),
        "failures": [r for r in results if not r["restored"] or r["state_file"] not in ("absent", "complete")],
    }
    print(json.dumps(summary, indent=1))
    ok = not summary["failures"]
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
