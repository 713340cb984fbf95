"""The training job as an actuation target: decisions out over a channel, acks back.

A job knob (batch size) is applied as a decision to the job's leader and verified by the
leader's ack; the channel is injected (the control server implements it), so the actuator
knows nothing of sockets. The job's current value is what its leader last reported.
"""

from __future__ import annotations

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
        return self.ident

    def acknowledged(self) -> bool | None:
        """Whether the leader applied the last decision; None while no ack came within ``wait_s``."""
        if not self.ident:
            return None
        self.ack = self.channel.wait_ack(self.ident, self.wait_s)
        if self.ack is None:
            return None
        return bool(self.ack.get("ok"))

    def refusal(self) -> str:
        """The leader's reason for refusing the last decision (empty when none)."""
        return str((self.ack or {}).get("error") or "")
