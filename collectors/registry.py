"""The collector registry: each collector is one module that registers itself here.

A registration names the collector, its config model (the keys under
``[collectors.<name>]``; the default of ``enabled`` is the collector's default on/off), the
metric families it serves and a factory. The daemon builds its collectors from the registry
and composes the ``[collectors]`` config section from the registered models, so adding a
collector is one module: importing it is enough.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from gputuned.collectors.base import Collector, UnavailableCollector
from gputuned.collectors.device import GPUDevice
from gputuned.collectors.families import FamilyName

logger = logging.getLogger(__name__)

#: The modules of the collectors that ship with gputuned, imported before the registry is read.
BUILTIN_MODULES = ("gputuned.collectors.gpu", "gputuned.collectors.host", "gputuned.collectors.network",
                   "gputuned.collectors.attribution", "gputuned.collectors.kubernetes")


class CollectorConfig(BaseModel):
    """The keys of one ``[collectors.<name>]`` table; subclasses add the collector's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


@dataclass(frozen=True)
class CollectorContext:
    """What the daemon hands every factory: the opened GPUs and the node they sit on."""

    devices: Sequence[GPUDevice] = ()
    driver_version: str = ""
    backend: str = "none"  # "nvml", "sim" or "none"
    gpu_error: Exception | None = None  # why NVML could not be opened, when backend is "none"
    # Collectors the simulated node provides in place of a real source, by collector name
    simulated: Mapping[str, Callable[[], Collector]] = field(default_factory=dict)


Factory = Callable[[Any, CollectorContext], Collector | None]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True)
class CollectorPlugin:
    """One registered collector: name, config model, families and factory."""

    name: str
    config: type[CollectorConfig]
    families: tuple[str, ...]
    factory: Factory

    @property
    def enabled_by_default(self) -> bool:
        """Whether the collector runs when its table does not say."""
        return bool(self.config.model_fields["enabled"].default)


_PLUGINS: dict[str, CollectorPlugin] = {}


def register(name: str, *, config: type[CollectorConfig] = CollectorConfig, families: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator registering ``factory(config, context) -> Collector | None`` as collector ``name``.

    The factory returns None when there is nothing to collect (no GPUs, no peers); when it
    raises, the collector is served as down and the others go on.
    """
    if not name.isidentifier():
        raise ValueError(f"collector name {name!r} is not a valid config key")
    if not issubclass(config, CollectorConfig):
        raise TypeError(f"collector {name!r}: config must derive from CollectorConfig")
    if isinstance(families, str):
        raise TypeError(f"collector {name!r}: families must be a sequence of family names, not one string")
    undeclared = [f for f in families if not isinstance(f, FamilyName)]
    if undeclared:
        raise ValueError(f"collector {name!r}: families {undeclared} are not declared")

    def deco(factory: F) -> F:
        if name in _PLUGINS:
            raise ValueError(f"collector {name!r} registered twice")
        _PLUGINS[name] = CollectorPlugin(name, config, tuple(families), factory)
        return factory

    return deco


def unregister(name: str) -> None:
    """Forget collector ``name`` (tests that register a plugin of their own)."""
    _PLUGINS.pop(name, None)


def plugins() -> list[CollectorPlugin]:
    """Every registered collector in tick order: the built-in ones first, then others as registered."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    builtin = [p for p in _PLUGINS.values() if p.factory.__module__ in BUILTIN_MODULES]
    builtin.sort(key=lambda p: BUILTIN_MODULES.index(p.factory.__module__))  # stable: module order, then registration
    return builtin + [p for p in _PLUGINS.values() if p not in builtin]


def families() -> tuple[str, ...]:
    """The families every registered collector serves, for the exporter's catalog."""
    return tuple(f for p in plugins() for f in p.families)


def build_collectors(tables: Mapping[str, CollectorConfig], context: CollectorContext) -> list[Collector]:
    """The enabled collectors, in tick order; a factory that raises gives a collector served as down."""
    out: list[Collector] = []
    for plugin in plugins():
        cfg = tables.get(plugin.name) or plugin.config()
        if not cfg.enabled:
            continue
        try:
            collector = plugin.factory(cfg, context)
        except Exception as e:  # noqa: BLE001 - one collector that cannot start never stops the others
            logger.warning("collector %s could not start: %s", plugin.name, e)
            collector = UnavailableCollector(plugin.name, e)
        if collector is not None:
            out.append(collector)
    return out
