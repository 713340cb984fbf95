"""The records of what may differ from its originals: kept by the actuator, read back by anyone.

While the daemon runs, its actuator keeps a :class:`Ledger`: before the first change of a
knob on a target, the target's originals and the knob go into the state file (the record
comes first: never a change without it); after a restore, what came back leaves it, and the
file is removed once nothing is left. The records in memory are the truth while the daemon
runs: the file is checked on each tick and before any restore, and written again from memory
when it was deleted, damaged or replaced behind the daemon's back; restores work from memory.
Without a daemon, :func:`restore_from_state` puts back whatever the file lists (``gputuned
restore``, the unit's ExecStopPost), falling back to the copy of a damaged file
(``state.json.1``); when neither can be read it restores nothing: a GPU nobody recorded is left alone.
GPUs are found by UUID; a job only through a connected channel: with none, its record stays
in the state file for the next daemon, or is dropped on a daemon's stop (the job has gone).
The operator's pins are not records: they live in their own file
(:mod:`~gputuned.daemon.actuation.pins`), which no restore here touches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from gputuned.collectors.device import GPUDevice
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.jobs import JobTarget
from gputuned.daemon.actuation.knobs import Knob, Value
from gputuned.daemon.actuation.restore import RestoreReport, read_originals, restore_into
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

    def __init__(self, state_file: StateFile, state: State | None = None) -> None:
        """``state`` given, the file is not read (another live daemon's records are not ours)."""
        self.file = state_file
        self.state = self._read() if state is None else state  # a dead run's records count until restored

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
            raise NotRecorded("state_file", f"cannot write state file {self.file.path}: {e.strerror or e}") from None
        self.state = pending

    def sync(self) -> bool:
        """Write the file again from memory when it is not what was written last; True when it is now."""
        if self.state.empty():
            if self.file.exists() and not self.file.matches():
                logger.warning("state file %s appeared while nothing is changed; removing it (this daemon is "
                               "its only writer while it runs)", self.file.path)
                self.file.remove()
            return True
        if self.file.matches():
            return True
        what = "missing" if not self.file.path.exists() else "not what the daemon wrote"
        logger.warning("state file %s is %s; writing it again from the records in memory", self.file.path, what)
        try:
            self.file.save(self.state.copy())
        except OSError as e:
            logger.error("cannot write state file %s again: %s", self.file.path, e.strerror or e)
            return False
        return True

    def restore(self, target: Any, rec: GPURecord | JobRecord, cfg: ActuationConfig | None = None) -> RestoreReport:
        """Put one record's changed knobs back on ``target``; what came back leaves the records."""
        self.sync()
        state = self.state.copy()
        table: dict[str, Any] = state.jobs if isinstance(rec, JobRecord) else state.gpus
        key = rec.job if isinstance(rec, JobRecord) else rec.uuid
        report = RestoreReport()
        if restore_into(report, target, table[key], cfg):
            del table[key]
        self._adopt(state)
        return report

    def restore_all(self, devices: Sequence[GPUDevice], jobs: JobLookup, drop_absent_jobs: bool,
                    cfg: ActuationConfig | None = None) -> RestoreReport:
        """Restore every record in memory (this run's changes and a dead run's not yet restored)."""
        self.sync()
        report = RestoreReport()
        remaining = State()
        state = self.state.copy()
        _restore_gpus(devices, state, report, remaining, cfg)
        _restore_jobs(state, jobs, drop_absent_jobs, report, remaining, cfg)
        self._adopt(remaining)
        return report

    def _adopt(self, state: State) -> None:
        """Take ``state`` as the records, in memory and in the file (removed when empty)."""
        try:
            if not state.empty():
                self.file.save(state)
            else:
                self.file.remove()
        except OSError as e:
            logger.error("cannot write state file %s: %s", self.file.path, e.strerror or e)
        self.state = state

    def _read(self) -> State:
        try:
            return self.file.load()
        except StateFileError as e:
            _unreadable(self.file, e)
            return State()


def _unreadable(state_file: StateFile, e: StateFileError) -> str:
    """Log (one line) and set aside a state file that cannot be read; returns the line."""
    kept = state_file.set_aside()
    line = (f"{e}: no GPU is reset, GPUs nobody recorded are left alone"
            + (f" (the damaged file is kept as {kept})" if kept else ""))
    logger.error("%s", line)
    return line


def _find(devices: Sequence[GPUDevice], rec: GPURecord) -> GPUDevice | None:
    for d in devices:
        if d.identity.uuid == rec.uuid:
            return d
    return None


def _restore_gpus(devices: Sequence[GPUDevice], state: State, report: RestoreReport, remaining: State,
                  cfg: ActuationConfig | None) -> None:
    for uuid, rec in state.gpus.items():
        dev = _find(devices, rec)
        if dev is None:
            report.failures.append(f"gpu {rec.index} ({uuid}): not present, cannot restore")
            remaining.gpus[uuid] = rec
        elif not restore_into(report, dev, rec, cfg):
            remaining.gpus[uuid] = rec


def _restore_jobs(state: State, jobs: JobLookup | None, drop_absent: bool, report: RestoreReport,
                  remaining: State, cfg: ActuationConfig | None) -> None:
    for name, rec in state.jobs.items():
        target = jobs(name) if jobs is not None else None
        if target is None:
            what = ", ".join(rec.changed)
            if drop_absent:
                logger.warning("job %s is not connected: its %s cannot be restored (the job has gone)", name, what)
            else:
                report.kept.append(f"job {name}: not connected, {what} stays recorded until a daemon reaches it")
                remaining.jobs[name] = rec
        elif not restore_into(report, target, rec, cfg):
            if drop_absent:  # stopping: a job whose leader does not take it back has gone or is going
                logger.warning("job %s: its %s could not be restored on stop; dropped", name, ", ".join(rec.changed))
            else:
                remaining.jobs[name] = rec


def restore_from_state(devices: Sequence[GPUDevice], state_file: StateFile, jobs: JobLookup | None = None,
                       drop_absent_jobs: bool = False, cfg: ActuationConfig | None = None) -> RestoreReport:
    """Restore every GPU and job the state file lists; remove the file once all are back.

    A damaged or missing file falls back to its copy (``state.json.1``); when neither can be read nothing
    is restored (a GPU the file does not list as changed is never touched), the file is set
    aside and the report says so. ``cfg`` bounds the originals (None: the GPUs' constraints).
    """
    report = RestoreReport()
    try:
        state = state_file.load()
    except StateFileError as e:
        report.failures.append(_unreadable(state_file, e))
        return report
    remaining = State()
    _restore_gpus(devices, state, report, remaining, cfg)
    _restore_jobs(state, jobs, drop_absent_jobs, report, remaining, cfg)
    if not remaining.empty():
        state_file.save(remaining)
    elif state_file.exists():
        state_file.remove()
    else:
        state_file.clean_temp_files()
    return report
