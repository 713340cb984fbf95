"""Reversible actuation: bounded, verified GPU setting changes with originals saved first.

Every change goes: check the knob is enabled and the value within NVML's constraints
intersected with the config; record the GPU's originals (first change only) and the knob
in the state file, atomically; apply; read back. Restore puts the originals back: on
stop, at the next start when the state file shows a previous run died, and from
``gputuned restore`` (the unit's ExecStopPost). Dry-run mode logs and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors import families as F
from gputuned.collectors.device import GPUDevice, GPUError
from gputuned.collectors.families import Sample
from gputuned.daemon.actuation.knobs import KNOBS, RESTORE_ORDER, Value, read_originals
from gputuned.daemon.actuation.statefile import GPURecord, State, StateFile, StateFileError
from gputuned.daemon.core.config import ActuationConfig
from gputuned.daemon.core.store import Store

logger = logging.getLogger(__name__)

CHANGES = F.declare("gputuned_actuation_changes_total", "counter", "GPU setting changes applied and verified, by knob.")
REFUSALS = F.declare("gputuned_actuation_refusals_total", "counter", "GPU setting changes refused or failed, by knob and reason.")
RESTORES = F.declare("gputuned_actuation_restores_total", "counter", "Knobs put back to their recorded originals.")
GPU_CHANGED = F.declare("gputuned_actuation_gpu_changed", "gauge", "1 while a GPU may differ from its recorded originals.")
DRY_RUN = F.declare("gputuned_actuation_dry_run", "gauge", "1 when actuation runs in dry-run mode (logs, changes nothing).")


@dataclass(frozen=True)
class Result:
    """Outcome of one requested change: ``ok``, a reason code and text, the value."""

    ok: bool
    code: str = "ok"  # ok, dry_run, disabled, no_gpu, out_of_bounds, state_file, nvml, verify
    reason: str = ""
    value: Value = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class RestoreReport:
    """What a restore did: knobs restored per GPU uuid, and failures as text."""

    restored: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _find(devices: Sequence[GPUDevice], rec: GPURecord) -> GPUDevice | None:
    for d in devices:
        if d.identity.uuid == rec.uuid:
            return d
    return None


def restore_record(dev: GPUDevice, rec: GPURecord) -> tuple[list[str], list[str]]:
    """Restore every changed knob of one GPU; returns (restored knobs, failure texts)."""
    done: list[str] = []
    failed: list[str] = []
    for name in RESTORE_ORDER:
        if name not in rec.changed:
            continue
        knob = KNOBS[name]
        original = rec.originals.get(name)
        try:
            knob.restore(dev, original)
            if original is not None and knob.verify(dev, original) is False:
                failed.append(f"gpu {rec.index} {name}: read back {knob.read(dev)!r}, expected {original!r}")
                continue
        except GPUError as e:
            failed.append(f"gpu {rec.index} {name}: {e}")
            continue
        done.append(name)
    return done, failed


def restore_defaults(dev: GPUDevice) -> list[str]:
    """Put every knob of a GPU back to the driver's defaults (when no originals survive)."""
    failed = []
    for name in RESTORE_ORDER:
        try:
            KNOBS[name].restore(dev, None)
        except GPUError as e:
            failed.append(f"gpu {dev.identity.index} {name}: {e}")
    return failed


def restore_from_state(devices: Sequence[GPUDevice], state_file: StateFile) -> RestoreReport:
    """Restore every GPU the state file lists; remove the file once all are back.

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
            report.restored[dev.identity.uuid] = list(RESTORE_ORDER)
        if report.ok:
            state_file.remove()
        return report
    remaining: dict[str, GPURecord] = {}
    for uuid, rec in state.gpus.items():
        dev = _find(devices, rec)
        if dev is None:
            report.failures.append(f"gpu {rec.index} ({uuid}): not present, cannot restore")
            remaining[uuid] = rec
            continue
        done, failed = restore_record(dev, rec)
        report.restored[uuid] = done
        if failed:
            report.failures.extend(failed)
            rec.changed = [k for k in rec.changed if k not in done]
            remaining[uuid] = rec
    if remaining:
        state_file.save(State(gpus=remaining))
    elif state_file.exists():
        state_file.remove()
    else:
        state_file.clean_temp_files()
    return report


def _shape_error(knob_name: str, value: Value) -> str | None:
    """Why ``value`` has the wrong shape for the knob (mW int, or a pair of MHz ints)."""
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if knob_name == "power_limit":
        return None if is_int(value) else f"power_limit: expected an integer in mW, got {value!r}"
    if isinstance(value, list | tuple) and len(value) == 2 and all(is_int(x) for x in value):
        return None
    return f"{knob_name}: expected a pair of integers in MHz, got {value!r}"


class Actuator:
    """The only way the daemon changes GPU settings; a daemon component (start/tick/stop)."""

    name = "actuation"

    def __init__(self, devices: Sequence[GPUDevice], cfg: ActuationConfig, state_file: StateFile, store: Store | None = None) -> None:
        self.devices = list(devices)
        self.cfg = cfg
        self.state_file = state_file
        self.store = store
        self._lock = threading.RLock()
        self._state = State()
        self._changes: dict[str, int] = {}
        self._refusals: dict[tuple[str, str], int] = {}
        self.restores = 0

    # -- component -------------------------------------------------------------------
    def start(self) -> None:
        """Restore what a previous run left changed (it died without restoring)."""
        if self.state_file.exists():
            logger.warning("state file %s shows a previous run did not restore; restoring now", self.state_file.path)
            report = self.restore_state_file()
            for f in report.failures:
                logger.error("restore after crash: %s", f)
        else:
            self.state_file.clean_temp_files()

    def tick(self, now: float) -> None:
        if self.store is not None:
            self.store.publish(self.name, now, self.samples())

    def stop(self) -> None:
        if self.cfg.restore_on_stop:
            report = self.restore_all()
            for f in report.failures:
                logger.error("restore on stop: %s", f)

    def reload(self, cfg: ActuationConfig) -> None:
        """Take new bounds, knobs and dry-run from a reloaded config."""
        with self._lock:
            self.cfg = cfg

    # -- the tuner's API ---------------------------------------------------------------
    def set_power_limit(self, gpu: int, watts: float) -> Result:
        """Set GPU ``gpu``'s power limit to ``watts``."""
        return self.change(gpu, "power_limit", int(round(watts * 1000)))

    def set_locked_sm_clocks(self, gpu: int, min_mhz: int, max_mhz: int) -> Result:
        """Lock GPU ``gpu``'s SM clocks to [min_mhz, max_mhz]."""
        return self.change(gpu, "locked_sm_clocks", [int(min_mhz), int(max_mhz)])

    def set_locked_memory_clocks(self, gpu: int, min_mhz: int, max_mhz: int) -> Result:
        """Lock GPU ``gpu``'s memory clocks to [min_mhz, max_mhz]."""
        return self.change(gpu, "locked_memory_clocks", [int(min_mhz), int(max_mhz)])

    def set_applications_clocks(self, gpu: int, memory_mhz: int, graphics_mhz: int) -> Result:
        """Set GPU ``gpu``'s application clocks."""
        return self.change(gpu, "applications_clocks", [int(memory_mhz), int(graphics_mhz)])

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]:
        """Allowed range per knob for GPU ``gpu`` (mW or MHz)."""
        dev = self._device(gpu)
        if dev is None:
            return {}
        out = {}
        for name, knob in KNOBS.items():
            try:
                out[name] = knob.bounds(dev, self.cfg)
            except GPUError:
                continue
        return out

    def change(self, gpu: int, knob_name: str, value: Value) -> Result:
        """Check, record, apply and verify one knob change; never raises for GPU errors."""
        with self._lock:
            res = self._change(gpu, knob_name, value)
        if res.ok and res.code == "ok":
            self._changes[knob_name] = self._changes.get(knob_name, 0) + 1
        elif not res.ok:
            key = (knob_name, res.code)
            self._refusals[key] = self._refusals.get(key, 0) + 1
            logger.warning("refused %s=%r on gpu %s: %s", knob_name, value, gpu, res.reason)
        return res

    def _change(self, gpu: int, knob_name: str, value: Value) -> Result:
        cfg = self.cfg
        knob = KNOBS.get(knob_name)
        if knob is None:
            return Result(False, "disabled", f"unknown knob {knob_name!r}")
        why = _shape_error(knob_name, value)
        if why is not None:
            return Result(False, "out_of_bounds", why, value)
        if not cfg.enabled:
            return Result(False, "disabled", "actuation disabled in config")
        if knob_name not in cfg.knobs:
            return Result(False, "disabled", f"knob {knob_name} not enabled in actuation.knobs")
        dev = self._device(gpu)
        if dev is None:
            return Result(False, "no_gpu", f"no gpu {gpu}")
        try:
            why = knob.check(dev, value, cfg)
        except GPUError as e:
            return Result(False, "nvml", f"cannot read bounds: {e}")
        if why is not None:
            return Result(False, "out_of_bounds", why, value)
        if cfg.dry_run:
            logger.info("dry-run: would set gpu %d %s to %r", gpu, knob_name, value)
            return Result(True, "dry_run", "dry-run: nothing changed", value)
        uuid = dev.identity.uuid
        rec = self._state.gpus.get(uuid)
        pending = State(gpus={u: GPURecord(r.index, r.uuid, dict(r.originals), list(r.changed), dict(r.targets))
                              for u, r in self._state.gpus.items()})
        if rec is None:
            pending.gpus[uuid] = GPURecord(gpu, uuid, read_originals(dev))
        prec = pending.gpus[uuid]
        if knob_name not in prec.changed:
            prec.changed.append(knob_name)
        prec.targets[knob_name] = value
        try:
            self.state_file.save(pending)  # the record comes first: never a change without it
        except OSError as e:
            return Result(False, "state_file", f"cannot write state file {self.state_file.path}: {e.strerror}")
        self._state = pending
        try:
            knob.apply(dev, value)
        except GPUError as e:
            return Result(False, "nvml", f"{knob_name}: {e}", value)
        try:
            verified = knob.verify(dev, value)
        except GPUError as e:
            return Result(False, "verify", f"{knob_name}: read back failed: {e}", value)
        if verified is False:
            got = knob.read(dev)
            return Result(False, "verify", f"{knob_name}: read back {got!r} after setting {value!r}", value)
        logger.info("gpu %d %s set to %r%s", gpu, knob_name, value, "" if verified else " (no read-back in NVML)")
        return Result(True, "ok", "" if verified else "applied; NVML cannot read this knob back", value)

    def restore_gpu(self, gpu: int) -> RestoreReport:
        """Put one GPU's changed knobs back to its recorded originals."""
        with self._lock:
            dev = self._device(gpu)
            report = RestoreReport()
            if dev is None:
                return report
            rec = self._state.gpus.get(dev.identity.uuid)
            if rec is None:
                return report
            done, failed = restore_record(dev, rec)
            self.restores += len(done)
            report.restored[rec.uuid] = done
            report.failures.extend(failed)
            state = State(gpus=dict(self._state.gpus))
            if failed:
                rec.changed = [k for k in rec.changed if k not in done]
            else:
                del state.gpus[rec.uuid]
            self._persist(state)
            return report

    def restore_all(self) -> RestoreReport:
        """Put every changed GPU back to its recorded originals."""
        with self._lock:
            if not self._state.gpus:
                return RestoreReport()
            return self.restore_state_file()

    def restore_state_file(self) -> RestoreReport:
        """Restore whatever the state file lists (this run's changes or a dead run's)."""
        with self._lock:
            report = restore_from_state(self.devices, self.state_file)
            self.restores += sum(len(v) for v in report.restored.values())
            try:
                self._state = self.state_file.load()
            except StateFileError:
                self._state = State()
            for uuid, knobs in report.restored.items():
                logger.info("restored %s on %s", ", ".join(knobs) or "nothing", uuid)
            return report

    def _persist(self, state: State) -> None:
        if state.gpus:
            self.state_file.save(state)
        else:
            self.state_file.remove()
        self._state = state

    # -- reads ------------------------------------------------------------------------
    def _device(self, gpu: int) -> GPUDevice | None:
        for d in self.devices:
            if d.identity.index == gpu:
                return d
        return None

    def changed_gpus(self) -> int:
        """How many GPUs may differ from their recorded originals (no NVML call)."""
        with self._lock:
            return len(self._state.gpus)

    def describe(self) -> list[dict[str, Any]]:
        """Per GPU: current knob values, recorded originals and changed knobs (for status)."""
        with self._lock:
            records = dict(self._state.gpus)
        out = []
        for dev in self.devices:
            ident = dev.identity
            rec = records.get(ident.uuid)
            current = read_originals(dev)
            if rec is not None:  # locked clocks cannot be read; show what was set
                for name in ("locked_sm_clocks", "locked_memory_clocks"):
                    if name in rec.changed:
                        current[name] = rec.targets.get(name)
            out.append({
                "index": ident.index, "uuid": ident.uuid, "model": ident.model,
                "current": current,
                "originals": rec.originals if rec else None,
                "changed": list(rec.changed) if rec else [],
            })
        return out

    def samples(self) -> list[Sample]:
        with self._lock:
            changed = {r.uuid for r in self._state.gpus.values()}
            out: list[Sample] = [(DRY_RUN, (), 1.0 if self.cfg.dry_run else 0.0), (RESTORES, (), float(self.restores))]
            for dev in self.devices:
                ident = dev.identity
                out.append((GPU_CHANGED, (("gpu", str(ident.index)), ("uuid", ident.uuid)), 1.0 if ident.uuid in changed else 0.0))
            for knob, n in sorted(self._changes.items()):
                out.append((CHANGES, (("knob", knob),), float(n)))
            for (knob, code), n in sorted(self._refusals.items()):
                out.append((REFUSALS, (("knob", knob), ("reason", code)), float(n)))
            return out
