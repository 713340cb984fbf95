"""Numbers for people: energies in J/kJ/MJ/GJ and durations in s/min/h, three significant digits."""

from __future__ import annotations

import math

_ENERGY_PREFIXES = ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ"))


def energy(joules: float) -> str:
    """``17.8 MJ`` for 1.778e7 J, ``950 J`` for 950 J (``-`` when not a number)."""
    if not math.isfinite(joules):
        return "-"
    for scale, unit in _ENERGY_PREFIXES:
        if abs(joules) >= scale:
            return f"{joules / scale:.3g} {unit}"
    return f"{joules:.3g} J"


def duration(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``2 h 13 min`` (``-`` when not a number)."""
    if not math.isfinite(seconds):
        return "-"
    if abs(seconds) < 60:
        return f"{seconds:.3g} s"
    if abs(seconds) < 3600:
        return f"{seconds / 60:.3g} min"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
