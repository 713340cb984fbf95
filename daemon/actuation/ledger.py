"""The records of what may differ from its originals: kept by the actuator, read back by anyone.

While the daemon runs, its actuator keeps a :class:`Ledger`: before the first change of a
knob on a target, the target's originals and the knob go into the state file (the record
comes first: never a change without it); after a restore, what came back leaves it, and the
file is removed once nothing is left. Without a daemon, :func:`restore_from_state` puts back
whatever the file lists (``gputuned restore``, the unit's ExecStopPost). GPUs are found by
UUID; a job only through a connected channel: with none, its record stays in the state file
for the next daemon, or is dropped on a daemon's stop (the job has gone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from gputuned.collectors.device import GPUDevice
from gputuned.daemon.actuation.jobs import JobTarget
from gputuned.daemon.actuation.knobs import Knob, Value, restore_order
from gputuned.daemon.actuation.restore import (
    RestoreReport,
    read_originals,
    restore_defaults,
    restore_into,
)
from gputuned.daemon.actuation.statefile import (
    GPURecord,
    JobRecord,
    State,
    StateFile,
    StateFileError,
)

logger = logging.getLogger(__name__)

#: A connected job's target by name, None when the job is not connected.
JobLookup = Callable[[str], JobTarget | None]


class NotRecorded(Exception):
    """A change that cannot be recorded, so must not be made: a reason code, its text, the value."""

    def __init__(self, code: str, reason: str, value: Value = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.value = value


class Ledger:
    """One actuator's records, in memory and in its state file; the actuator's lock guards every call."""

    def __init__(self, state_file: StateFile) -> None:
        self.file = state_file
        self.state = self._read()  # a dead run's records count until they are restored

    def record(self, knob: Knob, key: str, target: Any, value: Value) -> None:
        """Save the target's originals and the knob's new value before it changes; raises NotRecorded."""
        pending = self.state.copy()
        rec: GPURecord | JobRecord
        if knob.target == "gpu":
            rec = pending.gpus.setdefault(key, GPURecord(target.identity.index, key, read_originals(target, "gpu")))
        else:
            rec = pending.jobs.setdefault(key, JobRecord(key))
            if knob.name not in rec.changed:  # a job's original is its own value before our first change
                original = read_originals(target, "job").get(knob.name)
                if original is None:
                    raise NotRecorded("no_job", f"job {key} has not reported its {knob.name}: no original to record", value)
                rec.originals[knob.name] = original
        if knob.name not in rec.changed:
            rec.changed.append(knob.name)
        rec.targets[knob.name] = value
        try:
            self.file.save(pending)
        except OSError as e:
            raise NotRecorded("state_file", f"cannot write state file {self.file.path}: {e.strerror}") from None
        self.state = pending

    def restore(self, target: Any, rec: GPURecord | JobRecord) -> RestoreReport:
        """Put one record's changed knobs back on ``target``; what came back leaves the records."""
        state = self.state.copy()
        table: dict[str, Any] = state.jobs if isinstance(rec, JobRecord) else state.gpus
        key = rec.job if isinstance(rec, JobRecord) else rec.uuid
        report = RestoreReport()
        if restore_into(report, target, table[key]):
            del table[key]
        if not state.empty():
            self.file.save(state)
        else:
            self.file.remove()
        self.state = state
        return report

    def restore_file(self, devices: Sequence[GPUDevice], jobs: JobLookup, drop_absent_jobs: bool) -> RestoreReport:
        """Restore whatever the state file lists (this run's changes or a dead run's), then read it again."""
        report = restore_from_state(devices, self.file, jobs, drop_absent_jobs)
        self.state = self._read()
        return report

    def _read(self) -> State:
        try:
            return self.file.load()
        except StateFileError:
            return State()


def _find(devices: Sequence[GPUDevice], rec: GPURecord) -> GPUDevice | None:
    for d in devices:
        if d.identity.uuid == rec.uuid:
            return d
    return None


def _restore_gpus(devices: Sequence[GPUDevice], state: State, report: RestoreReport, remaining: State) -> None:
    for uuid, rec in state.gpus.items():
        dev = _find(devices, rec)
        if dev is None:
            report.failures.append(f"gpu {rec.index} ({uuid}): not present, cannot restore")
            remaining.gpus[uuid] = rec
        elif not restore_into(report, dev, rec):
            remaining.gpus[uuid] = rec


def _restore_jobs(state: State, jobs: JobLookup | None, drop_absent: bool, report: RestoreReport,
                  remaining: State) -> None:
    for name, rec in state.jobs.items():
        target = jobs(name) if jobs is not None else None
        if target is None:
            what = ", ".join(rec.changed)
            if drop_absent:
                logger.warning("job %s is not connected: its %s cannot be restored (the job has gone)", name, what)
            else:
                report.kept.append(f"job {name}: not connected, {what} stays recorded until a daemon reaches it")
                remaining.jobs[name] = rec
        elif not restore_into(report, target, rec):
            remaining.jobs[name] = rec


def restore_from_state(devices: Sequence[GPUDevice], state_file: StateFile, jobs: JobLookup | None = None,
                       drop_absent_jobs: bool = False) -> RestoreReport:
    """Restore every GPU and job the state file lists; remove the file once all are back.

    A state file that cannot be parsed (it never is truncated, but may be edited by hand)
    falls back to driver defaults for every GPU.
    """
    report = RestoreReport()
    try:
        state = state_file.load()
    except StateFileError as e:
        logger.error("%s; restoring every GPU to driver defaults", e)
        for dev in devices:
            report.failures.extend(restore_defaults(dev))
            report.restored[dev.identity.uuid] = [k.name for k in restore_order("gpu")]
        if report.ok:
            state_file.remove()
        return report
    remaining = State()
    _restore_gpus(devices, state, report, remaining)
    _restore_jobs(state, jobs, drop_absent_jobs, report, remaining)
    if not remaining.empty():
        state_file.save(remaining)
    elif state_file.exists():
        state_file.remove()
    else:
        state_file.clean_temp_files()
    return report
