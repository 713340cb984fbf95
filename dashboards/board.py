"""A dashboard: the standard template variables, and panels laid out in titled rows.

Panels are placed on Grafana's 24-column grid, left to right, wrapping to a new line when a
row is full; every dashboard offers the data source and instance variables (and the GPU
variable unless it has no per-GPU panel). A board may mark knob changes on its time axis: one
Prometheus annotation per origin (tuner, perseus, operator, restore, job), read from
``gputuned_knob_last_change_timestamp_seconds`` (its value is the change's time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafanalib import core as g

from gputuned.dashboards.panels import DATASOURCE

SCHEMA_VERSION = 37
GRID_WIDTH = 24

Section = tuple[str, Sequence[g.Panel]]

#: Who changes a knob (gputuned.intent.ORIGINS) and the colour of its marks on the time axis.
ORIGIN_COLOURS = {"tuner": "orange", "perseus": "purple", "operator": "blue", "restore": "green", "job": "yellow"}
ANNOTATION_STEP = "15s"  # the provisioned data source's scrape interval


def knob_change_annotations(*, gpu: bool = True) -> list[dict[str, Any]]:
    """One annotation per origin marking each knob change at the time it was applied (toggled per origin)."""
    where = 'instance=~"$instance"' + (', gpu=~"$gpu|"' if gpu else "")  # a job's knobs carry no gpu
    return [{
        "datasource": DATASOURCE,
        "enable": origin != "job",  # a job's own batch-size acks double the tuner's marks: off by default
        "hide": False,
        "iconColor": colour,
        "name": f"Knob changes: {origin}",
        "expr": f'gputuned_knob_last_change_timestamp_seconds{{{where}, origin="{origin}"}} * 1000',
        "step": ANNOTATION_STEP,
        "useValueForTime": True,  # the value (ms) is when the change was applied, not the sample's time
        "titleFormat": "{{knob}} changed by {{origin}}",
        "textFormat": "{{instance}} gpu {{gpu}} {{exported_job}}",
        "tagKeys": "origin,knob",
    } for origin, colour in ORIGIN_COLOURS.items()]


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


def variable(name: str, label: str, query: str, **options: Any) -> g.Template:
    """A query variable over the Prometheus data source offering every value and several at once."""
    settings: dict[str, Any] = {"includeAll": True, "multi": True, "allValue": ".*", "default": "$__all", "refresh": 2}
    settings.update(options)
    return g.Template(name=name, label=label, query=query, dataSource=DATASOURCE, **settings)


def templating(*, gpu: bool = True) -> list[g.Template]:
    """Data source, instance and (optionally) GPU variables; instance and GPU allow several."""
    variables = [
        g.Template(name="datasource", label="Data source", query="prometheus", type="datasource", default="Prometheus"),
        variable("instance", "Instance", "label_values(gputuned_build_info, instance)"),
    ]
    if gpu:  # numerical ascending
        variables.append(variable("gpu", "GPU", 'label_values(gputuned_gpu_up{instance=~"$instance"}, gpu)', sort=3))
    return variables


def dashboard(
    title: str,
    uid: str,
    description: str,
    sections: Sequence[Section],
    *,
    gpu: bool = True,
    tags: Sequence[str] = (),
    variables: Sequence[g.Template] = (),
    annotations: Sequence[dict[str, Any]] = (),
) -> g.Dashboard:
    """A dashboard with the standard variables (then ``variables``), refresh, time range, laid-out sections
    and ``annotations`` (queries that mark events on every time axis)."""
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=["gputuned", *tags],
        panels=layout(sections),
        templating=g.Templating(list=[*templating(gpu=gpu), *variables]),
        annotations=g.Annotations(list=list(annotations)),
        schemaVersion=SCHEMA_VERSION,
        refresh="30s",
        time=g.Time("now-3h", "now"),
        graphTooltip=1,  # shared crosshair
        timezone="browser",
    ).auto_panel_ids()
