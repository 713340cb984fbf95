"""How ``gputuned top`` draws a frame: pure functions from a :class:`TopState` to rich renderables.

:func:`render_top` lays out the header, the GPU table (narrow below 120 columns, with history
sparklines, PCIe/NVLink and locks above), the picked GPU's details, the jobs, the tuner, the
active alerts in full and the keys. Tests render it on a recording Console of a fixed width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gputuned.daemon.commands.top_data import GpuView, JobView, TopState, TunerView
from gputuned.daemon.commands.top_tables import short_model

SPARKS = "▁▂▃▄▅▆▇█"
WIDE = 120
SORTS = ("gpu", "util", "power", "temp", "memory")


@dataclass
class View:
    """What the person chose: the picked GPU, the sort order, a last message."""

    selected: int = 0
    sort: str = "gpu"
    message: str = ""


def level(frac: float | None, warn: float = 0.7, crit: float = 0.9) -> str:
    """A colour for a fraction of its limit: green, yellow from ``warn``, red from ``crit``."""
    if frac is None:
        return "dim"
    return "red" if frac >= crit else "yellow" if frac >= warn else "green"


def bar(frac: float | None, width: int) -> str:
    """A bar of ``width`` cells filled to ``frac`` (0-1), in eighths."""
    if frac is None:
        return " " * width
    eighths = round(max(0.0, min(1.0, frac)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def sparkline(values: list[float], width: int, top: float | None = None) -> str:
    """The last ``width`` values as block characters scaled to ``top`` (default: their maximum)."""
    vals = values[-width:]
    if not vals:
        return " " * width
    hi = top if top else max(vals) or 1.0
    return "".join(SPARKS[min(7, max(0, int(v / hi * 7.999)))] for v in vals).rjust(width)


def _num(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def _gb(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**30:.0f}"


def _sort_key(sort: str) -> Any:
    def key(g: GpuView) -> float:
        value = {"util": g.util, "power": g.power_w, "temp": g.temp_c,
                 "memory": (g.mem_used or 0) / (g.mem_total or 1)}.get(sort, -g.index)
        return -(value or 0.0)
    return key


def _gpu_cells(g: GpuView, wide: bool, history: dict[str, list[float]]) -> list[Any]:
    from rich.text import Text

    util = None if g.util is None else g.util
    mem = None if not g.mem_total else (g.mem_used or 0) / g.mem_total
    power = None if not g.limit_w or g.power_w is None else g.power_w / g.limit_w
    lowered = g.limit_w is not None and g.original_w is not None and g.limit_w < g.original_w - 0.5
    cells: list[Any] = [
        str(g.index), short_model(g.model).split(" ")[0],
        Text(f"{bar(util, 4)}{_num(None if util is None else 100 * util, '3.0f', '%')}", style=level(util)),
        Text(f"{_gb(g.mem_used)}/{_gb(g.mem_total)}G", style=level(mem)),
        Text(f"{_num(g.power_w, '.0f')}/{_num(g.limit_w, '.0f')}W{'↓' if lowered else ''}", style=level(power, 0.85, 0.98)),
        _num(g.sm_mhz, ".0f"),
        Text(_num(g.temp_c, ".0f", "C"), style=level(None if g.temp_c is None else g.temp_c / 90.0, 0.8, 0.93)),
        _num(None if g.fan is None else 100 * g.fan, ".0f", "%"),
        Text(f"{g.ecc_uncorrected:.0f}/{g.ecc_corrected:.0f}/{g.xid:.0f}",
             style="red" if g.ecc_uncorrected or g.xid else "yellow" if g.ecc_corrected else "green"),
        Text(f"{g.alerts}" if g.alerts else "", style="bold red"),
    ]
    if wide:
        cells[3:3] = [Text(sparkline(history.get("util", []), 16, 1.0), style="cyan")]
        cells[5:5] = [_num(g.original_w, ".0f", " W"), Text(sparkline(history.get("power_w", []), 16, g.limit_w), style="magenta")]
        cells += [_num(None if g.pcie_bps is None else g.pcie_bps / 1e9, ".1f", " GB/s"),
                  _num(None if g.nvlink_bytes is None else g.nvlink_bytes / 1e12, ".1f", " TB"), g.locks or "-"]
    return cells


def gpu_table(state: TopState, view: View, width: int) -> Any:
    """The per-GPU table; the picked GPU's row reversed."""
    from rich import box
    from rich.table import Table

    wide = width >= WIDE
    heads = ["#", "model", "util", "mem", "power/lim", "SM MHz", "temp", "fan", "ECC/X", "!"]
    if wide:
        heads[3:3] = ["util history"]
        heads[5:5] = ["original", "power history"]
        heads += ["PCIe", "NVLink", "locks"]
        heads[-5] = "ECC u/c/XID"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False, expand=wide)
    for h in heads:
        table.add_column(h, no_wrap=True, overflow="fold", justify="left" if h in ("model", "locks") else "right")
    for g in sorted(state.gpus, key=_sort_key(view.sort)):
        table.add_row(*_gpu_cells(g, wide, state.history.get(g.index, {})),
                      style="reverse" if g.index == view.selected else None)
    return table


def gpu_detail(state: TopState, view: View) -> Any:
    """The picked GPU in words: limits against originals, clocks, locks, links, errors, history."""
    from rich.text import Text

    g = next((g for g in state.gpus if g.index == view.selected), None)
    if g is None:
        return Text("no GPU picked")
    hist = state.history.get(g.index, {})
    return Text.assemble(
        (f"gpu {g.index} ({short_model(g.model)})", "bold"),
        f": {_num(g.power_w, '.0f', ' W')} of limit {_num(g.limit_w, '.0f', ' W')} (original {_num(g.original_w, '.0f', ' W')}); "
        f"SM {_num(g.sm_mhz, '.0f')}/{_num(g.sm_max_mhz, '.0f', ' MHz')}, memory {_num(g.mem_mhz, '.0f', ' MHz')}; "
        f"locks {g.locks or 'none'}; PCIe {_num(None if g.pcie_bps is None else g.pcie_bps / 1e9, '.2f', ' GB/s')}, "
        f"NVLink {_num(None if g.nvlink_bytes is None else g.nvlink_bytes / 1e12, '.2f', ' TB')} moved; "
        f"ECC {g.ecc_corrected:.0f} corrected, {g.ecc_uncorrected:.0f} uncorrected; XID {g.xid:.0f}; "
        f"jobs on the node: {', '.join(j.name for j in state.jobs) or 'none'}; ",
        ("temp " + sparkline(hist.get("temp_c", []), 12, 100.0), "yellow"),
    )


def _vs_reference(j: JobView) -> str:
    eps, ref = j.energy_per_sample_j, j.reference_j
    return f"{100 * (eps / ref - 1):+.1f}%" if eps and ref else "-"


def jobs_table(state: TopState) -> Any:
    """Per job: ranks, throughput, goodput, batch size, energy per sample and its change."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not state.jobs:
        return Text("no training job reporting")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("job", "ranks", "samples/s", "goodput", "batch", "J/sample", "vs ref"):
        table.add_column(col, justify="left" if col == "job" else "right", overflow="fold")
    for j in state.jobs:
        table.add_row(j.name, ",".join(map(str, j.ranks)) or "-", _num(j.samples_per_s, ".1f"), _num(j.goodput, ".1f"),
                      _num(j.batch_size, ".0f"), _num(j.energy_per_sample_j, ".3f"), _vs_reference(j))
    return table


def tuner_text(t: TunerView, now: float) -> Any:
    """The tuner's state, its moves, the guard's refusals and the knobs it changed."""
    from rich.text import Text

    state = ("PAUSED", "bold red") if t.paused else ("on", "green") if t.on else ("off", "dim")
    ago = f"{now - t.last_action:.0f} s ago" if t.last_action > 0 else "never"

    def counts(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in sorted(d.items())) or "none"
    return Text.assemble(
        ("tuner ", "bold"), state,
        f"; actions {counts(t.actions)}; moves {counts(t.moves)}; last action {ago}; rollbacks {t.rollbacks:.0f}; "
        f"guard {counts(t.interventions)}",
        f"; changed: {'; '.join(t.changed)}" if t.changed else "",
    )


def alerts_text(alerts: list[str]) -> Any:
    """Every active alert on its own line, wrapped, never cut."""
    from rich.text import Text

    if not alerts:
        return Text.assemble(("alerts ", "bold"), ("none active", "green"))
    text = Text.assemble(("alerts ", "bold"), (f"{len(alerts)} active", "bold red"))
    for a in alerts:
        text.append("\n  ")
        text.append(a, style="red")
    return text


def header(state: TopState, view: View) -> Any:
    """The top line: node, GPU count, host load and memory, time, and any error."""
    from rich.text import Text

    h = state.host
    host = (f"; host load {h.get('load1', 0):.1f}/{h.get('cpus', 0):.0f} CPUs, memory "
            f"{_gb(h.get('mem_used'))}/{_gb(h.get('mem_total'))} GiB") if h else ""
    text = Text.assemble(("gputuned top", "bold"), f": {len(state.gpus)} GPUs{host}; "
                         f"{time.strftime('%H:%M:%S', time.localtime(state.time))} from {state.source}")
    if state.error:
        text.append(f"\n{state.error}", style="bold red")
    return text


def footer(state: TopState, view: View) -> Any:
    """The keys, and the answer to the last one."""
    from rich.text import Text

    keys = f"q quit  s sort ({view.sort})  ←/→ or 0-9 pick GPU  p pause/resume tuner"
    if not state.admin:
        keys += " (admins, local only)"
    return Text.assemble((keys, "dim"), (f"  {view.message}" if view.message else "", "bold"))


def render_top(state: TopState, view: View, width: int) -> Any:
    """One frame of ``gputuned top`` for a terminal ``width`` columns wide."""
    from rich.console import Group

    if state.error and not state.gpus:
        return Group(header(state, view), footer(state, view))
    parts = [header(state, view), gpu_table(state, view, width), gpu_detail(state, view), jobs_table(state),
             tuner_text(state.tuner, state.time), alerts_text(state.alerts), footer(state, view)]
    return Group(*parts)
