"""The metric families gputuned serves: every module that declares families, imported.

Families are declared with :func:`gputuned.collectors.families.declare` in the module
that produces them, all over the package (collectors, daemon, tuner, ...). To know the
full set without a running daemon, this walks every gputuned module's source, imports
those whose source calls ``declare(``, and returns the registry they filled.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import re
from pathlib import Path

from gputuned.collectors.families import FAMILIES, Family

logger = logging.getLogger(__name__)

#: Subpackages of gputuned (see pyproject's package-dir); walked with their nested packages.
SUBPACKAGES: tuple[str, ...] = (
    "gputuned.collectors",
    "gputuned.daemon",
    "gputuned.tuner",
    "gputuned.trainer_plugin",
    "gputuned.dashboards",
)
_DECLARES = re.compile(r"\bdeclare\(\s*f?[\"']")


def gputuned_modules() -> list[tuple[str, Path]]:
    """(module name, source path) of every gputuned module, nested packages included."""
    found: dict[str, Path] = {}
    roots: list[tuple[str, list[str]]] = []
    top = importlib.util.find_spec("gputuned")
    if top is not None and top.submodule_search_locations:
        roots.append(("gputuned.", list(top.submodule_search_locations)))
    for name in SUBPACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        roots.append((name + ".", list(spec.submodule_search_locations)))
        if spec.origin:
            found[name] = Path(spec.origin)
    for prefix, paths in roots:
        for info in pkgutil.walk_packages(paths, prefix):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                found[info.name] = Path(spec.origin)
    return sorted(found.items())


def declaring_modules() -> list[str]:
    """Names of the gputuned modules whose source calls ``declare(``."""
    out = []
    for name, path in gputuned_modules():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:  # pragma: no cover - a module vanished between walk and read
            continue
        if _DECLARES.search(text):
            out.append(name)
    return out


def served_families() -> dict[str, Family]:
    """Every family gputuned can serve, by sample name (counters with their ``_total``)."""
    for name in declaring_modules():
        importlib.import_module(name)
    return dict(FAMILIES)
