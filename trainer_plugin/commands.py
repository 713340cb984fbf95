"""``gputuned train CONFIG.toml``: validate a trainer config, then train (launching torchrun if asked)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tomllib
from typing import Any

from gputuned import EXIT_USAGE
from gputuned.progress import ProgressLine, add_progress_flag

logger = logging.getLogger(__name__)


def _count(minimum: int) -> Any:
    """argparse type: an integer >= ``minimum``, refused while parsing otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value
    return parse


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser("train", help="train a model with the gputuned trainer (DDP, AMP, checkpoints)")
    p.add_argument("config", help="trainer config (TOML), e.g. examples/digits.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set compression.hook=\"bf16\" (TOML value)")
    p.add_argument("--nproc", type=_count(1), default=1,
                   help="processes to launch with torchrun when not already under torchrun (default 1)")
    p.add_argument("--max-restarts", type=_count(0), default=3, help="torchrun elastic restarts (with --nproc)")
    p.add_argument("--nnodes", type=_count(1), default=1,
                   help="nodes of the job, each running this command with the same --rdzv-endpoint (default 1)")
    p.add_argument("--node-rank", type=_count(0), default=None,
                   help="this node's rank; node 0 hosts the rendezvous at --rdzv-endpoint (torchrun's static "
                        "rendezvous); without it nodes join in any order (c10d)")
    p.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="rendezvous endpoint, the same on every node (needed with --nnodes > 1; "
                        "default 127.0.0.1 and a free port)")
    p.add_argument("--rdzv-id", default=None, metavar="ID",
                   help="the run's id, the same on every node; it names the job gputuned-train-ID "
                        "(default: a random id, or one rank 0 draws and sends to all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_progress_flag(p)
    p.set_defaults(func=run_train)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn KEY=VALUE strings into a mapping; VALUE is TOML (bare words are strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def run_train(args: argparse.Namespace) -> int:
    """Validate, then train here (single process or torchrun worker) or launch torchrun."""
    from gputuned.trainer_plugin.config import ConfigError, load_config

    try:
        overrides = parse_overrides(args.overrides)
        config = load_config(args.config, overrides)
    except (ConfigError, ValueError) as e:
        print(f"gputuned train: {e}", file=sys.stderr)
        return EXIT_USAGE
    if (args.nproc > 1 or args.nnodes > 1) and "RANK" not in os.environ:
        try:
            launcher = torchrun_args(args)
        except ValueError as e:
            print(f"gputuned train: {e}", file=sys.stderr)
            return EXIT_USAGE
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher,
               "-m", "gputuned.daemon.commands.cli", "train", args.config, *sum((["--set", o] for o in args.overrides), [])]
        if args.json:
            cmd.append("--json")
        if args.progress is not None:
            cmd.append("--progress" if args.progress else "--no-progress")
        return _launch(cmd)
    return _train_here(config, args.json, args.progress)


def torchrun_args(args: argparse.Namespace) -> list[str]:
    """torchrun's options for this run: processes, nodes, rendezvous and the run's id (ValueError: unusable)."""
    from gputuned.protocol import NAME_RE

    endpoint, node_rank, run_id = args.rdzv_endpoint, args.node_rank, args.rdzv_id
    if args.nnodes > 1 and not endpoint:
        raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every node")
    if node_rank is not None and node_rank >= args.nnodes:
        raise ValueError(f"--node-rank {node_rank} must be below --nnodes {args.nnodes}")
    port = (endpoint or "").rpartition(":")[2]
    if (args.nnodes > 1 or node_rank is not None) and not (port.isdigit() and int(port) > 0):
        raise ValueError(f"--rdzv-endpoint {endpoint!r}: expected HOST:PORT with a port every node can reach")
    if run_id is not None and not (len(run_id) <= 100 and NAME_RE.fullmatch(run_id)):
        raise ValueError(f"--rdzv-id {run_id!r}: 1-100 characters of [A-Za-z0-9._:-]")
    if run_id is None and args.nnodes == 1:  # one node: a random id names this run's job
        run_id = secrets.token_hex(4)
    static = node_rank is not None
    out = ["--nnodes", str(args.nnodes), "--nproc-per-node", str(args.nproc), "--max-restarts", str(args.max_restarts),
           "--rdzv-backend", "static" if static else "c10d", "--rdzv-endpoint", endpoint or "127.0.0.1:0"]
    if static:
        out += ["--node-rank", str(node_rank)]
    return out + (["--rdzv-id", run_id] if run_id is not None else [])


def _launch(cmd: list[str]) -> int:
    """Run torchrun in its own session and pass SIGTERM and SIGINT (Ctrl-C) on to it; its exit code.

    torchrun hands a signal to the workers, which checkpoint and stop together. In a session of
    its own it gets each signal once, from here, not a second copy from the terminal's Ctrl-C.
    """
    proc = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        logger.info("passing signal %d on to torchrun", signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _progress_hook(line: ProgressLine, max_steps: int | None) -> Any:
    """A step-end callback that moves ``line``: steps of ``max_steps`` when set, else samples of the run."""
    def hook(trainer: Any) -> None:
        done = trainer.step if max_steps is not None else trainer.samples_seen
        line.update(done, description=f"training, epoch {trainer.epoch + 1}, step {trainer.step}")
    return hook


def _train_here(config: Any, as_json: bool, progress: bool | None = None) -> int:
    import torch.distributed as dist

    from gputuned.trainer_plugin.config import ConfigError
    from gputuned.trainer_plugin.process_group import exit_distributed
    from gputuned.trainer_plugin.trainer import Trainer

    try:
        trainer = Trainer(config)
    except ConfigError as e:
        print(f"gputuned train: {e}", file=sys.stderr)
        return EXIT_USAGE
    max_steps = config.train.max_steps
    total = max_steps if max_steps is not None else trainer.total_samples
    with ProgressLine("training", total=total, flag=progress if trainer.rank == 0 else False) as line:
        if line.shown:
            trainer.cb.on_step_end = _progress_hook(line, max_steps)
        result = trainer.fit()
    trainer.close()
    if trainer.rank == 0:
        summary = {"steps": result.steps, "epochs": result.epochs, "test_accuracy": round(result.test_accuracy, 4),
                   "test_loss": round(result.test_loss, 4), "overflows": result.overflows,
                   "stopped_by_sigterm": result.stopped_early, "precision": trainer.precision,
                   "world_size": trainer.world}
        print(json.dumps(summary) if as_json else
              " ".join(f"{k}={v}" for k, v in summary.items()))
    if dist.is_initialized():
        exit_distributed(0)
    return 0
