"""Threshold steps and value mappings: what colour a panel gives each value, and its text."""

from __future__ import annotations

from typing import Any

#: A 0/1 series' two states: (text, colour) at 0 and at 1.
State = tuple[str, str]


def steps(base: str, *rest: tuple[str, float]) -> list[dict[str, Any]]:
    """Grafana threshold steps: ``base`` colour from -inf, then (colour, from value) ascending."""
    values = [v for _, v in rest]
    if values != sorted(values):
        raise ValueError(f"threshold values must ascend: {values}")
    return [{"color": base, "value": None}] + [{"color": c, "value": v} for c, v in rest]


def high_bad(warn: float, crit: float) -> list[dict[str, Any]]:
    """Green below ``warn``, orange from ``warn``, red from ``crit`` (temperature, errors, pressure)."""
    return steps("green", ("orange", warn), ("red", crit))


def low_bad(crit: float, warn: float) -> list[dict[str, Any]]:
    """Red below ``crit``, orange below ``warn``, green above (utilization, clocks)."""
    return steps("red", ("orange", crit), ("green", warn))


def info_only() -> list[dict[str, Any]]:
    """A single neutral step for panels whose value has no good or bad range (traffic)."""
    return steps("blue")


def value_text(mapping: dict[float, tuple[str, str]]) -> list[dict[str, Any]]:
    """Grafana value mappings: number to (text, colour)."""
    return [
        {
            "type": "value",
            "options": {str(int(v) if float(v).is_integer() else v): {"text": t, "color": c, "index": i}},
        }
        for i, (v, (t, c)) in enumerate(sorted(mapping.items()))
    ]
