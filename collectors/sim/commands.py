"""``gputuned sim ...`` subcommands: calibrate the simulator to measured data; sweep a knob on it."""

from __future__ import annotations

import argparse
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

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
    clk = sub.add_parser("calibrate-clocks",
                         help="fit the voltage curves to the Perseus SOSP'24 locked-clock sweeps and report hold-out error")
    clk.add_argument("--out", type=Path, default=None, help="calibration JSON to update (default: the shipped one)")
    clk.set_defaults(func=calibrate_clocks_command)
    sw = sub.add_parser("sweep", help="time and energy per step and per sample of a workload across one knob")
    sw.add_argument("--profile", default="a100", help="GPU profile (default a100)")
    sw.add_argument("--workload", default="gpt2", help="workload name or TOML (default gpt2)")
    sw.add_argument("--gpus", type=int, default=1, help="GPUs of the node (default 1)")
    sw.add_argument("--batch-size", type=int, default=None, help="global batch (default: the workload's)")
    sw.add_argument("--knob", choices=["sm-clock", "memory-clock", "power-limit"], default="sm-clock")
    sw.add_argument("--values", type=float, nargs="+", default=None,
                    help="settings to try (MHz or W; default: 8 across the profile's range)")
    sw.add_argument("--window", type=float, default=120.0, help="simulated seconds measured per setting (default 120)")
    sw.set_defaults(func=sweep_command)
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
    if out.is_file():  # keep the clock fit and the GPUs this run did not fit
        old = json.loads(out.read_text())
        if "clocks" in old:
            doc["clocks"] = old["clocks"]
        for key, params in old.get("gpus", {}).items():
            doc["gpus"].setdefault(key, params)
    _merge_out(out, doc)
    print(f"wrote {out}")
    print(f"{'gpu':18} {'held-out rows':>13} {'time median':>11} {'time worst':>10} {'power median':>12} {'power worst':>11}")
    for gpu, err in doc["errors"].items():
        print(f"{gpu:18} {err['heldout_rows']:>13d} {err['epoch_time_median']:>11.1%} {err['epoch_time_worst']:>10.1%} "
              f"{err['power_median']:>12.1%} {err['power_worst']:>11.1%}")
    return 0


def _merge_out(out: Path, doc: dict[str, Any]) -> None:
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)


def calibrate_clocks_command(args: argparse.Namespace) -> int:
    """Fit the clock response, merge it into the calibration JSON, print the hold-out errors."""
    from gputuned.collectors.sim.calibrate import ZEUS_GPUS
    from gputuned.collectors.sim.calibrate_clocks import CLOCK_FIELDS, calibrate_clocks
    from gputuned.collectors.sim.gpu_model import default_power_params
    from gputuned.collectors.sim.state import load_profile
    from gputuned.collectors.sim.workload import load_calibration

    out = args.out or _default_out()
    doc = load_calibration(out) if out.is_file() else {"gpus": {}, "workloads": {}}
    result = calibrate_clocks()
    doc["clocks"] = result
    window = doc["gpus"].get("a40", {}).get("cap_window_s")
    for key, fit in result["fits"].items():
        if key not in ZEUS_GPUS.values():  # a GPU with no power-limit traces: the profile's constants
            doc["gpus"][key] = default_power_params(load_profile(key)).as_dict()
            doc["gpus"][key].update({k: fit[k] for k in CLOCK_FIELDS})
            if window is not None:  # the controller's window, fitted on A40's power-limit traces
                doc["gpus"][key]["cap_window_s"] = window
    _merge_out(out, doc)
    print(f"wrote {out}")
    print(f"{'gpu':16} {'fitted on':10} {'checked on':10} {'v_min':>5} {'knee':>5} {'time rms':>8} {'energy rms':>10}")
    for h in result["holdout"]:
        print(f"{h['gpu']:16} {h['fitted_on']:10} {h['checked_on']:10} {h['voltage_floor']:5.2f} {h['voltage_knee']:5.2f} "
              f"{h['heldout_time_rms']:8.1%} {h['heldout_energy_rms']:10.1%}")
    return 0


def _sweep_values(args: argparse.Namespace) -> list[float]:
    import numpy as np

    from gputuned.collectors.sim.state import load_profile

    if args.values:
        return list(args.values)
    p = load_profile(args.profile)
    if args.knob == "sm-clock":
        clocks = p.sm_clocks_mhz
        return [float(clocks[int(i)]) for i in np.linspace(0, len(clocks) // 2, 8).round()]
    if args.knob == "memory-clock":
        return [float(c) for c in sorted(p.memory_clocks_mhz, reverse=True)]
    return [float(v) for v in np.linspace(p.power_limit_max_w, p.power_limit_min_w, 8).round()]


def sweep_command(args: argparse.Namespace) -> int:
    """Print time and energy per step and per sample at each setting of one knob."""
    from gputuned.collectors.sim.node import steady_state

    key = {"sm-clock": "sm_clock_mhz", "memory-clock": "memory_clock_mhz", "power-limit": "power_limit_w"}[args.knob]
    unit = "W" if args.knob == "power-limit" else "MHz"
    try:
        base = steady_state(args.profile, args.gpus, args.workload, batch_size=args.batch_size, window_s=args.window)
        rows = [(v, steady_state(args.profile, args.gpus, args.workload, batch_size=args.batch_size,
                                 window_s=args.window, **{key: int(v) if unit == "MHz" else v}))
                for v in _sweep_values(args)]
    except ValueError as e:
        print(f"gputuned sim sweep: {e}")
        return EXIT_USAGE
    if base is None:
        print(f"gputuned sim sweep: batch size {args.batch_size} does not fit")
        return EXIT_USAGE
    print(f"{args.workload} on {args.gpus} x {args.profile}, {args.knob} (ratios against the default setting)")
    print(f"{args.knob + ' ' + unit:>16} {'s/step':>8} {'J/step':>9} {'J/sample':>9} {'W':>7} {'time':>6} {'energy':>6}")
    for v, r in rows:
        if r is None:
            print(f"{v:16.0f} {'does not fit':>8}")
            continue
        print(f"{v:16.0f} {r['step_s']:8.4f} {r['energy_per_step_j']:9.2f} {r['energy_per_sample_j']:9.3f} "
              f"{r['power_w']:7.1f} {r['step_s'] / base['step_s']:6.3f} "
              f"{r['energy_per_sample_j'] / base['energy_per_sample_j']:6.3f}")
    return 0
