"""The collector protocol and the registry of collectors by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gputuned.collectors.families import Sample


class Collector(Protocol):
    """Something that turns readings into samples once per tick.

    ``collect`` returns the complete current set of the collector's samples: series it
    does not return are no longer served. It may raise; the loop isolates it.
    """

    name: str

    def collect(self) -> list[Sample]: ...

    def close(self) -> None: ...


Factory = Callable[..., Collector]

_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Class or function decorator registering a collector factory under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"collector {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def registered() -> dict[str, Factory]:
    """Name to factory, for every collector module imported so far."""
    return dict(_REGISTRY)


def create(name: str, **kwargs: Any) -> Collector:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown collector {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


class UnavailableCollector:
    """Stands in for a collector whose source could not be opened (no NVML library).

    Every run raises the original error, so the loop serves the collector as down and
    logs why once, while the other collectors go on.
    """

    def __init__(self, name: str, error: Exception) -> None:
        self.name = name
        self.error = error

    def collect(self) -> list[Sample]:
        raise self.error

    def close(self) -> None:
        """Nothing to release."""
