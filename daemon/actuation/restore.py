"""Putting a target back: every changed knob of a GPU or a job to its recorded original.

Used by the actuator's ledger (on stop, at start after a crash, on ``gputuned restore``
through the daemon) and by :func:`~gputuned.daemon.actuation.ledger.restore_from_state`
without a daemon (the unit's ExecStopPost). Knobs go back in restore order; one that fails
stays listed as changed, so a later restore tries it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.device import GPUDevice, GPUError
from gputuned.daemon.actuation.knobs import KnobError, TargetKind, Value, knobs, restore_order
from gputuned.daemon.actuation.statefile import GPURecord, JobRecord


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


def restore_into(report: RestoreReport, target: Any, rec: GPURecord | JobRecord) -> bool:
    """Restore one record's changed knobs on ``target``, noted in ``report``; True when all came back.

    ``rec.changed`` keeps the knobs that failed, for the record left in the state file.
    """
    if isinstance(rec, JobRecord):
        key = f"job {rec.job}"
        done, failed = restore_knobs(target, "job", rec, key)
    else:
        key = rec.uuid
        done, failed = restore_knobs(target, "gpu", rec, f"gpu {rec.index}")
    report.restored[key] = done
    report.failures.extend(failed)
    rec.changed = [k for k in rec.changed if k not in done]
    return not failed


def restore_defaults(dev: GPUDevice) -> list[str]:
    """Put every knob of a GPU back to the driver's defaults (when no originals survive)."""
    failed = []
    for knob in restore_order("gpu"):
        try:
            knob.restore(dev, None)
        except (GPUError, KnobError) as e:
            failed.append(f"gpu {dev.identity.index} {knob.name}: {e}")
    return failed
