"""Train and evaluate the simulated-node policy on held-out workloads.

Usage:
  python bench/tuner_sim_eval.py train OUT_DIR TIMESTEPS
  python bench/tuner_sim_eval.py eval POLICY.npz
"eval" runs each held-out workload on a100, v100 and a40 (1 and 2 GPUs), once with the
default configuration held and once under the policy, and reports the ratios over the last
half of the episode (energy per effective sample, throughput in samples/s, goodput).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gputuned.tuner.policy_numpy import NumpyPolicy
from gputuned.tuner.sim_env import HELD_OUT_WORKLOADS, SimNodeEnv

STAY = 4  # power move 0, batch move 0


def episode(env: SimNodeEnv, options: dict, policy: NumpyPolicy | None, seed: int) -> dict[str, float]:
    obs, _ = env.reset(seed=seed, options=options)
    rows = []
    done = False
    while not done:
        action = STAY if policy is None else policy(obs)
        obs, _, done, _, info = env.step(action)
        rows.append(info)
    tail = rows[len(rows) // 2 :]
    return {k: float(np.mean([r[k] for r in tail])) for k in tail[0]}


def evaluate(policy_path: Path) -> dict:
    policy = NumpyPolicy.load(policy_path)
    env = SimNodeEnv(workloads=HELD_OUT_WORKLOADS)
    out: dict = {"cases": []}
    for objective in ("energy_slowdown", "throughput"):
        for wl in HELD_OUT_WORKLOADS:
            for prof in ("a100", "v100", "a40"):
                for gpus in (1, 2):
                    opts = {"workload": wl, "profile": prof, "objective": objective, "gpus": gpus}
                    base = episode(env, opts, None, seed=7)
                    tuned = episode(env, opts, policy, seed=7)
                    out["cases"].append({**opts, "default": base, "gputuned": tuned})
    for objective in ("energy_slowdown", "throughput"):
        cases = [c for c in out["cases"] if c["objective"] == objective]
        out[objective] = {
            key: float(np.median([c["gputuned"][key] / c["default"][key] for c in cases]))
            for key in ("energy_per_sample_ratio", "throughput_ratio", "goodput_ratio")
        }
    return out


def main() -> int:
    if len(sys.argv) >= 4 and sys.argv[1] == "train":
        from gputuned.tuner.train import train_sim

        train_sim(int(sys.argv[3]), Path(sys.argv[2]), progress_bar=False)
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "eval":
        doc = evaluate(Path(sys.argv[2]))
        print(json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
