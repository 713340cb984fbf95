"""Reversible actuation: bounded, verified changes of registered knobs with originals saved first.

Every change goes: check the knob is registered, enabled and the value of its shape and
within bounds (the target's constraints intersected with the config); record the target's
originals (first change only) and the knob in the state file, atomically (the
:class:`~gputuned.daemon.actuation.ledger.Ledger`); apply; verify.
A target is a GPU (by index) or a training job (by name, through the injected job channel:
the change is a decision, verified by the job's ack). Restore puts the originals back: on
stop, at the next start when the state file shows a previous run died, and from
``gputuned restore``; the operator's pins (their own file) outlive a stop and are applied again
at the next start. Every applied change, a restore's included, goes to
:class:`~gputuned.daemon.actuation.intents.Intents` (hooks, last change, metrics); a knob the
operator pinned refuses the tuner's and Perseus's changes (``pinned``). Dry-run mode logs and changes nothing. Next to another live daemon
(:func:`~gputuned.daemon.actuation.owner.live_owner`: the state file's writer still runs) the
actuator is attached read-only: it neither reads nor restores that daemon's records, never
writes or removes its state file, and refuses every change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from gputuned.collectors.device import GPUDevice, GPUError
from gputuned.collectors.families import Sample
from gputuned.daemon.actuation import knobs as registry
from gputuned.daemon.actuation import view
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.intents import Intents, restore_changes
from gputuned.daemon.actuation.jobs import AckedValues, JobChannel, JobTarget
from gputuned.daemon.actuation.knobs import Knob, KnobError, Value
from gputuned.daemon.actuation.knobs.clock_range import ClockKnob
from gputuned.daemon.actuation.ledger import Ledger, NotRecorded, restore_from_state
from gputuned.daemon.actuation.outcome import Result, apply_knob, where
from gputuned.daemon.actuation.owner import Owner, live_owner
from gputuned.daemon.actuation.pins import HELD_OFF, PinBook, PinFile, pins_path
from gputuned.daemon.actuation.restore import RestoreReport
from gputuned.daemon.actuation.statefile import State, StateFile
from gputuned.daemon.actuation.view import (
    CHANGES,
    DRY_RUN,
    GPU_CHANGED,
    KNOB_CHANGES,
    KNOB_LAST_CHANGE,
    KNOB_PINNED,
    REFUSALS,
    RESTORES,
)
from gputuned.daemon.control.reports import LAST_REPORT, STAT_FAMILIES
from gputuned.daemon.core.store import Store
from gputuned.intent import Change, ChangeHook

logger = logging.getLogger(__name__)

__all__ = ["CHANGES", "DRY_RUN", "GPU_CHANGED", "KNOB_CHANGES", "KNOB_LAST_CHANGE", "KNOB_PINNED", "REFUSALS", "RESTORES",
           "Actuator", "RestoreReport", "Result", "restore_from_state"]

LEADER_RANK = "0"  # the rank whose reports carry a job's global values


class Actuator:
    """The only way the daemon changes GPU settings or a job's knobs; a component (start/tick/stop)."""

    name = "actuation"

    def __init__(self, devices: Sequence[GPUDevice], cfg: ActuationConfig, state_file: StateFile,
                 store: Store | None = None, jobs: JobChannel | None = None) -> None:
        self.devices = list(devices)
        self.cfg = cfg
        self.state_file = state_file
        self.store = store
        self.jobs = jobs
        self._lock = threading.RLock()
        self.owner: Owner | None = live_owner(state_file)  # another live daemon: hands off its records
        # a dead run's records count until start() restores them; a live daemon's are not ours
        self.ledger = Ledger(state_file, State() if self.owner is not None else None)
        self._changes: dict[str, int] = {}
        self._refusals: dict[tuple[str, str], int] = {}
        self._awaiting: dict[str, tuple[str, str, Value, Value, str]] = {}  # id -> (job, knob, value, previous, origin)
        self.acked = AckedValues()  # jobs' acknowledged values, newer than their reports in the store
        if callable(getattr(jobs, "on_ack", None)):  # the control server: acks noted as they arrive
            jobs.on_ack(self.acked.on_ack)  # type: ignore[union-attr]
        self.restores = 0
        self._now = 0.0  # the loop's clock at the last tick: the time of a change
        self.intents = Intents()
        # the operator's pins, in their own file beside the state file (another live daemon's are not ours)
        self.pins = PinBook(PinFile(pins_path(state_file.path)) if self.owner is None else None, self.devices, self._lock)

    # -- component -------------------------------------------------------------------
    def start(self) -> None:
        """Restore what a previous run left changed (it died without restoring), unless it still runs."""
        if self.owner is not None:
            logger.warning("%s: actuation is off in this process; its state file and GPUs are left alone",
                           self.owner.line())
        elif self.state_file.exists():
            logger.warning("state file %s shows a previous run did not restore; restoring now", self.state_file.path)
            report = self.restore_state_file()
            for f in report.failures:
                logger.error("restore after crash: %s", f)
        else:
            self.state_file.clean_temp_files()
        if self.owner is None:
            self.pins.reapply(self._operator_set)

    def _operator_set(self, target: int | str, knob_name: str, value: Value) -> tuple[bool, str]:
        res = self.change(target, knob_name, value)
        return res.ok, res.reason

    def defer_to(self, owner: Owner) -> None:
        """Leave the GPUs and the state file to ``owner``, a live daemon found by its caller: read-only from now."""
        with self._lock:
            self.owner = owner
            self.ledger = Ledger(self.state_file, State())
            self.pins = PinBook(None, self.devices, self._lock)

    def add_change_hook(self, hook: ChangeHook) -> None:
        """Call ``hook`` with a :class:`~gputuned.intent.Change` for every applied change."""
        self.intents.add_hook(hook)

    def tick(self, now: float) -> None:
        """Check the state file against the records in memory (written again if lost), publish samples."""
        self._now = now
        if self.owner is None:
            with self._lock:
                self.ledger.sync()
        if self.store is not None:
            self.store.publish(self.name, now, self.samples())

    def stop(self) -> None:
        """Restore this run's changes (when configured); nothing when another daemon owns the GPUs."""
        if self.cfg.restore_on_stop and self.owner is None:
            report = self.restore_all(drop_absent_jobs=True)
            for f in report.failures:
                logger.error("restore on stop: %s", f)

    def reload(self, cfg: ActuationConfig) -> None:
        """Take new bounds, knobs and dry-run from a reloaded config."""
        with self._lock:
            self.cfg = cfg

    # -- the tuner's API ---------------------------------------------------------------
    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Result:
        """Set GPU ``gpu``'s power limit to ``watts``."""
        return self.change(gpu, "power_limit", int(round(watts * 1000)), origin=origin)

    def set_locked_sm_clocks(self, gpu: int, min_mhz: int, max_mhz: int) -> Result:
        """Lock GPU ``gpu``'s SM clocks to [min_mhz, max_mhz]."""
        return self.change(gpu, "locked_sm_clocks", [int(min_mhz), int(max_mhz)])

    def set_locked_memory_clocks(self, gpu: int, min_mhz: int, max_mhz: int) -> Result:
        """Lock GPU ``gpu``'s memory clocks to [min_mhz, max_mhz]."""
        return self.change(gpu, "locked_memory_clocks", [int(min_mhz), int(max_mhz)])

    def set_applications_clocks(self, gpu: int, memory_mhz: int, graphics_mhz: int) -> Result:
        """Set GPU ``gpu``'s application clocks."""
        return self.change(gpu, "applications_clocks", [int(memory_mhz), int(graphics_mhz)])

    def set_batch_size(self, job: str, size: int, wait_s: float = 0.0) -> Result:
        """Ask job ``job`` for global batch size ``size`` (``pending`` until its ack; see :meth:`acknowledged`)."""
        return self.change(job, "batch_size", int(size), wait_s=wait_s)

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]:
        """Allowed range per GPU knob for GPU ``gpu`` (in each knob's unit)."""
        dev = self._device(gpu)
        if dev is None:
            return {}
        out = {}
        for knob in registry.knobs("gpu"):
            try:
                out[knob.name] = knob.bounds(dev, self.cfg)
            except GPUError:
                continue
        return out

    def memory_clocks(self, gpu: int) -> list[int]:
        """GPU ``gpu``'s supported memory clocks (MHz) within the memory lock's bounds (empty: none, or the knob is off)."""
        dev, knob = self._device(gpu), registry.get("locked_memory_clocks")
        try:
            ok = dev is not None and isinstance(knob, ClockKnob) and knob.name in self.cfg.knobs
            lo, hi = knob.bounds(dev, self.cfg) if ok else (1, 0)
            return [c for c in knob.supported(dev) if lo <= c <= hi] if lo <= hi else []
        except GPUError:
            return []

    def change(self, target: int | str, knob_name: str, value: Value, *, wait_s: float = 0.0,
               origin: str = "operator") -> Result:
        """Check, record, apply and verify one knob change; never raises for target errors.

        ``target`` is a GPU index for a GPU knob, a job name for a job knob. A job knob's
        change is verified by the job's ack, waited for up to ``wait_s``; without it the
        result is ``pending`` with the decision id in ``ident`` (see :meth:`acknowledged`).
        ``origin`` names who asks (see :data:`~gputuned.intent.ORIGINS`); an applied change is
        emitted to the change hooks with it.
        """
        with self._lock:
            pin = self.pins.holding(target, knob_name) if origin in HELD_OFF else None
            previous = self._read(target, knob_name)
            res = (Result(False, "pinned", f"{knob_name} is pinned by {pin.by or 'the operator'} at {pin.value!r}", value)
                   if pin is not None else self._change(target, knob_name, value, wait_s))
            if res.code == "pending":
                self._awaiting[res.ident] = (str(target), knob_name, value, previous, origin)
        self._count(target, knob_name, res)
        if res.ok and res.code in ("ok", "pending"):
            gpu = target if isinstance(target, int) and not isinstance(target, bool) else None
            self.intents.emit(Change(self._now, origin, knob_name, gpu, None if gpu is not None else str(target),
                                     previous, value))
        return res

    def _read(self, target: int | str, knob_name: str) -> Value:
        """A knob's current value before a change (a job's as it last reported; None where it cannot be read)."""
        knob = registry.get(knob_name)
        gpu = isinstance(target, int) and not isinstance(target, bool)
        obj = self._device(int(target)) if gpu else self.job_target(str(target)) if knob is not None else None
        if knob is None or obj is None or (knob.target == "gpu") != gpu:
            return None
        try:
            return knob.read(obj)
        except (GPUError, KnobError):
            return None

    def acknowledged(self, ident: str, wait_s: float = 0.0) -> Result | None:
        """The outcome of a ``pending`` job change once its ack came (None while it has not)."""
        pending = self._awaiting.get(ident)
        if pending is None or self.jobs is None:
            return None
        ack = self.jobs.wait_ack(ident, wait_s)
        if ack is None:
            return None
        job, knob_name, value, previous, origin = self._awaiting.pop(ident)
        if ack.get("ok"):
            self.acked.on_ack(job, ack)
            res = Result(True, "ok", "", value, ident)
            self.intents.emit(Change(self._now, "job", knob_name, None, job, previous, value), requested_by=origin)
        else:
            res = Result(False, "refused", f"job {job} refused {knob_name} {value}: {ack.get('error') or ''}", value, ident)
        self._count(job, knob_name, res)
        return res

    def _count(self, target: int | str, knob_name: str, res: Result) -> None:
        if res.ok and res.code == "ok":
            self._changes[knob_name] = self._changes.get(knob_name, 0) + 1
        elif not res.ok:
            key = (knob_name, res.code)
            self._refusals[key] = self._refusals.get(key, 0) + 1
            (logger.debug if res.code == "pinned" else logger.warning)(  # the tuner says so once, not every try
                "refused %s=%r on %s: %s", knob_name, res.value, where(target), res.reason)

    def _change(self, target: int | str, knob_name: str, value: Value, wait_s: float) -> Result:
        cfg = self.cfg
        if self.owner is not None:
            return Result(False, "disabled", f"{self.owner.line()}; this process does not actuate")
        knob = registry.get(knob_name)
        if knob is None:
            return Result(False, "disabled", f"unknown knob {knob_name!r}")
        why = knob.shape_error(value)
        if why is not None:
            return Result(False, "out_of_bounds", why, value)
        if not cfg.enabled:
            return Result(False, "disabled", "actuation disabled in config")
        if knob_name not in cfg.knobs:
            return Result(False, "disabled", f"knob {knob_name} not enabled in actuation.knobs")
        found = self._resolve(knob, target, wait_s)
        if isinstance(found, Result):
            return found
        key, obj = found
        try:
            why = knob.check(obj, value, cfg)
        except (GPUError, KnobError) as e:
            return Result(False, "nvml", f"cannot read bounds: {e}")
        if why is not None:
            return Result(False, "out_of_bounds", why, value)
        if cfg.dry_run:
            logger.info("dry-run: would set %s %s to %r", where(target), knob_name, value)
            return Result(True, "dry_run", "dry-run: nothing changed", value)
        try:
            self.ledger.record(knob, key, obj, value)  # the record comes first: never a change without it
        except NotRecorded as e:
            return Result(False, e.code, e.reason, e.value)
        return apply_knob(knob, target, obj, value)

    def _resolve(self, knob: Knob, target: int | str, wait_s: float) -> tuple[str, Any] | Result:
        """The state-file key and the object a knob acts on, or why there is none."""
        if knob.target == "gpu":
            if not isinstance(target, int) or isinstance(target, bool):
                return Result(False, "no_gpu", f"{knob.name} is set on a GPU index, not {target!r}")
            dev = self._device(target)
            if dev is None:
                return Result(False, "no_gpu", f"no gpu {target}")
            return dev.identity.uuid, dev
        job = self.job_target(str(target), wait_s)
        if job is None:
            return Result(False, "no_job", f"job {target!r} is not connected")
        return job.name, job

    # -- restore -------------------------------------------------------------------------
    def restore_gpu(self, gpu: int) -> RestoreReport:
        """Put one GPU's changed knobs back to its recorded originals."""
        with self._lock:
            dev = self._device(gpu)
            rec = self.ledger.state.gpus.get(dev.identity.uuid) if dev is not None else None
            if dev is None or rec is None:
                return RestoreReport()
            before = self.ledger.state.copy()
            return self._counted(before, self.ledger.restore(dev, rec, self.cfg))

    def restore_job(self, job: str) -> RestoreReport:
        """Put one connected job's changed knobs back to its own originals."""
        with self._lock:
            rec = self.ledger.state.jobs.get(job)
            target = self.job_target(job, self.cfg.job_ack_timeout_s)
            if rec is None or target is None:
                return RestoreReport()
            before = self.ledger.state.copy()
            return self._counted(before, self.ledger.restore(target, rec, self.cfg))

    def restore_all(self, drop_absent_jobs: bool = False, job_wait_s: float | None = None) -> RestoreReport:
        """Put every changed GPU and connected job back to its recorded originals.

        A job's restore waits ``job_wait_s`` for its ack (default ``job_ack_timeout_s``); 0
        sends the decision without waiting, for callers on the job channel's own thread.
        """
        with self._lock:
            if not self.ledger.state.changed():
                return RestoreReport()
            return self.restore_state_file(drop_absent_jobs, job_wait_s)

    def restore_state_file(self, drop_absent_jobs: bool = False, job_wait_s: float | None = None) -> RestoreReport:
        """Restore every record (this run's changes, a dead run's not yet restored); the file follows."""
        if self.owner is not None:
            return RestoreReport()  # another live daemon's records: its own to restore
        with self._lock:
            wait_s = self.cfg.job_ack_timeout_s if job_wait_s is None else job_wait_s
            lookup = lambda job: self.job_target(job, wait_s)  # noqa: E731
            before = self.ledger.state.copy()
            report = self._counted(before, self.ledger.restore_all(self.devices, lookup, drop_absent_jobs, self.cfg))
            for key, knobs in report.restored.items():
                logger.info("restored %s on %s", ", ".join(knobs) or "nothing", key)
            for note in report.kept:
                logger.warning("%s", note)
            return report

    def _counted(self, before: State, report: RestoreReport) -> RestoreReport:
        self.restores += sum(len(v) for v in report.restored.values())
        for change in restore_changes(before, report, self._now):
            self.intents.emit(change)
        return report

    # -- reads ------------------------------------------------------------------------
    def _device(self, gpu: int) -> GPUDevice | None:
        for d in self.devices:
            if d.identity.index == gpu:
                return d
        return None

    def job_target(self, name: str, wait_s: float = 0.0) -> JobTarget | None:
        """A connected job as a knob target; None without a channel or when it is not connected."""
        if self.jobs is None or name not in self.jobs.connected_jobs():
            return None
        return JobTarget(name, self.jobs, self._reported, wait_s, acked=self.acked)

    def _reported(self, job: str, key: str) -> float | None:
        family = STAT_FAMILIES.get(key)
        if self.store is None or family is None:
            return None
        leader = (("job", job), ("rank", LEADER_RANK))
        return self.acked.current(job, key, self.store.value(family, leader), self.store.value(LAST_REPORT, leader))

    def changed_gpus(self) -> int:
        """How many GPUs may differ from their recorded originals (no NVML call)."""
        with self._lock:
            return len(self.ledger.state.gpus)

    def snapshot(self) -> State:
        """A copy of the records: what may differ from its originals now."""
        with self._lock:
            return self.ledger.state.copy()

    def counts(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Changes applied by knob, and refusals by (knob, reason code)."""
        with self._lock:
            return dict(self._changes), dict(self._refusals)

    def describe(self) -> list[dict[str, Any]]:
        """Per GPU: current knob values, recorded originals and changed knobs (for status)."""
        return view.describe_gpus(self.devices, self.snapshot())

    def status(self) -> dict[str, Any]:
        """Actuation as ``gputuned status`` shows it: switches, knob catalog, jobs' knobs."""
        return view.status(self)

    def last_changes(self) -> list[dict[str, Any]]:
        """The last change of every knob that changed: who, when, from what to what."""
        return self.intents.last_changes()

    def samples(self) -> list[Sample]:
        """Counters, dry-run, changed GPUs, every changed knob's own family, changes by origin and pins."""
        return view.samples(self) + self.intents.samples(self.pins.pins())

