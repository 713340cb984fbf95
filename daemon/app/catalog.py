"""The catalog of every metric family the daemon can serve, from the modules that declare them.

Each module keeps its families as constants (see :func:`gputuned.collectors.families.declare`);
DECLARING_MODULES names those modules, and the knob and collector registries add the families
of every registered plugin, so the catalog is what the code says rather than what happened to
be imported. Optional parts (the tuner, the forecaster) declare theirs in modules of their own
(``tuner_families``, ``tuner.forecast.families``), so reading the catalog imports none of their
numpy code. The daemon hands the catalog to its exporter; the dashboards' tests check every
panel's metric names against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from gputuned.collectors import families, host, network
from gputuned.collectors.families import Family, catalog
from gputuned.collectors.registry import plugins
from gputuned.daemon.actuation import actuator, knobs
from gputuned.daemon.app import rootcause, tuner_families
from gputuned.daemon.control import reports
from gputuned.daemon.core import exporter
from gputuned.tuner.decision import guard
from gputuned.tuner.forecast import families as forecast_families
from gputuned.tuner.forecast import hardware

#: Every module that declares metric families the daemon serves.
DECLARING_MODULES: tuple[ModuleType, ...] = (
    families, host, network, reports, exporter, actuator, guard, tuner_families, forecast_families, hardware,
    rootcause,
)


def served_catalog(*extra: ModuleType | Iterable[str]) -> dict[str, Family]:
    """Every family the daemon can serve, by sample name; ``extra`` adds more modules or family names."""
    registered = [knobs.families(), *(p.families for p in plugins())]
    return catalog(*DECLARING_MODULES, *registered, *extra)
