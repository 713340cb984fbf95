"""``gputuned experiment`` and ``gputuned report``: the closed loop, measured and drawn.

``experiment`` runs one simulated job twice on a virtual clock, tuner off and on (same seed,
same scenario), and prints the comparison; ``report`` turns a run directory into PNG figures
and a self-contained HTML page. Heavy imports (matplotlib) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gputuned import EXIT_USAGE
from gputuned.daemon.commands import units
from gputuned.daemon.commands.argtypes import gpu_profile, positive_float
from gputuned.progress import add_progress_flag, progress_bar

#: The comparison's rows: key, label, how a value is shown.
_ROWS = (("energy_to_target_j", "energy to target", units.energy),
         ("energy_per_sample_j", "energy per sample", units.energy),
         ("time_to_target_s", "time to target", units.duration),
         ("throughput_samples_per_s", "throughput (samples/s)", lambda v: f"{v:.4g}"),
         ("goodput_samples_per_s", "goodput (samples/s)", lambda v: f"{v:.4g}"))


def print_comparison(doc: dict[str, Any]) -> None:
    """The comparison as a table on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    con = Console(width=120) if not sys.stdout.isatty() else Console()
    spec = doc["spec"]
    table = Table(title=f"{spec['workload']} on {spec['gpus']} x {spec['profile']}, objective {spec['objective']}, "
                        f"{spec['duration_s'] / 60:g} simulated minutes, seed {spec['seed']}"
                        + (f", scenario {spec['scenario']}" if spec.get("scenario") else ""))
    for col in ("metric", "tuner off", "tuner on", "on / off"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label, show in _ROWS:
        table.add_row(label, show(doc["off"][key]), show(doc["on"][key]), f"{doc['ratio'][key]:.3f}")
    con.print(table)
    t = doc.get("tuner") or {}
    print(f"energy saved {100 * doc['energy_saving']:.1f}% at {100 * doc['slowdown']:+.1f}% time to target; "
              f"tuner actions {t.get('actions', {})}, rollbacks {t.get('rollbacks', 0)}, chooser {t.get('chooser')}; "
              f"GPUs restored: {'yes' if doc['restored'] else 'NO'}")


def _experiment(args: argparse.Namespace) -> int:
    from gputuned.daemon.record.experiment import ExperimentSpec, run_experiment

    try:
        gpu_profile(args.profile)
    except argparse.ArgumentTypeError as e:
        print(f"gputuned experiment: --profile: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.scenario and not (Path(args.scenario).is_file() or "/" not in args.scenario):
        print(f"gputuned experiment: --scenario: no such file {args.scenario}", file=sys.stderr)
        return EXIT_USAGE
    spec = ExperimentSpec(
        workload=args.workload, objective=args.objective, scenario=args.scenario, seed=args.seed,
        duration_s=args.duration, gpus=args.gpus, profile=args.profile, tick_s=args.tick, interval_s=args.interval,
        max_slowdown=args.max_slowdown, chooser=args.chooser, policy=args.policy,
        forecast=None if args.forecast == "off" else args.forecast, tune_clocks=args.clocks,
    )
    out = Path(args.output)
    try:
        with progress_bar(args.progress) as bar:
            tasks = {name: bar.add_task(f"tuner {name}", total=1.0) for name in ("off", "on")}
            doc = run_experiment(spec, out, lambda name, frac: bar.update(tasks[name], completed=frac))
    except (ValueError, FileNotFoundError) as e:  # unknown workload/profile/scenario, bad policy file
        print(f"gputuned experiment: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print_comparison(doc)
        print(f"runs written to {out}/off and {out}/on; `gputuned report {out} -o {out}/report.html` draws them")
    return 0 if doc["restored"] else 1


def _report(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from gputuned.daemon.record.report import ReportError, build_report

    out = Path(args.output)
    try:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("figures", total=6)
            pngs = build_report(Path(args.run_dir), out, lambda name: bar.update(task, advance=1, description=name))
    except ReportError as e:
        print(f"gputuned report: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out} and {len(pngs)} figures in {pngs[0].parent if pngs else out.parent}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a simulated job twice, tuner off and on, and compare")
    p.add_argument("--workload", default="imagenet-resnet50", help="shipped workload name or TOML file")
    p.add_argument("--objective", default="energy_slowdown", choices=["energy", "throughput", "cost", "energy_slowdown"])
    p.add_argument("--scenario", help="shipped scenario name or TOML file (same in both runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=positive_float, default=3600.0, metavar="S", help="simulated seconds per run")
    p.add_argument("--gpus", type=int, default=4, choices=range(1, 17), metavar="N")
    p.add_argument("--profile", default="a100", metavar="P",
                   help="GPU profile: a100, h100, v100, a40, rtx6000, p100, a full name or a .toml file")
    p.add_argument("--tick", type=positive_float, default=2.0, metavar="S", help="collection period (simulated seconds)")
    p.add_argument("--interval", type=positive_float, default=20.0, metavar="S", help="tuner decision interval")
    p.add_argument("--max-slowdown", type=float, default=None, help="slowdown budget (default 0.03; 0.10 for energy, cost)")
    p.add_argument("--chooser", default="auto", choices=["auto", "learned", "climber"],
                   help="learned: the shipped numpy RL policy; climber: the rule-based climber; "
                        "auto: learned if its file loads")
    p.add_argument("--policy", metavar="NPZ", help="numpy policy file for the simulated-node observation")
    p.add_argument("--clocks", action=argparse.BooleanOptionalAction, default=True,
                   help="[tuner] tune_clocks: SM- and memory-clock lock moves beside power and batch (default on)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR")
    p.add_argument("--forecast", default="linear", choices=["linear", "prophet", "none", "off"],
                   help="forecaster fitter in the worker (prophet is slower); none: the online detector alone, "
                        "no fits; off: no detection, no alerts")
    add_progress_flag(p)
    p.set_defaults(func=_experiment, default_log_level="warning")

    p = sub.add_parser("report", help="figures and an HTML report of an experiment or a recorded trace")
    p.add_argument("run_dir", metavar="PATH", help="a trace file (.gttrace, from `gputuned record`), "
                   "an experiment folder (off/ and on/) or one run folder")
    p.add_argument("-o", "--output", default="report.html", metavar="HTML")
    p.set_defaults(func=_report, default_log_level="warning")
