"""Tables shared by ``gputuned status`` and ``gputuned top``: knobs against originals, fitted to a width.

A table never drops its key columns (GPU index, model, power limit): knobs that do not fit
the width continue in further tables led by the same keys. ``plain`` output (piped) has no
boxes and no colour, and folds a long cell rather than cutting it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gputuned.daemon.actuation import knobs as knob_registry
from gputuned.daemon.actuation.knobs import entry_format
from gputuned.daemon.commands.rootcause_view import root_cause_lines


def _catalog(st: dict[str, Any]) -> list[dict[str, Any]]:
    """The knobs to show: the daemon's registry as it reports it, else this process's."""
    catalog = st.get("actuation", {}).get("catalog")
    if catalog is None:
        catalog = [k.catalog_entry() for k in knob_registry.knobs()]
    return list(catalog)


def short_model(model: str) -> str:
    """A GPU model without the vendor's prefix (``H100 80GB HBM3``)."""
    for prefix in ("NVIDIA ", "Tesla "):
        model = model.removeprefix(prefix)
    return model


def _knob_cells(entries: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """One cell per knob: current value, and `/ original` where the knob is changed."""
    orig = row.get("originals") or {}
    cells = []
    for e in entries:
        name = e["name"]
        cur = entry_format(e, row["current"].get(name))
        cells.append(f"{cur} / {entry_format(e, orig.get(name))}" if name in row["changed"] else cur)
    return cells


def changed_knobs(st: dict[str, Any]) -> list[str]:
    """Every changed GPU knob as ``gpu 1 power limit 400 W / 700 W``."""
    entries = {e["name"]: e for e in _catalog(st) if e.get("target", "gpu") == "gpu"}
    out = []
    for row in st.get("gpus", []):
        for name in row.get("changed", []):
            e = entries.get(name)
            if e is not None:
                out.append(f"gpu {row['index']} {e['label']} {_knob_cells([e], row)[0]}")
    return out


def _pack(columns: list[tuple[str, list[str]]], keep: int, width: int) -> list[list[int]]:
    """Split column indices into groups that fit ``width``, each group led by the first ``keep``."""
    def size(i: int) -> int:
        head, cells = columns[i]
        return max([len(head), *map(len, cells)]) + 3
    base = sum(size(i) for i in range(keep))
    groups: list[list[int]] = [list(range(keep))]
    used = base
    for i in range(keep, len(columns)):
        if used + size(i) > width and len(groups[-1]) > keep:
            groups.append(list(range(keep)))
            used = base
        groups[-1].append(i)
        used += size(i)
    return groups


def _tables(title: str, columns: list[tuple[str, list[str]]], keep: int, width: int, plain: bool) -> list[Any]:
    """Tables of ``columns`` that never drop the first ``keep``: the rest go to continuation tables."""
    from rich import box
    from rich.table import Table

    out = []
    for n, group in enumerate(_pack(columns, keep, width)):
        table = Table(title=title if n == 0 else f"{title}, continued", box=None if plain else box.SQUARE,
                      title_justify="left")
        for i in group:
            table.add_column(columns[i][0], no_wrap=True, overflow="fold")
        rows = len(columns[0][1])
        for r in range(rows):
            table.add_row(*(columns[i][1][r] for i in group))
        out.append(table)
    return out


def _knob_tables(st: dict[str, Any], width: int = 80, plain: bool = False) -> list[Any]:
    """The GPUs' and the jobs' knob tables (current / original), columns from the knob catalog.

    GPU index, model and power limit always share the first table; other knobs that do not fit
    ``width`` continue in further tables led by the same key columns.
    """
    catalog = _catalog(st)
    out = []
    gpus, jobs = st["gpus"], st.get("actuation", {}).get("jobs", [])
    for kind, title, rows in (("gpu", "GPUs (current / original)", gpus), ("job", "Jobs' knobs (current / original)", jobs)):
        entries = [e for e in catalog if e.get("target", "gpu") == kind]
        if not rows:
            continue
        cells = [_knob_cells(entries, row) for row in rows]
        if kind == "gpu":
            head = [("gpu", [str(r["index"]) for r in rows]), ("model", [short_model(r["model"]) for r in rows])]
        else:
            head = [("job", [r["job"] for r in rows])]
        columns = head + [(e["label"], [c[i] for c in cells]) for i, e in enumerate(entries)]
        columns.append(("changed", [", ".join(r["changed"]) or "no" for r in rows]))
        keep = len(head) + (1 if entries else 0)  # the first knob (power limit) stays with the keys
        out += _tables(title, columns, keep, width, plain)
    return out


def tuner_line(st: dict[str, Any], pause_file: Path | None = None) -> str:
    """The tuner's state in words: off, on, or paused (since when, by whom)."""
    paused = st.get("tuner", {}).get("paused")
    if paused is None and pause_file is not None and Path(pause_file).exists():  # a daemon before the flag moved
        paused = {"since": None, "by": str(pause_file)}
    if paused:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(paused["since"])) if paused.get("since") else "?"
        off = "" if "tuner" in st.get("components", []) else " (and off)"
        return f"tuner: PAUSED{off} since {since} by {paused.get('by') or '?'} (`gputuned tuner resume` resumes)"
    return "tuner: on" if "tuner" in st.get("components", []) else "tuner: off"


def intent_lines(st: dict[str, Any]) -> list[str]:
    """The operator's pins and who changed each knob last (origin, when, from, to)."""
    act = st.get("actuation", {})
    stamp = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"  # noqa: E731
    out = [f"pinned: {p['target']} {p['knob']} = {json.dumps(p['value'])} by {p['by'] or '?'} since {stamp(p['since'])} "
           "(`gputuned set --release` releases)" for p in act.get("pins", [])]
    out += [f"last change: {c['target']} {c['knob']} {json.dumps(c['previous'])} -> {json.dumps(c['new'])} "
            f"by {c['origin']}" + (f" (for {c['requested_by']})" if c.get("requested_by") else "") + f" at t={c['t']:.0f}"
            for c in act.get("last_changes", [])[-8:]]
    return out


def status_renderables(st: dict[str, Any], width: int = 80, plain: bool = False,
                       pause_file: Path | None = None) -> list[Any]:
    """The node status as rich renderables that fit ``width`` (``plain``: no boxes, no colour)."""
    from rich import box
    from rich.table import Table

    act = st["actuation"]
    out: list[Any] = [
        f"gputuned {st['version']} pid {st['pid']}, up {st['uptime_s']:.0f} s: {st['node']}",
        f"ticks {st['ticks']} every {st['interval_s']:g} s, {st['tick_overruns']} overruns; "
        f"actuation {'dry-run' if act['dry_run'] else ('on' if act['enabled'] else 'off')}; {tuner_line(st, pause_file)}",
    ]
    out += _knob_tables(st, width, plain)
    out += intent_lines(st)
    cols = Table(title="Collectors", box=None if plain else box.SQUARE, title_justify="left")
    for col in ("collector", "up", "errors", "last duration"):
        cols.add_column(col, no_wrap=True, overflow="fold")
    for c in st["collectors"]:
        cols.add_row(c["name"], "up" if c["up"] else "DOWN", str(c["errors"]), f"{c['duration_s'] * 1000:.1f} ms")
    out.append(cols)
    jobs = Table(title="Connected jobs", box=None if plain else box.SQUARE, title_justify="left")
    jobs.add_column("job", overflow="fold")
    jobs.add_column("ranks", overflow="fold")
    for job, ranks in st["jobs"].items():
        jobs.add_row(job, ", ".join(map(str, ranks)))
    out.append(jobs if st["jobs"] else "no training jobs connected")
    ctl = st["control"]
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(ctl["rejected"].items())) or "none"
    out.append(f"control socket {ctl['socket']}: {ctl['reports_total']} reports, rejected: {rejected}")
    out += root_cause_lines(st)
    return out


def render_status(st: dict[str, Any], console: Any = None, pause_file: Path | None = None) -> None:
    """Print the node status: tables on a terminal, plain columns when piped."""
    from rich.console import Console

    con = console or Console()
    plain = not con.is_terminal
    if plain and console is None:  # piped: no colour, no boxes, and no width to wrap at
        con = Console(width=200, no_color=True, highlight=False, emoji=False)
    for item in status_renderables(st, con.width, plain, pause_file):
        con.print(item, markup=False, highlight=False, soft_wrap=plain)
