"""``gputuned top``: the live full-screen view of the node, its jobs and the tuner, with keys.

Locally it reads the daemon's /metrics and its admin status over the control socket; with
``--metrics-url`` it reads another node's /metrics only (read-only: no pause). Keys: ``s``
sorts, arrows or digits pick a GPU, ``p`` pauses or resumes the tuner (the kill-switch file
``gputuned tuner pause`` writes; admins), ``q`` quits. Piped, or with ``--count``, it prints
frames instead of drawing full-screen. ``gputuned status --watch`` is the same view.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gputuned.daemon.commands.top_data import Source, TopState
from gputuned.daemon.commands.top_view import SORTS, View, render_top

ARROWS = {"\x1b[C": "right", "\x1b[B": "right", "\x1b[D": "left", "\x1b[A": "left"}


def handle_key(key: str, view: View, state: TopState, toggle_pause: Callable[[bool], str] | None) -> bool:
    """Apply one key to ``view``; False when the key quits."""
    indices = [g.index for g in state.gpus]
    if key in ("q", "Q", "\x03"):
        return False
    if key == "s":
        view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
        view.message = f"sorted by {view.sort}"
    elif key.isdigit() and int(key) in indices:
        view.selected = int(key)
    elif ARROWS.get(key) and indices:
        pos = indices.index(view.selected) if view.selected in indices else 0
        view.selected = indices[(pos + (1 if ARROWS[key] == "right" else -1)) % len(indices)]
    elif key == "p":
        if toggle_pause is None:
            view.message = "pause: read-only view (remote --metrics-url)"
        else:
            view.message = toggle_pause(not state.tuner.paused)
    return True


def pauser(socket: str) -> Callable[[bool], str]:
    """Pause or resume the tuner through the daemon, as ``gputuned tuner pause|resume`` does (admins)."""
    from gputuned.daemon.commands.status import AdminError, admin_request

    def toggle(paused: bool) -> str:
        try:
            admin_request(socket, "pause" if paused else "resume")
        except AdminError as e:
            return f"cannot {'pause' if paused else 'resume'}: {e}"
        return f"tuner {'paused' if paused else 'resumed'}"
    return toggle


@contextmanager
def raw_keys() -> Iterator[Callable[[float], str]]:
    """Read single keys from the terminal without echo; yields ``read(timeout_s) -> key or ''``."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        key = os.read(fd, 1).decode(errors="replace")
        if key == "\x1b" and select.select([fd], [], [], 0.05)[0]:
            key += os.read(fd, 2).decode(errors="replace")
        return key
    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _live(source: Source, interval: float, toggle: Callable[[bool], str] | None) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    view = View()
    with raw_keys() as read, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            state = source.poll()
            if state.gpus and view.selected not in [g.index for g in state.gpus]:
                view.selected = state.gpus[0].index
            live.update(render_top(state, view, console.width), refresh=True)
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                key = read(left)
                if key and not handle_key(key, view, state, toggle):
                    return 0
                if key:
                    live.update(render_top(state, view, console.width), refresh=True)


def _frames(source: Source, interval: float, count: int) -> int:
    from rich.console import Console

    console = Console()
    view = View()
    shown = 0
    while True:
        state = source.poll()
        if state.gpus:
            view.selected = state.gpus[0].index
        console.print(render_top(state, view, console.width))
        shown += 1
        if count and shown >= count:
            return 0
        time.sleep(interval)


def metrics_url(cfg: Any) -> str:
    """The local daemon's /metrics URL, from the config."""
    host = cfg.exporter.listen_address
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{cfg.exporter.listen_port}/metrics"


def run_top(args: argparse.Namespace, cfg: Any) -> int:
    """Show the live view until ``q`` (or ``--count`` frames when piped or asked)."""
    remote = bool(getattr(args, "metrics_url", None))
    url = args.metrics_url if remote else metrics_url(cfg)
    # another node's /metrics is not paired with this node's socket unless --socket names one
    socket = args.socket or (None if remote else str(cfg.control.socket_path))
    source = Source(url, socket, None)  # the daemon's status says whether the tuner is paused
    interval = max(0.2, float(args.refresh))
    count = int(getattr(args, "count", 0) or 0)
    if count or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _frames(source, interval, count)
    return _live(source, interval, None if remote or socket is None else pauser(socket))


def _top(args: argparse.Namespace) -> int:
    from gputuned.daemon.commands.run import load_or_report

    cfg = load_or_report(args)
    if cfg is None:
        return 2
    return run_top(args, cfg)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``gputuned top``."""
    from gputuned.daemon.commands.run import add_config_flags

    p = sub.add_parser("top", help="live view: GPUs, jobs, tuner, alerts; keys s sort, arrows pick, p pause, q quit")
    add_config_flags(p)
    p.add_argument("--socket", metavar="PATH", help="control socket (default from the config)")
    p.add_argument("--metrics-url", metavar="URL", help="read this /metrics instead (another node; read-only)")
    p.add_argument("--refresh", type=float, default=2.0, metavar="S",
                   help="seconds between refreshes (default 2)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="print N frames and exit (no full screen)")
    p.set_defaults(func=_top)
