"""Control-socket plumbing: binding the socket, checking peers, and one connection's state.

The server owns the sockets and the selector; this binds the listening socket (never
stealing a live daemon's), decides which peers may connect from their credentials
(SO_PEERCRED), and holds what the server knows of each connection and its limits: a token
bucket (``max_messages_per_second``, burst of twice that) and the hello, frame (slowloris)
and idle timeouts. Admin uids (:func:`is_admin`) get ``admin_connections`` slots beyond
``max_connections``; refusals are logged through a :class:`LogLimiter`, one line per peer uid
and reason per interval, so a flood of refused hellos is one line, not one per message.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import struct
from pathlib import Path
from typing import Any

from gputuned import protocol as P
from gputuned.daemon.control.config import ControlConfig

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
        """Append a frame for ``msg`` to the output; False when the peer stopped reading.

        Raises ProtocolError when ``msg`` cannot be encoded within its size limit.
        """
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


def socket_gid(cfg: ControlConfig) -> int | None:
    """The gid of ``control.socket_group`` (None when unset)."""
    g = cfg.socket_group
    if not g:
        return None
    return int(g) if g.isdigit() else grp.getgrnam(g).gr_gid


def bind_socket(cfg: ControlConfig) -> socket.socket:
    """Bind and listen on ``cfg.socket_path`` with its mode and group; raises OSError.

    A socket file nobody answers on is a dead daemon's and is replaced; one that answers
    belongs to a live daemon and is left alone (EADDRINUSE).
    """
    path = Path(cfg.socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise OSError(errno.EADDRINUSE, f"another process listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o777 & ~cfg.socket_mode)  # no window with looser permissions
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, cfg.socket_mode)
    gid = socket_gid(cfg)
    if gid is not None:
        os.chown(path, -1, gid)
    return sock


def refuse_peer(cred: tuple[int, int, int], cfg: ControlConfig) -> tuple[str, str] | None:
    """(reason, text) when the peer with credentials (pid, uid, gid) may not connect."""
    pid, uid, gid = cred
    if uid in (0, os.getuid()) or uid in cfg.allowed_uids or uid in cfg.admin_uids:
        return None
    gids = set(cfg.allowed_gids)
    gids.add(os.getgid())  # the unit's Group=: members may connect
    sock_gid = socket_gid(cfg)
    if sock_gid is not None:
        gids.add(sock_gid)
    if gid in gids or (gids and supplementary_groups(pid) & gids):
        return None
    return "not_allowed", f"uid {uid} gid {gid} is not allowed (control.allowed_uids, control.allowed_gids)"


def is_admin(uid: int, cfg: ControlConfig) -> bool:
    """True for a uid that may set knobs and restore: one of ``admin_uids``, or the daemon's own."""
    return uid in cfg.admin_uids or uid == os.getuid()


class LogLimiter:
    """One log line per key (a peer's uid and a reason) per interval, however many peers or messages."""

    def __init__(self, interval_s: float = 10.0, max_keys: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: dict[tuple[int, str], tuple[float, int]] = {}  # key -> (logged at, held back since)

    def allow(self, key: tuple[int, str], now: float) -> int | None:
        """None: hold this line back; else log it, with the number of lines held back before it."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval_s}
            if len(self._last) >= self.max_keys:
                return None
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]
