"""``gputuned status``, ``gputuned restore`` and ``gputuned set``: talk to the node's daemon.

All three speak the control socket's ``admin`` message (root, or a uid in
``control.admin_uids``). ``restore`` also works with no daemon running: it reads the
state file and restores the GPUs itself, which is what the unit's ExecStopPost does
after a crash. It never restores offline behind a live daemon's back: when the state file's
writer still runs (:mod:`~gputuned.daemon.actuation.owner`) but does not answer, it says so and
restores nothing.

Exit codes: 0 done, 1 the daemon refused or failed, 2 bad input, 3 no daemon answers at the
socket (not running), 4 the socket refuses this user (permission denied), 5 (``restore``)
another live daemon owns the GPUs and did not answer: nothing restored.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import sys
from pathlib import Path
from typing import Any

from gputuned import protocol
from gputuned.daemon.actuation import knobs as knob_registry
from gputuned.daemon.actuation.owner import EXIT_OWNED, live_owner
from gputuned.daemon.actuation.pins import PinFile, pins_path
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.config import Config
from gputuned.daemon.commands.run import add_config_flags, load_or_report

EXIT_NOT_RUNNING = 3
EXIT_DENIED = 4


class AdminError(RuntimeError):
    """The daemon could not be reached (``reached`` False) or answered with an error.

    ``denied``: the socket's permissions refused this user (a daemon is likely listening).
    """

    def __init__(self, text: str, reached: bool = False, denied: bool = False) -> None:
        super().__init__(text)
        self.reached = reached
        self.denied = denied


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def permission_hint(path: str | Path) -> str:
    """Why this user may not connect to the socket at ``path``, and what would let it."""
    path = Path(path)
    try:
        st = path.stat()
    except PermissionError:
        return f"permission denied: cannot enter {path.parent} to reach {path} (run as root or ask an admin)"
    except OSError:
        return f"permission denied: {path}"
    group = _group_name(st.st_gid)
    mode = f"{st.st_mode & 0o777:04o}"
    if st.st_mode & 0o060 == 0o060 and st.st_gid != 0 and st.st_gid not in os.getgroups():
        return f"permission denied: join group {group} (socket {path} is mode {mode}, group {group})"
    return (f"permission denied: socket {path} is mode {mode}, owner {st.st_uid}, group {group}; "
            "run as root or set control.socket_group to a group of yours")


def admin_request(path: str | Path, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """Send one admin message and return the daemon's ``admin_reply``. Raises AdminError.

    ``reached`` is True also for a request refused before it is sent, or a reply that breaks
    the protocol: either way a fallback that skips the daemon would be wrong.
    """
    try:
        reply = protocol.request(path, protocol.message("admin", op=op, **fields), timeout)
    except PermissionError:
        raise AdminError(permission_hint(path), reached=True, denied=True) from None
    except OSError as e:
        raise AdminError(f"cannot reach the daemon at {path}: {e.strerror or e}") from None
    except protocol.ProtocolError as e:
        raise AdminError(f"protocol error: {e}", reached=True) from None
    if reply["type"] == "error":
        raise AdminError(f"daemon refused: {reply['error']}", reached=True)
    return reply


def _socket_path(args: argparse.Namespace, cfg: Config) -> Path:
    return Path(args.socket) if args.socket else Path(cfg.control.socket_path)


def _status(args: argparse.Namespace) -> int:
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    if getattr(args, "watch", False):  # the live view: `gputuned top` under its older name
        from gputuned.daemon.commands.top import run_top

        return run_top(argparse.Namespace(socket=args.socket, metrics_url=args.metrics_url,
                                          refresh=args.watch_interval, count=args.watch_count), cfg)
    path = _socket_path(args, cfg)
    try:
        reply = admin_request(path, "status", timeout=args.timeout)
    except AdminError as e:
        if e.denied:
            print(json.dumps({"running": None, "error": str(e)}) if args.json else f"gputuned: {e}",
                  file=sys.stdout if args.json else sys.stderr)
            return EXIT_DENIED
        from gputuned.daemon.actuation.statefile import StateFileError

        try:
            pending = sorted(StateFile(cfg.daemon.state_file).load().gpus)
        except StateFileError as se:
            pending = [f"unreadable state file: {se}"]
        if args.json:
            print(json.dumps({"running": False, "error": str(e), "pending_restore": pending}))
        else:
            print(f"gputuned: daemon not running: {e}", file=sys.stderr)
            if pending:
                print(f"state file {cfg.daemon.state_file} lists GPUs to restore: {', '.join(pending)} "
                      "(run `gputuned restore`)", file=sys.stderr)
        return EXIT_NOT_RUNNING
    status = dict(reply.get("status", {}))
    if args.json:
        print(json.dumps({"running": True, **status}, indent=1))
    else:
        from gputuned.daemon.commands.top_tables import render_status

        render_status(status)
    return 0


def restore_offline(cfg: Config, clear_pins: bool = False) -> tuple[int, list[str]]:
    """Restore from the state file without a daemon (``clear_pins``: the operator's pins too); (exit code, lines)."""
    from gputuned.daemon.actuation.actuator import restore_from_state
    from gputuned.daemon.app.daemon import setup_gpus

    state_file = StateFile(cfg.daemon.state_file)
    owner = live_owner(state_file)
    if owner is not None:  # its records, its GPUs: restored by it (on stop, or through its socket)
        return EXIT_OWNED, [f"FAILED: {owner.line()}; nothing is restored offline behind its back "
                            "(`gputuned restore` through its socket, or stop it: its stop restores)"]
    lines = _pins_offline(PinFile(pins_path(state_file.path)), clear_pins)
    if not state_file.exists():
        state_file.clean_temp_files()
        return 0, [f"nothing to restore ({state_file.path} absent)", *lines]
    gpus = setup_gpus(cfg)
    try:
        report = restore_from_state(gpus.devices, state_file, cfg=cfg.actuation)
    finally:
        if gpus.nvml is not None:
            try:
                gpus.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - nothing left to do about it
                pass
    lines = [f"restored {', '.join(k) or 'nothing'} on {u}" for u, k in report.restored.items()] + lines
    lines += [f"kept: {k}" for k in report.kept]
    lines += [f"FAILED: {f}" for f in report.failures]
    return (0 if report.ok else 1), lines


def _pins_offline(pins: PinFile, clear: bool) -> list[str]:
    """Clear the operator's pins (``gputuned restore``) or say they stay (the unit's ``--offline``)."""
    held = pins.load()
    if not clear:
        return [f"the operator's pins stay in {pins.path} ({len(held)}; `gputuned restore` without --offline "
                "clears them)"] if held else []
    if not pins.path.exists():
        return []
    try:
        pins.save({})
    except OSError as e:
        return [f"FAILED: cannot clear the pins in {pins.path}: {e.strerror or e}"]
    return [f"released {len(held)} pin(s) ({pins.path})"]


def _unanswered(e: AdminError, timeout: float) -> str | None:
    """Why a daemon that is listening did not serve a request (too slow or too busy); None otherwise."""
    text = str(e)
    if e.reached and "too many connections" in text:
        return "refused the connection (too many connections)"
    if not e.reached and "timed out" in text:
        return f"did not answer within {timeout:g} s"
    return None


def _restore(args: argparse.Namespace) -> int:
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    path = _socket_path(args, cfg)
    if path.exists() and not args.offline:
        try:
            reply = admin_request(path, "restore", timeout=args.timeout, **({"gpu": args.gpu} if args.gpu is not None else {}))
        except AdminError as e:
            unanswered = _unanswered(e, args.timeout)
            if e.reached and unanswered is None:  # a running daemon said no: do not restore behind its back
                print(f"gputuned: {e}", file=sys.stderr)
                return 1
            if unanswered is not None and live_owner(StateFile(cfg.daemon.state_file)) is None:
                # there but not serving, and not the state file's writer: the originals must still come back
                print(f"gputuned: the daemon at {path} {unanswered}; restoring offline from the state file", file=sys.stderr)
            elif unanswered is not None:
                print(f"gputuned: the daemon at {path} {unanswered}", file=sys.stderr)
            # otherwise no daemon (the ExecStopPost case): restore directly
        else:
            for uuid, knobs in reply.get("restored", {}).items():
                print(f"restored {', '.join(knobs) or 'nothing'} on {uuid}")
            for f in reply.get("failures", []):
                print(f"FAILED: {f}", file=sys.stderr)
            return 0 if reply.get("ok") else 1
    code, lines = restore_offline(cfg, clear_pins=not args.offline)  # the unit's --offline keeps the pins
    for line in lines:
        print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    return code


def _cli_type(knob: Any) -> Any:
    """argparse type for a knob's flag: its parser, with a usage error naming the flag."""
    def parse(text: str) -> Any:
        try:
            return knob.cli.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {knob.cli.metavar}, got {text!r}") from None
    return parse


def _knob_value(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE as JSON in the knob's stored unit (an integer or a pair)."""
    name, sep, raw = text.partition("=")
    try:
        if not sep:
            raise ValueError(text)
        return name, json.loads(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (VALUE as JSON), got {text!r}") from None


def _wanted(args: argparse.Namespace) -> list[tuple[str, Any]]:
    out = [(k.name, getattr(args, f"knob_{k.name}")) for k in knob_registry.knobs()
           if k.cli is not None and getattr(args, f"knob_{k.name}", None) not in (None, False)]
    return out + list(args.knob or [])


def knob_text(name: str, value: Any) -> tuple[str, str]:
    """A knob's label and a value in its display unit (``power limit``, ``400 W``)."""
    knob = knob_registry.get(name)
    if knob is None:  # a plugin knob this process has not imported: the stored value as given
        return name, json.dumps(value)
    return knob.label or knob.name, knob.format(value)


def _set(args: argparse.Namespace) -> int:
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    wanted = _wanted(args)
    where = f"job {args.job}" if args.job else f"gpu {args.gpu}"
    target = {"job": args.job} if args.job else {"gpu": args.gpu}
    if (args.gpu is None) == (args.job is None) and not (args.release is not None and args.gpu is None and args.job is None):
        print("gputuned set: give one of --gpu N, --job NAME", file=sys.stderr)
        return 2
    if args.release is not None:
        return _release(args, cfg, target, list(args.release))
    if not wanted:
        flags = [k.cli.flag for k in knob_registry.knobs() if k.cli is not None]
        print(f"gputuned set: give at least one of {', '.join(flags)}, --knob NAME=VALUE, --release", file=sys.stderr)
        return 2
    code = 0
    for knob, value in wanted:
        try:
            reply = admin_request(_socket_path(args, cfg), "set", timeout=args.timeout, **target, knob=knob, value=value)
        except AdminError as e:
            print(f"gputuned: {e}", file=sys.stderr)
            return EXIT_DENIED if e.denied else EXIT_NOT_RUNNING if not e.reached else 1
        label, shown = knob_text(knob, value)
        if reply.get("ok"):
            pinned = ", pinned until `gputuned set --release`" if reply.get("pinned") else ""
            why = f": {reply['reason']}" if reply.get("reason") else ""
            print(f"{where}: {label} = {shown} ({reply.get('code')}{why}{pinned})")
        else:
            print(f"{where}: {label} {shown} refused ({reply.get('code')}): {reply.get('reason')}", file=sys.stderr)
            code = 1
    return code


def _release(args: argparse.Namespace, cfg: Config, target: dict[str, Any], knobs: list[str]) -> int:
    """``set --release [KNOB...]``: the pins on the knobs named (all of the target's, or every pin), through the daemon."""
    released: list[dict[str, Any]] = []
    try:
        for knob in knobs or [""]:
            fields = {**({} if args.gpu is None and args.job is None else target), **({"knob": knob} if knob else {})}
            released += admin_request(_socket_path(args, cfg), "release", timeout=args.timeout, **fields).get("released", [])
    except AdminError as e:
        print(f"gputuned: {e}", file=sys.stderr)
        return EXIT_DENIED if e.denied else EXIT_NOT_RUNNING if not e.reached else 1
    for pin in released:
        print(f"{pin['target']}: {pin['knob']} released (the tuner may move it again)")
    if not released:
        print("nothing pinned there")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running daemon: GPUs, knobs vs originals, collectors, jobs",
                       epilog=f"exit status: 0 running, {EXIT_NOT_RUNNING} not running, "
                              f"{EXIT_DENIED} the socket refuses this user (permission denied)")
    add_config_flags(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default from the config)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--watch", action="store_true", help="the live view, same as `gputuned top`")
    p.add_argument("--watch-interval", type=float, default=2.0, metavar="S", help="seconds between refreshes")
    p.add_argument("--metrics-url", help="/metrics to read for --watch (default from the config; read-only)")
    p.add_argument("--watch-count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_status)

    p = sub.add_parser("restore", help="put every GPU back to the originals in the state file",
                       epilog=f"exit status: 0 restored (or nothing to restore), 1 a GPU not restored or the daemon "
                              f"refused, {EXIT_OWNED} another live daemon owns the GPUs and did not answer (nothing "
                              "restored offline behind its back)")
    add_config_flags(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default from the config)")
    p.add_argument("--gpu", type=int, help="only this GPU (through a running daemon)")
    p.add_argument("--offline", action="store_true", help="do not ask a running daemon; restore directly")
    p.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_restore)

    p = sub.add_parser("set", help="change a GPU's or a job's knob by hand through the daemon and pin it there "
                                   "(recorded, bounded, restored; the tuner leaves it until --release)")
    add_config_flags(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default from the config)")
    p.add_argument("--gpu", type=int, help="GPU index (a GPU knob)")
    p.add_argument("--job", help="job name (a job knob: --batch-size)")
    p.add_argument("--release", nargs="*", metavar="KNOB",
                   help="release pins instead: the knobs named (e.g. power_limit), else all of --gpu/--job's, else all")
    for knob in knob_registry.knobs():  # one flag per registered knob that declares one
        if knob.cli is not None:
            p.add_argument(knob.cli.flag, dest=f"knob_{knob.name}", type=_cli_type(knob), metavar=knob.cli.metavar,
                           help=knob.cli.help)
    p.add_argument("--knob", type=_knob_value, action="append", metavar="NAME=VALUE",
                   help="any registered knob, VALUE as JSON in its stored unit (e.g. power_limit=300000)")
    p.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_set)
