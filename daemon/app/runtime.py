"""The running daemon's node status, and the admin handler the control socket calls.

``gputuned status`` asks the daemon over the control socket (an ``admin`` message with
``op: status``) and renders what :func:`node_status` returns; ``gputuned set`` and
``gputuned restore`` use ``op: set`` / ``op: restore`` the same way. Status is open to every
allowed peer; set and restore only to uids in ``control.admin_uids`` (root by default).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from gputuned import __version__

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
        "actuation": act.status(),
        "jobs": control.connected_jobs() if control else {},
        "control": {
            "socket": str(control.cfg.socket_path) if control else None,
            "reports_total": control.reports_total if control else 0,
            "rejected": dict(control.rejected) if control else {},
        },
        "components": [c.name for c in daemon.components],
    }


class RuntimeAdmin:
    """Admin operations on a running daemon: status, set a knob by hand, restore."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def status(self) -> dict[str, Any]:
        return node_status(self.daemon)

    def set(self, gpu: int, knob: str, value: Any) -> dict[str, Any]:
        res = self.daemon.actuator.change(gpu, knob, value)
        return {"ok": res.ok, "code": res.code, "reason": res.reason, "value": res.value}

    def restore(self, gpu: int | None) -> dict[str, Any]:
        act = self.daemon.actuator
        # this runs on the control socket's thread: a job's restore is sent, not waited for there
        report = act.restore_all(job_wait_s=0.0) if gpu is None else act.restore_gpu(int(gpu))
        return {"ok": report.ok, "restored": report.restored, "failures": report.failures, "kept": report.kept}
