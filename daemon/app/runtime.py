"""The running daemon's node status, and the admin handler the control socket calls.

``gputuned status`` asks the daemon over the control socket (an ``admin`` message with
``op: status``) and renders what :func:`node_status` returns; ``gputuned set`` (``op: set``,
which pins the knob it sets; ``op: release``), ``gputuned restore`` (``op: restore``, which
clears the pins of what it restores) and ``gputuned tuner pause|resume`` (``op: pause|resume``,
the flag beside the state file) the same way. Status is open to every allowed peer; the rest
only to uids in ``control.admin_uids`` (root by default).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from gputuned import __version__
from gputuned.daemon.actuation.ledger import NotRecorded
from gputuned.daemon.actuation.pause import PauseFlag, pause_path
from gputuned.daemon.app.rootcause import root_cause_status

if TYPE_CHECKING:
    from gputuned.daemon.app.daemon import Daemon


def node_status(daemon: Daemon) -> dict[str, Any]:
    """Everything ``gputuned status`` shows, as plain JSON-able data."""
    loop = daemon.loop
    control = daemon.control
    act = daemon.actuator
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - daemon.started_at, 3) if daemon.started_at else 0.0,
        "node": daemon.describe(),
        "backend": daemon.gpus.kind,
        "simulated": daemon.gpus.kind == "sim",  # the GPUs served are the simulated node's, not real ones
        "gpu_error": str(daemon.gpus.error) if daemon.gpus.error is not None else None,
        "interval_s": loop.interval,
        "ticks": loop.ticks,
        "tick_overruns": loop.overruns,
        "collectors": [
            {"name": r.name, "up": r.up, "errors": r.errors, "duration_s": round(r.duration, 6)} for r in loop.runners
        ],
        "gpus": act.describe(),
        "tuner": {"on": "tuner" in [c.name for c in daemon.components], "paused": pause_flag(daemon).paused(),
                  "pause_file": str(pause_flag(daemon).path)},
        "actuation": act.status(),
        "jobs": control.connected_jobs() if control else {},
        "control": {
            "socket": str(control.cfg.socket_path) if control else None,
            "reports_total": control.reports_total if control else 0,
            "rejected": dict(control.rejected) if control else {},
        },
        "components": [c.name for c in daemon.components],
        "root_cause": root_cause_status(daemon.components),
    }


def pause_flag(daemon: Daemon) -> PauseFlag:
    """The tuner's pause flag beside the daemon's state file."""
    return PauseFlag(pause_path(daemon.cfg.daemon.state_file))


class RuntimeAdmin:
    """Admin operations on a running daemon: status, set (and pin) a knob, release, restore, pause."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def status(self) -> dict[str, Any]:
        return node_status(self.daemon)

    def request(self, op: str, msg: dict[str, Any], by: str) -> dict[str, Any]:
        """Act on a checked admin message that changes something; ``by`` names the peer (``uid 0``)."""
        target = msg["gpu"] if "gpu" in msg else msg.get("job")
        if op == "set":
            return self.set(msg["gpu"] if "gpu" in msg else str(msg["job"]), str(msg["knob"]), msg["value"], by)
        if op == "release":
            return {"ok": True, "released": self.daemon.actuator.pins.release(target, msg.get("knob"))}
        if op in ("pause", "resume"):
            try:
                return {"ok": True, "paused": pause_flag(self.daemon).set(op == "pause", by)}
            except OSError as e:
                return {"ok": False, "error": f"{pause_flag(self.daemon).path}: {e.strerror or e}"}
        return self.restore(msg.get("gpu"))

    def set(self, target: int | str, knob: str, value: Any, by: str = "") -> dict[str, Any]:
        """Change a knob as the operator and pin it there (a job's batch size: sent, pinned before its ack)."""
        act = self.daemon.actuator
        # this runs on the control socket's thread: a job's ack is not waited for here
        res = act.change(target, knob, value, origin="operator")
        reply = {"ok": res.ok, "code": res.code, "reason": res.reason, "value": res.value, "pinned": False}
        if res.ok and res.code in ("ok", "pending"):
            try:
                act.pins.pin(target, knob, value, by)
                reply["pinned"] = True
            except NotRecorded as e:
                reply["reason"] = f"set but not pinned: {e.reason}"
        return reply

    def restore(self, gpu: int | None) -> dict[str, Any]:
        """Put the originals back (one GPU, or everything) and release the pins of what was restored."""
        act = self.daemon.actuator
        # this runs on the control socket's thread: a job's restore is sent, not waited for there
        report = act.restore_all(job_wait_s=0.0) if gpu is None else act.restore_gpu(int(gpu))
        released = act.pins.release(None if gpu is None else int(gpu))
        return {"ok": report.ok, "restored": report.restored, "failures": report.failures, "kept": report.kept,
                "released": released}
