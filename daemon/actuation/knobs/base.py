"""What a knob is: one reversible setting of one target, a GPU or the training job.

A knob module subclasses :class:`Knob`, declares what it is (name, target kind, config
model, unit and shape of its values, display, metric family, command-line flag) and
implements read / bounds / check / apply / verify / reset (restore applies the recorded
original, or resets when there is none); :func:`register` adds it to the registry. The
actuator, the state file, ``gputuned set`` and ``gputuned status`` take every knob from the
registry, so a new knob is one module.

Values are JSON-friendly so they go into the state file as they are: an integer in the
knob's ``raw_unit`` (mW, MHz, samples), or a ``[a, b]`` pair of them where ``parts`` names
the two members. ``None`` means "no value" (unreadable, or unlocked for clock locks).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from gputuned.collectors.families import Labels, Sample

TargetKind = Literal["gpu", "job"]
Value = Any  # int, [int, int] or None
Bounds = tuple[int, int]


class KnobError(Exception):
    """A target refused a value or did not confirm it (the GPU layer raises GPUError instead)."""


def intersect(nvml: Bounds, cfg_lo: float, cfg_hi: float) -> Bounds:
    """A device's range narrowed by config bounds, where those are set (0 means unset)."""
    lo, hi = nvml
    if cfg_lo > 0:
        lo = max(lo, int(cfg_lo))
    if cfg_hi > 0:
        hi = min(hi, int(cfg_hi))
    return lo, hi


def parse_pair(text: str) -> list[int]:
    """``"A:B"`` as ``[A, B]`` (a command-line pair of integers)."""
    a, b = text.split(":")
    return [int(a), int(b)]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def format_value(display: str, scale: float, value: Value) -> str:
    """A value as the status table shows it: ``display`` formatted with the value(s) times ``scale``."""
    if value is None:
        return "-"
    items = value if isinstance(value, list | tuple) else [value]
    scaled = [x * scale if scale != 1.0 else x for x in items]
    try:
        return display.format(*scaled)
    except (IndexError, ValueError, TypeError):
        return repr(value)


@dataclass(frozen=True)
class CliOption:
    """How ``gputuned set`` takes the knob: flag, metavar, help, and text -> value."""

    flag: str
    metavar: str
    help: str
    parse: Callable[[str], Value]


class Knob(abc.ABC):
    """One setting of one target that the actuator may change and must be able to restore.

    ``target`` is what the methods receive: a :class:`~gputuned.collectors.device.GPUDevice`
    for ``"gpu"`` knobs, a :class:`~gputuned.daemon.actuation.jobs.JobTarget` for ``"job"``.
    ``cfg`` is the whole :class:`~gputuned.daemon.actuation.config.ActuationConfig`; the keys
    a knob reads are those of its ``config_model``.
    """

    name: ClassVar[str] = ""
    target: ClassVar[TargetKind] = "gpu"
    config_model: ClassVar[type[BaseModel] | None] = None  # keys it adds under [actuation]
    default_enabled: ClassVar[bool] = True  # listed in the default actuation.knobs
    restore_rank: ClassVar[int] = 50  # restored in ascending rank
    raw_unit: ClassVar[str] = ""  # unit of stored values: "mW", "MHz", "samples"
    parts: ClassVar[tuple[str, ...]] = ()  # names of a pair's members; () for a scalar
    part_label: ClassVar[str] = "part"  # the metric label carrying the member name
    label: ClassVar[str] = ""  # status column header
    display: ClassVar[str] = "{0}"  # str.format template of the displayed value(s)
    display_scale: ClassVar[float] = 1.0  # stored value -> displayed value
    family: ClassVar[str] = ""  # gauge: value set by gputuned and the recorded original
    base_scale: ClassVar[float] = 1.0  # stored value -> Prometheus base unit
    cli: ClassVar[CliOption | None] = None

    @abc.abstractmethod
    def read(self, target: Any) -> Value:
        """The current value (``None`` where the target cannot report it)."""

    @abc.abstractmethod
    def bounds(self, target: Any, cfg: Any) -> Bounds:
        """The target's allowed range intersected with the config's, in ``raw_unit``."""

    def check(self, target: Any, value: Value, cfg: Any) -> str | None:
        """Why ``value`` is refused, or None when it is within bounds (scalars: lo <= value <= hi)."""
        lo, hi = self.bounds(target, cfg)
        if not lo <= value <= hi:
            return f"{self.name} {value} {self.raw_unit} outside {lo}-{hi} {self.raw_unit}"
        return None

    @abc.abstractmethod
    def apply(self, target: Any, value: Value) -> None:
        """Set ``value``; raises GPUError or KnobError when the target refuses."""

    def verify(self, target: Any, value: Value) -> bool | None:
        """Read back: True when the target reports ``value``, None when it cannot be read."""
        current = self.read(target)
        if current is None:
            return None
        return bool(current == value)

    def verify_detail(self, target: Any, value: Value) -> tuple[bool | None, str]:
        """Read back as :meth:`verify`, with a note of what the reading found ("" when nothing to add)."""
        return self.verify(target, value), ""

    def restore(self, target: Any, original: Value) -> None:
        """Put the recorded original back; an original never read (``None``) resets the default."""
        if original is None:
            self.reset(target)
        else:
            self.apply(target, original)

    def default(self, target: Any) -> Value:
        """The driver's default value where the target reports it, else None (an original equal to it is always restorable)."""
        return None

    def reset(self, target: Any) -> None:
        """Put the target's default back (the driver's): the restore of an unknown original."""
        raise KnobError(f"{self.name}: no default to reset to")

    # -- declared shape, display and metrics ---------------------------------------------
    def shape_error(self, value: Value) -> str | None:
        """Why ``value`` has the wrong shape for this knob (an integer, or a pair of them)."""
        if not self.parts:
            return None if _is_int(value) else f"{self.name}: expected an integer in {self.raw_unit}, got {value!r}"
        if isinstance(value, list | tuple) and len(value) == len(self.parts) and all(_is_int(x) for x in value):
            return None
        return f"{self.name}: expected a pair of integers in {self.raw_unit}, got {value!r}"

    def format(self, value: Value) -> str:
        """``value`` as ``gputuned status`` shows it."""
        return format_value(self.display, self.display_scale, value)

    def catalog_entry(self) -> dict[str, Any]:
        """What a status client needs to show this knob without importing it (JSON-able)."""
        return {"name": self.name, "target": self.target, "label": self.label or self.name,
                "display": self.display, "display_scale": self.display_scale, "unit": self.raw_unit,
                "parts": list(self.parts)}

    def samples(self, labels: Labels, value: Value, original: Value) -> list[Sample]:
        """The knob's family while it is changed: the value set and the recorded original."""
        if not self.family:
            return []
        out: list[Sample] = []
        for setting, v in (("target", value), ("original", original)):
            if v is None:
                continue
            if self.parts:
                for part, x in zip(self.parts, v, strict=False):
                    out.append((self.family, (*labels, ("setting", setting), (self.part_label, part)), float(x) * self.base_scale))
            else:
                out.append((self.family, (*labels, ("setting", setting)), float(v) * self.base_scale))
        return out


def entry_format(entry: Mapping[str, Any], value: Value) -> str:
    """Format ``value`` by a :meth:`Knob.catalog_entry` (as received in a status reply)."""
    return format_value(str(entry.get("display", "{0}")), float(entry.get("display_scale", 1.0)), value)
