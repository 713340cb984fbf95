"""``gputuned tuner bench|train``: the tuner's research entry points (Zeus traces, PPO training).

Heavy imports (stable-baselines3, torch, gymnasium) happen inside the command functions only.
``pause`` and ``resume`` sit beside them in the same group (gputuned.daemon.commands.tuner):
they speak to the daemon and load its config, which this room may not import.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gputuned import EXIT_USAGE

logger = logging.getLogger(__name__)


def _fail(message: str) -> int:
    print(f"gputuned tuner: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check_traces(trace_dir: Path, gpus: list[str]) -> str | None:
    if not trace_dir.is_dir():
        return f"--zeus-traces {trace_dir}: not a directory"
    if not (trace_dir / "summary_train.csv").is_file():
        return f"--zeus-traces {trace_dir}: summary_train.csv missing"
    for gpu in gpus:
        if not (trace_dir / f"summary_power_{gpu.lower()}.csv").is_file():
            return f"--gpu {gpu}: {trace_dir}/summary_power_{gpu.lower()}.csv missing"
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    """Run default, oracle, Zeus-style and gputuned policies on one GPU's traces."""
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy
    from gputuned.tuner.zeus.bench import bench_gpu, savings
    from gputuned.tuner.zeus.traces import TraceError

    trace_dir = Path(args.zeus_traces)
    problem = _check_traces(trace_dir, [args.gpu])
    if problem:
        return _fail(problem)
    if not 0.0 <= args.eta_knob <= 1.0:
        return _fail(f"--eta-knob must be in [0, 1], got {args.eta_knob}")
    if args.seeds < 1 or args.recurrences < 2:
        return _fail("--seeds must be >= 1 and --recurrences >= 2")
    try:
        chooser = NumpyPolicy.load(Path(args.policy)) if args.policy else NumpyPolicy.load()
    except (OSError, ValueError, KeyError) as exc:
        return _fail(f"--policy: {exc}")
    try:
        doc = bench_gpu(trace_dir, args.gpu, args.eta_knob, args.seeds, args.recurrences, chooser)
    except TraceError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Zeus traces, {args.gpu}, eta={args.eta_knob}, {args.seeds} seeds x {args.recurrences} recurrences")
    for col in ("job", "policy", "energy (J)", "time (s)", "cost"):
        table.add_column(col)
    for r in doc["results"]:
        table.add_row(r["job"], r["policy"], f"{r['energy_j']:.4g}", f"{r['time_s']:.4g}", f"{r['cost']:.4g}")
    console = Console()
    console.print(table)
    for name, value in sorted(savings(doc).items()):
        console.print(f"mean saving over default, {name}: {value:.1%}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train PPO on the Zeus-trace environment and export the numpy policy."""
    from gputuned.tuner.train import train
    from gputuned.tuner.zeus.traces import TraceError, available_gpus, load_gpu

    trace_dir = Path(args.zeus_traces)
    gpus = [g for g in args.gpus.split(",") if g] if args.gpus else available_gpus(trace_dir)
    problem = _check_traces(trace_dir, gpus)
    if problem:
        return _fail(problem)
    if not gpus:
        return _fail(f"--zeus-traces {trace_dir}: no summary_power_<gpu>.csv found")
    if args.timesteps < 1 or args.hidden < 1:
        return _fail("--timesteps and --hidden must be >= 1")
    try:
        traces = [t for g in gpus for t in load_gpu(trace_dir, g).values()]
    except TraceError as exc:
        return _fail(str(exc))
    train(traces, args.timesteps, Path(args.out), hidden=args.hidden, seed=args.seed, progress_bar=not args.no_progress)
    print(f"policy written to {Path(args.out) / 'policy_zeus.npz'}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``train`` to the ``gputuned tuner`` group's actions ``sub``."""
    from gputuned.tuner.zeus.traces import PACKAGED_TRACES

    bench = sub.add_parser("bench", help="compare default, oracle, Zeus-style and gputuned on Zeus traces")
    bench.add_argument("--zeus-traces", default=str(PACKAGED_TRACES), help="directory with summary_*.csv")
    bench.add_argument("--gpu", required=True, help="GPU name of summary_power_<gpu>.csv, e.g. a40")
    bench.add_argument("--eta-knob", type=float, default=0.5, help="Zeus cost knob in [0, 1] (default 0.5)")
    bench.add_argument("--seeds", type=int, default=3, help="trials averaged (default 3)")
    bench.add_argument("--recurrences", type=int, default=50, help="recurrences of each job per trial (default 50)")
    bench.add_argument("--policy", default=None, help="policy .npz (default: the packaged one)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=cmd_bench)

    train = sub.add_parser("train", help="train the PPO agent on Zeus traces and export it to numpy")
    train.add_argument("--zeus-traces", default=str(PACKAGED_TRACES), help="directory with summary_*.csv")
    train.add_argument("--gpus", default=None, help="comma-separated GPUs to train on (default: all found)")
    train.add_argument("--timesteps", type=int, default=400_000)
    train.add_argument("--hidden", type=int, default=64, help="units per hidden layer (two layers)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs/tuner", help="directory for checkpoints, model and policy .npz")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
