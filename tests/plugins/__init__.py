"""Test-only plugin files (a knob, a collector): each registers itself when imported."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType


@contextmanager
def installed(name: str, unregister: Callable[[], None]) -> Iterator[ModuleType]:
    """The plugin module ``plugins.<name>``, imported (so registered) for the block, then taken out."""
    module = importlib.import_module(f"{__name__}.{name}")
    try:
        yield module
    finally:
        unregister()
        sys.modules.pop(f"{__name__}.{name}", None)
