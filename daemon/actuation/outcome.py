"""Applying one knob on its target, and what came of it: a :class:`Result` with a reason code.

The actuator checks and records first; here the value is applied and read back: a GPU knob is
verified against NVML (where NVML can read it back), a job knob by the job leader's ack, which
may come later (``pending``, with the decision's id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gputuned.collectors.device import GPUError
from gputuned.daemon.actuation.jobs import JobTarget
from gputuned.daemon.actuation.knobs import Knob, KnobError, Value

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """Outcome of one requested change: ``ok``, a reason code and text, the value, a job decision's id."""

    ok: bool
    # ok, pending, dry_run, disabled, no_gpu, no_job, out_of_bounds, state_file, nvml, verify, refused, pinned
    code: str = "ok"
    reason: str = ""
    value: Value = None
    ident: str = ""

    def __bool__(self) -> bool:
        return self.ok


def apply_knob(knob: Knob, target: int | str, obj: Any, value: Value) -> Result:
    """Apply ``value`` to ``obj`` (a GPU or a job) and verify it; never raises for target errors."""
    name = knob.name
    try:
        knob.apply(obj, value)
    except GPUError as e:
        return Result(False, "nvml", f"{name}: {e}", value)
    except KnobError as e:
        return Result(False, "refused", f"{name}: {e}", value)
    try:
        verified, note = knob.verify_detail(obj, value)  # note: what the reading found (a lock masked by the power limit)
    except (GPUError, KnobError) as e:
        return Result(False, "verify", f"{name}: read back failed: {e}", value)
    if isinstance(obj, JobTarget):
        return _job_outcome(obj, name, value, verified)
    if verified is False:
        return Result(False, "verify", f"{name}: read back {knob.read(obj)!r} after setting {value!r}", value)
    logger.info("%s %s set to %r%s", where(target), name, value, f": {note}" if note else "" if verified else " (no read-back in NVML)")
    return Result(True, "ok", note or ("" if verified else "applied; NVML cannot read this knob back"), value)


def _job_outcome(job: JobTarget, name: str, value: Value, acked: bool | None) -> Result:
    if acked is None:
        return Result(True, "pending", f"decision {job.ident} sent to job {job.name}; waiting for its ack", value, job.ident)
    if not acked:
        return Result(False, "refused", f"job {job.name} refused {name} {value}: {job.refusal()}", value, job.ident)
    logger.info("job %s %s set to %r", job.name, name, value)
    return Result(True, "ok", "", value, job.ident)


def where(target: int | str) -> str:
    """``gpu 0`` or ``job NAME``, for log lines."""
    return f"gpu {target}" if isinstance(target, int) else f"job {target}"
