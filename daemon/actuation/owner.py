"""One owner of the GPUs per host: finding a live daemon before touching its GPUs or its state file.

A daemon that changed a GPU holds the state file, and the file holds its pid. Any other
gputuned process (``record``, a second ``run``, an offline ``restore``, an actuator's start-up
restore of "a previous run") first asks :func:`live_owner`: the file's writer counts as live
when that pid is a running (not zombie) process whose command line names gputuned; a daemon
that has changed nothing yet is found by its control socket, whose listener's pid the kernel
reports on connect (SO_PEERCRED). A live owner's records and GPUs are left alone: a second
daemon refuses to start (:data:`EXIT_OWNED`), ``record`` collects without actuating, and an
offline restore refuses. This process's own pid never counts (its own earlier actuator is a
previous run). Without /proc (or where it hides other users' processes) a running pid counts
as live: leaving a dead daemon's file for ``gputuned restore`` is the safe mistake.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from gputuned.daemon.actuation.statefile import StateFile

logger = logging.getLogger(__name__)

#: Exit status of ``gputuned run`` and ``gputuned restore`` when another live daemon owns the GPUs.
EXIT_OWNED = 5

_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    """A live daemon that owns the GPUs: its pid and where it was found (state file or control socket)."""

    pid: int
    found: str

    def line(self) -> str:
        """The one line every refusing command prints."""
        return f"another daemon, pid {self.pid}, owns the GPUs ({self.found})"


def writer_pid(state_file: StateFile) -> int | None:
    """The pid recorded in the state file (or its copy), None when neither holds one; never modifies them."""
    for path in (state_file.path, state_file.previous):
        try:
            if path.is_symlink():
                continue
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        pid = raw.get("pid") if isinstance(raw, dict) else None
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            return pid
    return None


def is_live_gputuned(pid: int, proc: Path = _PROC) -> bool:
    """Whether ``pid`` runs (not a zombie) and is a gputuned process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    try:
        stat = (proc / str(pid) / "stat").read_text()
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return True  # it runs, but /proc is absent or hides it (hidepid): it may be the daemon
    if stat[stat.rfind(")") + 1:].split()[:1] == ["Z"]:
        return False  # exited, not yet reaped: it changes nothing any more
    return runs_gputuned(cmdline)


def runs_gputuned(cmdline: bytes) -> bool:
    """Whether a /proc cmdline is gputuned's: its program (``gputuned``, or an interpreter running
    the ``gputuned`` script) or ``python -m gputuned...``; a path that merely contains the name is not."""
    args = [a for a in cmdline.split(b"\0") if a][:3]  # the program, or an interpreter, a flag and its program
    for i, arg in enumerate(args):
        if os.path.basename(arg) == b"gputuned":
            return True
        if arg == b"-m" and i + 1 < len(args) and args[i + 1].split(b".")[0] == b"gputuned":
            return True
    return False


def socket_owner(path: Path | str) -> int | None:
    """The pid of the process listening on the control socket at ``path``, None when nobody listens."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        cred = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        probe.close()
    pid = struct.unpack("3i", cred)[0]
    return pid if pid > 0 else None


def live_owner(state_file: StateFile, socket_path: Path | str | None = None) -> Owner | None:
    """The live daemon (other than this process) that owns the GPUs, or None when there is none."""
    pid = writer_pid(state_file)
    if pid is not None and pid != os.getpid() and is_live_gputuned(pid):
        return Owner(pid, f"it wrote {state_file.path}")
    if socket_path is not None:
        pid = socket_owner(socket_path)
        if pid is not None and pid != os.getpid() and is_live_gputuned(pid):
            return Owner(pid, f"it listens on {socket_path}")
    return None
