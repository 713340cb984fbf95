"""Putting targets back: every changed knob of a GPU or a job to its recorded original.

Used by the actuator (on stop, at start after a crash, on ``gputuned restore`` through the
daemon) and without a daemon by ``gputuned restore`` (the unit's ExecStopPost). GPUs are
found by UUID; a job only through a connected channel: with none, its record stays in the
state file for the next daemon, or is dropped on a daemon's stop (the job has gone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.device import GPUDevice, GPUError
from gputuned.daemon.actuation.jobs import JobTarget
from gputuned.daemon.actuation.knobs import KnobError, TargetKind, Value, knobs, restore_order
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


@dataclass
class RestoreReport:
    """What a restore did: knobs restored per GPU uuid (or ``job <name>``), failures, records kept."""

    restored: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def read_originals(target: Any, kind: TargetKind) -> dict[str, Value]:
    """Every knob's current value on a target, ``None`` where it cannot be read."""
    out: dict[str, Value] = {}
    for knob in knobs(kind):
        try:
            out[knob.name] = knob.read(target)
        except (GPUError, KnobError):
            out[knob.name] = None
    return out


def restore_knobs(target: Any, kind: TargetKind, rec: GPURecord | JobRecord, where: str) -> tuple[list[str], list[str]]:
    """Restore every changed knob of one record in restore order; returns (restored, failure texts)."""
    done: list[str] = []
    failed: list[str] = []
    order = restore_order(kind)
    failed += [f"{where} {name}: knob not registered, cannot restore" for name in rec.changed
               if name not in {k.name for k in order}]
    for knob in order:
        if knob.name not in rec.changed:
            continue
        original = rec.originals.get(knob.name)
        try:
            knob.restore(target, original)
            if original is not None and knob.verify(target, original) is False:
                failed.append(f"{where} {knob.name}: read back {knob.read(target)!r}, expected {original!r}")
                continue
        except (GPUError, KnobError) as e:
            failed.append(f"{where} {knob.name}: {e}")
            continue
        done.append(knob.name)
    return done, failed


def restore_record(dev: GPUDevice, rec: GPURecord) -> tuple[list[str], list[str]]:
    """Restore every changed knob of one GPU; returns (restored knobs, failure texts)."""
    return restore_knobs(dev, "gpu", rec, f"gpu {rec.index}")


def restore_defaults(dev: GPUDevice) -> list[str]:
    """Put every knob of a GPU back to the driver's defaults (when no originals survive)."""
    failed = []
    for knob in restore_order("gpu"):
        try:
            knob.restore(dev, None)
        except (GPUError, KnobError) as e:
            failed.append(f"gpu {dev.identity.index} {knob.name}: {e}")
    return failed


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
            continue
        done, failed = restore_record(dev, rec)
        report.restored[uuid] = done
        if failed:
            report.failures.extend(failed)
            rec.changed = [k for k in rec.changed if k not in done]
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
            continue
        done, failed = restore_knobs(target, "job", rec, f"job {name}")
        report.restored[f"job {name}"] = done
        if failed:
            report.failures.extend(failed)
            rec.changed = [k for k in rec.changed if k not in done]
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
