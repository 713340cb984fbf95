"""``gputuned tuner``: the tuner's research commands (bench, train) and pause|resume.

``pause`` and ``resume`` are admin operations on the running daemon, sent over its control
socket; the daemon keeps the flag, with who and when, beside its state file. With no daemon
answering, the flag is written there directly, so the next daemon's tuner starts paused: the
state directory is the folder of the config's ``daemon.state_file`` (``--config``, loaded as
every other command loads it), the flag is replaced atomically in that checked private
directory, and a directory that is missing, not a directory or unsafe is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gputuned import EXIT_USAGE
from gputuned.daemon.actuation.pause import PauseFlag, pause_path
from gputuned.daemon.app.config import Config
from gputuned.daemon.commands.run import load_or_report
from gputuned.daemon.commands.status import EXIT_DENIED, AdminError, admin_request
from gputuned.tuner import commands as research


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"gputuned tuner: error: {message}", file=sys.stderr)
    return code


def _flag_offline(cfg: Config, op: str, why: str) -> int:
    """Set or clear the flag in the state directory when no daemon answers."""
    flag = PauseFlag(pause_path(cfg.daemon.state_file))
    directory = flag.path.parent
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        return _fail(f"no daemon ({why}) and state directory {directory} (daemon.state_file's folder) {what}")
    try:
        flag.set(op == "pause", f"gputuned tuner {op} (no daemon)")
    except OSError as e:  # UnsafeDirectory says why in its text
        return _fail(f"{flag.path}: {e.strerror or e}")
    print(f"tuner {'paused' if op == 'pause' else 'resumed'} ({flag.path}; no daemon running)")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """Pause or resume the tuner through the daemon (admin), else by the flag in the state directory."""
    cfg = load_or_report(args)
    if cfg is None:
        return EXIT_USAGE
    op = args.command_name
    socket = Path(args.socket) if args.socket else Path(cfg.control.socket_path)
    try:
        reply = admin_request(socket, op)
    except AdminError as e:
        if e.denied:
            return _fail(str(e), EXIT_DENIED)
        if e.reached:
            return _fail(str(e))
        return _flag_offline(cfg, op, str(e))
    if not reply.get("ok"):
        return _fail(f"daemon refused: {reply.get('error')}")
    state = reply.get("paused")
    print(f"tuner {'paused' if state else 'resumed'}" + (f" (by {state['by']})" if state else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gputuned tuner ...``."""
    tuner = subparsers.add_parser("tuner", help="RL tuner: bench, train, pause/resume")
    sub = tuner.add_subparsers(dest="tuner_command", metavar="ACTION", required=True)
    research.add_commands(sub)
    for name, text in (("pause", "stop all tuner actions (kept in the state directory: survives restarts)"),
                       ("resume", "allow tuner actions again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", metavar="PATH", help="TOML config (default /etc/gputuned/gputuned.toml if present)")
        p.add_argument("--socket", metavar="PATH", help="the daemon's control socket (default from the config)")
        p.set_defaults(func=cmd_pause, command_name=name)
