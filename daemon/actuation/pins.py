"""The operator's pins: knobs set by hand with ``gputuned set``, held against the tuner.

A pin (:class:`~gputuned.daemon.actuation.statefile.Pin`) names a knob on a GPU (by uuid, so
it follows the GPU, not its index) or on a job (by name), the value the operator set, when and
by whom. While it holds, the actuator refuses changes from the tuner and Perseus to that knob
(reason ``pinned``, counted with the refusals); the operator's own ``set`` still applies and
moves the pin. Pins live in the state file beside the records (the ledger writes them), so they
survive a restart: the daemon's stop puts the originals back but keeps the pins, and the next
start applies the pinned GPU values again. ``gputuned set --release`` (one knob, a target, or
all) and ``gputuned restore`` (through the daemon, or offline without ``--offline``) clear them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from gputuned.collectors.device import GPUDevice
from gputuned.daemon.actuation.knobs import Value
from gputuned.daemon.actuation.ledger import Ledger, NotRecorded
from gputuned.daemon.actuation.statefile import Pin

logger = logging.getLogger(__name__)

#: Origins a pin holds off: the tuner's own moves and Perseus's per-GPU limits.
HELD_OFF = frozenset({"tuner", "perseus"})

#: Change one knob as the operator: (target, knob, value) -> (ok, reason).
Apply = Callable[[int | str, str, Value], tuple[bool, str]]


def pin_line(pin: Pin) -> dict[str, Any]:
    """A pin as status shows it: target, knob, value, since (wall clock) and by whom."""
    return {"target": f"gpu {pin.gpu}" if pin.gpu is not None else f"job {pin.job}", "knob": pin.knob,
            "value": pin.value, "since": pin.since, "by": pin.by}


def released(pins: dict[tuple[str, str], Pin], key: str | None, knob: str | None) -> dict[tuple[str, str], Pin]:
    """``pins`` less those on target ``key`` (None: every target) and ``knob`` (None: every knob)."""
    return {k: p for k, p in pins.items() if not ((key is None or p.key == key) and (knob is None or p.knob == knob))}


class PinBook:
    """Pins, read and written through the actuator's ledger under the actuator's lock."""

    def __init__(self, ledger: Callable[[], Ledger], devices: Sequence[GPUDevice], lock: threading.RLock) -> None:
        self._ledger = ledger  # the actuator replaces its ledger when it defers to another daemon
        self._devices = devices
        self._lock = lock

    def key(self, target: int | str) -> str:
        """A target's key among the pins: a GPU's uuid (its index where no GPU has it), a job's name."""
        if isinstance(target, int) and not isinstance(target, bool):
            for d in self._devices:
                if d.identity.index == target:
                    return d.identity.uuid
            return f"gpu {target}"
        return str(target)

    def holding(self, target: int | str, knob: str) -> Pin | None:
        """The pin on ``knob`` of ``target``, or None."""
        with self._lock:
            return self._ledger().state.pins.get((self.key(target), knob))

    def pin(self, target: int | str, knob: str, value: Value, by: str) -> None:
        """Pin ``knob`` of ``target`` at ``value`` (recorded in the state file); raises NotRecorded."""
        gpu = target if isinstance(target, int) and not isinstance(target, bool) else None
        pin = Pin(self.key(target), knob, value, gpu, None if gpu is not None else str(target), time.time(), by)
        with self._lock:
            ledger = self._ledger()
            ledger.set_pins({**ledger.state.pins, (pin.key, knob): pin})
        logger.info("%s %s pinned at %r by %s: the tuner leaves it until `gputuned set --release`",
                    pin_line(pin)["target"], knob, value, by or "the operator")

    def release(self, target: int | str | None = None, knob: str | None = None) -> list[dict[str, Any]]:
        """Release the pins on ``target`` (None: all) and ``knob`` (None: every knob); returns those released."""
        with self._lock:
            ledger = self._ledger()
            before = ledger.state.pins
            after = released(before, None if target is None else self.key(target), knob)
            if len(after) == len(before):
                return []
            try:
                ledger.set_pins(after)
            except NotRecorded as e:
                logger.error("pins released in memory only: %s", e.reason)
                ledger.state.pins = after
        gone = [pin_line(p) for k, p in sorted(before.items()) if k not in after]
        for line in gone:
            logger.info("%s %s released: the tuner may move it again", line["target"], line["knob"])
        return gone

    def lines(self) -> list[dict[str, Any]]:
        """Every pin as status shows it."""
        with self._lock:
            pins = sorted(self._ledger().state.pins.items())
        return [pin_line(p) for _, p in pins]

    def reapply(self, apply: Apply) -> None:
        """Apply the pinned GPU values again (at start: the last stop put the originals back)."""
        with self._lock:
            pins = list(self._ledger().state.pins.values())
        by_uuid = {d.identity.uuid: d.identity.index for d in self._devices}
        for pin in pins:
            if pin.gpu is None:
                continue  # a job's pin holds the tuner off; the job sets its own value when it comes
            index = by_uuid.get(pin.key)
            if index is None:
                logger.warning("pinned %s on gpu %s (%s): that GPU is not present; pin kept", pin.knob, pin.gpu, pin.key)
                continue
            ok, why = apply(index, pin.knob, pin.value)
            if ok:
                logger.info("gpu %d %s pinned at %r by %s: applied again", index, pin.knob, pin.value, pin.by or "the operator")
            else:
                logger.warning("gpu %d %s pinned at %r: cannot apply it again (%s); pin kept", index, pin.knob, pin.value, why)
