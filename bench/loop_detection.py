"""Detection with the whole loop on: `gputuned experiment`'s daemon, tuner and forecaster together.

Two measurements, each run through :func:`gputuned.daemon.record.experiment.run_once` (a real
Daemon on a virtual clock: simulated node and job, actuation, control socket, forecaster inline,
tuner), counting every alert from the first tick (no burn-in: the tuner's exploration window is
in the count):

* ``false``: no fault, the shipped workloads, 1 hour each, on 4 x A100 and 8 x H100, tuner on
  (``--off`` adds the tuner-off runs): alerts raised per run.
* ``scenarios``: every shipped scenario whose fault costs throughput (its label names the
  trainer's step time or throughput), on imagenet-resnet50 and gpt2-small-openwebtext, seeds
  0-2, 8 x A100, tuner off and on: when each run first raised an alert on a series the label
  names (throughput standing in for step time) or the matching hardware alert, from the fault's
  start to 15 minutes past its end.

Runs go to ``--jobs`` worker processes (each run is one process's work). Usage:
    nice -n 5 python bench/loop_detection.py false [--jobs 2] [--off] [--duration 3600]
    nice -n 5 python bench/loop_detection.py scenarios [--jobs 2] [--seeds 3] [--blind] [--only NAME,...]

``--blind``: the forecaster is not told of knob changes (as before the intent wiring); in
``scenarios`` mode it adds a tuner-on run unaware of changes beside each informed one.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import BenchParser

ORIGIN = 1_767_225_600.0
GRACE_S = 900.0
SHIFT_S = 130.0  # a scenario's fault starts this much later per seed
HARDWARE_FOR = {"cooling_loss": {"thermal"}, "ecc_storm": {"ecc", "xid"}}
PROFILES = (("a100", 4), ("h100", 8))
SCENARIO_WORKLOADS = ("imagenet-resnet50", "gpt2-small-openwebtext")
THROUGHPUT = "gputuned_trainer_samples_per_second"


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One experiment run (tuner on or off); its alerts and summary figures."""
    from gputuned.tuner.forecast.service import ForecastService

    informed = ForecastService.note_change
    if job.get("blind"):  # as before the forecaster heard of changes: every knob change unannounced
        ForecastService.note_change = lambda self, change: None
    try:
        return _run(job)
    finally:  # the worker process runs informed jobs after this one
        ForecastService.note_change = informed


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from gputuned.daemon.record.experiment import ExperimentSpec, run_once

    out = Path(tempfile.mkdtemp(prefix="gputuned-loopdet-"))
    scenario = _shifted(job["scenario"], job["seed"], out) if job.get("scenario") else None
    spec = ExperimentSpec(workload=job["workload"], scenario=scenario, seed=job["seed"],
                          duration_s=job["duration"], gpus=job["gpus"], profile=job["profile"])
    summary = run_once(spec, job["tuned"], out)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    labels = json.loads((out / "labels.json").read_text())["events"] if (out / "labels.json").is_file() else []
    alerts = [(e["t"] - ORIGIN, e["knob"], e["target"], e["reason"]) for e in events if e["kind"] == "alert"]
    return {**job, "alerts": alerts, "labels": labels, "throughput": summary["throughput_samples_per_s"],
            "actions": sum((summary.get("tuner") or {}).get("actions", {}).values())}


def _shifted(name: str, seed: int, out: Path) -> str:
    """The shipped scenario as a file whose fault starts SHIFT_S x seed later: the seed changes the
    run (the simulated job is otherwise deterministic) and where in the tuner's moves the fault lands."""
    from gputuned.collectors.sim.scenarios import load_scenario

    scen = load_scenario(name)
    lines = [f"name = {json.dumps(scen.name)}", f"description = {json.dumps(scen.description)}"]
    for e in scen.events:
        lines += ["[[event]]", f"kind = {json.dumps(e.kind)}", f"start_s = {e.start_s + SHIFT_S * seed}",
                  f"ramp_s = {e.ramp_s}", f"magnitude = {e.magnitude}"]
        lines += [f"duration_s = {e.duration_s}"] if e.duration_s is not None else []
        lines += [f"gpus = {list(e.gpus)}"] if e.gpus is not None else []
    path = out / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def costs_throughput(kind: str) -> bool:
    """A fault the label says moves the trainer's step time or throughput."""
    from gputuned.collectors.sim.scenarios import KINDS

    fams = KINDS[kind][2]
    return "gputuned_trainer_step_time_seconds" in fams or THROUGHPUT in fams


def first_detection(r: dict[str, Any], duration: float) -> float | None:
    """Seconds from the fault's start to the first alert on a series it affects, or None."""
    ev = r["labels"][0]
    fams = set(ev["series"]) | ({THROUGHPUT} if "gputuned_trainer_step_time_seconds" in ev["series"] else set())
    end = (ev["end_s"] if ev["end_s"] is not None else duration) + GRACE_S
    hits = [t for t, kind, series, _ in r["alerts"]
            if ev["start_s"] <= t <= end and (series in fams or kind in HARDWARE_FOR.get(ev["kind"], ()))]
    return min(hits) - ev["start_s"] if hits else None


def _secs(v: float | None) -> str:
    return "missed" if v is None else f"{v:.0f}"


def _pool_map(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(run, jobs))


def false_alerts(args: Any) -> None:
    """No fault, tuner on (and off with --off): alerts per run, as a Markdown table."""
    from gputuned.collectors.sim.workload import available_workloads

    tuned = (True, False) if args.off else (True,)
    jobs = [{"workload": wl, "profile": p, "gpus": n, "seed": args.seed, "duration": args.duration, "tuned": t,
             "blind": args.blind}
            for p, n in PROFILES for wl in available_workloads() for t in tuned]
    began = time.perf_counter()
    rows = _pool_map(jobs, args.jobs)
    print("| workload | GPUs | tuner actions | alerts, tuner on |" + (" alerts, tuner off |" if args.off else ""))
    print("|---|---|---|---|" + ("---|" if args.off else ""))
    by = {(r["workload"], r["profile"], r["tuned"]): r for r in rows}
    for p, n in PROFILES:
        for wl in sorted({r["workload"] for r in rows}):
            on = by[(wl, p, True)]
            off = f" {len(by[(wl, p, False)]['alerts'])} |" if args.off else ""
            print(f"| {wl} | {n} x {p} | {on['actions']} | {len(on['alerts'])} |{off}")
    for p, n in PROFILES:
        tot = sum(len(r["alerts"]) for r in rows if r["profile"] == p and r["tuned"])
        print(f"\n{n} x {p}, tuner on: {tot} alerts over {len(jobs) // len(PROFILES) // len(tuned)} one-hour jobs")
    for r in rows:
        for a in r["alerts"] if args.verbose else ():
            print(f"  {r['workload']} {r['profile']} tuned={r['tuned']} t={a[0]:.0f} {a[1]} {a[3]}")
    print(f"{len(jobs)} runs in {time.perf_counter() - began:.0f} s wall, {args.jobs} workers")


def _scenario_runs(args: Any, names: list[str]) -> list[dict[str, Any]]:
    """Tuner off and on per scenario, workload and seed; with --blind a third, the tuner on and the forecaster unaware."""
    modes = [(False, False), (True, False)] + ([(True, True)] if args.blind else [])
    return [{"workload": wl, "profile": "a100", "gpus": 8, "seed": s, "duration": args.duration, "tuned": t,
             "scenario": n, "blind": b} for n in names for wl in SCENARIO_WORKLOADS for s in range(args.seeds)
            for t, b in modes]


def scenario_table(args: Any) -> None:
    """Every throughput-costing scenario, tuner off and on (and on, blind): seconds from start to first detection."""
    from gputuned.collectors.sim.scenarios import available_scenarios, load_scenario

    names = [n for n in available_scenarios() if costs_throughput(load_scenario(n).events[0].kind)
             and (not args.only or n in args.only.split(","))]
    jobs = _scenario_runs(args, names)
    began = time.perf_counter()
    rows = _pool_map(jobs, args.jobs)
    by = {(r["scenario"], r["workload"], r["seed"], r["tuned"], r["blind"]): r for r in rows}
    blind_cols = " tuner on, blind | blind within a tick |" if args.blind else ""
    print("| scenario | workload | seed | detected after (s), tuner off | tuner on | on - off (s) | within a tick |"
          + blind_cols)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if args.blind else ""))
    late: list[float] = []
    ok = ok_blind = 0
    for n in names:
        for wl in SCENARIO_WORKLOADS:
            for s in range(args.seeds):
                off, on = (first_detection(by[(n, wl, s, t, False)], args.duration) for t in (False, True))
                good = _within(off, on, args.tick)
                ok += good
                diff = "-" if off is None or on is None else f"{on - off:+.0f}"
                if off is not None and on is not None:
                    late.append(on - off)
                extra = ""
                if args.blind:
                    blind = first_detection(by[(n, wl, s, True, True)], args.duration)
                    ok_blind += _within(off, blind, args.tick)
                    extra = f" {_secs(blind)} | {'yes' if _within(off, blind, args.tick) else 'NO'} |"
                print(f"| {n} | {wl} | {s} | {_secs(off)} | {_secs(on)} | {diff} | {'yes' if good else 'NO'} |{extra}")
    groups = {(r["scenario"], r["workload"], r["tuned"], r["blind"]) for r in rows}
    distinct = sum(len({round(r["throughput"], 6) for r in rows if (r["scenario"], r["workload"], r["tuned"], r["blind"]) == g})
                   == args.seeds for g in groups)
    print(f"\nseeds change the run: {distinct} of {len(groups)} scenario x workload x mode groups "
          f"have {args.seeds} distinct throughputs over their seeds")
    n_pairs = len(names) * len(SCENARIO_WORKLOADS) * args.seeds
    med = f"{statistics.median(late):+.0f}" if late else "-"
    blind_line = f"; forecaster unaware of changes (--blind): {ok_blind}/{n_pairs}" if args.blind else ""
    print(f"\n{ok}/{n_pairs} runs detected with the tuner on no later than one tick after the tuner-off run "
          f"(median on - off {med} s){blind_line}; {len(jobs)} runs in {time.perf_counter() - began:.0f} s wall, "
          f"{args.jobs} workers")


def _within(off: float | None, on: float | None, tick: float) -> bool:
    """Detected with the tuner on no later than one tick after the tuner-off run (or missed by both)."""
    return off is None or (on is not None and on <= off + tick)


_OPTIONS = (("--jobs", int, 2, "worker processes"), ("--duration", float, 3600.0, "simulated seconds per run"),
            ("--seed", int, 0, "seed of the no-fault runs"), ("--seeds", int, 3, "seeds 0..N-1 of the scenario runs"),
            ("--tick", float, 2.0, "the experiment's tick: the allowed lag"))


def main() -> None:
    """Parse the command line and run the measurement."""
    p = BenchParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["false", "scenarios"])
    for flag, kind, default, what in _OPTIONS:
        p.add_argument(flag, type=kind, default=default, help=what)
    p.add_argument("--off", action="store_true", help="no-fault runs with the tuner off too")
    p.add_argument("--blind", action="store_true", help="the forecaster is not told of knob changes (the before): "
                   "every run in false mode; in scenarios mode a third run per row, side by side")
    p.add_argument("--only", default="", help="scenarios mode: these scenarios only (comma-separated names)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every alert")
    args = p.parse_args()
    (false_alerts if args.what == "false" else scenario_table)(args)


if __name__ == "__main__":
    main()
