"""sd_notify: tell systemd the daemon is ready, alive, stopping, and what it is doing.

The protocol is a datagram of ``KEY=VALUE`` lines to the Unix socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``). Without
that variable (not under systemd, or Type= is not notify) every call is a no-op.
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, when set, naming this process) asks for
``WATCHDOG=1`` at least that often; the collection loop sends it every tick.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``, or does nothing without one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._last_status = ""
        self.sent: list[str] = []  # what was sent, for status and tests
        self._last_watchdog = 0.0
        self.is_ready = False
        self.is_stopping = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False (logged once) when it cannot be sent."""
        if self.address is None:
            return False
        msg = "\n".join(lines)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode(), self.address)
        except OSError as e:
            logger.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), e)
            return False
        self.sent.append(msg)
        if len(self.sent) > 64:
            del self.sent[:32]
        return True

    def ready(self, status: str = "") -> None:
        """READY=1 (after the first full collection), with an optional STATUS= line."""
        self.is_ready = True
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={status}")
            self._last_status = status
        self.send(*lines)

    def watchdog(self, now: float | None = None) -> None:
        """WATCHDOG=1 between READY and STOPPING; at most four times per watchdog period."""
        if self.address is None or not self.is_ready or self.is_stopping:
            return
        t = time.monotonic() if now is None else now
        if self.watchdog_s is not None and t - self._last_watchdog < self.watchdog_s / 4:
            return
        self._last_watchdog = t
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """STATUS=text, only when it changed (and not once stopping)."""
        if text != self._last_status and not self.is_stopping:
            self._last_status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "stopping, restoring GPU settings") -> None:
        self.is_stopping = True
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
