"""Exposition benchmark: what /metrics costs at 8 and 64 simulated GPUs, beside node_exporter, in one run.

1. Render CPU per body, in this process, on a store filled by a real Daemon's collectors: the
   exporter of an earlier revision (prometheus_client's encoder, --before REV) against today's
   encoder, in the text format, OpenMetrics and OpenMetrics + gzip (what Prometheus asks for).
2. A real `gputuned run --sim --interval 1` (monitoring only) scraped every second as Prometheus
   scrapes (OpenMetrics, gzip) and left alone for as long: daemon CPU as % of a core, and the
   difference per scrape.
3. node_exporter (Debian's prometheus-node-exporter, default collectors) scraped every second:
   CPU per scrape and per series.

``--node scripted`` runs the daemons of 2. on the scripted node (tests/data/scripted_node.toml, its
GPU loss left out, sized to --gpus): the cheaper stand-in for a real node's NVML (no physics, no numpy).
``--full`` runs each daemon of 2. a second time as shipped (forecaster and tuner on) and reports the
RSS of both once their rings are full (700 ticks on a virtual clock). ``--split`` runs a scripted-node
daemon in this process, scraped every second by another process, and splits its CPU by thread
(collection loop, NVML workers, HTTP front with the render and gzip inside, control socket), with
the thread CPU spent inside the scripted NVML's functions counted apart: a real host pays NVML
instead, so the figure without it is the daemon's own work.

Usage: nice -n 5 .venv/bin/python bench/exposition_bench.py [--seconds 30] [--before 3283919] [--node scripted]
       [--full] [--split]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import types
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from _common import BenchParser, cpu_seconds, free_port, positive_float, rss_bytes

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock, scripted_from_spec
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.app.config import parse_config
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.exporter import MetricsRenderer
from gputuned.daemon.core.store import Store

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_ACCEPT = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                     "Accept-Encoding": "gzip"}
MONITORING_ONLY = "[sim]\njob = false\n[forecast]\nenabled = false\n[tuner]\nenabled = false\n"


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
    """Scrape ``url`` once a second (or only wait) for ``seconds``; the number of scrapes."""
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        if scrape:
            req = urllib.request.Request(url, headers=PROMETHEUS_ACCEPT)
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
                r.read()
            n += 1
        time.sleep(max(0.0, t0 + n - time.monotonic()) if scrape else 0.2)
    return n


def cpu_over(pid: int, url: str, seconds: float, scrape: bool) -> tuple[float, int]:
    """(CPU fraction of a core, scrapes) of process ``pid`` over ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    n = scrape_loop(url, seconds, scrape)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0), n


def scripted_node(tmp: Path, gpus: int) -> str:
    """The ``[sim] script`` line of a scripted node of ``gpus`` H100s (the shipped script, no GPU lost)."""
    text = (REPO / "tests/data/scripted_node.toml").read_text()
    spec = tomllib.loads(text)
    lines = [x for x in text.splitlines() if not x.startswith(("lost", "gpus"))]
    (tmp / "node.toml").write_text(f"gpus = {gpus}\n" + "\n".join(lines) + "\n")
    assert spec.get("lost") and "lost" not in tomllib.loads((tmp / "node.toml").read_text())
    return f'script = "{tmp}/node.toml"\n'


def write_config(tmp: Path, gpus: int, node: str, full: bool) -> Path:
    """``tmp``/g.toml for a bench daemon: monitoring only, or as shipped with ``full`` (the simulated job off)."""
    parts = "[sim]\njob = false\n" if full else MONITORING_ONLY
    body = parts.replace("[sim]\n", "[sim]\n" + scripted_node(tmp, gpus)) if node == "scripted" else parts
    path = tmp / "g.toml"
    path.write_text(f'[daemon]\nstate_file = "{tmp}/s.json"\n[control]\nsocket_path = "{tmp}/c.sock"\n' + body)
    return path


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
        busy, n = cpu_over(proc.pid, url, seconds, scrape=True)
        rss = rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"idle_pct": idle * 100, "scraped_pct": busy * 100, "per_scrape_ms": (busy - idle) * seconds / max(n, 1) * 1e3,
            "rss_mb": rss / 2**20}


class SimCallTimer:
    """Thread CPU spent inside the simulated NVML module's functions (outermost calls only): what a real host does not pay."""

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module
        self._saved = {n: f for n, f in vars(module).items() if n.startswith("nvml") and callable(f)}
        self._depth = threading.local()
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.calls = 0
        for name, fn in self._saved.items():
            setattr(module, name, self._timed(fn))

    def _timed(self, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth.n = depth
                if not depth:
                    spent = time.thread_time() - t0
                    with self._lock:
                        self.seconds += spent
                        self.calls += 1
        return call

    def close(self) -> None:
        """Put the module's functions back."""
        for name, fn in self._saved.items():
            setattr(self._module, name, fn)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, by part (loop, nvml, http, control, other)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        part = next((p for p in ("loop", "nvml", "http", "control") if t.name.startswith(f"gputuned-{p}")), "other")
        try:
            spent = time.clock_gettime(time.pthread_getcpuclockid(t.ident or 0))
        except OSError:  # ended meanwhile
            continue
        out[part] = out.get(part, 0.0) + spent
    return out


SCRAPER = ("import sys, time, urllib.request as u\n"
           "url, n, h = sys.argv[1], int(sys.argv[2]), {'Accept': sys.argv[3], 'Accept-Encoding': 'gzip'}\n"
           "t0 = time.monotonic()\n"
           "for k in range(n):\n"
           "    u.urlopen(u.Request(url, headers=h), timeout=5).read()\n"
           "    time.sleep(max(0.0, t0 + k + 1 - time.monotonic()))\n")


STEADY = ("import argparse, sys\n"
          "from gputuned.collectors.sim.state import VirtualClock\n"
          "from gputuned.daemon.app.components import attach_configured\n"
          "from gputuned.daemon.app.daemon import Daemon\n"
          "from gputuned.daemon.commands.run import config_from_args\n"
          "def rss():\n"
          "    return next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS:')) / 1024\n"
          "gpus, ticks = int(sys.argv[2]), int(sys.argv[3])\n"
          "clock = VirtualClock(1.7e9)\n"
          "args = argparse.Namespace(config=sys.argv[1], sim=True, gpus=gpus, profile=None, listen='127.0.0.1', port=0,\n"
          "                          interval=1.0, metric_names=None)\n"
          "d = Daemon(config_from_args(args), clock=clock.now)\n"
          "attach_configured(d)\n"
          "d.start(background=False)\n"
          "for k in range(ticks):\n"
          "    d.tick(); d.renderer.render(openmetrics=True, gzipped=True); clock.advance(1.0)\n"
          "    if k == 29: early = rss()\n"
          "print(early, rss(), d.store.ring_count(), d.cfg.store.history_samples)\n"
          "d.stop()\n")


def steady_rss(gpus: int, full: bool, ticks: int = 700) -> dict[str, float]:
    """RSS (MB) of a scripted-node daemon after 30 ticks and after ``ticks`` (rings full), on a virtual clock."""
    path = write_config(Path(tempfile.mkdtemp()), gpus, "scripted", full)
    out = subprocess.run([sys.executable, "-c", STEADY, str(path), str(gpus), str(ticks)], capture_output=True, text=True,
                         check=True).stdout.split()
    early, late, rings, history = (float(x) for x in out[-4:])
    return {"rss_30_mb": early, "rss_full_mb": late, "rings": rings, "own_times_mb": rings * history * 8 / 2**20}


def split_figures(gpus: int, seconds: float, full: bool) -> dict[str, float]:
    """A scripted-node daemon in this process, scraped every second by another: % of a core by part, sim NVML apart."""
    from gputuned.daemon.app.components import attach_configured
    from gputuned.daemon.commands.run import config_from_args

    port = free_port()
    args = argparse.Namespace(config=str(write_config(Path(tempfile.mkdtemp()), gpus, "scripted", full)), sim=True, gpus=gpus, profile=None, listen="127.0.0.1", port=port,
                              interval=1.0, metric_names=None)
    d = Daemon(config_from_args(args))
    attach_configured(d)
    timer = SimCallTimer(sim_nvml)
    d.start()
    try:
        time.sleep(5)
        c0, p0, s0, r0, t0 = thread_cpu(), time.process_time(), timer.seconds, d.renderer.render_seconds, time.monotonic()
        subprocess.run([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(int(seconds)),
                        PROMETHEUS_ACCEPT["Accept"]], check=True)
        wall = time.monotonic() - t0
        c1, p1 = thread_cpu(), time.process_time()
        out = {part: (c1[part] - c0.get(part, 0.0)) / wall * 100 for part in c1}
        out["sim_nvml"] = (timer.seconds - s0) / wall * 100
        out["render"] = (d.renderer.render_seconds - r0) / wall * 100
        out["process"] = (p1 - p0) / wall * 100
    finally:
        d.stop()
        timer.close()
    return out


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
        scrape_loop(url, 3, scrape=True)
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
    args = p.parse_args()
    assert ExporterConfig().metric_names == "gputuned"
    for gpus in () if args.no_render else args.gpus:
        r = render_figures(gpus, args.before, args.reps)
        for mode in ("gputuned", "dcgm"):
            print(f"render {gpus} GPUs {mode}: {r[f'{mode}_series']:.0f} series, {r[f'{mode}_bytes'] / 1e3:.1f} kB "
                  f"({r[f'{mode}_gzip_bytes'] / 1e3:.1f} kB OM+gzip); before: text {r[f'{mode}_before_ms']:.2f} ms, "
                  f"OM+gzip {r[f'{mode}_before_om_gzip_ms']:.2f} ms; now: text {r[f'{mode}_text_ms']:.2f} ms, "
                  f"OM {r[f'{mode}_om_ms']:.2f} ms, OM+gzip {r[f'{mode}_om_gzip_ms']:.2f} ms; no value moved, OM+gzip: "
                  f"before {r[f'{mode}_before_om_gzip_same_ms']:.2f} ms, now {r[f'{mode}_om_gzip_same_ms']:.2f} ms")
    for gpus, full in ((g, f) for g in args.gpus for f in ((False, True) if args.full else (False,))):
        d = daemon_figures(gpus, args.seconds, args.node, full)
        print(f"daemon {gpus} GPUs ({args.node} node, {'as shipped' if full else 'monitoring only'}), 1 s interval: "
              f"{d['idle_pct']:.3f}% of a core unscraped, {d['scraped_pct']:.3f}% scraped every second (OM+gzip), "
              f"{d['per_scrape_ms']:.2f} ms CPU per scrape, RSS {d['rss_mb']:.0f} MB")
    for gpus, full in ((g, f) for g in args.gpus for f in (False, True)) if args.full else ():
        r = steady_rss(gpus, full)
        print(f"RSS {gpus} GPUs scripted, {'as shipped' if full else 'monitoring only'}: {r['rss_30_mb']:.1f} MB after 30 ticks, "
              f"{r['rss_full_mb']:.1f} MB with full rings ({r['rings']:.0f} series; a timestamp per point of each is "
              f"{r['own_times_mb']:.2f} MB)")
    for gpus in args.gpus if args.split else ():
        s = split_figures(gpus, args.seconds, False)
        parts = ", ".join(f"{k} {s.get(k, 0.0):.3f}%" for k in ("loop", "nvml", "http", "render", "control", "other"))
        print(f"split, {gpus} GPUs scripted, scraped every second: process {s['process']:.3f}% of a core ({parts}; "
              f"render+gzip inside http); scripted NVML {s['sim_nvml']:.3f}% (inside loop and nvml); "
              f"without it {s['process'] - s['sim_nvml']:.3f}%")
    ne = node_exporter_figures(args.seconds)
    if ne is None:
        print("node_exporter: not installed (apt-get install prometheus-node-exporter)")
    else:
        print(f"node_exporter, default collectors, scraped every second: {ne['pct']:.3f}% of a core, "
              f"{ne['per_scrape_ms']:.2f} ms per scrape for {ne['series']:.0f} series "
              f"({ne['us_per_series']:.2f} us per series), RSS {ne['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
