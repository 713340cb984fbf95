"""The control socket: trainer reports in, batch-size decisions out, on one selector thread.

A Unix stream socket (docs/protocol.md). Each connection's peer credentials
(SO_PEERCRED) are checked against the config when it is accepted. Input is read
non-blocking into a frame decoder with a size limit, so one slow, malformed, oversized
or flooding client costs the others nothing: it is answered with an error, rate-limited
or disconnected, and counted in ``gputuned_control_rejected_total{reason}``. What each
message does is the message handler's (:mod:`gputuned.daemon.control.messages`); reports
update the job table, published under source ``trainer`` each collection tick.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gputuned import protocol as P
from gputuned.collectors.families import Sample
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.conn import (
    Connection,
    LogLimiter,
    bind_socket,
    is_admin,
    peer_credentials,
    refuse_peer,
)
from gputuned.daemon.control.decisions import AckCallback, AdminHandler, DecisionBook, NoLeaderError
from gputuned.daemon.control.messages import MessageHandler
from gputuned.daemon.control.reports import (
    CONNECTIONS,
    DECISIONS,
    JOBS,
    REJECTED,
    REPORTS,
    JobTable,
    series_keys,
)
from gputuned.daemon.core.store import Store

logger = logging.getLogger(__name__)

#: How long accepting stops after an accept error such as EMFILE (seconds).
ACCEPT_PAUSE_S = 0.1
#: How long the selector sleeps while it holds connections or accepting is paused (their deadlines are
#: swept), and while it holds none: a new connection, a queued decision or stop() wakes it at once.
SWEEP_S = 0.25
IDLE_S = 2.0

MAX_ERRORS = 10


class ControlServer:
    """Control-socket server; a daemon component (start/tick/stop) and the tuner's decision API."""

    name = "control"

    def __init__(self, cfg: ControlConfig, store: Store | None = None, admin: AdminHandler | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.jobs = JobTable()
        self.jobs.configure(cfg)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.book = DecisionBook()
        self.messages = MessageHandler(cfg, self.jobs, self.book, admin, self)
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._accept_paused_until = 0.0  # monotonic time the listener is watched again (0: watched)
        self._accept_warned = float("-inf")
        self._conns: dict[int, Connection] = {}
        self._next_cid = 0
        self._lock = threading.Lock()
        self._outbox: list[tuple[int, dict[str, Any]]] = []
        self.profile_results = self.book.profile_results
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self._log = LogLimiter()
        self.clock: Callable[[], float] = time.time  # the ticks' clock: when a rank left, against job_ttl_s

    # -- component ---------------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket (refusing to steal a live daemon's) and start serving."""
        sock = bind_socket(self.cfg)
        sock.listen(128)
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="gputuned-control", daemon=True)
        self._thread.start()
        logger.info("control socket listening on %s", self.cfg.socket_path)

    def tick(self, now: float) -> None:
        if self._listener is None:  # not started (or could not bind): nothing to publish
            return
        gone = self.jobs.expire(now)
        if self.store is not None:
            self.store.publish("trainer", now, self.samples())
            if gone:  # their ring buffers would otherwise stay for the daemon's lifetime
                self.store.forget(k for job, rank in gone for k in series_keys(job, rank))

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            self._close(conn, None)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.cfg.socket_path)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def reload(self, cfg: ControlConfig) -> None:
        """Take new limits and allowed peers; the socket path, mode and group need a restart."""
        if (cfg.socket_path, cfg.socket_mode, cfg.socket_group) != (self.cfg.socket_path, self.cfg.socket_mode, self.cfg.socket_group):
            logger.warning("control socket path, mode or group changed: takes effect at the next restart")
        self.cfg = self.messages.cfg = cfg
        self.jobs.configure(cfg)

    @property
    def url(self) -> str:
        return str(self.cfg.socket_path)

    @property
    def reports_total(self) -> int:
        """Trainer reports accepted since start."""
        return self.jobs.reports

    # -- the tuner's API -----------------------------------------------------------------
    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        """Queue a decision for ``job``'s leader; returns its id. Raises NoLeaderError, ValueError."""
        change = P.decision_change(payload)  # ProtocolError is a ValueError
        with self._lock:
            cid = self.jobs.leader(job)  # the rank-0 connection of the job's owner, and no other
            conn = self._conns.get(cid) if cid is not None else None
            if conn is None or conn.kind != "client":
                raise NoLeaderError(f"no leader of job {job!r} is connected")
            ident = self.book.new(job, conn.cid, profile="profile_steps" in change)
            self._outbox.append((conn.cid, P.message("decision", id=ident, **change)))
        self._wake()
        return ident

    def on_ack(self, callback: AckCallback) -> None:
        """Call ``callback(job, ack)`` on the control thread for every ack received."""
        self.book.on_ack(callback)

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None:
        """The ack of decision ``ident``, waiting up to ``timeout`` seconds; None if none came."""
        return self.book.wait(ident, timeout)

    @property
    def decisions(self) -> dict[str, int]:
        """Decisions by result: sent, acked, refused, undelivered."""
        return self.book.snapshot()

    def connected_jobs(self) -> dict[str, list[int]]:
        """Connected ranks per job."""
        return self.jobs.jobs()

    def rank_times(self, job: str) -> dict[int, tuple[float, float]]:
        """Each rank's (compute_s, wait_s) per step of ``job``, all nodes', as its ranks here last reported."""
        return self.jobs.rank_times(job)

    def samples(self) -> list[Sample]:
        out = self.jobs.samples()
        out.append((REPORTS, (), float(self.reports_total)))
        out.append((CONNECTIONS, (), float(len(self._conns))))
        out.append((JOBS, (), float(len(self.jobs.jobs()))))
        decisions = self.book.snapshot()
        for reason, n in sorted(dict(self.rejected).items()):  # dict(): one atomic copy
            out.append((REJECTED, (("reason", reason),), float(n)))
        for result, n in sorted(decisions.items()):
            out.append((DECISIONS, (("result", result),), float(n)))
        return out

    # -- the selector thread --------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=SWEEP_S if self._conns or self._accept_paused_until else IDLE_S)
            except OSError:
                if self._stop.is_set():
                    return
                raise
            now = time.monotonic()
            for key, mask in events:
                fobj = key.fileobj
                if fobj is self._listener:
                    self._accept(now)
                elif fobj is self._wake_r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    conn = key.data
                    try:
                        if mask & selectors.EVENT_READ and conn.cid in self._conns:
                            self._read(conn, now)
                        if mask & selectors.EVENT_WRITE and conn.cid in self._conns:
                            self._flush(conn)
                    except Exception:  # noqa: BLE001 - drop the connection, keep serving the others
                        logger.exception("control: connection of pid %d failed", conn.pid)
                        self._close(conn, "internal error")
            self._deliver()
            if now - self._last_sweep >= 0.1:
                self._sweep(now)
                self._last_sweep = now

    def _accept(self, now: float) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._pause_accepting(now, e)
                return
            sock.setblocking(False)
            cred = peer_credentials(sock)
            why = self._refuse(cred)
            if why is not None:
                self.rejected[why[0]] += 1
                held = self._log.allow((cred[1], why[0]), now)
                if held is not None:
                    logger.warning("control: refused pid %d uid %d gid %d: %s%s", cred[0], cred[1], cred[2], why[1],
                                   _held_text(held))
                self._send_now(sock, {"v": P.VERSION, "seq": 0, **P.error(why[1])})
                sock.close()
                continue
            self._next_cid += 1
            burst = 2.0 * self.cfg.max_messages_per_second
            conn = Connection(sock, self._next_cid, cred, now, self.cfg.max_message_bytes, burst)
            with self._lock:
                self._conns[conn.cid] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _refuse(self, cred: tuple[int, int, int]) -> tuple[str, str] | None:
        cfg = self.cfg
        # admin uids get admin_connections slots more, so idle clients can never lock them out
        limit = cfg.max_connections + (cfg.admin_connections if is_admin(cred[1], cfg) else 0)
        if len(self._conns) >= limit:
            return "too_many_connections", f"too many connections (max {cfg.max_connections})"
        return refuse_peer(cred, cfg)

    def _send_now(self, sock: socket.socket, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            sock.send(P.encode(msg))

    def _read(self, conn: Connection, now: float) -> None:
        try:
            data = conn.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, None)
            return
        if not data:
            self._close(conn, None)
            return
        conn.last_seen = now
        try:
            for body in conn.decoder.feed(data, now):
                if not self._admit(conn, now):
                    if conn.cid not in self._conns:
                        return
                    continue
                self.messages.handle(conn, body)
                if conn.cid not in self._conns or conn.kind == "closing":
                    return
        except P.FrameTooLarge as e:
            self.reject(conn, "oversized", str(e), close=True)

    def _admit(self, conn: Connection, now: float) -> bool:
        verdict = conn.admit(now, float(self.cfg.max_messages_per_second))
        if verdict is None:
            return True
        self.rejected["rate_limited"] += 1
        if verdict == "flooding":
            self.reject(conn, "flooding", f"more than {self.cfg.max_messages_per_second} messages/s over the limit", close=True)
        return False

    def reject(self, conn: Connection, reason: str, text: str, *, close: bool) -> None:
        """Answer ``conn`` with an error counted under ``reason``; close it when asked or after too many."""
        self.rejected[reason] += 1
        conn.errors += 1
        held = self._log.allow((conn.uid, reason), time.monotonic())  # one line per peer, not per message
        if held is not None:
            logger.warning("control: %s from pid %d uid %d: %s%s", reason, conn.pid, conn.uid, text, _held_text(held))
        self.queue(conn, P.error(text))
        if close or conn.errors > MAX_ERRORS:
            self._flush(conn)
            self._close(conn, None)

    def queue(self, conn: Connection, msg: dict[str, Any]) -> None:
        """Send ``msg`` on ``conn`` (on the selector thread); a peer that stopped reading is cut off."""
        try:
            queued = conn.queue(msg)
        except P.ProtocolError as e:  # an answer of ours that cannot be sent: a daemon bug
            logger.error("control: cannot send a %s message: %s", msg.get("type"), e)
            self.reject(conn, "internal_error", f"internal error: {type(e).__name__}", close=True)
            return
        if not queued:
            self.rejected["slow_reader"] += 1
            self._close(conn, "slow_reader")
            return
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        if conn.cid not in self._conns:
            return
        while conn.out:
            try:
                n = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn, None)
                return
            del conn.out[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(conn.sock, events, conn)
        if not conn.out and conn.kind == "closing":
            self._close(conn, None)

    def _deliver(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for cid, msg in outbox:
            conn = self._conns.get(cid)
            if conn is None:
                self.book.undelivered(str(msg.get("id")))
                continue
            self.queue(conn, msg)

    def _pause_accepting(self, now: float, error: OSError) -> None:
        """Out of descriptors (or another accept error): stop watching the listener for a moment.

        The listener stays readable while the error lasts, so watching it would spin; pending
        clients wait in the kernel's queue and are accepted once the pause ends.
        """
        if self._listener is not None:
            self._sel.unregister(self._listener)
        self._accept_paused_until = now + ACCEPT_PAUSE_S
        if now - self._accept_warned >= 60.0:
            self._accept_warned = now
            logger.warning("control: accepting paused for %.1f s: %s", ACCEPT_PAUSE_S, error)

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until and self._listener is not None:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, None)
        for conn in list(self._conns.values()):
            expired = conn.expired(now, self.cfg)
            if expired is not None:
                self.reject(conn, expired[0], expired[1], close=True)

    def _close(self, conn: Connection, reason: str | None) -> None:
        with self._lock:
            if self._conns.pop(conn.cid, None) is None:
                return
        self.book.forget_connection(conn.cid)  # never acked: the leader went away
        if reason:
            logger.warning("control: closing connection of pid %d: %s", conn.pid, reason)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        if conn.kind == "client":
            self.jobs.disconnect(conn.job, conn.rank, conn.cid, self.clock())


def _held_text(held: int) -> str:
    return f" ({held} more like it since the last line)" if held else ""
