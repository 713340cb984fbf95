"""The training job as an actuation target: decisions out over a channel, acks back.

A job knob (batch size) is applied as a decision to the job's leader and verified by the
leader's ack; the channel is injected (the control server implements it), so the actuator
knows nothing of sockets. The job's current value is what its leader last reported, or the
value of a decision it acknowledged since (:class:`AckedValues`): its reports reach the store
a collection tick later, so right after an ack the last report still holds the value before it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gputuned.daemon.actuation.knobs.base import KnobError


class JobChannel(Protocol):
    """Where job decisions go and their acks come from (the control server in the daemon)."""

    def send_decision(self, job: str, payload: dict[str, Any]) -> str: ...

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None: ...

    def connected_jobs(self) -> dict[str, list[int]]: ...


#: A job's latest reported statistic by name (``batch_size``), or None before its first report.
Reported = Callable[[str, str], float | None]
MAX_ACKED = 1024  # acknowledged values kept (jobs that never reported again after their ack)


class AckedValues:
    """Values jobs' leaders acknowledged applying, with when; each counts until the job reports again.

    A decision is noted when sent (:meth:`sent`); its ack (:meth:`on_ack`, called by the channel
    as acks arrive, or by whoever reads the ack) makes its values the job's current ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: collections.OrderedDict[str, tuple[str, dict[str, Any]]] = collections.OrderedDict()
        self._values: collections.OrderedDict[tuple[str, str], tuple[float, float]] = collections.OrderedDict()

    def sent(self, ident: str, job: str, payload: dict[str, Any]) -> None:
        """Decision ``ident`` (knob name -> value) went to ``job``'s leader."""
        with self._lock:
            self._sent[ident] = (job, dict(payload))
            while len(self._sent) > MAX_ACKED:
                self._sent.popitem(last=False)

    def on_ack(self, job: str, ack: dict[str, Any]) -> None:
        """An ack arrived: an applied decision's values are the job's now."""
        now = time.time()
        with self._lock:
            sent = self._sent.pop(str(ack.get("id")), None)
            if sent is None or sent[0] != job or not ack.get("ok"):
                return
            for key, value in sent[1].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._values.pop((job, key), None)
                    self._values[(job, key)] = (float(value), now)
            while len(self._values) > MAX_ACKED:
                self._values.popitem(last=False)

    def current(self, job: str, key: str, reported: float | None, reported_at: float | None) -> float | None:
        """The job's ``key``: its report when made after the last ack (unix times), else the acked value."""
        with self._lock:
            acked = self._values.get((job, key))
            if acked is None:
                return reported
            if reported_at is not None and reported_at > acked[1]:
                del self._values[(job, key)]  # the job has spoken since: its report is the newer word
                return reported
            return acked[0]


@dataclass
class JobTarget:
    """One connected job, as a knob sees it: its reports, and decisions with their acks.

    ``wait_s`` is how long :meth:`acknowledged` waits for the ack of the last decision
    (0: only look); ``ident`` and ``ack`` hold that decision's id and ack.
    """

    name: str
    channel: JobChannel
    reported: Reported
    wait_s: float = 0.0
    ident: str = ""
    ack: dict[str, Any] | None = None
    acked: AckedValues | None = None  # where decisions and their acks are noted

    def report(self, key: str) -> float | None:
        """The job's latest reported ``key`` (``batch_size``), None before it reported one."""
        return self.reported(self.name, key)

    def decide(self, payload: dict[str, Any]) -> str:
        """Send a decision to the job's leader; raises KnobError when it cannot be delivered."""
        try:
            self.ident = self.channel.send_decision(self.name, payload)
        except (LookupError, ValueError) as e:
            raise KnobError(f"job {self.name}: {e}") from e
        self.ack = None
        if self.acked is not None:
            self.acked.sent(self.ident, self.name, payload)
        return self.ident

    def acknowledged(self) -> bool | None:
        """Whether the leader applied the last decision; None while no ack came within ``wait_s``."""
        if not self.ident:
            return None
        self.ack = self.channel.wait_ack(self.ident, self.wait_s)
        if self.ack is None:
            return None
        if self.acked is not None:  # a channel that calls on_ack itself has noted it already
            self.acked.on_ack(self.name, self.ack)
        return bool(self.ack.get("ok"))

    def refusal(self) -> str:
        """The leader's reason for refusing the last decision (empty when none)."""
        return str((self.ack or {}).get("error") or "")
