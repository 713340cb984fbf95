"""A small in-process daemon speaking control protocol v1, with scripted decisions (for tests)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gputuned.trainer_plugin import protocol

logger = logging.getLogger(__name__)

#: A scripted decision: sent once ``after_reports`` reports arrived on a leader connection.
Script = list[tuple[int, dict[str, Any] | bytes]]


class FakeDaemon:
    """Unix-socket server answering hello with welcome, recording messages, sending scripted decisions.

    ``script`` holds ``(after_reports, decision)`` pairs; a decision is a dict (envelope keys
    v and seq are added) or raw frame-body bytes (for malformed-input tests).
    """

    def __init__(self, path: str, script: Script | None = None, report_interval_s: float = 0.05,
                 decisions: bool = True) -> None:
        self.path = path
        self.script = list(script or [])
        self.report_interval_s = report_interval_s
        self.decisions = decisions
        self.messages: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.connections = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._conns: list[tuple[socket.socket, dict[str, Any]]] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._decision_n = 0

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
            frame = protocol.HEADER.pack(len(decision)) + decision
        else:
            with self._lock:
                self._decision_n += 1
                seq = self._decision_n
            frame = protocol.encode({"v": 1, "seq": seq, "type": "decision", **decision})
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

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            hello = protocol.read_frame(conn)
            protocol.check_hello(hello)
        except (OSError, ConnectionError, protocol.ProtocolError) as e:
            logger.debug("fake daemon: bad hello: %s", e)
            conn.close()
            return
        with self._changed:
            self.connections += 1
            self.hellos.append(hello)
            self._conns.append((conn, hello))
            self._changed.notify_all()
            session = f"s{self.connections}"
        # recorded before the welcome, so a client that is connected has its hello on record
        try:
            conn.sendall(protocol.encode({"v": 1, "type": "welcome", "seq": 0, "session": session,
                                          "report_interval_s": self.report_interval_s,
                                          "decisions": self.decisions}))
            conn.settimeout(None)
        except OSError:
            conn.close()
            return
        reports = 0
        script = list(self.script) if hello.get("leader") else []
        while True:
            try:
                msg = protocol.read_frame(conn)
            except (OSError, ConnectionError, protocol.ProtocolError):
                break
            with self._changed:
                self.messages.append(msg)
                self._changed.notify_all()
            if msg["type"] == "report":
                reports += 1
                while script and script[0][0] <= reports:
                    self._send(conn, script.pop(0)[1])
        conn.close()
