"""Train the simulated-node policy, and compare it with the climber and the default on SimNodeEnv.

Usage:
  python bench/tuner_sim_eval.py train OUT_DIR TIMESTEPS [CLONE_STEPS]
  python bench/tuner_sim_eval.py eval POLICY.npz [POLICY2.npz ...] [--horizon N] [--noise X] [--seeds N] [--json]
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

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from gputuned.tuner.decision.choosers import STAY
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


def cases() -> list[dict[str, Any]]:
    out = []
    for objective in ("energy_slowdown", "throughput"):
        for wl in TRAINING_WORKLOADS + HELD_OUT_WORKLOADS:
            out.append({"workload": wl, "profile": "a100", "gpus": 4, "objective": objective})
        for wl in HELD_OUT_WORKLOADS:
            for prof, g in (("v100", 1), ("a40", 2)):
                out.append({"workload": wl, "profile": prof, "gpus": g, "objective": objective})
    return out


def evaluate(paths: list[Path], horizon: int, noise: float = 0.0, seeds: int = 1) -> dict[str, Any]:
    choosers: dict[str, Any] = {"climber": "climber"} | {p.stem if len(paths) == 1 else str(p): NumpyPolicy.load(p)
                                                           for p in paths}
    env = SimNodeEnv(horizon=horizon, workloads=TRAINING_WORKLOADS + HELD_OUT_WORKLOADS)
    rows = []
    for c in cases():
        opts = c | {"noise": noise} | ({"max_slowdown": 0.03} if c["objective"] != "throughput" else {})
        for seed in range(11, 11 + seeds):
            base = episode(env, opts, None, seed=seed)
            row = dict(c) | {"seed": seed, "best_fixed": best_fixed(env, opts, seed=seed)}
            for name, ch in choosers.items():
                r = episode(env, opts, ch, seed=seed)
                row[name] = {"energy": r["energy"] / base["energy"], "time": r["time"] / base["time"]}
            rows.append(row)
    summary: dict[str, Any] = {}
    for objective in ("energy_slowdown", "throughput"):
        for group, wls in (("trained", TRAINING_WORKLOADS), ("held_out", HELD_OUT_WORKLOADS)):
            sel = [r for r in rows if r["objective"] == objective and r["workload"] in wls]
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

    from gputuned.tuner.decision.choosers import BASE_OBS_DIM, make_chooser

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


def _option(args: list[str], name: str, kind: type, default: Any) -> Any:
    """The value after ``name`` in ``args`` as ``kind``, or ``default``; exits naming a bad one."""
    if name not in args:
        return default
    i = args.index(name) + 1
    try:
        return kind(args[i])
    except (IndexError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise SystemExit(f"eval: {name} needs {what}, got {args[i] if i < len(args) else 'nothing'}") from None


def main() -> int:
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "train":
        import logging

        from gputuned.tuner.train import train_sim

        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("gputuned.tuner.train").setLevel(logging.INFO)
        logging.getLogger("gputuned.tuner.decision.guard").setLevel(logging.ERROR)
        train_sim(int(args[2]), Path(args[1]), progress_bar=False, clone_steps=int(args[3]) if len(args) > 3 else 12_000)
        return 0
    if len(args) >= 4 and args[0] == "resume":
        from gputuned.tuner.train import resume_sim

        over: dict[str, float | int] = {}
        if len(args) > 4:
            over["learning_rate"] = float(args[4])
        if len(args) > 5:
            over["n_epochs"] = int(args[5])
        resume_sim(Path(args[1]), int(args[3]), Path(args[2]), **over)
        return 0
    if len(args) >= 2 and args[0] == "batches":
        return batches(args[1:])
    if len(args) >= 2 and args[0] == "clocks":
        return clocks(args[1:])
    if len(args) >= 2 and args[0] == "agreement":
        return agreement(Path(args[1]), _option(args, "--episodes", int, 20))
    if args and args[0] == "inference":
        return inference(Path(args[1]) if len(args) > 1 else None, int(args[2]) if len(args) > 2 else 20000)
    if len(args) == 3 and args[0] == "export":
        from stable_baselines3 import PPO

        from gputuned.tuner.decision.policy_numpy import from_sb3

        from_sb3(PPO.load(args[1], device="cpu")).save(Path(args[2]))
        return 0
    if len(args) >= 2 and args[0] == "eval":
        horizon = _option(args, "--horizon", int, 90)
        noise = _option(args, "--noise", float, 0.0)
        seeds = _option(args, "--seeds", int, 1)
        if horizon < 1 or seeds < 1 or not 0.0 <= noise < 1.0:
            raise SystemExit("eval: --horizon and --seeds must be >= 1, --noise in [0, 1)")
        paths = [Path(a) for a in args[1:] if a.endswith(".npz")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"eval: no policy file {', '.join(missing)}")
        doc = evaluate(paths, horizon, noise, seeds)
        if "--json" in args:
            print(json.dumps(doc, indent=1))
        else:
            for k, v in doc["summary"].items():
                print(f"{k:45s} energy {v['energy']:.3f} time {v['time']:.3f} goal {v['goal_met']}, "
                      f"median share of the best fixed setting's saving {v['share_of_best_fixed']}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
