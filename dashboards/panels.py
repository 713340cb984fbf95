"""Panel builders shared by the dashboards: units, thresholds, layout and template variables.

Every panel goes through one of the builders here, so each has a unit, threshold steps and
a description, queries the dashboard's Prometheus data source variable, and is laid out
on Grafana's 24-column grid in titled rows. grafanalib is imported here at module top:
this package is only imported by ``gputuned dashboards`` (inside its command function) and
by tests, never by the daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafanalib import core as g

#: The Prometheus data source, chosen through the ``datasource`` template variable.
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
#: Label matchers of node-level series (host, daemon, network).
NODE = 'instance=~"$instance"'
#: Label matchers of per-GPU series.
GPU = 'instance=~"$instance", gpu=~"$gpu"'
#: Grafana's rate window: at least four scrape intervals, so rate() always has two samples.
RATE = "$__rate_interval"
#: Grafana's dashboard time range, for increase() over what is on screen.
RANGE = "$__range"

SCHEMA_VERSION = 37
PANEL_HEIGHT = 8
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel and its legend."""

    expr: str
    legend: str = ""


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


def _targets(queries: Sequence[Query]) -> list[g.Target]:
    if not queries:
        raise ValueError("a panel needs at least one query")
    return [
        g.Target(expr=q.expr, legendFormat=q.legend, refId=chr(ord("A") + i), datasource=DATASOURCE, intervalFactor=1)
        for i, q in enumerate(queries)
    ]


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
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        unit=unit,
        thresholds=thresholds,
        thresholdsStyleMode=drawn,
        valueMin=min_value,
        valueMax=max_value,
        stacking={"mode": "normal", "group": "A"} if stack else {},
        fillOpacity=20 if stack else 5,
        tooltipMode="multi",
        tooltipSort="desc",
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
        gridPos=g.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
        maxDataPoints=None,  # Grafana picks the resolution from the panel's width
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
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        format=unit,
        thresholds=thresholds,
        color={"mode": "thresholds"},
        colorMode="background",
        graphMode="area",
        reduceCalc=reduce,
        mappings=mappings or [],
        noValue="No data",
        gridPos=g.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
        maxDataPoints=None,  # Grafana picks the resolution from the panel's width
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
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        thresholds=thresholds,
        mappings=mappings or [],
        gridPos=g.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
        maxDataPoints=None,  # Grafana picks the resolution from the panel's width
        extraJson={"fieldConfig": {"defaults": {"unit": unit}}},
    )


def value_text(mapping: dict[float, tuple[str, str]]) -> list[dict[str, Any]]:
    """Grafana value mappings: number to (text, colour)."""
    return [
        {
            "type": "value",
            "options": {str(int(v) if float(v).is_integer() else v): {"text": t, "color": c, "index": i}},
        }
        for i, (v, (t, c)) in enumerate(sorted(mapping.items()))
    ]


Section = tuple[str, Sequence[g.Panel]]


def layout(sections: Sequence[Section]) -> list[g.Panel]:
    """Row headers each followed by its panels, placed left to right and wrapping at 24 columns."""
    out: list[g.Panel] = []
    y = 0
    for title, panels in sections:
        out.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
        y += 1
        x = row_h = 0
        for p in panels:
            w, h = p.gridPos.w, p.gridPos.h
            if x + w > GRID_WIDTH:
                x, y, row_h = 0, y + row_h, 0
            p.gridPos = g.GridPos(h=h, w=w, x=x, y=y)
            out.append(p)
            x += w
            row_h = max(row_h, h)
        y += row_h
    return out


def templating(*, gpu: bool = True) -> g.Templating:
    """Data source, instance and (optionally) GPU variables; instance and GPU allow several."""
    variables = [
        g.Template(name="datasource", label="Data source", query="prometheus", type="datasource", default="Prometheus"),
        g.Template(
            name="instance",
            label="Instance",
            query="label_values(gputuned_build_info, instance)",
            dataSource=DATASOURCE,
            includeAll=True,
            multi=True,
            allValue=".*",
            default="$__all",
            refresh=2,
        ),
    ]
    if gpu:
        variables.append(
            g.Template(
                name="gpu",
                label="GPU",
                query='label_values(gputuned_gpu_up{instance=~"$instance"}, gpu)',
                dataSource=DATASOURCE,
                includeAll=True,
                multi=True,
                allValue=".*",
                default="$__all",
                refresh=2,
                sort=3,  # numerical ascending
            )
        )
    return g.Templating(list=variables)


def dashboard(
    title: str, uid: str, description: str, sections: Sequence[Section], *, gpu: bool = True, tags: Sequence[str] = ()
) -> g.Dashboard:
    """A dashboard with the standard variables, refresh, time range and laid-out sections."""
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=["gputuned", *tags],
        panels=layout(sections),
        templating=templating(gpu=gpu),
        schemaVersion=SCHEMA_VERSION,
        refresh="30s",
        time=g.Time("now-3h", "now"),
        graphTooltip=1,  # shared crosshair
        timezone="browser",
    ).auto_panel_ids()
