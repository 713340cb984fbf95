"""What the actuator shows: per-target knob values for ``gputuned status``, and its samples.

Every knob comes from the registry, so a registered plugin knob shows up in status and in
/metrics (its own family, while changed) with no edit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gputuned.collectors import families as F
from gputuned.collectors.device import GPUDevice
from gputuned.collectors.families import Labels, Sample
from gputuned.daemon.actuation import knobs as registry
from gputuned.daemon.actuation.jobs import JobChannel, JobTarget
from gputuned.daemon.actuation.restore import read_originals
from gputuned.daemon.actuation.statefile import GPURecord, JobRecord, State, StateFile

if TYPE_CHECKING:
    from gputuned.daemon.actuation.pins import PinBook

CHANGES = F.declare("gputuned_actuation_changes_total", "counter", "GPU setting changes applied and verified, by knob.")
REFUSALS = F.declare("gputuned_actuation_refusals_total", "counter", "GPU setting changes refused or failed, by knob and reason.")
RESTORES = F.declare("gputuned_actuation_restores_total", "counter", "Knobs put back to their recorded originals.")
GPU_CHANGED = F.declare("gputuned_actuation_gpu_changed", "gauge", "1 while a GPU may differ from its recorded originals.")
DRY_RUN = F.declare("gputuned_actuation_dry_run", "gauge", "1 when actuation runs in dry-run mode (logs, changes nothing).")
KNOB_CHANGES = F.declare("gputuned_knob_changes_total", "counter",
                         "Knob changes applied, by knob, GPU or job, and origin (tuner, perseus, operator, restore, job).")
KNOB_LAST_CHANGE = F.declare("gputuned_knob_last_change_timestamp_seconds", "gauge",
                             "When a knob last changed, by knob, GPU or job, and origin (for dashboard annotations).")
KNOB_PINNED = F.declare("gputuned_knob_pinned", "gauge",
                        "1 while the operator pins a knob on a GPU or job: the tuner leaves it until released.")


class Actuator(Protocol):
    """What the views read of :class:`gputuned.daemon.actuation.actuator.Actuator`."""

    devices: list[GPUDevice]
    cfg: Any
    state_file: StateFile
    jobs: JobChannel | None
    restores: int

    def snapshot(self) -> State: ...

    def counts(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]: ...

    def job_target(self, name: str, wait_s: float = 0.0) -> JobTarget | None: ...

    pins: PinBook

    def last_changes(self) -> list[dict[str, Any]]: ...


def _current(rec: GPURecord | JobRecord | None, current: dict[str, Any]) -> dict[str, Any]:
    """Values a target cannot report (locked clocks) shown as what was set, where changed."""
    if rec is not None:
        for name in rec.changed:
            if current.get(name) is None:
                current[name] = rec.targets.get(name)
    return current


def describe_gpus(devices: Sequence[GPUDevice], state: State) -> list[dict[str, Any]]:
    """Per GPU: current knob values, recorded originals and changed knobs."""
    out = []
    for dev in devices:
        ident = dev.identity
        rec = state.gpus.get(ident.uuid)
        out.append({
            "index": ident.index, "uuid": ident.uuid, "model": ident.model,
            "current": _current(rec, read_originals(dev, "gpu")),
            "originals": rec.originals if rec else None,
            "changed": list(rec.changed) if rec else [],
        })
        down = getattr(getattr(dev, "gate", None), "down_reason", None)  # a hung NVML call (collectors.calls)
        if down is not None:
            out[-1]["down"] = down
    return out


def describe_jobs(act: Actuator) -> list[dict[str, Any]]:
    """Per connected or recorded job: its knobs' current values, originals and changed knobs."""
    state = act.snapshot()
    connected = act.jobs.connected_jobs() if act.jobs is not None else {}
    out = []
    for name in sorted(set(connected) | set(state.jobs)):
        rec = state.jobs.get(name)
        target = act.job_target(name)
        current = read_originals(target, "job") if target is not None else {}
        out.append({
            "job": name, "connected": name in connected,
            "current": _current(rec, current),
            "originals": rec.originals if rec else None,
            "changed": list(rec.changed) if rec else [],
        })
    return out


def status(act: Actuator) -> dict[str, Any]:
    """Switches, enabled knobs, the state file, the knob catalog and the jobs' knobs."""
    return {
        "enabled": act.cfg.enabled,
        "dry_run": act.cfg.dry_run,
        "knobs": list(act.cfg.knobs),
        "state_file": str(act.state_file.path),
        "catalog": [k.catalog_entry() for k in registry.knobs()],
        "jobs": describe_jobs(act),
        "pins": act.pins.lines(),
        "last_changes": act.last_changes(),
    }


def _knob_samples(labels: Labels, rec: GPURecord | JobRecord) -> list[Sample]:
    out: list[Sample] = []
    for name in rec.changed:
        knob = registry.get(name)
        if knob is not None:
            out += knob.samples(labels, rec.targets.get(name), rec.originals.get(name))
    return out


def samples(act: Actuator) -> list[Sample]:
    """Dry-run, restores, changed GPUs, changes and refusals by knob, and each changed knob's family."""
    state = act.snapshot()
    changes, refusals = act.counts()
    out: list[Sample] = [(DRY_RUN, (), 1.0 if act.cfg.dry_run else 0.0), (RESTORES, (), float(act.restores))]
    for dev in act.devices:
        ident = dev.identity
        out.append((GPU_CHANGED, (("gpu", str(ident.index)), ("uuid", ident.uuid)), 1.0 if ident.uuid in state.gpus else 0.0))
    for knob, n in sorted(changes.items()):
        out.append((CHANGES, (("knob", knob),), float(n)))
    for (knob, code), n in sorted(refusals.items()):
        out.append((REFUSALS, (("knob", knob), ("reason", code)), float(n)))
    for rec in state.gpus.values():
        out += _knob_samples((("gpu", str(rec.index)), ("uuid", rec.uuid)), rec)
    for job_rec in state.jobs.values():
        out += _knob_samples((("job", job_rec.job),), job_rec)
    return out
