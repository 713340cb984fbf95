"""A bounded HTTP/1.1 front: one selector thread holds every connection and a fixed pool of
workers answers complete requests, so an idle or half-open client costs a descriptor, never a thread.

The bounds: at most ``max_connections`` connections (past it the one idle longest is closed to
make room, so a flood of idle clients cannot lock a scrape out); a request head must arrive
within ``read_timeout`` of the connection or of the previous response; a response must be
written within ``write_timeout``; and no connection is kept while fewer than ``reserved_fds``
descriptors of the process are free, so the control socket and the collectors always find one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.fd_budget import FdBudget
from gputuned.daemon.core.http_wire import Request, Response, format_response, on_wire, parse_head

logger = logging.getLogger(__name__)

_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_LISTENER = object()
_WAKE = object()


#: Longest request head read (bytes); the front serves no request bodies.
MAX_HEAD_BYTES = 16384

#: Longest the selector sleeps with no deadline due (every event and stop() wake it at once).
MAX_SLEEP_SECONDS = 2.0


Handler = Callable[[Request], Response]


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: str
    since: float
    deadline: float
    handshaking: bool = False
    busy: bool = False
    buf: bytearray = field(default_factory=bytearray)

    def answered(self, now: float, read_timeout: float) -> None:
        """A response went out: the next request's head is due within ``read_timeout`` of ``now``."""
        self.busy, self.since, self.deadline = False, now, now + read_timeout


_Job = tuple[_Conn, Request, tuple[bytes, bool] | None]  # None: the handler answers; else the rest of an answer, kept
#: An answer made already, or None: given on the selector thread, so it must not block or take long.
Ready = Callable[[Request], Response | None]


class HttpFront:
    """Listens on ``address`` and answers each complete request with ``handler`` on a worker.

    ``ready`` may answer a request on the selector thread instead, with an answer made already (a
    scrape's body rendered at the end of the tick): sent there when the socket takes it whole at once
    (plain TCP), so such a scrape wakes no worker; otherwise a worker sends it, or the rest of it.
    """

    def __init__(self, address: tuple[str, int], handler: Handler, limits: ExporterConfig | None = None,
                 ssl_context: ssl.SSLContext | None = None, ready: Ready | None = None) -> None:
        self.limits = limits or ExporterConfig()
        self._handler = handler
        self._ready = ready if ssl_context is None else None
        self._ssl = ssl_context
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(4096)  # queued connections cost the kernel, not this process, a descriptor
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._budget = FdBudget(self.limits.reserved_fds)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        # Each worker waits on a queue of its own and the selector hands a request to one idle worker
        # (or leaves it pending for the next to finish): one shared queue would wake a second idle
        # worker on every request (SimpleQueue.get releases its lock for the next waiter), for nothing.
        self._inboxes: list[queue.SimpleQueue[_Job | None]] = [queue.SimpleQueue() for _ in range(self.limits.workers)]
        self._idle = list(self._inboxes)  # the inboxes of the workers waiting for a request
        self._pending: collections.deque[_Job] = collections.deque()
        self._back: list[tuple[_Conn, bool]] = []
        self._lock = threading.Lock()
        self._conns: dict[_Conn, None] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._paused_until = 0.0
        self._warned_at = -1e9
        self.stats: Counter[str] = Counter()

    @property
    def connections(self) -> int:
        """Connections held now."""
        return len(self._conns)

    def start(self) -> None:
        """Start the selector thread and the workers."""
        self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._threads = [threading.Thread(target=self._loop, name="gputuned-http", daemon=True)]
        self._threads += [threading.Thread(target=self._work, args=(inbox,), name=f"gputuned-http-{i}", daemon=True)
                          for i, inbox in enumerate(self._inboxes)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._stop.set()
        for inbox in self._inboxes:
            inbox.put(None)
        self._wake()
        for t in self._threads[:1]:
            t.join(5)
        for conn in list(self._conns):
            self._close(conn)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a wake-up is already pending, or the front is closing
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        while not self._stop.is_set():
            # sleep until the next deadline is due (a connection, a worker's answer or stop() wakes
            # the selector at once), so a keep-alive connection idle between scrapes costs no wake-ups
            for key, _ in self._sel.select(self._sweep(time.monotonic())):
                if key.data is _LISTENER:
                    self._accept(time.monotonic())
                elif key.data is _WAKE:
                    self._take_back()
                else:
                    self._on_readable(key.data)

    def _accept(self, now: float) -> None:
        # A few at a time, so connections accepted earlier get their requests read before
        # newcomers evict them.
        for _ in range(min(8, self.limits.max_connections)):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and kin: stop watching the listener a moment rather than spin
                self._pause(now, e)
                return
            self._budget.note(+1)
            # Full, or short of descriptors: the newcomer takes the place of the connection idle
            # longest, so the front never grows past either bound and a scrape still gets in.
            low = self._budget.low(now)
            if (low or len(self._conns) >= self.limits.max_connections) and not self._evict():
                self._refuse(sock, "refused_fds" if low else "refused_full")
            else:
                self._admit(sock, addr, now)

    def _pause(self, now: float, err: OSError) -> None:
        self._count("accept_errors")
        if self._paused_until <= now:
            self._sel.unregister(self._listener)
        self._paused_until = now + 0.1
        if now - self._warned_at >= 60:
            self._warned_at = now
            logger.warning("http: cannot accept connections (%s); retrying every 0.1 s", err.strerror or err)

    def _refuse(self, sock: socket.socket, why: str) -> None:
        self._count(why)
        if self._ssl is None:
            with contextlib.suppress(OSError):
                sock.send(_REFUSED, socket.MSG_DONTWAIT)
        sock.close()
        self._budget.note(-1)

    def _evict(self) -> bool:
        idle = [c for c in self._conns if not c.busy]
        if not idle:
            return False
        self._count("evicted")
        self._close(min(idle, key=lambda c: c.since))
        return True

    def _admit(self, sock: socket.socket, addr: tuple[str, int], now: float) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn = _Conn(sock, f"{addr[0]}:{addr[1]}", now, now + self.limits.read_timeout_seconds, handshaking=self._ssl is not None)
        self._conns[conn] = None
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self._count("accepted")

    def _on_readable(self, conn: _Conn) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        try:
            while True:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    self._close(conn)
                    return
                conn.buf += chunk
                if not isinstance(conn.sock, ssl.SSLSocket) or not conn.sock.pending():
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as e:
            logger.debug("http: %s: read failed: %s", conn.peer, e)
            self._close(conn)
            return
        self._dispatch(conn)

    def _handshake(self, conn: _Conn) -> bool:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # the handshake's next bytes are small; a fresh socket's buffer takes them
        except OSError as e:
            self._count("tls_failed")
            logger.debug("http: %s: TLS handshake failed: %s", conn.peer, e)
            self._close(conn)
            return False
        conn.handshaking = False
        return True

    def _dispatch(self, conn: _Conn) -> None:
        while True:  # requests the selector answers itself, then the first one for a worker
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buf) > MAX_HEAD_BYTES:
                    self._reject(conn, 431)
                return
            req = parse_head(bytes(conn.buf[:end]), conn.peer)
            del conn.buf[:end + 4]
            if req is None:
                self._reject(conn, 400)
                return
            if (made := self._made(req)) is None:
                return self._hand_over((conn, req, None))
            data, keep = made
            try:
                sent = self._send_now(conn.sock, data)
            except OSError as e:
                return self._went_away(conn, req, e)
            if sent < len(data):
                return self._hand_over((conn, req, (data[sent:], keep)))
            self._count("requests")
            if not keep:
                return self._close(conn)
            conn.answered(time.monotonic(), self.limits.read_timeout_seconds)

    def _made(self, req: Request) -> tuple[bytes, bool] | None:
        """The answer to ``req`` made already (its bytes, whether the connection is kept), if ``ready`` has one."""
        try:
            if self._ready is None or (resp := self._ready(req)) is None:
                return None
            return on_wire(req, resp)
        except Exception:  # noqa: BLE001 - the selector must not die of it: a worker answers instead
            logger.exception("http: %s %s: no made answer", req.method, req.path)
            return None

    def _hand_over(self, job: _Job) -> None:
        """Give ``job`` to an idle worker, or leave it pending for the next to finish."""
        conn = job[0]
        conn.busy = True
        self._sel.unregister(conn.sock)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._pending.append(job)
        if inbox is not None:
            inbox.put(job)

    def _went_away(self, conn: _Conn, req: Request, e: OSError) -> None:
        """A response not sent: the peer went away or the write failed (counted, the connection closed)."""
        if isinstance(e, (BrokenPipeError, ConnectionResetError)):
            self._count("aborted")
            logger.debug("http: %s went away during the response to %s (%s)", conn.peer, req.path, type(e).__name__)
        else:
            self._count("write_failed")
            logger.debug("http: response to %s for %s not sent: %s", conn.peer, req.path, e)
        if not conn.busy:
            self._close(conn)

    def _reject(self, conn: _Conn, code: int) -> None:
        self._count(f"http_{code}")
        with contextlib.suppress(OSError):
            conn.sock.send(format_response(Response(code, b""), head_only=False, keep_alive=False))
        self._close(conn)

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        job: _Job | None = None
        while job is not None or (job := inbox.get()) is not None:
            conn, req, rest = job
            keep = self._serve(conn, req, rest)
            with self._lock:
                self._back.append((conn, keep))
                job = self._pending.popleft() if self._pending else None
                if job is None:
                    self._idle.append(inbox)  # before the wait on the inbox: a request handed meanwhile waits in it
            self._wake()

    def _serve(self, conn: _Conn, req: Request, rest: tuple[bytes, bool] | None) -> bool:
        """Answer ``req`` (or send ``rest``, what the selector could not); whether the connection is kept."""
        if rest is None:
            try:
                resp = self._handler(req)
            except Exception:  # noqa: BLE001 - one failing request must not end the worker
                logger.exception("http: %s %s failed", req.method, req.path)
                resp = Response(500, b"internal error\n")
            data, keep = on_wire(req, resp)
        else:
            data, keep = rest
        try:
            sent = self._send_now(conn.sock, data)
            if sent < len(data):  # the socket's buffer is full: the rest blocks, bounded by the write timeout
                conn.sock.settimeout(self.limits.write_timeout_seconds)
                conn.sock.sendall(memoryview(data)[sent:])
                conn.sock.setblocking(False)
        except OSError as e:
            self._went_away(conn, req, e)
            return False
        self._count("requests")
        return keep

    @staticmethod
    def _send_now(sock: socket.socket, data: bytes) -> int:
        """What of ``data`` the non-blocking socket takes at once (a scrape's body mostly fits its buffer)."""
        try:
            return sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0

    def _take_back(self) -> None:
        with contextlib.suppress(OSError):  # one read: wake-ups left over wake the selector once more
            self._wake_r.recv(4096)
        with self._lock:
            back, self._back = self._back, []
        now = time.monotonic()
        for conn, keep in back:
            if not keep or self._stop.is_set():
                self._close(conn)
                continue
            conn.answered(now, self.limits.read_timeout_seconds)
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            self._dispatch(conn)

    def _sweep(self, now: float) -> float:
        """Resume a paused accept and close connections past their read deadline, both when due;
        the seconds until the next of them is due (at most :data:`MAX_SLEEP_SECONDS`)."""
        due = now + MAX_SLEEP_SECONDS
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
        elif self._paused_until:
            due = min(due, self._paused_until)
        for conn in [c for c in self._conns if not c.busy]:
            if now < conn.deadline:
                due = min(due, conn.deadline)
                continue
            self._count("timed_out")
            logger.debug("http: %s: no complete request in %.1f s; closed", conn.peer, self.limits.read_timeout_seconds)
            self._close(conn)
        return due - now

    def _close(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        del self._conns[conn]
        if not conn.busy:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        conn.sock.close()
        self._budget.note(-1)
