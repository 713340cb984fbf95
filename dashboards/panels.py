"""Panel builders shared by the dashboards: the panel kinds and the presets they repeat.

Every panel goes through one of the builders here, so each has a unit, threshold steps and
a description and queries the dashboard's Prometheus data source variable; the presets
(fractions, 0/1 states) name the shapes the dashboards repeat. grafanalib is imported here
at module top: this package is only imported by ``gputuned dashboards`` (inside its command
function) and by tests, never by the daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafanalib import core as g

from gputuned.dashboards.queries import Query
from gputuned.dashboards.thresholds import State, steps, value_text

#: The Prometheus data source, chosen through the ``datasource`` template variable.
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
#: Grid rows of every panel.
PANEL_HEIGHT = 8


def _targets(queries: Sequence[Query]) -> list[g.Target]:
    if not queries:
        raise ValueError("a panel needs at least one query")
    return [
        g.Target(expr=q.expr, legendFormat=q.legend, refId=chr(ord("A") + i), datasource=DATASOURCE, intervalFactor=1)
        for i, q in enumerate(queries)
    ]


def _common(
    title: str, description: str, queries: Sequence[Query], thresholds: list[dict[str, Any]], width: int
) -> dict[str, Any]:
    """The fields every panel kind sets alike: text, data source, queries, thresholds and size."""
    return {
        "title": title,
        "description": description,
        "dataSource": DATASOURCE,
        "targets": _targets(queries),
        "thresholds": thresholds,
        "gridPos": g.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
        "maxDataPoints": None,  # Grafana picks the resolution from the panel's width
    }


def timeseries(
    title: str,
    unit: str,
    queries: Sequence[Query],
    thresholds: list[dict[str, Any]],
    description: str,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    stack: bool = False,
    width: int = 8,
) -> g.TimeSeries:
    """A time-series panel; thresholds are drawn as lines unless the panel is informational."""
    drawn = "off" if len(thresholds) == 1 else "line"
    return g.TimeSeries(
        **_common(title, description, queries, thresholds, width),
        unit=unit,
        thresholdsStyleMode=drawn,
        valueMin=min_value,
        valueMax=max_value,
        stacking={"mode": "normal", "group": "A"} if stack else {},
        fillOpacity=20 if stack else 5,
        tooltipMode="multi",
        tooltipSort="desc",
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
    )


def stat(
    title: str,
    unit: str,
    queries: Sequence[Query],
    thresholds: list[dict[str, Any]],
    description: str,
    *,
    reduce: str = "lastNotNull",
    mappings: list[dict[str, Any]] | None = None,
    width: int = 8,
) -> g.Stat:
    """A stat panel showing one value per series, coloured by its thresholds."""
    return g.Stat(
        **_common(title, description, queries, thresholds, width),
        format=unit,
        color={"mode": "thresholds"},
        colorMode="background",
        graphMode="area",
        reduceCalc=reduce,
        mappings=mappings or [],
        noValue="No data",
    )


def timeline(
    title: str,
    queries: Sequence[Query],
    thresholds: list[dict[str, Any]],
    description: str,
    *,
    mappings: list[dict[str, Any]] | None = None,
    unit: str = "bool_on_off",
    width: int = 8,
) -> g.StateTimeline:
    """A state timeline (one band per series) for flags such as throttle reasons or up/down."""
    return g.StateTimeline(
        **_common(title, description, queries, thresholds, width),
        mappings=mappings or [],
        extraJson={"fieldConfig": {"defaults": {"unit": unit}}},
    )


def fraction(
    title: str, queries: Sequence[Query], thresholds: list[dict[str, Any]], description: str, **options: Any
) -> g.TimeSeries:
    """A time series of a ratio drawn from 0 to 1 (utilization, share of time, used over total)."""
    return timeseries(title, "percentunit", queries, thresholds, description, min_value=0, max_value=1, **options)


def state_stat(title: str, queries: Sequence[Query], description: str, zero: State, one: State, **options: Any) -> g.Stat:
    """A stat of 0/1 series (up, active, paused), coloured and named by state."""
    return stat(title, "none", queries, steps(zero[1], (one[1], 1)), description,
                mappings=value_text({0: zero, 1: one}), **options)


def state_timeline(
    title: str, queries: Sequence[Query], description: str, zero: State, one: State, **options: Any
) -> g.StateTimeline:
    """A state timeline of 0/1 series (alerts, reasons, collectors up), one band per series."""
    return timeline(title, queries, steps(zero[1], (one[1], 1)), description,
                    mappings=value_text({0: zero, 1: one}), **options)
