"""The closed loop's headline: tuner off versus on over the workloads and objectives.

Usage:
  python bench/loop_headline.py [--duration S] [--gpus N] [--profile P] [--jobs J]
                                [--workloads a,b] [--objectives x,y] [--chooser auto|learned|climber]
                                [--policy NPZ] [--compare CHOOSER] [--clocks on|off] [--no-sweep] [--out DIR]
                                [--write-docs]

Each (workload, objective) pair runs ``gputuned experiment``'s code (the same job twice on a
virtual clock, tuner off and on, same seed) in a worker process. The table gives, tuned over
baseline, energy per sample, energy to target (energy per sample corrected by statistical
efficiency: what reaching the target costs) and time to target; the per-objective medians
are checked against the goal (energy: >= 30% less energy to target at <= 3% slowdown;
throughput: faster time to target). ``--write-docs`` puts the table in docs/benchmarks.md,
section "Closed loop (headline)", with the command, machine and date. ``--compare climber`` runs
the same experiments under energy_slowdown and throughput with that chooser too (same seeds, same
run) and adds a table of both choosers side by side. ``--clocks off`` sets ``[tuner] tune_clocks =
false`` (power limits and batch sizes only). The hindsight sweep (``bench/best_fixed.py``) is the
best fixed (batch, power limit, SM-clock lock) setting within the budget; the last column is the
tuner's saving over its saving.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    BenchParser,
    csv_choices,
    gpu_profile,
    positive_float,
    positive_int,
    progress,
    workload_list,
)
from best_fixed import best_fixed, describe, median_or_none, share

REPO = Path(__file__).resolve().parents[1]
TRAINED = ("cifar100-shufflenetv2", "imagenet-resnet50", "librispeech-deepspeech2", "movielens-ncf",
           "sentiment140-bert", "squad-bert")
HELD_OUT = ("vit-b16-imagenet", "gpt2-small-openwebtext", "dlrm-criteo")
OBJECTIVES = ("energy_slowdown", "throughput", "energy", "cost")
SECTION = "## Closed loop (headline)"


def one(args: tuple[str, str, dict[str, Any], str, bool]) -> dict[str, Any]:
    workload, objective, opts, out, with_sweep = args
    if opts.get("chooser") != "auto":
        out = str(Path(out) / opts["chooser"])
    import logging

    logging.disable(logging.WARNING)
    from gputuned.daemon.record.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(workload=workload, objective=objective, **opts)
    t = time.process_time()
    doc = run_experiment(spec, Path(out) / f"{workload}-{objective}")
    doc["cpu_s"] = time.process_time() - t
    if objective == "energy_slowdown" and with_sweep:
        doc["sweep"] = best_fixed(workload=workload, profile=spec.profile, gpus=spec.gpus, seed=spec.seed,
                                  budget=spec.slowdown(), clocks=spec.tune_clocks)
    return doc


def machine() -> str:
    cores = os.cpu_count()
    try:
        osname = subprocess.run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        osname = platform.platform()
    return f"{cores} cores, {osname}, Python {platform.python_version()}, no GPU (simulated node)"


def table(docs: list[dict[str, Any]]) -> list[str]:
    lines = ["| workload | objective | energy/sample on/off | energy to target on/off | time to target on/off | "
             "final power limit, SM clock, batch | actions (rollbacks) | best fixed setting in hindsight: energy, time | "
             "share of its saving |", "|---|---|---|---|---|---|---|---|---|"]
    for d in docs:
        s, r, t = d["spec"], d["ratio"], d.get("tuner") or {}
        wl = s["workload"] + (" (held out)" if s["workload"] in HELD_OUT else "")
        fin = d.get("final", {})
        acts = sum(t.get("actions", {}).values())
        lines.append(f"| {wl} | {s['objective']} | {r['energy_per_sample_j']:.3f} | {r['energy_to_target_j']:.3f} | "
                     f"{r['time_to_target_s']:.3f} | {_limits(fin.get('power_limit_w'))} W, "
                     f"{_limits(fin.get('sm_clock_mhz'))} MHz, {fin.get('batch_size', '-')} | "
                     f"{acts} ({t.get('rollbacks', 0)}) | {describe(d['sweep']) if d.get('sweep') else '-'} | "
                     f"{_share_cell(d)} |")
    return lines


def _limits(w: Any) -> str:
    vals = sorted(set(w)) if isinstance(w, list) else [w]
    return "/".join(f"{v:g}" if isinstance(v, float | int) else "-" for v in vals)


def _share(d: dict[str, Any]) -> float | None:
    sw = d.get("sweep")
    if not sw:
        return None
    got = share(d["ratio"]["energy_to_target_j"], sw["energy_to_target"])
    return 0.0 if got is not None and _over(d) else got


def _over(d: dict[str, Any]) -> bool:
    return bool(d["slowdown"] > (d["spec"]["max_slowdown"] or 0.03) + 1e-9)


def _share_cell(d: dict[str, Any]) -> str:
    if not d.get("sweep"):
        return "-"
    v = _share(d)
    return "-" if v is None else "0 (over budget)" if _over(d) else f"{v:.2f}"


def medians(docs: list[dict[str, Any]]) -> list[str]:
    out = ["| objective | workloads | median energy to target on/off | median time to target on/off | "
           "goal | met in |", "|---|---|---|---|---|---|"]
    for obj in OBJECTIVES:
        ds = [d for d in docs if d["spec"]["objective"] == obj]
        if not ds:
            continue
        e = statistics.median(d["ratio"]["energy_to_target_j"] for d in ds)
        t = statistics.median(d["ratio"]["time_to_target_s"] for d in ds)
        if obj == "energy_slowdown":
            goal, ok = ">= 30% less energy at <= 3% slowdown", [d for d in ds if d["energy_saving"] >= 0.30
                                                                   and d["slowdown"] <= 0.03]
        elif obj == "throughput":
            goal, ok = "faster time to target", [d for d in ds if d["slowdown"] < 0]
        else:
            goal, ok = "less energy to target", [d for d in ds if d["energy_saving"] > 0]
        out.append(f"| {obj} | {len(ds)} | {e:.3f} | {t:.3f} | {goal} | {len(ok)} of {len(ds)} |")
    return out


def shares(docs: list[dict[str, Any]]) -> list[str]:
    """Median share of the best fixed setting's saving reached by the tuner, held-out and training workloads."""
    out = []
    for group, names in (("held-out", HELD_OUT), ("training", TRAINED)):
        ds = [d for d in docs if d.get("sweep") and d["spec"]["workload"] in names]
        v = median_or_none(_share(d) for d in ds)
        if ds:
            out.append(f"Median share of the best fixed setting's saving reached by the tuner, {group} workloads "
                       f"({len(ds)}; a run over the budget counts as 0; cases where the best saves under 2% left out): {'-' if v is None else f'{v:.2f}'}.")
    return out


def versus(docs: list[dict[str, Any]], other: list[dict[str, Any]], name: str) -> list[str]:
    """Side by side: the main chooser and ``name`` on the same experiments (energy, time to target on/off)."""
    theirs = {(d["spec"]["workload"], d["spec"]["objective"]): d for d in other}
    mine = [d for d in docs if (d["spec"]["workload"], d["spec"]["objective"]) in theirs]
    main = sorted({(d.get("tuner") or {}).get("chooser", "?") for d in mine})
    head = ", ".join(main)
    out = [f"| workload | objective | {head}: energy, time to target | {name}: energy, time to target | "
           f"{head} actions (rollbacks) | {name} actions (rollbacks) | goal met ({head} / {name}) |",
           "|---|---|---|---|---|---|---|"]
    for d in mine:
        o = theirs[(d["spec"]["workload"], d["spec"]["objective"])]
        wl = d["spec"]["workload"] + (" (held out)" if d["spec"]["workload"] in HELD_OUT else "")
        cells = []
        for x in (d, o):
            t = x.get("tuner") or {}
            cells.append((f"{x['ratio']['energy_to_target_j']:.3f}, {x['ratio']['time_to_target_s']:.3f}",
                          f"{sum(t.get('actions', {}).values())} ({t.get('rollbacks', 0)})", _goal(x)))
        out.append(f"| {wl} | {d['spec']['objective']} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} | "
                   f"{'yes' if cells[0][2] else 'no'} / {'yes' if cells[1][2] else 'no'} |")
    for obj in ("energy_slowdown", "throughput"):
        a = [d for d in mine if d["spec"]["objective"] == obj]
        b = [theirs[(d["spec"]["workload"], obj)] for d in a]
        if not a:
            continue
        out.append(f"| **median** | {obj} | " + " | ".join(
            f"{statistics.median(x['ratio']['energy_to_target_j'] for x in xs):.3f}, "
            f"{statistics.median(x['ratio']['time_to_target_s'] for x in xs):.3f}" for xs in (a, b))
            + f" | | | {sum(map(_goal, a))} of {len(a)} / {sum(map(_goal, b))} of {len(b)} |")
    return out


def _goal(d: dict[str, Any]) -> bool:
    if d["spec"]["objective"] == "throughput":
        return bool(d["slowdown"] < 0)
    if d["spec"]["objective"] == "energy_slowdown":
        return bool(d["energy_saving"] >= 0.30 and d["slowdown"] <= 0.03)
    return bool(d["energy_saving"] > 0)


def write_docs(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text()
    start = doc.index(SECTION)
    nxt = doc.find("\n## ", start + len(SECTION))
    end = len(doc) if nxt < 0 else nxt + 1
    path.write_text(doc[:start] + SECTION + "\n\n" + text.strip() + "\n\n" + doc[end:].lstrip("\n") if nxt >= 0
                    else doc[:start] + SECTION + "\n\n" + text.strip() + "\n")


def parser() -> BenchParser:
    """The command line, every flag with its help."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--duration", type=positive_float, default=3600.0, help="simulated seconds of each run (off and on)")
    ap.add_argument("--gpus", type=positive_int, default=4, help="simulated GPUs of the node")
    ap.add_argument("--profile", type=gpu_profile, default="a100", help="simulated GPU model")
    ap.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--workloads", type=workload_list, default=",".join(TRAINED + HELD_OUT),
                    help="comma-separated workloads (shipped names or .toml files)")
    ap.add_argument("--objectives", type=csv_choices(OBJECTIVES), default=",".join(OBJECTIVES),
                    help="comma-separated tuner objectives")
    ap.add_argument("--chooser", default="auto", choices=["auto", "learned", "climber"], help="the tuner's chooser")
    ap.add_argument("--compare", choices=["learned", "climber"], help="also run this chooser (energy_slowdown, throughput)")
    ap.add_argument("--policy", help="numpy policy file for the learned chooser (SimNodeEnv observation; default: the shipped one)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the hindsight sweep")
    ap.add_argument("--clocks", choices=["on", "off"], default="on",
                    help="[tuner] tune_clocks: SM-clock lock moves on or off (the sweep includes locks when on)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated node and job")
    ap.add_argument("--out", default="/tmp/gputuned-headline", help="folder for headline.json and each experiment's files")
    ap.add_argument("--write-docs", action="store_true",
                    help='put the table in docs/benchmarks.md, section "Closed loop (headline)"')
    return ap


def main() -> int:
    ap = parser()
    a = ap.parse_args()
    if a.policy and not Path(a.policy).is_file():
        ap.error(f"--policy: no file {a.policy}")
    opts = {"duration_s": a.duration, "gpus": a.gpus, "profile": a.profile, "chooser": a.chooser, "seed": a.seed,
            "policy": a.policy, "tune_clocks": a.clocks == "on"}
    work = [(w, o, opts, a.out, not a.no_sweep) for o in a.objectives.split(",") for w in a.workloads.split(",")]
    extra = [(w, o, opts | {"chooser": a.compare}, a.out, False) for o in a.objectives.split(",")
             if o in ("energy_slowdown", "throughput") for w in a.workloads.split(",")] if a.compare else []
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        got = list(progress(pool.map(one, work + extra), "experiments", total=len(work + extra)))
    docs, other = got[:len(work)], got[len(work):]
    wall = time.time() - t0
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "headline.json").write_text(json.dumps(docs + other, indent=1))
    cmd = "python bench/loop_headline.py " + " ".join(sys.argv[1:])
    choosers = sorted({(d.get("tuner") or {}).get("chooser", "?") for d in docs})
    cpu = statistics.median(d["cpu_s"] for d in docs)
    text = "\n".join([
        f"Command: `{cmd}` (date {time.strftime('%Y-%m-%d', time.gmtime())}; machine: {machine()}; "
        f"wall {wall:.0f} s for {len(docs) + len(other)} experiments, median {cpu:.1f} CPU s of the main process per experiment "
        f"of 2 x {a.duration:g} simulated s).",
        "",
        f"Each row: the same simulated job ({a.gpus} x {a.profile}, seed {a.seed}, {a.duration / 60:g} simulated minutes) "
        f"run tuner off, then tuner on (chooser: {', '.join(choosers)}; SM-clock moves {a.clocks}), through the real NVML/actuation/control-socket "
        "path. Ratios are tuned / baseline: below 1 is less energy or less time. Energy to target and time to target "
        "account for statistical efficiency (a batch size change alters the samples needed); the tuner-on run includes "
        "its reference interval and every probe.",
        "",
        *medians(docs), "", *shares(docs), "", *table(docs),
        *(["", f"Same run, the same experiments with the {a.compare} chooser (energy to target and time to target, "
               "tuned / baseline):", "", *versus(docs, other, a.compare)] if other else []),
    ])
    print(text)
    if a.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
