"""A control-socket peer run as another uid (``setpriv --reuid ...``): standard library only.

Usage: ``python uid_peer.py PLAN_JSON``. The plan is {"path": socket, "conns": [[step, ...], ...],
"hold": bool}; each step is {"send": message without v/seq, "reply": bool}. Every connection
is opened and played in order and stays open; the replies (a message, {"closed": true} or
{"timeout": true}) are printed as one JSON line per connection, then "done". With "hold" the
connections stay open until stdin closes, so the caller decides when this peer disconnects.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from typing import Any

HEADER = struct.Struct(">I")
OTHER_UID = 65534  # nobody: a second, unprivileged uid


def can_switch_uid() -> bool:
    """True where this process may run a peer as OTHER_UID (root, with setpriv installed)."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def spawn(plan: dict[str, Any], uid: int = OTHER_UID) -> subprocess.Popen[str]:
    """Start this script as ``uid`` (no groups) on ``plan``; read its lines from stdout."""
    cmd = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
           sys.executable, "-I", os.path.abspath(__file__), json.dumps(plan)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def replies(proc: subprocess.Popen[str]) -> list[list[dict[str, Any]]]:
    """The replies of each of the peer's connections, once it played them all."""
    assert proc.stdout is not None
    out = []
    while (line := proc.stdout.readline()) and line.strip() != "done":
        out.append(json.loads(line))
    return out


def run(path: Any, conns: list[list[dict[str, Any]]], uid: int = OTHER_UID) -> list[list[dict[str, Any]]]:
    """Play ``conns`` as ``uid`` against the socket at ``path``, then disconnect; the replies."""
    proc = spawn({"path": str(path), "conns": conns}, uid)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "the peer could not run as another uid"
    return [json.loads(line) for line in out.splitlines() if line.strip() != "done"]


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
        except OSError:
            replies.append({"closed": True})
            break
        if step.get("reply", True):
            replies.append(read_frame(sock))
    return sock, replies


def main() -> int:
    plan = json.loads(sys.argv[1])
    held = []
    for steps in plan["conns"]:
        sock, replies = play(plan["path"], steps)
        held.append(sock)
        print(json.dumps(replies), flush=True)
    print("done", flush=True)
    if plan.get("hold"):
        sys.stdin.read()
    for sock in held:
        if sock is not None:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
