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
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from gputuned import protocol as P
from gputuned.daemon.control.config import ControlConfig

logger = logging.getLogger(__name__)
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
    if gid is not None and os.stat(path).st_gid != gid:  # the daemon's own group needs no chown
        try:
            os.chown(path, -1, gid)
        except PermissionError as e:
            sock.close()
            path.unlink()
            raise OSError(e.errno, f"cannot give {path} group {cfg.socket_group} ({e.strerror}); under the "
                          f"systemd unit leave control.socket_group empty and set Group={cfg.socket_group} "
                          "in a drop-in (systemctl edit gputuned)") from e
    warn_unreachable(cfg, path)
    return sock


def _may(uid: int, st: os.stat_result, bit: int) -> bool:
    """Whether ``uid`` has permission ``bit`` (4 r, 2 w, 1 x) on a file with status ``st``."""
    try:
        pw = pwd.getpwuid(uid)
        member = pw.pw_gid == st.st_gid or pw.pw_name in grp.getgrgid(st.st_gid).gr_mem
    except KeyError:
        member = False
    shift = 6 if st.st_uid == uid else 3 if member else 0
    return bool(stat.S_IMODE(st.st_mode) >> shift & bit)


def warn_unreachable(cfg: ControlConfig, path: Path) -> list[int]:
    """Log one warning naming the ``allowed_uids`` that the socket's mode and group (or its
    directory's) keep from connecting at all; returns them."""
    try:
        sock_st, dir_st = os.stat(path), os.stat(path.parent)
    except OSError:
        return []
    shut = [u for u in cfg.allowed_uids if u not in (0, os.getuid())
            and not (_may(u, dir_st, 1) and _may(u, sock_st, 2))]
    if shut:
        try:
            group = grp.getgrgid(sock_st.st_gid).gr_name
        except KeyError:
            group = str(sock_st.st_gid)
        logger.warning("control.allowed_uids %s cannot open %s (mode %04o, group %s; directory mode %04o): "
                       "add them to group %s (usermod -aG %s USER); each peer is still checked",
                       ",".join(map(str, shut)), path, stat.S_IMODE(sock_st.st_mode), group,
                       stat.S_IMODE(dir_st.st_mode), group, group)
    return shut


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
