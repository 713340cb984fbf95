"""The actuator's job-knob calls over a fake job's decisions, for tuner tests with scripted nodes."""

from __future__ import annotations

from typing import Any

from gputuned.daemon.actuation.actuator import Result


class JobKnobs:
    """``change``/``acknowledged`` for a job knob, as the actuator answers them, over the fake's own
    ``send_decision``/``wait_ack`` (the control socket's calls)."""

    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        raise NotImplementedError

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None:
        raise NotImplementedError

    def change(self, target: int | str, knob_name: str, value: Any, origin: str = "operator") -> Result:
        ident = self.send_decision(str(target), {knob_name: int(value)})
        return Result(True, "pending", f"decision {ident} sent", value, ident)

    def acknowledged(self, ident: str) -> Result | None:
        ack = self.wait_ack(ident, 0.0)
        if ack is None:
            return None
        if ack.get("ok"):
            return Result(True, "ok", "", None, ident)
        return Result(False, "refused", f"job refused: {ack.get('error') or ''}", None, ident)
