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

Usage: nice -n 5 .venv/bin/python bench/exposition_bench.py [--seconds 30] [--before 4035af2] [--node scripted]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import types
import urllib.request
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


def old_renderer(rev: str) -> Any:
    """The MetricsRenderer class of daemon/core/exporter.py at ``rev``."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:daemon/core/exporter.py"], capture_output=True,
                         text=True, check=True).stdout
    mod = types.ModuleType("old_exporter")
    exec(compile(src, f"{rev}:exporter.py", "exec"), mod.__dict__)  # noqa: S102 - this repository's own history
    return mod.MetricsRenderer


def cpu_ms(render: Any, store: Store, reps: int) -> float:
    """Median CPU milliseconds of one fresh render (a new store generation each time)."""
    times = []
    for _ in range(reps):
        store.publish("bench", 0.0, [])
        t0 = time.process_time()
        render()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e3


def render_figures(gpus: int, rev: str, reps: int) -> dict[str, float]:
    """Render CPU (ms) per body in each mode and format, before and now; series and bytes."""
    store = filled_store(gpus)
    cat = served_catalog()
    out: dict[str, float] = {}
    for mode in ("gputuned", "dcgm"):
        old = old_renderer(rev)(store, cat, dcgm=mode == "dcgm")
        new = MetricsRenderer(store, cat, dcgm=mode == "dcgm")
        text = new.render().decode()
        out[f"{mode}_series"] = sum(1 for x in text.splitlines() if x and not x.startswith("#"))
        out[f"{mode}_bytes"] = len(text)
        out[f"{mode}_gzip_bytes"] = len(new.render(openmetrics=True, gzipped=True))
        out[f"{mode}_before_ms"] = cpu_ms(old.render, store, reps)
        out[f"{mode}_text_ms"] = cpu_ms(new.render, store, reps)
        out[f"{mode}_om_ms"] = cpu_ms(lambda r=new: r.render(openmetrics=True), store, reps)
        out[f"{mode}_om_gzip_ms"] = cpu_ms(lambda r=new: r.render(openmetrics=True, gzipped=True), store, reps)
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


def daemon_figures(gpus: int, seconds: float, node: str = "physics") -> dict[str, float]:
    """A real gputuned run on ``gpus`` simulated H100s: % of a core idle and scraped each second."""
    port, tmp = free_port(), Path(tempfile.mkdtemp())
    monitoring = MONITORING_ONLY.replace("[sim]\n", "[sim]\n" + scripted_node(tmp, gpus)) if node == "scripted" else MONITORING_ONLY
    (tmp / "g.toml").write_text(f'[daemon]\nstate_file = "{tmp}/s.json"\n[control]\nsocket_path = "{tmp}/c.sock"\n'
                                + monitoring)
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
    p.add_argument("--before", default="4035af2", help="revision whose exporter is the 'before'")
    p.add_argument("--reps", type=int, default=30, help="renders per figure")
    p.add_argument("--node", choices=("physics", "scripted"), default="physics", help="simulated node of the daemon runs")
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 64], help="node sizes")
    p.add_argument("--no-render", action="store_true", help="daemon runs and node_exporter only")
    args = p.parse_args()
    assert ExporterConfig().metric_names == "gputuned"
    for gpus in () if args.no_render else args.gpus:
        r = render_figures(gpus, args.before, args.reps)
        for mode in ("gputuned", "dcgm"):
            print(f"render {gpus} GPUs {mode}: {r[f'{mode}_series']:.0f} series, {r[f'{mode}_bytes'] / 1e3:.1f} kB "
                  f"({r[f'{mode}_gzip_bytes'] / 1e3:.1f} kB OM+gzip); before {r[f'{mode}_before_ms']:.2f} ms, "
                  f"text {r[f'{mode}_text_ms']:.2f} ms, OM {r[f'{mode}_om_ms']:.2f} ms, OM+gzip "
                  f"{r[f'{mode}_om_gzip_ms']:.2f} ms ({r[f'{mode}_before_ms'] / r[f'{mode}_text_ms']:.1f}x)")
    for gpus in args.gpus:
        d = daemon_figures(gpus, args.seconds, args.node)
        print(f"daemon {gpus} GPUs ({args.node} node), 1 s interval: {d['idle_pct']:.3f}% of a core unscraped, {d['scraped_pct']:.3f}% "
              f"scraped every second (OM+gzip), {d['per_scrape_ms']:.2f} ms CPU per scrape, RSS {d['rss_mb']:.0f} MB")
    ne = node_exporter_figures(args.seconds)
    if ne is None:
        print("node_exporter: not installed (apt-get install prometheus-node-exporter)")
    else:
        print(f"node_exporter, default collectors, scraped every second: {ne['pct']:.3f}% of a core, "
              f"{ne['per_scrape_ms']:.2f} ms per scrape for {ne['series']:.0f} series "
              f"({ne['us_per_series']:.2f} us per series), RSS {ne['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
