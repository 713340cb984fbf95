"""One control-socket connection: peer credentials, frame decoder, output buffer and limits.

The server owns the sockets and the selector; this holds what it knows of each peer and
decides the per-connection limits: a token bucket (``max_messages_per_second``, burst of
twice that) and the hello, frame (slowloris) and idle timeouts.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from gputuned.daemon import control_frames as P
from gputuned.daemon.config import ControlConfig

_CRED = struct.Struct("3i")
MAX_OUTPUT_BYTES = 1 << 20


class Connection:
    """What the server keeps per connection."""

    __slots__ = ("sock", "cid", "pid", "uid", "gid", "accepted", "last_seen", "decoder", "out", "kind",
                 "job", "rank", "leader", "seq_out", "tokens", "refilled", "drops", "drop_window", "errors")

    def __init__(self, sock: socket.socket, cid: int, cred: tuple[int, int, int], now: float, max_bytes: int, burst: float) -> None:
        self.sock = sock
        self.cid = cid
        self.pid, self.uid, self.gid = cred
        self.accepted = self.last_seen = now
        self.decoder = P.FrameDecoder(max_bytes)
        self.out = bytearray()
        self.kind = "new"  # new, client, admin
        self.job = ""
        self.rank = -1
        self.leader = False
        self.seq_out = 0
        self.tokens = burst
        self.refilled = now
        self.drops = 0
        self.drop_window = now
        self.errors = 0

    def admit(self, now: float, rate: float) -> str | None:
        """Take a token for one message: None, or "rate_limited", or "flooding" (cut it off)."""
        self.tokens = min(2.0 * rate, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        if now - self.drop_window > 1.0:
            self.drop_window, self.drops = now, 0
        self.drops += 1
        return "flooding" if self.drops > rate else "rate_limited"

    def queue(self, msg: dict[str, Any]) -> bool:
        """Append a frame for ``msg`` to the output; False when the peer stopped reading."""
        frame = P.encode({"v": P.VERSION, "seq": self.seq_out, **msg})
        self.seq_out += 1
        if len(self.out) + len(frame) > MAX_OUTPUT_BYTES:
            return False
        self.out += frame
        return True

    def expired(self, now: float, cfg: ControlConfig) -> tuple[str, str] | None:
        """(reason, text) when a timeout ran out: no hello, a frame too slow, or silence."""
        if self.kind == "new" and now - self.accepted > cfg.hello_timeout_s:
            return "hello_timeout", f"no hello within {cfg.hello_timeout_s:g} s"
        started = self.decoder.partial_since
        if started is not None and now - started > cfg.frame_timeout_s:
            return "frame_timeout", f"frame not complete within {cfg.frame_timeout_s:g} s"
        if now - self.last_seen > cfg.idle_timeout_s:
            return "idle", f"silent for {cfg.idle_timeout_s:g} s"
        return None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return int(pid), int(uid), int(gid)


def supplementary_groups(pid: int) -> set[int]:
    """The peer's supplementary groups from /proc (empty when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()
