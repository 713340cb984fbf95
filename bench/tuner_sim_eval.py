"""Train the simulated-node policy, and compare it with the climber and the default on SimNodeEnv.

Usage:
  python bench/tuner_sim_eval.py train OUT_DIR TIMESTEPS [CLONE_STEPS]
  python bench/tuner_sim_eval.py eval POLICY.npz [POLICY2.npz ...] [--horizon N] [--noise X] [--seeds N] [--json]
                                     [--held-out-only] [--no-best-fixed]
  python bench/tuner_sim_eval.py export CHECKPOINT.zip OUT.npz
  python bench/tuner_sim_eval.py inference [POLICY.npz] [N]
  python bench/tuner_sim_eval.py agreement POLICY.npz [--episodes N]
  python bench/tuner_sim_eval.py clocks WORKLOAD [WORKLOAD ...]
  python bench/tuner_sim_eval.py batches WORKLOAD [WORKLOAD ...]
  python bench/tuner_sim_eval.py resume CHECKPOINT.zip OUT_DIR TIMESTEPS [LEARNING_RATE] [N_EPOCHS]

"eval" runs every workload (training and held-out) on a100 x4 (the headline's node), and the
held-out ones also on v100 x1 and a40 x2, under ``energy_slowdown`` (3%) and ``throughput``, with
the default configuration held, the climber, and each policy, on the same node seeds. Figures
are over the whole episode, probes and rollbacks included: energy to target (energy per effective
sample) and time to target (1 / goodput), each over the reference interval's. Each case also
gets the best fixed setting in hindsight (``best_fixed``): what a tuner that knew the node could
reach without ever probing, so a goal it cannot meet is out of reach for any chooser.
``--noise X`` adds measurement noise (relative standard deviation per interval, independently on
energy, samples and goodput); ``--seeds N`` runs each case on N node seeds (11, 12, ...), and
medians and goal counts are over every (case, seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import (
    BenchParser,
    existing_file,
    fraction,
    nonnegative_int,
    positive_float,
    positive_int,
    progress,
    workload,
)

from gputuned.tuner.decision.moves import STAY
from gputuned.tuner.decision.policy_numpy import NumpyPolicy
from gputuned.tuner.sim_env import HELD_OUT_WORKLOADS, TRAINING_WORKLOADS, SimNodeEnv


def episode(env: SimNodeEnv, options: dict[str, Any], chooser: Any, seed: int) -> dict[str, float]:
    """One episode; ``chooser`` is None (default held), "climber" or a policy."""
    obs, _ = env.reset(seed=seed, options=options)
    energy = eff = 0.0
    n = 0
    done = False
    info: dict[str, Any] = {}
    while not done:
        action = STAY if chooser is None else env.suggested if chooser == "climber" else chooser(obs)
        obs, _, term, trunc, info = env.step(action)
        energy += info["energy_j"]
        eff += info["effective_samples"]
        n += info["intervals"]
        done = term or trunc
    return {"energy": energy / max(eff, 1e-9) / info["reference_eps"],
            "time": info["reference_goodput"] * n * env.interval_s / max(eff, 1e-9)}


def best_fixed(env: SimNodeEnv, options: dict[str, Any], seed: int) -> dict[str, float]:
    """The best fixed setting in hindsight on the episode's node: every batch size the tuner can
    reach (b0 x 2^k, -4 <= k <= 6) at every limit of its power grid (``measure_fixed``); for
    ``energy_slowdown`` the least energy to target with time to target within the budget, for
    ``throughput`` the shortest time to target. Ratios to the default's."""
    from gputuned.collectors.sim.node import measure_fixed

    env.reset(seed=seed, options=options)  # the episode's node: profile, GPUs, seed, default batch
    p = env.profile
    node = (env.profile_name, len(env.backend.devices), env.workload, env.node_seed)
    base = measure_fixed(*node, batch_size=env.b0)
    assert base is not None
    step = 0.05 * (p.power_limit_max_w - p.power_limit_min_w)
    limits = [p.power_limit_max_w - k * step for k in range(21)]
    best: tuple[float, float] | None = None
    for k in range(-4, 7):
        for limit in limits if options["objective"] != "throughput" else [p.power_limit_max_w]:
            r = measure_fixed(*node, batch_size=int(env.b0 * 2.0 ** k), power_limit_w=limit)
            if r is None:
                continue
            e, t = r[0] / base[0], r[1] / base[1]
            if options["objective"] == "throughput":
                better = best is None or t < best[1]
            else:
                better = t <= 1.0 + options["max_slowdown"] and (best is None or e < best[0])
            if better:
                best = (e, t)
    assert best is not None
    return {"energy": best[0], "time": best[1]}


def cases(held_out_only: bool = False) -> list[dict[str, Any]]:
    out = []
    for objective in ("energy_slowdown", "throughput"):
        for wl in HELD_OUT_WORKLOADS if held_out_only else TRAINING_WORKLOADS + HELD_OUT_WORKLOADS:
            out.append({"workload": wl, "profile": "a100", "gpus": 4, "objective": objective})
        for wl in HELD_OUT_WORKLOADS:
            for prof, g in (("v100", 1), ("a40", 2)):
                out.append({"workload": wl, "profile": prof, "gpus": g, "objective": objective})
    return out


def evaluate(paths: list[Path], horizon: int, noise: float = 0.0, seeds: int = 1, held_out_only: bool = False,
             with_best: bool = True) -> dict[str, Any]:
    choosers: dict[str, Any] = {"climber": "climber"} | {p.stem if len(paths) == 1 else str(p): NumpyPolicy.load(p)
                                                           for p in paths}
    env = SimNodeEnv(horizon=horizon, workloads=TRAINING_WORKLOADS + HELD_OUT_WORKLOADS)
    rows = []
    for c in progress(cases(held_out_only), "eval cases"):
        opts = c | {"noise": noise} | ({"max_slowdown": 0.03} if c["objective"] != "throughput" else {})
        for seed in range(11, 11 + seeds):
            base = episode(env, opts, None, seed=seed)
            row = dict(c) | {"seed": seed, "best_fixed": best_fixed(env, opts, seed=seed) if with_best else
                             {"energy": 1.0, "time": 1.0}}
            for name, ch in choosers.items():
                r = episode(env, opts, ch, seed=seed)
                row[name] = {"energy": r["energy"] / base["energy"], "time": r["time"] / base["time"]}
            rows.append(row)
    summary: dict[str, Any] = {}
    for objective in ("energy_slowdown", "throughput"):
        for group, wls in (("trained", TRAINING_WORKLOADS), ("held_out", HELD_OUT_WORKLOADS)):
            sel = [r for r in rows if r["objective"] == objective and r["workload"] in wls]
            if not sel:
                continue
            for name in ["best_fixed", *choosers]:
                e = statistics.median(r[name]["energy"] for r in sel)
                t = statistics.median(r[name]["time"] for r in sel)
                if objective == "throughput":
                    met = sum(r[name]["time"] < 1.0 for r in sel)
                    saving = [(1 - r[name]["time"], 1 - r["best_fixed"]["time"]) for r in sel]
                else:
                    met = sum(r[name]["energy"] <= 0.70 and r[name]["time"] <= 1.03 for r in sel)
                    saving = [(1 - r[name]["energy"], 1 - r["best_fixed"]["energy"]) for r in sel]
                # share of the best fixed setting's saving, over the cases where it saves >= 2%
                share = [got / top for got, top in saving if top >= 0.02]
                summary[f"{objective}/{group}/{name}"] = {
                    "energy": round(e, 3), "time": round(t, 3), "goal_met": f"{met} of {len(sel)}",
                    "share_of_best_fixed": round(statistics.median(share), 3) if share else None}
    return {"summary": summary, "rows": rows}


def _fixed(wl: str, mult: float, limit_w: float, clock_mhz: int | None) -> tuple[float, float] | None:
    """Energy and seconds per target of a fixed (batch multiple, power limit, locked SM clock) on a100 x4."""
    from gputuned.collectors.sim.node import measure_fixed
    from gputuned.collectors.sim.workload import load_workload

    b0 = load_workload(wl).default_batch_size
    return measure_fixed("a100", 4, wl, 0, batch_size=int(b0 * mult), power_limit_w=limit_w, sm_clock_mhz=clock_mhz)


def clocks(workloads: list[str]) -> int:
    """Best energy to target within 3% of the default's time: power limits alone vs locked SM clocks."""
    from gputuned.collectors.sim.state import load_profile

    prof = load_profile("a100")
    for wl in workloads:
        base = _fixed(wl, 1.0, prof.power_limit_default_w, None)
        assert base is not None
        best: dict[str, tuple[float, float, str]] = {}
        for mult in (1.0, 0.5, 2.0, 0.25, 4.0):
            limits = range(int(prof.power_limit_max_w), int(prof.power_limit_min_w) - 1, -15)
            for limit in limits:
                for clk in [None, *range(prof.sm_clock_max_mhz, prof.sm_clock_min_mhz, -105)]:
                    r = _fixed(wl, mult, limit, clk)
                    if r is None or r[1] > base[1] * 1.03:
                        continue
                    key = "locked clock" if clk else "power limit"
                    if key not in best or r[0] < best[key][0]:
                        best[key] = (r[0], r[1], f"batch x{mult:g}, {limit} W" + (f", {clk} MHz" if clk else ""))
        for key, (e, t, what) in best.items():
            print(f"{wl}: best with {key}: energy {e / base[0]:.3f}, time {t / base[1]:.3f} ({what})")
    return 0


def batches(workloads: list[str]) -> int:
    """Time to target of batch x1/4..x4 at the maximum power limit (a100 x4) over the default's."""
    from gputuned.collectors.sim.state import load_profile

    top = load_profile("a100").power_limit_max_w
    for wl in workloads:
        base = _fixed(wl, 1.0, top, None)
        assert base is not None
        cells = []
        for mult in (0.25, 0.5, 1.0, 2.0, 4.0):
            r = _fixed(wl, mult, top, None)
            cells.append(f"x{mult:g} {r[1] / base[1]:.3f}" if r else f"x{mult:g} -")
        print(f"{wl}: time to target at {top:.0f} W: " + ", ".join(cells))
    return 0


def agreement(path: Path, episodes: int = 20) -> int:
    """How often the policy's move differs from the climber's, on states the climber visits
    (SimNodeEnv's own randomisation, 60 decisions per episode, seeds 1000 on)."""
    import logging

    logging.disable(logging.WARNING)
    policy = NumpyPolicy.load(path)
    env = SimNodeEnv(horizon=60)
    states = differ = 0
    for k in range(episodes):
        obs, _ = env.reset(seed=1000 + k)
        for _ in range(60):
            states += 1
            differ += int(policy(obs)) != env.suggested
            obs, *_ = env.step(env.suggested)
    print(f"{path}: its move differs from the climber's on {differ} of {states} states")
    return 0


def inference(path: Path | None, n: int) -> int:
    """Time one live decision (climber adviser + numpy MLP) over observations from real episodes."""
    import logging
    import time

    import numpy as np
    import psutil

    from gputuned.tuner.decision.choosers import make_chooser
    from gputuned.tuner.decision.observe import BASE_OBS_DIM

    logging.disable(logging.WARNING)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    chooser = make_chooser("learned", path, "energy_slowdown", 0.03)
    rss_kib = (proc.memory_info().rss - rss0) / 1024
    env = SimNodeEnv(horizon=50)
    obs_l = []
    for k in range(4):
        o, _ = env.reset(seed=k)
        for _ in range(50):
            obs_l.append(o[:BASE_OBS_DIM].copy())
            o, *_ = env.step(env.suggested)
    times = []
    for i in range(n):
        t = time.perf_counter()
        chooser(obs_l[i % len(obs_l)])
        times.append(time.perf_counter() - t)
    us = np.asarray(times) * 1e6
    print(f"{n} decisions: median {np.median(us):.1f} us, p99 {np.percentile(us, 99):.1f} us, "
          f"RSS added by loading the policy {rss_kib:.0f} KiB, torch imported: {'torch' in sys.modules}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from gputuned.tuner.train import train_sim

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("gputuned.tuner.train").setLevel(logging.INFO)
    logging.getLogger("gputuned.tuner.decision.guard").setLevel(logging.ERROR)
    train_sim(args.timesteps, args.out_dir, progress_bar=False, clone_steps=args.clone_steps)
    return 0


def _resume(args: argparse.Namespace) -> int:
    from gputuned.tuner.train import resume_sim

    over: dict[str, float | int] = {}
    if args.learning_rate is not None:
        over["learning_rate"] = args.learning_rate
    if args.n_epochs is not None:
        over["n_epochs"] = args.n_epochs
    resume_sim(args.checkpoint, args.timesteps, args.out_dir, **over)
    return 0


def _export(args: argparse.Namespace) -> int:
    from stable_baselines3 import PPO

    from gputuned.tuner.decision.policy_numpy import from_sb3

    from_sb3(PPO.load(str(args.checkpoint), device="cpu")).save(args.out)
    return 0


def _eval(args: argparse.Namespace) -> int:
    doc = evaluate(args.policies, args.horizon, args.noise, args.seeds, args.held_out_only, not args.no_best_fixed)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for k, v in doc["summary"].items():
            print(f"{k:45s} energy {v['energy']:.3f} time {v['time']:.3f} goal {v['goal_met']}, "
                  f"median share of the best fixed setting's saving {v['share_of_best_fixed']}")
    return 0


def parser() -> BenchParser:
    """The command line: one subcommand per study, every argument with its help."""
    ap = BenchParser(description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="clone the climber, then train PPO on SimNodeEnv")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for checkpoints and the exported policy")
    p.add_argument("timesteps", type=positive_int, metavar="TIMESTEPS", help="PPO timesteps")
    p.add_argument("clone_steps", nargs="?", type=nonnegative_int, default=12_000, metavar="CLONE_STEPS",
                   help="climber decisions to clone before PPO")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="default, climber and each policy on every case (see above)")
    p.add_argument("policies", nargs="+", type=existing_file, metavar="POLICY.npz", help="numpy policy files")
    p.add_argument("--horizon", type=positive_int, default=90, help="decisions per episode")
    p.add_argument("--noise", type=fraction, default=0.0, help="relative measurement noise per interval")
    p.add_argument("--seeds", type=positive_int, default=1, help="node seeds per case (11, 12, ...)")
    p.add_argument("--json", action="store_true", help="print every case as JSON instead of the summary")
    p.add_argument("--held-out-only", action="store_true", help="only the held-out workloads' cases")
    p.add_argument("--no-best-fixed", action="store_true", help="skip the best fixed setting in hindsight (its grid is "
                   "the costly part); its figures then read 1.0")
    p.set_defaults(func=_eval)
    p = sub.add_parser("export", help="a stable-baselines3 checkpoint to a numpy policy file")
    p.add_argument("checkpoint", type=existing_file, metavar="CHECKPOINT.zip", help="PPO checkpoint")
    p.add_argument("out", type=Path, metavar="OUT.npz", help="numpy policy file to write")
    p.set_defaults(func=_export)
    p = sub.add_parser("inference", help="time one live decision (climber adviser + numpy MLP)")
    p.add_argument("policy", nargs="?", type=existing_file, metavar="POLICY.npz", help="numpy policy (default: the shipped one)")
    p.add_argument("n", nargs="?", type=positive_int, default=20_000, metavar="N", help="decisions to time")
    p.set_defaults(func=lambda a: inference(a.policy, a.n))
    p = sub.add_parser("agreement", help="how often the policy's move differs from the climber's")
    p.add_argument("policy", type=existing_file, metavar="POLICY.npz", help="numpy policy file")
    p.add_argument("--episodes", type=positive_int, default=20, help="episodes of 60 decisions (seeds 1000 on)")
    p.set_defaults(func=lambda a: agreement(a.policy, a.episodes))
    for name, func, what in (("clocks", clocks, "best energy to target: power limits alone vs locked SM clocks"),
                             ("batches", batches, "time to target of batch x1/4..x4 at the maximum power limit")):
        p = sub.add_parser(name, help=what)
        p.add_argument("workloads", nargs="+", type=workload, metavar="WORKLOAD", help="simulated workloads")
        p.set_defaults(func=lambda a, f=func: f(a.workloads))
    p = sub.add_parser("resume", help="continue PPO training from a checkpoint")
    p.add_argument("checkpoint", type=existing_file, metavar="CHECKPOINT.zip", help="PPO checkpoint")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for checkpoints and the exported policy")
    p.add_argument("timesteps", type=positive_int, metavar="TIMESTEPS", help="further PPO timesteps")
    p.add_argument("learning_rate", nargs="?", type=positive_float, metavar="LEARNING_RATE", help="new learning rate")
    p.add_argument("n_epochs", nargs="?", type=positive_int, metavar="N_EPOCHS", help="new epochs per PPO update")
    p.set_defaults(func=_resume)
    return ap


def main() -> int:
    args = parser().parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
