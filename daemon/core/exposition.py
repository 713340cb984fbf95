"""The exposition encoder: the store's samples as Prometheus text (0.0.4) or OpenMetrics (1.0.0).

Written for a scrape every second: a family's lines are formatted once into a template, kept while
the family serves the same label tuples in the same order, so a render fills one template per
family with its values in a single ``%`` operation, and a family whose values are those of the
last render (limits, totals, info series, idle counters) keeps the text of that fill. Families
come out sorted by name, typed and helped from the catalog (a family the catalog lacks is served
untyped, ``unknown`` in OpenMetrics); with :class:`DcgmLabels` every GPU family that has a
dcgm-exporter equivalent is served a second time under DCGM's name, labels and units.
OpenMetrics wants ``_total`` on counter samples, which DCGM's counters lack: there they are
``unknown``, with their names unchanged.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import TypeAlias

from gputuned.collectors import families as F
from gputuned.collectors.families import Catalog, DcgmName, Family, Labels, Sample
from gputuned.daemon.core.dcgm import DcgmLabels, escape

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_GENERIC = Family("", "gauge", "")
_SPECIAL = {math.inf: "+Inf", -math.inf: "-Inf"}
#: A family's series as two parallel sequences: label tuples and values.
Items = tuple[list[Labels], Sequence[float]]
_NAME, _LABELS, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)
#: Where a family's values sit in a render's flat value list: a slice when they are contiguous
Picker: TypeAlias = "slice | itemgetter[tuple[float, ...]]"


def format_value(v: float) -> str:
    """A sample value as both formats write it (``1.0``, ``2.5e-07``, ``+Inf``, ``NaN``)."""
    if v != v:  # noqa: PLR0124 - NaN
        return "NaN"
    return _SPECIAL.get(v) or repr(float(v))


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def fill(template: str, values: Sequence[float]) -> str:
    """``template`` (one ``%s`` per series) filled with ``values`` as :func:`format_value` writes them."""
    total = sum(values)
    if total - total == 0:  # all finite: str of a float is its repr
        return template % tuple(map(float, values))
    return template % tuple(map(format_value, values))


def _bits(values: Sequence[float]) -> bytes:
    """The values' IEEE bits: equal bits write the same text (``-0.0`` and ``0.0`` differ, a NaN equals itself)."""
    return array("d", values).tobytes()


def _plan(names: list[str], labels: list[Labels]) -> list[tuple[str, list[Labels], Picker]]:
    """Each family of a flat sample list, sorted by name: its label tuples and where its values sit."""
    at: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        at.setdefault(name, []).append(i)
    plan: list[tuple[str, list[Labels], Picker]] = []
    for name in sorted(at):
        idx = at[name]
        contiguous = idx[-1] - idx[0] == len(idx) - 1
        plan.append((name, [labels[i] for i in idx], slice(idx[0], idx[-1] + 1) if contiguous else itemgetter(*idx)))
    return plan


def _template_line(prefix: str) -> str:
    return prefix.replace("%", "%%") + "%s\n"


class Encoder:
    """Renders samples in one format; keeps each family's line template between renders."""

    def __init__(self, catalog: Catalog, *, openmetrics: bool = False, dcgm: DcgmLabels | None = None) -> None:
        self._catalog = catalog
        self.openmetrics = openmetrics
        self._dcgm = dcgm
        # by family (and DCGM name): the label tuples a template was made for, and the template
        self._templates: dict[str, tuple[list[Labels], str]] = {}
        self._dcgm_templates: dict[tuple[str, str], tuple[list[Labels], str, str, list[int] | None]] = {}
        self._xid_prefixes: dict[tuple[str, Labels, str, float], str] = {}
        self._headers: dict[str, str] = {}
        # by family (and DCGM name): the template, values and text of the last fill, reused while both are the same
        self._filled: dict[object, tuple[str, bytes, str]] = {}
        # the last render's series (names, label tuples) and its plan: each family's labels and value picker
        self._plan_keys: tuple[list[str], list[Labels]] = ([], [])
        self._plan: list[tuple[str, list[Labels], Picker]] = []

    def render(self, samples: Iterable[Sample]) -> str:
        """The exposition text of ``samples`` (one family may come from several sources)."""
        flat = samples if isinstance(samples, list) else list(samples)
        names, labels = list(map(_NAME, flat)), list(map(_LABELS, flat))
        if names != self._plan_keys[0] or labels != self._plan_keys[1]:  # the same series as last render: kept
            self._plan_keys, self._plan = (names, labels), _plan(names, labels)
        values = list(map(_VALUE, flat))
        by_family: dict[str, Items] = {}
        out: list[str] = []
        for name, labs, pick in self._plan:
            vals = values[pick] if type(pick) is slice else pick(values)
            by_family[name] = (labs, vals)
            out.append(self._header(name))
            out.append(self._fill(name, self._template(name, labs), vals))
        if self._dcgm is not None:
            self._render_dcgm(by_family, out)
        if self.openmetrics:
            out.append("# EOF\n")
        if len(self._templates) + len(self._dcgm_templates) + len(self._xid_prefixes) > 4 * len(by_family) + 256:
            self._templates.clear()  # families come and go (ranks, jobs): keep the cache to what is served
            self._dcgm_templates.clear()
            self._xid_prefixes.clear()
            self._filled.clear()
        return "".join(out)

    def _fill(self, key: object, template: str, values: Sequence[float]) -> str:
        """:func:`fill`, or the text of the last fill of ``key`` when its template and values' bits are the same."""
        last = self._filled.get(key)
        bits = _bits(values)
        if last is not None and last[0] is template and last[1] == bits:
            return last[2]
        text = fill(template, values)
        self._filled[key] = (template, bits, text)
        return text

    def _header(self, name: str) -> str:
        head = self._headers.get(name)
        if head is None:
            fam = self._catalog.get(name, _GENERIC)
            if fam is _GENERIC:
                kind, base, text = ("unknown" if self.openmetrics else "untyped"), name, name
            else:
                kind, text = fam.kind, fam.help or name
                base = name[:-6] if self.openmetrics and kind == "counter" else name
            head = self._headers[name] = f"# HELP {base} {_help_text(text)}\n# TYPE {base} {kind}\n"
        return head

    def _template(self, name: str, labels: list[Labels]) -> str:
        kept = self._templates.get(name)
        if kept is not None and kept[0] == labels:  # the same label tuple objects from tick to tick: cheap
            return kept[1]
        lines = []
        for lab in labels:
            body = ",".join(f'{k}="{escape(v)}"' for k, v in lab)
            lines.append(_template_line(f"{name}{{{body}}} " if body else f"{name} "))
        tpl = "".join(lines)
        self._templates[name] = (labels, tpl)
        return tpl

    def _render_dcgm(self, by_family: dict[str, Items], out: list[str]) -> None:
        # one driver serves every GPU of a host
        driver = next((v for labels in by_family.get(F.GPU_INFO, ((),))[0] for k, v in labels if k == "driver_version"), "")
        series: dict[str, tuple[DcgmName, list[str]]] = {}
        for name, (labels, values) in by_family.items():
            fam = self._catalog.get(name)
            for d in fam.dcgm if fam is not None else ():
                chunks = series.setdefault(d.name, (d, []))[1]
                chunks.append(self._xid_lines(d, labels, values, driver) if d.xid else
                              self._dcgm_chunk(name, d, labels, values, driver))
        for dname in sorted(series):
            d, chunks = series[dname]
            kind = ("unknown" if self.openmetrics else "counter") if d.counter else "gauge"
            out.append(f"# HELP {dname} {_help_text(d.help or dname)}\n# TYPE {dname} {kind}\n")
            out.extend(chunks)

    def _dcgm_chunk(self, name: str, d: DcgmName, labels: list[Labels], values: Sequence[float], driver: str) -> str:
        """The lines of family ``name``'s series served under ``d`` (those its ``where`` selects), values scaled."""
        assert self._dcgm is not None
        kept = self._dcgm_templates.get((d.name, name))
        if kept is not None and kept[2] == driver and kept[0] == labels:
            tpl, chosen = kept[1], kept[3]
        else:
            chosen = [i for i, lab in enumerate(labels) if all(p in lab for p in d.where)] if d.where else None
            tpl = "".join(_template_line(f"{d.name}{self._dcgm.text(d, labels[i], driver, 0.0)} ")
                          for i in (range(len(labels)) if chosen is None else chosen))
            self._dcgm_templates[(d.name, name)] = (labels, tpl, driver, chosen)
        if chosen is not None:
            values = [values[i] for i in chosen]
        scale = d.scale
        return self._fill((d.name, name), tpl, values if scale == 1.0 else [v * scale for v in values])

    def _xid_lines(self, d: DcgmName, labels: list[Labels], values: Sequence[float], driver: str) -> str:
        """XID series under ``d``: the value is a label too (err_code, err_msg), so each line is kept by value."""
        assert self._dcgm is not None
        cache, out = self._xid_prefixes, []
        for lab, value in zip(labels, values, strict=True):
            if d.where and not all(p in lab for p in d.where):
                continue
            scaled = value * d.scale
            prefix = cache.get((d.name, lab, driver, scaled))
            if prefix is None:
                prefix = cache[(d.name, lab, driver, scaled)] = f"{d.name}{self._dcgm.text(d, lab, driver, scaled)} "
            out.append(f"{prefix}{format_value(scaled)}\n")
        return "".join(out)
