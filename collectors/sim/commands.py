"""``gputuned sim ...`` subcommands: calibrate the simulator to measured traces."""

from __future__ import annotations

import argparse
import json
import logging
from importlib import resources
from pathlib import Path

from gputuned import EXIT_USAGE
from gputuned.progress import ProgressLine, add_progress_flag

logger = logging.getLogger(__name__)


def _default_data() -> Path | None:
    try:
        res = resources.files("gputuned.tuner") / "data" / "zeus-nsdi23"
    except ModuleNotFoundError:
        return None
    path = Path(str(res))
    return path if (path / "summary_power_a40.csv").is_file() else None


def _default_out() -> Path:
    return Path(str(resources.files("gputuned.collectors.sim") / "data" / "calibration.json"))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gputuned sim calibrate``."""
    sim = subparsers.add_parser("sim", help="simulated GPU node tools")
    sub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    cal = sub.add_parser("calibrate", help="fit the simulator to the Zeus NSDI'23 traces and report held-out error")
    cal.add_argument("--data", type=Path, default=None,
                     help="folder with summary_power_{a40,rtx6000,p100}.csv and summary_train.csv "
                          "(default: the copy packaged with gputuned.tuner, if present)")
    cal.add_argument("--out", type=Path, default=None, help="where to write the fitted JSON (default: the shipped calibration.json)")
    cal.add_argument("--holdout", type=float, default=0.2, help="fraction of rows held out from fitting (default 0.2)")
    cal.add_argument("--seed", type=int, default=0, help="seed of the held-out row draw (default 0)")
    cal.add_argument("--gpu", action="append", choices=["a40", "rtx6000", "p100"], default=None,
                     help="fit only this traced GPU (repeatable; default all three)")
    cal.add_argument("--holdout-mode", choices=["random", "power_limit"], default="random",
                     help="random: a seeded --holdout fraction of rows; power_limit: every 5th power limit "
                          "of each GPU's grid (default random)")
    add_progress_flag(cal)
    cal.set_defaults(func=calibrate_command)
    sim.set_defaults(func=lambda args: (sim.print_help(), EXIT_USAGE)[1])


def calibrate_command(args: argparse.Namespace) -> int:
    """Run the calibration, write the JSON, print median and worst held-out errors per GPU."""
    from gputuned.collectors.sim.calibrate import ZEUS_GPUS, calibrate

    data = args.data or _default_data()
    if data is None:
        print("gputuned sim calibrate: --data DIR is required (no packaged copy of the Zeus traces found)")
        return EXIT_USAGE
    if not data.is_dir():
        print(f"gputuned sim calibrate: --data {data}: not a directory")
        return EXIT_USAGE
    if not 0.0 < args.holdout < 0.9:
        print(f"gputuned sim calibrate: --holdout {args.holdout}: must be in (0, 0.9)")
        return EXIT_USAGE
    try:
        with ProgressLine("calibrating", total=len(set(args.gpu or ZEUS_GPUS)), flag=args.progress) as line:
            doc = calibrate(data, holdout=args.holdout, seed=args.seed, mode=args.holdout_mode, gpus=args.gpu,
                            on_gpu=lambda key: line.advance(1.0))
    except ValueError as e:
        print(f"gputuned sim calibrate: {e}")
        return EXIT_USAGE
    out = args.out or _default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    print(f"{'gpu':18} {'held-out rows':>13} {'time median':>11} {'time worst':>10} {'power median':>12} {'power worst':>11}")
    for gpu, err in doc["errors"].items():
        print(f"{gpu:18} {err['heldout_rows']:>13d} {err['epoch_time_median']:>11.1%} {err['epoch_time_worst']:>10.1%} "
              f"{err['power_median']:>12.1%} {err['power_worst']:>11.1%}")
    return 0
