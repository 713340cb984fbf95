"""Who changed what: the change hooks, the last change per knob, and the operator's pins.

The actuator hands every applied change (a :class:`~gputuned.intent.Change`) to an
:class:`Intents`, which calls the hooks (the forecaster, the guard), keeps the last change per
(target, knob) in memory for ``status`` and ``gputuned top``, and counts changes by knob, GPU or
job, and origin for /metrics, with the time of the last one as a gauge a Grafana annotation
query reads. A restore becomes ``restore`` changes (:func:`restore_changes`), a job's ack of a
batch size a ``job`` change.
The operator's pins are :mod:`~gputuned.daemon.actuation.pins`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from gputuned.collectors.families import Labels, Sample
from gputuned.daemon.actuation.pins import Pin
from gputuned.daemon.actuation.restore import RestoreReport
from gputuned.daemon.actuation.statefile import State
from gputuned.daemon.actuation.view import KNOB_CHANGES, KNOB_LAST_CHANGE, KNOB_PINNED
from gputuned.intent import Change, ChangeHook

logger = logging.getLogger(__name__)


def target_key(change: Change) -> str:
    """``gpu 0`` or ``job NAME``: the target of a change, as status names it."""
    return f"gpu {change.gpu}" if change.gpu is not None else f"job {change.job}"


def _labels(knob: str, gpu: int | None, job: str | None, origin: str | None = None) -> Labels:
    out: list[tuple[str, str]] = [("knob", knob)]
    out.append(("gpu", str(gpu)) if gpu is not None else ("job", str(job or "")))
    if origin is not None:
        out.append(("origin", origin))
    return tuple(out)


class Intents:
    """The change hooks, the last change per (target, knob), and change counts; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[ChangeHook] = []
        self._last: dict[tuple[str, str], dict[str, Any]] = {}  # (target, knob) -> change as dict
        self._counts: Counter[Labels] = Counter()
        self._stamps: dict[Labels, float] = {}

    def add_hook(self, hook: ChangeHook) -> None:
        """Call ``hook`` with every change from now on."""
        self._hooks.append(hook)

    def emit(self, change: Change, requested_by: str | None = None) -> None:
        """Keep ``change`` as its knob's last and hand it to every hook (a hook's fault is logged)."""
        labels = _labels(change.knob, change.gpu, change.job, change.origin)
        entry = change.to_dict()
        if requested_by is not None:  # a job's ack of a decision: who asked for it
            entry["requested_by"] = requested_by
        with self._lock:
            self._last[(target_key(change), change.knob)] = entry
            self._counts[labels] += 1
            self._stamps[labels] = change.t
        for hook in self._hooks:
            try:
                hook(change)
            except Exception:  # a listener's fault must not undo or block a change
                logger.exception("change hook %r failed", hook)

    def last_changes(self) -> list[dict[str, Any]]:
        """The last change of every knob that changed, oldest first, with its target named."""
        with self._lock:
            items = sorted(self._last.items(), key=lambda kv: kv[1]["t"])
        return [{"target": target, **entry} for (target, _), entry in items]

    def samples(self, pins: Iterable[Pin]) -> list[Sample]:
        """Changes by knob, target and origin, the time of the last of each, and a gauge per pin."""
        with self._lock:
            out: list[Sample] = [(KNOB_CHANGES, labels, float(n)) for labels, n in sorted(self._counts.items())]
            out += [(KNOB_LAST_CHANGE, labels, t) for labels, t in sorted(self._stamps.items())]
        out += [(KNOB_PINNED, _labels(p.knob, p.gpu, p.job), 1.0) for p in pins]
        return out


def restore_changes(before: State, report: RestoreReport, t: float) -> list[Change]:
    """The ``restore`` changes a restore made: each restored knob from what was set back to its original."""
    out: list[Change] = []
    for key, knobs in report.restored.items():
        if key.startswith("job "):
            job_rec = before.jobs.get(key[4:])
            if job_rec is not None:
                out += [Change(t, "restore", k, None, job_rec.job, job_rec.targets.get(k), job_rec.originals.get(k))
                        for k in knobs]
            continue
        rec = before.gpus.get(key)
        if rec is not None:
            out += [Change(t, "restore", k, rec.index, None, rec.targets.get(k), rec.originals.get(k)) for k in knobs]
    return out

