"""The training job's global batch size, in samples: a decision to the job's leader, verified by its ack.

The original is the batch size the job last reported before the first change; restore
sends it back as a decision and waits for the ack. A job that is not connected cannot be
changed or restored (its batch size lives in its own process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from gputuned.collectors.families import declare
from gputuned.daemon.actuation.knobs.base import Bounds, CliOption, Knob, KnobError, Value
from gputuned.daemon.actuation.knobs.registry import register

if TYPE_CHECKING:
    from gputuned.daemon.actuation.jobs import JobTarget

FAMILY = declare("gputuned_actuation_batch_size", "gauge",
                 "Global batch size gputuned set on a job (setting=target) and the job's original, while changed.")
MAX_BATCH = 1 << 30


class BatchSizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size_min: int = Field(0, ge=0, description="0: 1")
    batch_size_max: int = Field(0, ge=0, description="0: no upper bound (the job refuses what it cannot take)")


@register
class BatchSizeKnob(Knob):
    name = "batch_size"
    target = "job"
    config_model = BatchSizeConfig
    restore_rank = 10
    raw_unit = "samples"
    label = "batch size"
    cli = CliOption("--batch-size", "N", "the job's global batch size (samples per step)", int)
    display = "{0} samples"
    family = FAMILY

    def read(self, job: JobTarget) -> Value:
        size = job.report("batch_size")
        return None if size is None else int(size)

    def bounds(self, job: JobTarget, cfg: Any) -> Bounds:
        return max(1, cfg.batch_size_min), cfg.batch_size_max or MAX_BATCH

    def check(self, job: JobTarget, value: Value, cfg: Any) -> str | None:
        lo, hi = self.bounds(job, cfg)
        if not lo <= value <= hi:
            return f"batch size {value} outside {lo}-{hi}"
        return None

    def apply(self, job: JobTarget, value: Value) -> None:
        job.decide({"batch_size": int(value)})

    def verify(self, job: JobTarget, value: Value) -> bool | None:
        return job.acknowledged()

    def restore(self, job: JobTarget, original: Value) -> None:
        if original is None:  # never recorded: nothing to put back
            return
        job.decide({"batch_size": int(original)})
        ok = job.acknowledged()
        if ok is None and job.wait_s > 0:  # wait_s 0: sent from a thread that cannot wait (the socket's own)
            raise KnobError(f"job {job.name}: no ack for batch size {original} within {job.wait_s:g} s")
        if ok is False:
            raise KnobError(f"job {job.name} refused batch size {original}: {job.refusal()}")
