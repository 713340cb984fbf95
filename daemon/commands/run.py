"""``gputuned run``: the daemon in the foreground (systemd runs it this way)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from gputuned import EXIT_USAGE, __version__
from gputuned.daemon.actuation.owner import EXIT_OWNED, Owner, live_owner
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.config import Config, load_config
from gputuned.daemon.commands.argtypes import gpu_profile
from gputuned.daemon.core.config import ConfigError, resolve_config_path

logger = logging.getLogger(__name__)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that build a daemon: config file and common overrides."""
    p.add_argument("--config", metavar="PATH", help="TOML config (default /etc/gputuned/gputuned.toml if present)")
    p.add_argument("--sim", action="store_true", help="use the simulated GPU node even if a driver is present")
    p.add_argument("--gpus", type=int, metavar="N", help="number of simulated GPUs")
    p.add_argument("--profile", type=gpu_profile, metavar="NAME",
                   help="simulated GPU profile: h100, a100, v100, a40, rtx6000, p100, a full name such as "
                        "h100-sxm5-80gb, or a profile .toml file")
    p.add_argument("--listen", metavar="ADDR", help="address for /metrics")
    p.add_argument("--port", type=int, metavar="PORT", help="port for /metrics (0: any free port)")
    p.add_argument("--interval", type=float, metavar="SECONDS", help="collection period")
    p.add_argument("--metric-names", choices=["gputuned", "dcgm"], help="also serve dcgm-exporter names")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config file and apply command-line overrides; raises ConfigError."""
    cfg = load_config(resolve_config_path(getattr(args, "config", None)))
    data: dict[str, Any] = cfg.model_dump()
    if getattr(args, "sim", False):
        data["gpu"]["backend"] = "sim"
    for flag, (section, key) in {
        "gpus": ("sim", "gpus"),
        "profile": ("sim", "profile"),
        "listen": ("exporter", "listen_address"),
        "port": ("exporter", "listen_port"),
        "interval": ("daemon", "interval_seconds"),
        "metric_names": ("exporter", "metric_names"),
    }.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[section][key] = value
    from gputuned.daemon.app.config import parse_config

    return parse_config(data, "command line")


def load_or_report(args: argparse.Namespace) -> Config | None:
    """The config for a command, or None after printing the one-line error (exit 2 follows)."""
    try:
        return config_from_args(args)
    except ConfigError as e:
        print(f"gputuned: config error: {e}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    logging.getLogger().setLevel(args.log_level.upper() if args.log_level else cfg.daemon.log_level.upper())
    owner = live_owner_of(cfg)
    if owner is not None:  # one owner of the GPUs per host: its state and GPUs are left alone
        print(f"gputuned: {owner.line()}; not starting", file=sys.stderr)
        return EXIT_OWNED
    from gputuned.daemon.app.daemon import Daemon

    try:
        daemon = Daemon(cfg)
    except OSError as e:
        print(f"gputuned: cannot serve /metrics on {cfg.exporter.listen_address}:{cfg.exporter.listen_port}: {e.strerror}", file=sys.stderr)
        return 1
    except ValueError as e:  # a config value only the parts can check, e.g. sim.profile from the file
        logger.debug("daemon setup refused the config", exc_info=True)
        print(f"gputuned: {e}", file=sys.stderr)
        return EXIT_USAGE
    from gputuned.daemon.app.components import attach_configured

    try:
        attach_configured(daemon, trainer=args.trainer, trainer_config=args.trainer_config)
    except (OSError, ValueError) as e:
        print(f"gputuned: {e}", file=sys.stderr)
        return 2
    print(f"gputuned {__version__}: {daemon.describe()}", flush=True)
    for line in describe_parts(daemon):
        print(f"  {line}", flush=True)
    daemon.run_until_signal(reload=lambda: config_from_args(args))
    return 0


def live_owner_of(cfg: Config) -> Owner | None:
    """The live daemon that owns this config's GPUs (its state file's writer or its socket's listener)."""
    return live_owner(StateFile(cfg.daemon.state_file), cfg.control.socket_path if cfg.control.enabled else None)


def describe_parts(daemon: Any) -> list[str]:
    """Lines saying what else runs and where: socket, job, forecaster, tuner, logs."""
    cfg = daemon.cfg
    names = {c.name: c for c in daemon.components}
    lines = []
    if daemon.control is not None:
        lines.append(f"control socket: {cfg.control.socket_path}")
    if "trainer" in names:
        lines.append("trainer: gputuned train with 2 CPU processes, plugin connected; batch-size changes show in its log")
    if "sim-job" in names:
        job = getattr(daemon.gpus.sim_backend, "job", None)
        workload = getattr(getattr(job, "workload", None), "name", cfg.sim.workload)
        lines.append(f"simulated job: {workload} as job {cfg.sim.job_name!r}, reporting over the control socket")
    if "forecast" in names:
        fits = {"prophet": "Prophet fits in a worker process", "linear": "trend fits in a worker process",
                "none": "no forecast fits"}[cfg.forecast.fitter_name]
        where = "a child process" if cfg.forecast.detect_in_child else "the daemon"
        lines.append(f"forecaster: on (detection in {where}, {fits})")
    if "tuner" in names:
        tuner = names["tuner"]
        lines.append(f"tuner: on, objective {tuner.cfg.objective}, acting every {tuner.cfg.interval_s:g} s; "
                     f"GPU settings are restored on stop (state file {cfg.daemon.state_file})")
    else:
        lines.append("tuner: off")
    lines.append("logs: stderr (journald under systemd)")
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground",
                       epilog=f"exit status: 0 stopped, 1 cannot serve /metrics, 2 bad config, {EXIT_OWNED} another "
                              "live daemon owns the GPUs (its pid in the state file, or listening on the socket)")
    add_config_flags(p)
    p.add_argument("--trainer", choices=["sim", "real", "none"], default="sim",
                   help="the job on a simulated node: the simulated job (sim), the shipped trainer with "
                        "2 CPU processes and the plugin connected (real), or none")
    p.add_argument("--trainer-config", type=Path, default=Path("examples/digits.toml"), metavar="TOML",
                   help="trainer config for --trainer real (default examples/digits.toml)")
    p.set_defaults(func=_run)
