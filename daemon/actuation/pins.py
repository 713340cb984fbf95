"""The operator's pins: knobs set by hand with ``gputuned set``, held against the tuner.

A :class:`Pin` names a knob on a GPU (by uuid, so it follows the GPU, not its index) or on a
job (by name), the value the operator set, when and by whom. While it holds, the actuator
refuses changes from the tuner and Perseus to that knob (reason ``pinned``, counted with the
refusals); the operator's own ``set`` still applies and moves the pin. Pins live in their own
file beside the state file (``/var/lib/gputuned/pins.json``), written atomically in the same
checked private directory (:mod:`~gputuned.daemon.actuation.atomic`), so the state file keeps
its one meaning (what may differ from its originals; absent after a clean stop). The daemon's
stop puts the originals back and keeps the pins file; the next start applies the pinned GPU
values again through the actuator (originals recorded first). ``gputuned set --release`` (one
knob, a target, or all) and ``gputuned restore`` (through the daemon, or offline without
``--offline``) clear them. A pins file that cannot be read is one log line and no pins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputuned.collectors.device import GPUDevice
from gputuned.daemon.actuation.atomic import fsync_dir, read_private, replace_file
from gputuned.daemon.actuation.knobs import Value
from gputuned.daemon.actuation.ledger import NotRecorded

logger = logging.getLogger(__name__)

NAME = "pins.json"
FORMAT_VERSION = 1

#: Origins a pin holds off: the tuner's own moves and Perseus's per-GPU limits.
HELD_OFF = frozenset({"tuner", "perseus"})

#: Change one knob as the operator: (target, knob, value) -> (ok, reason).
Apply = Callable[[int | str, str, Value], tuple[bool, str]]

@dataclass(frozen=True)
class Pin:
    """A knob the operator set by hand and holds: the tuner leaves it until released.

    ``key`` is the GPU's uuid (``gpu`` its index when pinned) or the job's name (``job``).
    """

    key: str
    knob: str
    value: Any
    gpu: int | None = None
    job: str | None = None
    since: float = 0.0  # wall-clock time it was pinned
    by: str = ""  # who pinned it (``uid 0``)

    def to_json(self) -> dict[str, Any]:
        """The pin as the pins file holds it."""
        return {"key": self.key, "knob": self.knob, "value": self.value, "gpu": self.gpu, "job": self.job,
                "since": self.since, "by": self.by}

    @classmethod
    def from_json(cls, raw: Any) -> Pin:
        """A pin from the pins file; raises ValueError naming what is wrong."""
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str) or not isinstance(raw.get("knob"), str):
            raise ValueError("an entry is not an object with key and knob")
        gpu, job = raw.get("gpu"), raw.get("job")
        if (gpu is not None and (not isinstance(gpu, int) or isinstance(gpu, bool))) or (job is not None and not isinstance(job, str)):
            raise ValueError(f"{raw['key']}.{raw['knob']}: gpu/job of the wrong type")
        return cls(raw["key"], raw["knob"], raw.get("value"), gpu, job, float(raw.get("since") or 0.0), str(raw.get("by") or ""))


#: (uuid or job name, knob) -> pin
Pins = dict[tuple[str, str], Pin]


def pins_path(state_file: Path) -> Path:
    """The pins file beside ``state_file``."""
    return Path(state_file).with_name(NAME)


def parse_pins(text: str) -> Pins:
    """Pins from the pins file's text; raises ValueError naming what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION or not isinstance(raw.get("pins"), list):
        raise ValueError(f"not a version {FORMAT_VERSION} object with a list of pins")
    pins = [Pin.from_json(p) for p in raw["pins"]]
    return {(p.key, p.knob): p for p in pins}


class PinFile:
    """The pins file at ``path``: read (an unreadable file is no pins), replaced atomically, removed when empty."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Pins:
        """The pins the file holds; none when it is absent, and one error line when it cannot be read."""
        try:
            return parse_pins(read_private(self.path).decode("utf-8", errors="replace"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            why = e.strerror or e if isinstance(e, OSError) else e
            logger.error("pins file %s cannot be read (%s): no knob is pinned; `gputuned set` pins again", self.path, why)
            return {}

    def save(self, pins: Pins) -> None:
        """Replace the file with ``pins`` (removed when there are none); raises OSError (UnsafeDirectory)."""
        if not pins:
            if self.path.exists():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                fsync_dir(self.path.parent)
            return
        body = {"version": FORMAT_VERSION, "pins": [p.to_json() for _, p in sorted(pins.items())]}
        replace_file(self.path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())


def pin_line(pin: Pin) -> dict[str, Any]:
    """A pin as status shows it: target, knob, value, since (wall clock) and by whom."""
    return {"target": f"gpu {pin.gpu}" if pin.gpu is not None else f"job {pin.job}", "knob": pin.knob,
            "value": pin.value, "since": pin.since, "by": pin.by}


def released(pins: Pins, key: str | None, knob: str | None) -> Pins:
    """``pins`` less those on target ``key`` (None: every target) and ``knob`` (None: every knob)."""
    return {k: p for k, p in pins.items() if not ((key is None or p.key == key) and (knob is None or p.knob == knob))}


class PinBook:
    """The pins in memory and in their file (None: memory only, another daemon's pins are not ours)."""

    def __init__(self, file: PinFile | None, devices: Sequence[GPUDevice], lock: threading.RLock) -> None:
        self.file = file
        self._devices = devices
        self._lock = lock
        self._pins: Pins = file.load() if file is not None else {}

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
            return self._pins.get((self.key(target), knob))

    def pins(self) -> list[Pin]:
        """Every pin."""
        with self._lock:
            return [p for _, p in sorted(self._pins.items())]

    def _save(self, pins: Pins) -> None:
        """Take ``pins``, in the file first; raises NotRecorded when it cannot be written."""
        if self.file is not None:
            try:
                self.file.save(pins)
            except OSError as e:
                raise NotRecorded("pins_file", f"cannot write pins file {self.file.path}: {e.strerror or e}") from None
        self._pins = pins

    def pin(self, target: int | str, knob: str, value: Value, by: str) -> None:
        """Pin ``knob`` of ``target`` at ``value`` (written to the pins file); raises NotRecorded."""
        gpu = target if isinstance(target, int) and not isinstance(target, bool) else None
        pin = Pin(self.key(target), knob, value, gpu, None if gpu is not None else str(target), time.time(), by)
        with self._lock:
            self._save({**self._pins, (pin.key, knob): pin})
        logger.info("%s %s pinned at %r by %s: the tuner leaves it until `gputuned set --release`",
                    pin_line(pin)["target"], knob, value, by or "the operator")

    def release(self, target: int | str | None = None, knob: str | None = None) -> list[dict[str, Any]]:
        """Release the pins on ``target`` (None: all) and ``knob`` (None: every knob); returns those released."""
        with self._lock:
            before = self._pins
            after = released(before, None if target is None else self.key(target), knob)
            if len(after) == len(before):
                return []
            try:
                self._save(after)
            except NotRecorded as e:
                logger.error("pins released in memory only: %s", e.reason)
                self._pins = after
        gone = [pin_line(p) for k, p in sorted(before.items()) if k not in after]
        for line in gone:
            logger.info("%s %s released: the tuner may move it again", line["target"], line["knob"])
        return gone

    def lines(self) -> list[dict[str, Any]]:
        """Every pin as status shows it."""
        return [pin_line(p) for p in self.pins()]

    def reapply(self, apply: Apply) -> None:
        """Apply the pinned GPU values again (at start: the last stop put the originals back)."""
        by_uuid = {d.identity.uuid: d.identity.index for d in self._devices}
        for pin in self.pins():
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
