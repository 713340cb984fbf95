"""Torch-free client of the daemon's control socket: reports out, decisions in, never blocking.

A background thread owns the socket. It connects, says hello, sends queued messages and
reads decisions into a queue; when the daemon is absent or dies it reconnects with
exponential backoff. Calls from the training loop only touch in-memory queues.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading
import time
from typing import Any

from gputuned.trainer_plugin import protocol

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/gputuned/control.sock"


class DaemonClient:
    """One connection of one rank to its node's daemon (reconnecting, thread-backed)."""

    def __init__(
        self,
        path: str = DEFAULT_SOCKET,
        job: str = "job",
        rank: int = 0,
        world_size: int = 1,
        leader: bool | None = None,
        local_rank: int | None = None,
        batch_size: int = 0,
        batch_mode: str = "global",
        backoff_s: tuple[float, float] = (0.05, 5.0),
        pending_limit: int = 64,
        start: bool = True,
    ) -> None:
        if not protocol.JOB_RE.match(job):
            raise ValueError(f"job: must match {protocol.JOB_RE.pattern} ({job!r})")
        if batch_mode not in ("global", "micro"):
            raise ValueError(f"batch_mode: expected global or micro ({batch_mode!r})")
        self.path = path
        self.job = job
        self.rank = rank
        self.world_size = world_size
        self.leader = rank == 0 if leader is None else leader
        self.local_rank = rank if local_rank is None else local_rank
        self.batch_size = batch_size
        self.batch_mode = batch_mode
        self.backoff_s = backoff_s
        self.report_interval_s = 1.0
        self.session: str | None = None
        self.connects_total = 0
        self.malformed_total = 0
        self.sent_total = 0
        self.dropped_total = 0
        self._lock = threading.Lock()
        self._out: collections.deque[dict[str, Any]] = collections.deque(maxlen=pending_limit)
        self._report: dict[str, Any] | None = None
        self._decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=pending_limit)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name=f"gputuned-client-{rank}", daemon=True)
        if start:
            self._thread.start()

    @property
    def connected(self) -> bool:
        """True while a welcomed connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block up to timeout seconds for a welcomed connection (tests, start-up)."""
        return self._connected.wait(timeout)

    def report(self, step: int, steps: int, stats: dict[str, Any]) -> None:
        """Queue an aggregated report; a newer report replaces an unsent one; dropped if offline."""
        if not self._connected.is_set():
            self.dropped_total += 1
            return
        msg = {"type": "report", "step": int(step), "steps": int(steps), "time": time.time(),
               "stats": protocol.clean_stats(stats)}
        with self._lock:
            if self._report is not None:
                self.dropped_total += 1
            self._report = msg
        self._wake()

    def poll_decision(self) -> dict[str, Any] | None:
        """Return the oldest valid decision received ({'id', 'batch_size'|'profile_steps'}) or None."""
        try:
            return self._decisions.popleft()
        except IndexError:
            return None

    def ack(self, id: str, ok: bool, applied_step: int | None = None, error: str | None = None) -> None:
        """Queue the answer to decision ``id``."""
        msg: dict[str, Any] = {"type": "ack", "id": id, "ok": bool(ok)}
        if applied_step is not None:
            msg["applied_step"] = int(applied_step)
        if error is not None:
            msg["error"] = str(error)[:1000]
        self._queue(msg)

    def profile_result(self, id: str, summary: dict[str, Any]) -> None:
        """Queue the summary of a profile capture answering decision ``id``."""
        self._queue({"type": "profile_result", "id": id, "summary": summary})

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued (briefly) and stop the thread."""
        deadline = time.monotonic() + timeout
        while self._connected.is_set() and (self._out or self._report) and time.monotonic() < deadline:
            time.sleep(0.005)
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- background thread --------------------------------------------------------------

    def _queue(self, msg: dict[str, Any]) -> None:
        with self._lock:
            if len(self._out) == self._out.maxlen:
                self.dropped_total += 1
            self._out.append(msg)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            sock = self._connect()
            if sock is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            delay = self.backoff_s[0]
            try:
                self._serve(sock)
            except (OSError, ConnectionError, protocol.ProtocolError) as e:
                if not self._stop.is_set():
                    logger.info("daemon connection lost (%s); reconnecting", e)
            finally:
                self._connected.clear()
                sock.close()
            if not self._stop.is_set():
                self._stop.wait(delay)

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(self.path)
            self._seq = 0
            self._send(sock, {"type": "hello", "job": self.job, "rank": self.rank,
                              "local_rank": self.local_rank, "world_size": self.world_size,
                              "pid": os.getpid(), "leader": self.leader,
                              "batch_size": int(self.batch_size), "batch_mode": self.batch_mode})
            welcome = protocol.read_frame(sock)
            if welcome.get("type") != "welcome":
                raise protocol.ProtocolError(f"expected welcome, got {welcome.get('type')!r}: {welcome.get('error', '')}")
        except (OSError, ConnectionError, protocol.ProtocolError) as e:
            logger.debug("daemon not reachable at %s: %s", self.path, e)
            sock.close()
            return None
        interval = welcome.get("report_interval_s")
        if isinstance(interval, int | float) and not isinstance(interval, bool) and 0 < interval < 3600:
            self.report_interval_s = float(interval)
        self.session = str(welcome.get("session", ""))
        self.connects_total += 1
        self._connected.set()
        logger.info("connected to daemon at %s (session %s)", self.path, self.session)
        return sock

    def _send(self, sock: socket.socket, msg: dict[str, Any]) -> None:
        frame = protocol.encode({"v": protocol.VERSION, "seq": self._seq, **msg})
        sock.sendall(frame)
        self._seq += 1
        self.sent_total += 1

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch = list(self._out)
                self._out.clear()
                if self._report is not None:
                    batch.append(self._report)
                    self._report = None
            for msg in batch:
                self._send(sock, msg)
            readable, _, _ = select.select([sock.fileno(), self._wake_r], [], [], 0.5)
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            if sock.fileno() in readable:
                self._receive(sock, protocol.read_body(sock))

    def _receive(self, sock: socket.socket, body: bytes) -> None:
        try:
            msg = protocol.decode(body)
        except protocol.ProtocolError as e:
            self.malformed_total += 1
            logger.warning("ignoring malformed message from daemon: %s", e)
            self._send(sock, {"type": "error", "error": str(e)})
            return
        kind = msg.get("type")
        if kind == "decision":
            try:
                decision = protocol.check_decision(msg)
                if not self.leader:
                    raise protocol.ProtocolError("decision: sent to a non-leader rank")
            except protocol.ProtocolError as e:
                self.malformed_total += 1
                logger.warning("ignoring malformed decision from daemon: %s", e)
                self._send(sock, {"type": "error", "error": str(e)})
                return
            self._decisions.append(decision)
        elif kind == "error":
            logger.warning("daemon reported an error: %s", msg.get("error"))
        else:
            logger.debug("ignoring %s message from daemon", kind)
