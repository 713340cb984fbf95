"""A small in-process daemon serving control protocol v1 through gputuned.protocol, with scripted decisions (for tests)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gputuned import protocol

logger = logging.getLogger(__name__)

#: A scripted decision: sent once ``after_reports`` reports arrived on a leader connection.
Script = list[tuple[int, dict[str, Any] | bytes]]


class FakeDaemon:
    """Unix-socket server answering hello with welcome, recording messages, sending scripted decisions.

    Input is checked as the daemon checks it (``gputuned.protocol.decode``): a bad first
    message or an oversized frame is answered with ``error`` and the connection closed; a bad
    later message is answered with ``error`` and the connection goes on. The reasons are kept
    in ``refused``. ``script`` holds ``(after_reports, decision)`` pairs; a decision is a dict
    (envelope keys v and seq are added, fields are not checked) or raw frame-body bytes, so
    tests can send the plugin malformed decisions.
    """

    def __init__(self, path: str, script: Script | None = None, report_interval_s: float = 0.05,
                 decisions: bool = True) -> None:
        self.path = path
        self.script = list(script or [])
        self.report_interval_s = report_interval_s
        self.decisions = decisions
        self.messages: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.connections = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._conns: list[tuple[socket.socket, dict[str, Any]]] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._seq_out = 0

    def start(self) -> FakeDaemon:
        """Bind and start accepting connections."""
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._thread = threading.Thread(target=self._accept, args=(self._server,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection abruptly (as a dying daemon would)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for conn, _ in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self) -> FakeDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Received messages of one type, in arrival order."""
        with self._lock:
            return [m for m in self.messages if m["type"] == kind]

    def wait_for(self, predicate: Callable[[FakeDaemon], bool], timeout: float = 10.0) -> bool:
        """Block until predicate(self) holds or timeout passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    def send(self, decision: dict[str, Any] | bytes) -> None:
        """Send a decision (or raw body) now to every leader connection."""
        with self._lock:
            conns = [c for c, h in self._conns if h.get("leader")]
        for conn in conns:
            self._send(conn, decision)

    def _send(self, conn: socket.socket, decision: dict[str, Any] | bytes) -> None:
        if isinstance(decision, bytes):
            frame = protocol.frame(decision)
        else:
            frame = protocol.encode({"v": protocol.VERSION, "seq": self._next_seq(), "type": "decision", **decision})
        try:
            conn.sendall(frame)
        except OSError as e:
            logger.debug("fake daemon send failed: %s", e)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _next_seq(self) -> int:
        with self._lock:  # one counter for every connection: increasing on each, with gaps
            self._seq_out += 1
            return self._seq_out

    def _refuse(self, conn: socket.socket, why: protocol.ProtocolError, seq: int = 0) -> None:
        logger.debug("fake daemon: refused: %s", why)
        with self._changed:
            self.refused.append(str(why))
            self._changed.notify_all()
        try:
            conn.sendall(protocol.encode({"v": protocol.VERSION, "seq": seq, **protocol.error(str(why))}))
        except OSError:
            pass

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            hello = protocol.read_message(conn, protocol.TO_DAEMON)
            if hello["type"] != "hello":
                raise protocol.ProtocolError(f"{hello['type']}: expected hello first")
        except protocol.ProtocolError as e:
            self._refuse(conn, e)
            conn.close()
            return
        except OSError:
            conn.close()
            return
        with self._changed:
            self.connections += 1
            self.hellos.append(hello)
            self._conns.append((conn, hello))
            self._changed.notify_all()
            session = f"s{self.connections}"
        # recorded before the welcome, so a client that is connected has its hello on record
        welcome = protocol.message("welcome", session=session, report_interval_s=self.report_interval_s,
                                   decisions=self.decisions)
        try:
            conn.sendall(protocol.encode({"v": protocol.VERSION, "seq": 0, **welcome}))
            conn.settimeout(None)
        except OSError:
            conn.close()
            return
        self._receive(conn, list(self.script) if hello["leader"] else [])
        conn.close()

    def _receive(self, conn: socket.socket, script: Script) -> None:
        reports = 0
        while True:
            try:
                msg = protocol.read_message(conn, protocol.TO_DAEMON)
            except protocol.FrameTooLarge as e:
                self._refuse(conn, e, self._next_seq())
                return
            except protocol.ProtocolError as e:
                self._refuse(conn, e, self._next_seq())
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(msg)
                self._changed.notify_all()
            if msg["type"] == "report":
                reports += 1
                while script and script[0][0] <= reports:
                    self._send(conn, script.pop(0)[1])
