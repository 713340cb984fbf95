"""The ``gputuned`` command line: one subcommand per module, heavy imports deferred.

Each module named in :data:`COMMAND_MODULES` defines ``register(subparsers)`` adding its
subcommand(s), with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit code.
Command modules import torch, pandas or prophet only inside ``func``, so the daemon's
process stays lean.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from gputuned import EXIT_USAGE, __version__

COMMAND_MODULES: tuple[str, ...] = (
    "gputuned.daemon.commands.run",
    "gputuned.daemon.commands.trace",
    "gputuned.daemon.commands.status",
    "gputuned.daemon.commands.top",
    "gputuned.tuner.forecast.commands",
    "gputuned.dashboards.commands",
    "gputuned.daemon.commands.tuner",
    "gputuned.collectors.sim.commands",
    "gputuned.daemon.commands.experiment",
    "gputuned.trainer_plugin.commands",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (no usage block), exit 2.

    Subcommand parsers inherit the class, so every ``gputuned`` command errs the same way.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``gputuned`` parser with every command module's subcommands."""
    parser = OneLineParser(
        prog="gputuned",
        description="GPU monitoring and autotuning daemon for training hosts.",
    )
    parser.add_argument("--version", action="version", version=f"gputuned {__version__}")
    parser.add_argument(
        "--log-level", default=None, choices=["debug", "info", "warning", "error"], help="override the config's log level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(level: str) -> None:
    """Log to stderr (journald picks it up), one line per event."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.log_level or getattr(args, "default_log_level", "info"))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
