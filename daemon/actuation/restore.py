"""Putting a target back: every changed knob of a GPU or a job to its recorded original.

Used by the actuator's ledger (on stop, at start after a crash, on ``gputuned restore``
through the daemon) and by :func:`~gputuned.daemon.actuation.ledger.restore_from_state`
without a daemon (the unit's ExecStopPost). Knobs go back in restore order; one that fails
stays listed as changed, so a later restore tries it again. A GPU original is checked before
it is applied (:func:`original_refusal`): within the hardware's constraints, and, for an
original loaded from a file rather than read by this process, within the config's bounds or
equal to the driver's default (a GPU's own setting may lie outside the range the tuner is
given; a value from a file may have been written by anyone). One outside them is refused with a line naming why; the knob
is reset to the driver's default only where ``restore_out_of_bounds = "default"``, otherwise
left as it is and reported; either way it leaves the record (a retry would refuse it again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.device import GPUDevice, GPUError
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.knobs import Knob, KnobError, TargetKind, Value, knobs, restore_order
from gputuned.daemon.actuation.statefile import GPURecord, JobRecord

logger = logging.getLogger(__name__)


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


def original_refusal(knob: Knob, dev: GPUDevice, original: Value, cfg: ActuationConfig | None) -> str | None:
    """Why a recorded GPU original must not be applied, or None when it may.

    Always checked against the GPU's constraints; ``cfg`` given, against its bounds too
    (an original equal to the driver's default passes).
    """
    why = knob.shape_error(original)
    if why is not None:
        return why
    try:
        why = knob.check(dev, original, ActuationConfig())  # no config bounds: the GPU's alone
        if why is not None:
            return f"{why} (the GPU's constraints)"
        if cfg is not None:
            why = knob.check(dev, original, cfg)
            if why is not None and original != knob.default(dev):
                return f"{why} (the configured bounds)"
    except Exception as e:  # noqa: BLE001 - bounds unreadable: NVML checks the value itself when applied
        logger.debug("cannot read %s bounds to check its original: %s", knob.name, e)
    return None


def restore_knobs(target: Any, kind: TargetKind, rec: GPURecord | JobRecord, where: str,
                  cfg: ActuationConfig | None = None) -> tuple[list[str], list[str], list[str]]:
    """Restore every changed knob of one record in restore order; returns (restored, refused, failure texts).

    A refused original (see :func:`original_refusal`) is settled: it leaves the record, and its
    text is among the failures as well. ``cfg`` bounds originals loaded from a file.
    """
    bounding = cfg if isinstance(rec, GPURecord) and not rec.read_here else None
    done: list[str] = []
    refused: list[str] = []
    failed: list[str] = []
    order = restore_order(kind)
    failed += [f"{where} {name}: knob not registered, cannot restore" for name in rec.changed
               if name not in {k.name for k in order}]
    for knob in order:
        if knob.name not in rec.changed:
            continue
        original = rec.originals.get(knob.name)
        try:
            why = original_refusal(knob, target, original, bounding) if kind == "gpu" and original is not None else None
            if why is not None:
                refused.append(knob.name)
                failed.append(_refuse(knob, target, where, original, why, cfg))
                continue
            knob.restore(target, original)
            if original is not None and knob.verify(target, original) is False:
                failed.append(f"{where} {knob.name}: read back {knob.read(target)!r}, expected {original!r}")
                continue
        except (GPUError, KnobError) as e:
            failed.append(f"{where} {knob.name}: {e}")
            continue
        done.append(knob.name)
    return done, refused, failed


def _refuse(knob: Knob, dev: Any, where: str, original: Value, why: str, cfg: ActuationConfig | None) -> str:
    """Settle a refused original as configured; the line that reports it."""
    if cfg is not None and cfg.restore_out_of_bounds == "default":
        knob.reset(dev)
        line = f"{where} {knob.name}: recorded original {original!r} refused ({why}); reset to the driver's default"
    else:
        line = (f"{where} {knob.name}: recorded original {original!r} refused ({why}); left as it is "
                "(restore_out_of_bounds = \"leave\")")
    logger.error("%s", line)
    return line


def restore_into(report: RestoreReport, target: Any, rec: GPURecord | JobRecord,
                 cfg: ActuationConfig | None = None) -> bool:
    """Restore one record's changed knobs on ``target``, noted in ``report``; True when none is left.

    ``rec.changed`` keeps the knobs that failed, for the record left in the state file.
    """
    if isinstance(rec, JobRecord):
        key = f"job {rec.job}"
        done, refused, failed = restore_knobs(target, "job", rec, key, cfg)
    else:
        key = rec.uuid
        done, refused, failed = restore_knobs(target, "gpu", rec, f"gpu {rec.index}", cfg)
    report.restored[key] = done
    report.failures.extend(failed)
    rec.changed = [k for k in rec.changed if k not in done and k not in refused]
    return not rec.changed
