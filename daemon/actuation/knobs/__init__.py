"""Knobs: one module per reversible setting, registered on import (see :mod:`.base`).

Importing this package registers the built-in knobs; a plugin module registers its own
with :func:`register` when imported.
"""

from __future__ import annotations

from gputuned.daemon.actuation.knobs import registry
from gputuned.daemon.actuation.knobs.base import (
    Bounds,
    CliOption,
    Knob,
    KnobError,
    TargetKind,
    Value,
    entry_format,
    intersect,
    parse_pair,
)
from gputuned.daemon.actuation.knobs.registry import (
    default_enabled,
    families,
    get,
    knobs,
    names,
    register,
    restore_order,
    unregister,
)

# The built-in knobs, in status-column order (each registers itself).
from gputuned.daemon.actuation.knobs import power_limit  # noqa: E402, I001  isort: skip
from gputuned.daemon.actuation.knobs import locked_sm_clocks  # noqa: E402  isort: skip
from gputuned.daemon.actuation.knobs import locked_memory_clocks  # noqa: E402  isort: skip
from gputuned.daemon.actuation.knobs import applications_clocks  # noqa: E402  isort: skip
from gputuned.daemon.actuation.knobs import batch_size  # noqa: E402  isort: skip

__all__ = [
    "Bounds", "CliOption", "Knob", "KnobError", "TargetKind", "Value", "applications_clocks", "batch_size",
    "default_enabled", "entry_format", "families", "get", "intersect", "knobs", "locked_memory_clocks",
    "locked_sm_clocks", "names", "parse_pair", "power_limit", "register", "registry", "restore_order", "unregister",
]
