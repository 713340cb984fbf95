"""Exposition benchmark: what /metrics costs at 8 and 64 simulated GPUs, beside node_exporter, in one run.

1. Render CPU per body, in this process, on a store filled by a real Daemon's collectors: the
   exporter of an earlier revision (prometheus_client's encoder, --before REV) against today's
   encoder, in the text format, OpenMetrics and OpenMetrics + gzip (what Prometheus asks for).
2. A real `gputuned run --sim --interval 1` (monitoring only) scraped every second as Prometheus
   scrapes (OpenMetrics, gzip) and left alone for as long: daemon CPU as % of a core, and the
   difference per scrape.
3. node_exporter (Debian's prometheus-node-exporter, default collectors) scraped every second:
   CPU per scrape and per series.

``--only PART ...`` runs just those parts (render, daemon, rss, split, ticks, node_exporter, segments), so that two trees
can take turns: ``PYTHONPATH=<exported tree> .venv/bin/python bench/exposition_bench.py --only split rss``
measures that tree's code with this script. The scraper runs under ``nice -n 5``, the measured daemon
does not. Every scraper keeps one connection alive across its scrapes, as Prometheus does;
``--new-connections`` opens one per scrape instead (as this bench did before, for earlier figures). Every
scraped figure leaves out the scraper's first 5 scrapes (before 2026-12-06 21:50 UTC gputuned's were in). ``ticks`` ticks a monitoring daemon 300 times on a virtual clock (no scrapes) and splits the CPU
of each tick, all threads, by collector (its NVML workers included), the store's publishes and the rest.
``segments`` gzips the OpenMetrics body of each of 40 ticks as one level-3 stream and as raw-deflate segments
(families joined up to 0, 4096 or 32768 characters) whose bytes are kept while their text stays ("moved":
none kept), joined into one gzip member: the CPU and size of keeping compressed families.

``--node scripted`` runs the daemons of 2. on the scripted node (tests/data/scripted_node.toml, its
GPU loss left out, sized to --gpus): the cheaper stand-in for a real node's NVML (no physics, no numpy).
``--full`` runs each daemon of 2. a second time as shipped (forecaster and tuner on) and reports the
RSS of both once their rings are full (700 ticks on a virtual clock). ``--split`` runs a scripted-node
daemon in this process, scraped every second by another process, and splits its CPU by thread
(collection loop, NVML workers, HTTP front with the render and gzip inside, control socket), with
the thread CPU spent inside the scripted NVML's functions counted apart: a real host pays NVML
instead, so the figure without it is the daemon's own work.

Usage: .venv/bin/python bench/exposition_bench.py [--seconds 30] [--before 3283919] [--node scripted]
       [--full] [--split] [--new-connections] [--only PART ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from _common import BenchParser, free_port, positive_float, rss_bytes, thread_cpu_seconds
from _scrape import Scraper
from exposition_daemon import (
    PROMETHEUS_ACCEPT,
    WARMUP_SCRAPES,
    segment_figures,
    split_figures,
    steady_rss,
    tick_parts,
    write_config,
)

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock, scripted_from_spec
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.app.config import parse_config
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.exporter import MetricsRenderer
from gputuned.daemon.core.store import Store

REPO = Path(__file__).resolve().parents[1]
def filled_store(gpus: int) -> Store:
    """The store of a real daemon on ``gpus`` scripted H100s after a few ticks."""
    backend = scripted_from_spec({"profile": "h100", "gpus": gpus}, clock=VirtualClock(), privileged=True)
    sim_nvml.attach(backend)
    cfg = parse_config({"daemon": {"interval_seconds": 0.2}, "exporter": {"listen_address": "127.0.0.1", "listen_port": 0},
                        "gpu": {"backend": "sim"}, "collectors": {"peers": {"enabled": False}}}, "bench")
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    while d.store.generation < 10:
        time.sleep(0.05)
    d.stop()
    return d.store


def _old_module(rev: str, path: str, name: str) -> types.ModuleType | None:
    """The module in ``path`` at ``rev`` (None where it did not exist), executed under ``name``."""
    got = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True, check=False)
    if got.returncode:
        return None
    mod = types.ModuleType(name)
    exec(compile(got.stdout, f"{rev}:{path}", "exec"), mod.__dict__)  # noqa: S102 - this repository's own history
    return mod


def old_renderer(rev: str) -> Any:
    """The MetricsRenderer class of daemon/core/exporter.py at ``rev``, with that revision's encoder where it had one."""
    current = sys.modules["gputuned.daemon.core.exposition"]
    encoder = _old_module(rev, "daemon/core/exposition.py", "old_exposition")
    try:
        if encoder is not None:
            sys.modules["gputuned.daemon.core.exposition"] = encoder
        mod = _old_module(rev, "daemon/core/exporter.py", "old_exporter")
    finally:
        sys.modules["gputuned.daemon.core.exposition"] = current
    assert mod is not None, f"no daemon/core/exporter.py at {rev}"
    return mod.MetricsRenderer


def cpu_ms(renders: dict[str, Any], store: Store, reps: int, moved: bool = True) -> dict[str, float]:
    """Median CPU milliseconds of one fresh render by each of ``renders``, taken in turn on each
    new store generation (so a change of load falls on all alike).

    ``moved``: before each generation every source is published again with every value's sign flipped
    from the last, so no family's text can be kept (the worst case; the values' digits stay those a
    daemon serves); else the values stay.
    """
    times: dict[str, list[float]] = {name: [] for name in renders}
    for rep in range(reps):
        store.publish("bench", 0.0, [])
        if moved:
            for source, t, smp in store.snapshot()[1]:
                store.publish(source, t, [(n, lab, v if rep % 2 else -v) for n, lab, v in smp], history=False)
        for name, render in renders.items():
            t0 = time.thread_time()
            render()
            times[name].append(time.thread_time() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def render_figures(gpus: int, rev: str, reps: int) -> dict[str, float]:
    """Render CPU (ms) per body in each mode and format, before and now; series and bytes.

    Each figure has its own renderer, so no body is shared between them (a gzip body would compress
    the identity body another figure rendered).
    """
    store = filled_store(gpus)
    cat = served_catalog()
    out: dict[str, float] = {}
    for mode in ("gputuned", "dcgm"):
        dcgm = mode == "dcgm"
        new = MetricsRenderer(store, cat, dcgm=dcgm)
        text = new.render().decode()
        out[f"{mode}_series"] = sum(1 for x in text.splitlines() if x and not x.startswith("#"))
        out[f"{mode}_bytes"] = len(text)
        out[f"{mode}_gzip_bytes"] = len(new.render(openmetrics=True, gzipped=True))
        old = old_renderer(rev)
        kinds = {"before": (old, {}), "before_om_gzip": (old, {"openmetrics": True, "gzipped": True}),
                 "text": (MetricsRenderer, {}), "om": (MetricsRenderer, {"openmetrics": True}),
                 "om_gzip": (MetricsRenderer, {"openmetrics": True, "gzipped": True})}
        renders = {k: partial(cls(store, cat, dcgm=dcgm).render, **kw) for k, (cls, kw) in kinds.items()}
        out.update({f"{mode}_{k}_ms": v for k, v in cpu_ms(renders, store, reps).items()})
        same = {k: renders[k] for k in ("before_om_gzip", "om_gzip")}
        out.update({f"{mode}_{k}_same_ms": v for k, v in cpu_ms(same, store, reps, moved=False).items()})
    return out


def scrape_loop(url: str, seconds: float, scrape: bool) -> int:
    """Scrape ``url`` once a second (or only wait) for ``seconds``; the number of scrapes.

    One connection is kept alive across the scrapes as Prometheus keeps it, unless ``--new-connections``."""
    n, t0 = 0, time.monotonic()
    scraper = Scraper(url, PROMETHEUS_ACCEPT, NEW_CONNECTIONS)
    while time.monotonic() - t0 < seconds:
        if scrape:
            scraper.get()
            n += 1
        time.sleep(max(0.0, t0 + n - time.monotonic()) if scrape else 0.2)
    scraper.close()
    return n


def cpu_over(pid: int, url: str, seconds: float, scrape: bool) -> tuple[float, int]:
    """(CPU fraction of a core, scrapes) of process ``pid`` over ``seconds``."""
    c0, t0 = thread_cpu_seconds(pid), time.monotonic()
    n = scrape_loop(url, seconds, scrape)
    return (thread_cpu_seconds(pid) - c0) / (time.monotonic() - t0), n


def daemon_figures(gpus: int, seconds: float, node: str = "physics", full: bool = False) -> dict[str, float]:
    """A real gputuned run on ``gpus`` simulated H100s: % of a core idle and scraped each second.

    ``full``: as shipped (forecaster and tuner on, the simulated job off), else monitoring only.
    """
    port, tmp = free_port(), Path(tempfile.mkdtemp())
    write_config(tmp, gpus, node, full)
    exe = Path(sys.executable).with_name("gputuned")
    proc = subprocess.Popen([str(exe), "--log-level", "warning", "run", "--config", str(tmp / "g.toml"), "--sim",
                             "--gpus", str(gpus), "--interval", "1", "--listen", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(5)
        idle, _ = cpu_over(proc.pid, url, seconds, scrape=False)
        scrape_loop(url, WARMUP_SCRAPES, scrape=True)  # as node_exporter's below: the steady state is measured
        busy, n = cpu_over(proc.pid, url, seconds, scrape=True)
        rss = rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"idle_pct": idle * 100, "scraped_pct": busy * 100, "per_scrape_ms": (busy - idle) * seconds / max(n, 1) * 1e3,
            "rss_mb": rss / 2**20}


def node_exporter_figures(seconds: float) -> dict[str, float] | None:
    """Debian's node_exporter (default collectors) scraped every second: CPU per scrape and per series."""
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exe is None:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        time.sleep(2)
        scrape_loop(url, WARMUP_SCRAPES, scrape=True)
        frac, n = cpu_over(proc.pid, url, seconds, scrape=True)
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            body = r.read().decode()
        rss = rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    series = sum(1 for x in body.splitlines() if x and not x.startswith("#"))
    per_scrape = frac * seconds / max(n, 1) * 1e3
    return {"pct": frac * 100, "per_scrape_ms": per_scrape, "series": series,
            "us_per_series": per_scrape * 1e3 / series, "rss_mb": rss / 2**20}


#: Open a new connection per scrape (--new-connections: how this bench scraped before) rather than keep one.
NEW_CONNECTIONS = False
PARTS = ("render", "daemon", "rss", "split", "ticks", "node_exporter", "segments")


def chosen_parts(args: argparse.Namespace) -> set[str]:
    """The parts to run: ``--only``'s, else what the other flags ask for."""
    if args.only:
        return set(args.only)
    return ({"daemon", "node_exporter"} | ({"render"} if not args.no_render else set())
            | ({"rss"} if args.full else set()) | ({"split"} if args.split else set()))


def print_renders(gpus: int, rev: str, reps: int) -> None:
    """The render rows of ``gpus`` GPUs, both modes."""
    r = render_figures(gpus, rev, reps)
    for mode in ("gputuned", "dcgm"):
        print(f"render {gpus} GPUs {mode}: {r[f'{mode}_series']:.0f} series, {r[f'{mode}_bytes'] / 1e3:.1f} kB "
              f"({r[f'{mode}_gzip_bytes'] / 1e3:.1f} kB OM+gzip); before: text {r[f'{mode}_before_ms']:.2f} ms, "
              f"OM+gzip {r[f'{mode}_before_om_gzip_ms']:.2f} ms; now: text {r[f'{mode}_text_ms']:.2f} ms, "
              f"OM {r[f'{mode}_om_ms']:.2f} ms, OM+gzip {r[f'{mode}_om_gzip_ms']:.2f} ms; no value moved, OM+gzip: "
              f"before {r[f'{mode}_before_om_gzip_same_ms']:.2f} ms, now {r[f'{mode}_om_gzip_same_ms']:.2f} ms")


def print_node_exporter(seconds: float) -> None:
    """node_exporter's row (or why there is none)."""
    ne = node_exporter_figures(seconds)
    if ne is None:
        print("node_exporter: not installed (apt-get install prometheus-node-exporter)")
    else:
        print(f"node_exporter, default collectors, scraped every second: {ne['pct']:.3f}% of a core, "
              f"{ne['per_scrape_ms']:.2f} ms per scrape for {ne['series']:.0f} series "
              f"({ne['us_per_series']:.2f} us per series), RSS {ne['rss_mb']:.0f} MB")


def main() -> None:
    p = BenchParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=positive_float, default=30.0, help="length of each scrape window")
    p.add_argument("--before", default="3283919", help="revision whose exporter (and encoder) is the 'before'")
    p.add_argument("--reps", type=int, default=30, help="renders per figure")
    p.add_argument("--node", choices=("physics", "scripted"), default="physics", help="simulated node of the daemon runs")
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 64], help="node sizes")
    p.add_argument("--no-render", action="store_true", help="daemon runs and node_exporter only")
    p.add_argument("--full", action="store_true", help="also run each daemon as shipped (forecaster and tuner on)")
    p.add_argument("--split", action="store_true", help="also split the scraped daemon's CPU by thread, sim NVML apart (scripted node)")
    p.add_argument("--only", nargs="+", choices=PARTS, help="run just these parts (the flags above still size them)")
    p.add_argument("--new-connections", action="store_true",
                   help="scrape over a new connection each time (as before) instead of one kept alive as Prometheus does")
    args = p.parse_args()
    global NEW_CONNECTIONS  # noqa: PLW0603 - how every scrape of this run connects
    NEW_CONNECTIONS = args.new_connections
    assert ExporterConfig().metric_names == "gputuned"
    parts = chosen_parts(args)
    print(f"gputuned from {Path(sys.modules['gputuned'].__file__ or '').parent}")
    for gpus in args.gpus if "render" in parts else ():
        print_renders(gpus, args.before, args.reps)
    for gpus, full in ((g, f) for g in args.gpus for f in ((False, True) if args.full else (False,))) if "daemon" in parts else ():
        d = daemon_figures(gpus, args.seconds, args.node, full)
        print(f"daemon {gpus} GPUs ({args.node} node, {'as shipped' if full else 'monitoring only'}), 1 s interval: "
              f"{d['idle_pct']:.3f}% of a core unscraped, {d['scraped_pct']:.3f}% scraped every second (OM+gzip), "
              f"{d['per_scrape_ms']:.2f} ms CPU per scrape, RSS {d['rss_mb']:.0f} MB")
    for gpus, full in ((g, f) for g in args.gpus for f in (False, True)) if "rss" in parts else ():
        r = steady_rss(gpus, full)
        print(f"RSS {gpus} GPUs scripted, {'as shipped' if full else 'monitoring only'}: {r['rss_30_mb']:.1f} MB after 30 ticks, "
              f"{r['rss_full_mb']:.1f} MB with full rings ({r['rings']:.0f} series; a timestamp per point of each is "
              f"{r['own_times_mb']:.2f} MB); numpy {'imported' if r['numpy'] else 'not imported'}")
    for gpus in args.gpus if "split" in parts else ():
        s = split_figures(gpus, args.seconds, False, args.new_connections)
        cut = ", ".join(f"{k} {s.get(k, 0.0):.3f}%" for k in ("loop", "nvml", "http", "render", "control", "other"))
        print(f"split, {gpus} GPUs scripted, scraped every second{' (new connections)' if args.new_connections else ''}: process {s['process']:.3f}% of a core ({cut}; "
              f"render+gzip inside loop or http); scripted NVML {s['sim_nvml']:.3f}% ({s['sim_calls_per_s']:.0f} calls a second, inside loop and nvml); "
              f"without it {s['process'] - s['sim_nvml']:.3f}%")
    for gpus in args.gpus if "ticks" in parts else ():
        t = tick_parts(gpus)
        print(f"ticks, {gpus} GPUs scripted, monitoring only, virtual clock: {t['total']:.0f} us CPU per tick (" +
              ", ".join(f"{k} {v:.0f}" for k, v in t.items() if k not in ("total", "sim_nvml")) +
              f"); scripted NVML {t['sim_nvml']:.0f} us; without it {t['total'] - t['sim_nvml']:.0f} us")
    for gpus, dcgm, group, moved in ((g, m, c, v) for g in args.gpus for m in (False, True) for c in (0, 4096, 32768)
                                      for v in (False, True)) if "segments" in parts else ():
        s = segment_figures(gpus, dcgm, group, moved)
        print(f"segments, {gpus} GPUs{' dcgm' if dcgm else ''}, families joined to {group} chars, {'moved' if moved else 'kept'}: "
              f"one stream {s['one_ms']:.2f} ms {s['one_bytes'] / 1e3:.1f} kB, segments {s['seg_ms']:.2f} ms "
              f"{s['seg_bytes'] / 1e3:.1f} kB ({s['seg_bytes'] / s['one_bytes']:.2f}x bytes, {s['seg_ms'] / s['one_ms']:.2f}x CPU)")
    if "node_exporter" in parts:
        print_node_exporter(args.seconds)


if __name__ == "__main__":
    main()
