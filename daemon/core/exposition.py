"""The exposition encoder: the store's samples as Prometheus text (0.0.4) or OpenMetrics (1.0.0).

Written for a scrape every second: a series' name and label text are formatted once and kept
(keyed by its name and label tuple), so a render formats only values and joins lines. Families
come out sorted by name, typed and helped from the catalog (a family the catalog lacks is served
untyped, ``unknown`` in OpenMetrics); with :class:`DcgmLabels` every GPU family that has a
dcgm-exporter equivalent is served a second time under DCGM's name, labels and units.
OpenMetrics wants ``_total`` on counter samples, which DCGM's counters lack: there they are
``unknown``, with their names unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gputuned.collectors import families as F
from gputuned.collectors.families import Catalog, DcgmName, Family, Labels, Sample
from gputuned.daemon.core.dcgm import DcgmLabels, escape

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_GENERIC = Family("", "gauge", "")
_SPECIAL = {math.inf: "+Inf", -math.inf: "-Inf"}
Items = list[tuple[Labels, float]]


def format_value(v: float) -> str:
    """A sample value as both formats write it (``1.0``, ``2.5e-07``, ``+Inf``, ``NaN``)."""
    if v != v:  # noqa: PLR0124 - NaN
        return "NaN"
    return _SPECIAL.get(v) or repr(float(v))


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Encoder:
    """Renders samples in one format; keeps each series' formatted name and labels between renders."""

    def __init__(self, catalog: Catalog, *, openmetrics: bool = False, dcgm: DcgmLabels | None = None) -> None:
        self._catalog = catalog
        self.openmetrics = openmetrics
        self._dcgm = dcgm
        self._series: dict[tuple[str, Labels], str] = {}
        self._dcgm_series: dict[tuple[str, Labels, str, float], str] = {}
        self._headers: dict[str, str] = {}

    def render(self, samples: Iterable[Sample]) -> str:
        """The exposition text of ``samples`` (one family may come from several sources)."""
        by_family: dict[str, Items] = {}
        for name, labels, value in samples:
            items = by_family.get(name)
            if items is None:
                items = by_family[name] = []
            items.append((labels, value))
        out: list[str] = []
        for name in sorted(by_family):
            out.append(self._header(name))
            self._lines(name, by_family[name], out)
        if self._dcgm is not None:
            self._render_dcgm(by_family, out)
        if self.openmetrics:
            out.append("# EOF\n")
        if len(self._series) > 2 * sum(map(len, by_family.values())) + 1024:
            self._series.clear()  # series come and go (ranks, jobs): keep the cache to what is served
            self._dcgm_series.clear()
        return "".join(out)

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

    def _lines(self, name: str, items: Items, out: list[str]) -> None:
        cache = self._series
        for labels, value in items:
            prefix = cache.get((name, labels))
            if prefix is None:
                body = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
                prefix = cache[(name, labels)] = f"{name}{{{body}}} " if body else f"{name} "
            out.append(f"{prefix}{format_value(value)}\n")

    def _render_dcgm(self, by_family: dict[str, Items], out: list[str]) -> None:
        # one driver serves every GPU of a host
        driver = next((v for labels, _ in by_family.get(F.GPU_INFO, ()) for k, v in labels if k == "driver_version"), "")
        series: dict[str, tuple[DcgmName, list[str]]] = {}
        for name, items in by_family.items():
            fam = self._catalog.get(name)
            for d in fam.dcgm if fam is not None else ():
                lines = series.setdefault(d.name, (d, []))[1]
                self._dcgm_lines(d, items, driver, lines)
        for dname in sorted(series):
            d, lines = series[dname]
            kind = ("unknown" if self.openmetrics else "counter") if d.counter else "gauge"
            out.append(f"# HELP {dname} {_help_text(d.help or dname)}\n# TYPE {dname} {kind}\n")
            out.extend(lines)

    def _dcgm_lines(self, d: DcgmName, items: Items, driver: str, lines: list[str]) -> None:
        assert self._dcgm is not None
        cache = self._dcgm_series
        for labels, value in items:
            if d.where and not all(pair in labels for pair in d.where):
                continue
            scaled = value * d.scale
            key = (d.name, labels, driver, scaled if d.xid else 0.0)
            prefix = cache.get(key)
            if prefix is None:
                prefix = cache[key] = f"{d.name}{self._dcgm.text(d, labels, driver, scaled)} "
            lines.append(f"{prefix}{format_value(scaled)}\n")
