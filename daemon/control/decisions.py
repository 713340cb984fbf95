"""Decisions sent to job leaders over the control socket, their acks, and the admin interface.

The control server asks for an id when it queues a decision to a leader's connection and
hands every ack it receives here; the tuner waits for an ack by id or registers a callback.
A decision whose connection closes before the ack is forgotten (its waiter times out).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

AckCallback = Callable[[str, dict[str, Any]], None]
KEEP_ACKS = 1024
KEEP_PROFILES = 256


class NoLeaderError(LookupError):
    """No leader rank of the job is connected, so a decision cannot be delivered."""


class AdminHandler(Protocol):
    """What admin messages (``gputuned status``/``set``/``restore``/``tuner pause``) act on."""

    def status(self) -> dict[str, Any]: ...

    def request(self, op: str, msg: dict[str, Any], by: str) -> dict[str, Any]:
        """Act on a checked admin message that changes something (``by``: the peer, ``uid N``)."""
        ...


class DecisionBook:
    """Pending decisions, received acks and profile results; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._next = 0
        self._pending: dict[str, tuple[str, int]] = {}  # id -> (job, connection id)
        self._acks: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._callbacks: list[AckCallback] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.profile_results: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._profiles: collections.OrderedDict[str, str] = collections.OrderedDict()  # id -> job, awaiting a result

    def new(self, job: str, cid: int, profile: bool = False) -> str:
        """A fresh decision id, recorded as sent on connection ``cid`` (``profile``: a profile request)."""
        with self._lock:
            self._next += 1
            ident = f"d-{self._next}"
            self._pending[ident] = (job, cid)
            if profile:
                self._profiles[ident] = job
                while len(self._profiles) > KEEP_PROFILES:
                    self._profiles.popitem(last=False)
            self.counts["sent"] += 1
            return ident

    def acked(self, ident: str, cid: int, ack: dict[str, Any]) -> bool:
        """Record an ack from connection ``cid``; False when no such decision went there."""
        with self._lock:
            pending = self._pending.get(ident)
            if pending is None or pending[1] != cid:
                return False
            del self._pending[ident]
            self._acks[ident] = ack
            while len(self._acks) > KEEP_ACKS:
                self._acks.popitem(last=False)
            self.counts["acked" if ack.get("ok") else "refused"] += 1
            self._acked.notify_all()
        for cb in self._callbacks:
            try:
                cb(pending[0], ack)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop the socket
                logger.exception("ack callback failed")
        return True

    def profile_result(self, ident: str, job: str, summary: dict[str, Any]) -> bool:
        """Keep the result of profile request ``ident``; False when no such request went to ``job``."""
        with self._lock:
            if self._profiles.get(ident) != job:
                return False
            del self._profiles[ident]
            self.profile_results[ident] = summary
            while len(self.profile_results) > KEEP_PROFILES:
                self.profile_results.popitem(last=False)
            return True

    def undelivered(self, ident: str) -> None:
        """The decision's connection closed before it could be sent."""
        with self._lock:
            self._pending.pop(ident, None)
            self.counts["undelivered"] += 1

    def forget_connection(self, cid: int) -> None:
        """Drop the decisions still waiting on a connection that closed."""
        with self._lock:
            for ident in [i for i, (_, c) in self._pending.items() if c == cid]:
                del self._pending[ident]

    def on_ack(self, callback: AckCallback) -> None:
        self._callbacks.append(callback)

    def wait(self, ident: str, timeout: float) -> dict[str, Any] | None:
        """The ack of ``ident``, waiting up to ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        with self._acked:
            while ident not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._acked.wait(left)
            return self._acks[ident]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
