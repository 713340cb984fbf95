"""The knob registry: knob modules register their class on import; everything else asks here.

Registration order is the order of ``gputuned status`` columns and of the default
``actuation.knobs`` list; restore order is by each knob's ``restore_rank``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic.fields import FieldInfo

from gputuned.daemon.actuation.knobs.base import Knob, TargetKind

K = TypeVar("K", bound=type[Knob])

_KNOBS: dict[str, Knob] = {}


def _config_fields(knob: Knob) -> dict[str, FieldInfo]:
    model = knob.config_model
    return dict(model.model_fields) if model is not None else {}


def register(cls: K) -> K:
    """Add a knob class (a class decorator); its config keys may be shared only if declared alike."""
    knob = cls()
    if not knob.name or not knob.name.isidentifier():
        raise ValueError(f"knob {cls.__name__}: name {knob.name!r} is not an identifier")
    if knob.target not in ("gpu", "job"):
        raise ValueError(f"knob {knob.name}: target {knob.target!r} is not 'gpu' or 'job'")
    existing = _KNOBS.get(knob.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise ValueError(f"knob {knob.name} registered twice ({type(existing).__qualname__}, {cls.__qualname__})")
    known = config_fields(exclude=knob.name)
    for key, info in _config_fields(knob).items():
        other = known.get(key)
        if other is not None and (other.annotation, other.default) != (info.annotation, info.default):
            raise ValueError(f"knob {knob.name}: config key actuation.{key} declared differently by another knob")
    _KNOBS[knob.name] = knob
    return cls


def unregister(name: str) -> None:
    """Remove a knob (tests that register a plugin put the registry back)."""
    _KNOBS.pop(name, None)


def get(name: str) -> Knob | None:
    """The registered knob called ``name``."""
    return _KNOBS.get(name)


def knobs(target: TargetKind | None = None) -> list[Knob]:
    """Registered knobs in registration order, of one target kind if given."""
    return [k for k in _KNOBS.values() if target is None or k.target == target]


def names() -> list[str]:
    """Names of every registered knob."""
    return list(_KNOBS)


def default_enabled() -> list[str]:
    """The default ``actuation.knobs``: knobs that declare themselves on by default."""
    return [k.name for k in _KNOBS.values() if k.default_enabled]


def restore_order(target: TargetKind) -> list[Knob]:
    """Knobs of one target kind in the order a restore puts them back."""
    return sorted(knobs(target), key=lambda k: k.restore_rank)


def config_fields(exclude: str = "") -> dict[str, FieldInfo]:
    """Every config key the registered knobs add under ``[actuation]``, with its pydantic field."""
    out: dict[str, FieldInfo] = {}
    for knob in _KNOBS.values():
        if knob.name != exclude:
            for key, info in _config_fields(knob).items():
                out.setdefault(key, info)
    return out


def key_owner(key: str) -> Knob | None:
    """The first registered knob whose config model has ``key``."""
    for knob in _KNOBS.values():
        if key in _config_fields(knob):
            return knob
    return None


def families() -> list[Any]:
    """The metric family of every registered knob (for the exporter's catalog)."""
    return [k.family for k in _KNOBS.values() if k.family]
