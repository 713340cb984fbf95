"""A control-socket peer run as another uid: a child forked from the test that drops to that uid.

The plan is {"path": socket, "conns": [[step, ...], ...], "hold": bool}; each step is {"send": message without v/seq, "reply": bool}. Every connection
is opened and played in order and stays open; the replies (a message, {"closed": true} or
{"timeout": true}) are printed as one JSON line per connection, then "done". With "hold" the
connections stay open until the peer's stdin closes, so the caller decides when this peer disconnects.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, TextIO

HEADER = struct.Struct(">I")
OTHER_UID = 65534  # nobody: a second, unprivileged uid


def can_switch_uid() -> bool:
    """True where this process may run a peer as OTHER_UID (root)."""
    return os.geteuid() == 0


class Peer:
    """A peer process forked from this one and run as another uid; ``stdin``/``stdout`` are pipes to it.

    Forking (not exec) keeps the code already loaded here, so the peer runs wherever the checkout
    lies, even in a folder the other uid may not read.
    """

    def __init__(self, plan: dict[str, Any], uid: int) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the peer: drop to ``uid`` with no groups, play the plan, never return
            code = 1
            try:
                os.close(from_parent)
                os.close(to_parent)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                with os.fdopen(to_child) as inp, os.fdopen(from_child, "w") as out:
                    code = serve(plan, inp, out)
            finally:
                os._exit(code)
        os.close(to_child)
        os.close(from_child)
        self.stdin = os.fdopen(from_parent, "w")
        self.stdout = os.fdopen(to_parent)
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the peer to end (``timeout`` is kept for the Popen-like call sites); its exit code."""
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def spawn(plan: dict[str, Any], uid: int = OTHER_UID) -> Peer:
    """Start a peer as ``uid`` (no groups) on ``plan``; read its lines from ``stdout``."""
    return Peer(plan, uid)


def replies(proc: Peer) -> list[list[dict[str, Any]]]:
    """The replies of each of the peer's connections, once it played them all."""
    out = []
    while (line := proc.stdout.readline()) and line.strip() != "done":
        out.append(json.loads(line))
    return out


def run(path: Any, conns: list[list[dict[str, Any]]], uid: int = OTHER_UID) -> list[list[dict[str, Any]]]:
    """Play ``conns`` as ``uid`` against the socket at ``path``, then disconnect; the replies."""
    proc = spawn({"path": str(path), "conns": conns}, uid)
    proc.stdin.close()
    got = replies(proc)
    assert proc.wait() == 0, "the peer could not run as another uid"
    return got


def read_frame(sock: socket.socket) -> dict[str, Any]:
    """One message from the daemon, or what happened instead."""
    buf = b""
    try:
        while len(buf) < HEADER.size:
            chunk = sock.recv(HEADER.size - len(buf))
            if not chunk:
                return {"closed": True}
            buf += chunk
        (n,) = HEADER.unpack(buf)
        body = b""
        while len(body) < n:
            chunk = sock.recv(n - len(body))
            if not chunk:
                return {"closed": True}
            body += chunk
    except TimeoutError:
        return {"timeout": True}
    except OSError:
        return {"closed": True}
    return dict(json.loads(body))


def play(path: str, steps: list[dict[str, Any]]) -> tuple[socket.socket | None, list[dict[str, Any]]]:
    """Open one connection and play its steps; returns it (None when refused at connect) and the replies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3.0)
    try:
        sock.connect(path)
    except OSError as e:
        return None, [{"connect_error": str(e)}]
    replies = []
    for seq, step in enumerate(steps):
        body = json.dumps({"v": 1, "seq": seq, **step["send"]}).encode()
        try:
            sock.sendall(HEADER.pack(len(body)) + body)
        except OSError:  # refused and closed before this was sent: what it said before closing is still here
            replies.append(read_frame(sock))
            break
        if step.get("reply", True):
            replies.append(read_frame(sock))
    return sock, replies


def serve(plan: dict[str, Any], inp: TextIO, out: TextIO) -> int:
    """Play every connection of ``plan`` in order, print each one's replies as a JSON line, then
    "done"; with "hold" keep them open until ``inp`` closes."""
    held = []
    for steps in plan["conns"]:
        sock, replies = play(plan["path"], steps)
        held.append(sock)
        print(json.dumps(replies), file=out, flush=True)
    print("done", file=out, flush=True)
    if plan.get("hold"):
        inp.read()
    for sock in held:
        if sock is not None:
            sock.close()
    return 0
