"""The exposition bench's daemons: their configs, a scraped daemon's CPU split by thread, and RSS on a virtual clock.

:func:`split_figures` runs a scripted-node daemon in this process, scraped every second by another
process (under ``nice -n 5``; bench/_scrape.py, keeping its connection alive as Prometheus does, or
opening one per scrape), and splits its CPU by thread with the thread CPU spent inside the
scripted NVML's functions counted apart; :func:`steady_rss` ticks a daemon built as ``gputuned run``
builds it on a virtual clock until its rings are full. Used by bench/exposition_bench.py.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import types
import zlib
from pathlib import Path
from typing import Any

from _common import free_port

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.daemon.app.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_ACCEPT = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                     "Accept-Encoding": "gzip"}
MONITORING_ONLY = "[sim]\njob = false\n[forecast]\nenabled = false\n[tuner]\nenabled = false\n"


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


class SimCallTimer:
    """Time spent inside the simulated NVML module's functions (outermost calls only): what a real host does not pay.

    Wall time by the vDSO clock (the scripted NVML never blocks, so inside a call it is the thread's CPU time);
    a thread CPU clock is a system call each, which cost more than the calls timed and was left in the daemon's
    share. Each thread adds to its own tally. What the timer itself adds, ~0.3 us a call, stays in the daemon's.
    """

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module
        self._saved = {n: f for n, f in vars(module).items() if n.startswith("nvml") and callable(f)}
        self._local = threading.local()
        self._tallies: list[list[float]] = []  # per thread: [depth, seconds, calls]
        self._lock = threading.Lock()
        for name, fn in self._saved.items():
            setattr(module, name, self._timed(fn))

    @property
    def seconds(self) -> float:
        """Seconds inside the module's functions, every thread."""
        return sum(t[1] for t in list(self._tallies))

    @property
    def calls(self) -> int:
        """Outermost calls made, every thread."""
        return int(sum(t[2] for t in list(self._tallies)))

    def _new_tally(self) -> list[float]:
        tally = self._local.tally = [0, 0.0, 0]
        with self._lock:
            self._tallies.append(tally)
        return tally

    def _timed(self, fn: Any) -> Any:
        clock, local = time.perf_counter, self._local

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                tally = local.tally
            except AttributeError:
                tally = self._new_tally()
            if tally[0]:
                return fn(*args, **kwargs)
            tally[0] = 1
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                tally[1] += clock() - t0
                tally[2] += 1
                tally[0] = 0
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


#: Scrapes (one a second) before a scraped figure's window: a scraper's first few are rendered on demand, until
#: the exporter sees it polling every tick (and node_exporter's first scrapes start its collectors).
WARMUP_SCRAPES = 5
#: The scraper process of :func:`split_figures` (under ``nice -n 5``): one kept connection, as Prometheus.
SCRAPER = [sys.executable, str(Path(__file__).with_name("_scrape.py"))]


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
          "print(int('numpy' in sys.modules), early, rss(), d.store.ring_count(), d.cfg.store.history_samples)\n"
          "d.stop()\n")


def steady_rss(gpus: int, full: bool, ticks: int = 700) -> dict[str, float]:
    """RSS (MB) of a scripted-node daemon after 30 ticks and after ``ticks`` (rings full), on a virtual clock."""
    path = write_config(Path(tempfile.mkdtemp()), gpus, "scripted", full)
    out = subprocess.run([sys.executable, "-c", STEADY, str(path), str(gpus), str(ticks)], capture_output=True, text=True,
                         check=True).stdout.split()
    numpy, early, late, rings, history = (float(x) for x in out[-5:])
    return {"rss_30_mb": early, "rss_full_mb": late, "rings": rings, "own_times_mb": rings * history * 8 / 2**20,
            "numpy": numpy}


def split_figures(gpus: int, seconds: float, full: bool, new_connections: bool = False) -> dict[str, float]:
    """A scripted-node daemon in this process, scraped every second by another: % of a core by part, sim NVML apart.

    The scraper keeps its connection alive as Prometheus does, or opens one per scrape (``new_connections``)."""
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
        # the window leaves out the scraper's first WARMUP_SCRAPES: a steady scraper, as Prometheus is, is measured
        scraper = subprocess.Popen(["nice", "-n", "5", *SCRAPER, f"http://127.0.0.1:{port}/metrics",
                                    str(int(seconds) + WARMUP_SCRAPES + 1), PROMETHEUS_ACCEPT["Accept"],
                                    *(["--new-connections"] if new_connections else [])])
        time.sleep(WARMUP_SCRAPES)
        c0, p0, s0, r0, t0 = thread_cpu(), time.process_time(), timer.seconds, d.renderer.render_seconds, time.monotonic()
        n0 = timer.calls
        time.sleep(seconds)
        wall = time.monotonic() - t0
        c1, p1 = thread_cpu(), time.process_time()
        if scraper.wait() != 0:
            raise RuntimeError(f"the scraper failed ({scraper.returncode})")
        out = {part: (c1[part] - c0.get(part, 0.0)) / wall * 100 for part in c1}
        out["sim_nvml"] = (timer.seconds - s0) / wall * 100
        out["sim_calls_per_s"] = (timer.calls - n0) / wall
        out["render"] = (d.renderer.render_seconds - r0) / wall * 100
        out["process"] = (p1 - p0) / wall * 100
    finally:
        d.stop()
        timer.close()
    return out




def ticked_daemon(gpus: int) -> tuple[Daemon, Any]:
    """A monitoring daemon on ``gpus`` scripted H100s, started for ticking by hand, and its virtual clock."""
    from gputuned.collectors.sim.state import VirtualClock
    from gputuned.daemon.app.components import attach_configured
    from gputuned.daemon.commands.run import config_from_args

    args = argparse.Namespace(config=str(write_config(Path(tempfile.mkdtemp()), gpus, "scripted", False)), sim=True,
                              gpus=gpus, profile=None, listen="127.0.0.1", port=0, interval=1.0, metric_names=None)
    clock = VirtualClock(1.7e9)
    d = Daemon(config_from_args(args), clock=clock.now)
    attach_configured(d)
    d.start(background=False)
    return d, clock


def family_segments(text: str, group: int) -> list[str]:
    """``text`` cut at its families, consecutive families joined until a segment has ``group`` characters."""
    parts = text.split("\n# HELP ")
    segments, cur = [], parts[0]
    for part in parts[1:]:
        if len(cur) >= group:
            segments.append(cur + "\n")
            cur = "# HELP " + part
        else:
            cur += "\n# HELP " + part
    segments.append(cur)
    return segments


def segmented_gzip(segments: list[str], kept: list[tuple[str, bytes]]) -> bytes:
    """``segments`` as one gzip member of raw-deflate segments, each compressed alone and ended with a full flush;
    a segment equal to the one at its place in ``kept`` (the last call's) reuses its bytes."""
    out, crc, size, now = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"], 0, 0, []
    for i, seg in enumerate(segments):
        raw = seg.encode()
        if i < len(kept) and kept[i][0] == seg:
            z = kept[i][1]
        else:
            c = zlib.compressobj(3, zlib.DEFLATED, -15)
            z = c.compress(raw) + c.flush(zlib.Z_FULL_FLUSH)
        now.append((seg, z))
        out.append(z)
        crc, size = zlib.crc32(raw, crc), size + len(raw)
    kept[:] = now
    return b"".join(out) + b"\x03\x00" + crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


def segment_figures(gpus: int, dcgm: bool, group: int, moved: bool, ticks: int = 40) -> dict[str, float]:
    """CPU (ms) and bytes of the OpenMetrics body gzipped as one level-3 stream and as kept segments, on each of
    ``ticks`` ticks of a monitoring daemon (``moved``: no segment kept); checks both decompress to the body."""
    from gputuned.daemon.app.catalog import served_catalog
    from gputuned.daemon.core.exporter import MetricsRenderer

    d, clock = ticked_daemon(gpus)
    renderer = MetricsRenderer(d.store, served_catalog(), dcgm=dcgm)
    kept: list[tuple[str, bytes]] = []
    got: dict[str, list[float]] = {"one_ms": [], "seg_ms": [], "one_bytes": [], "seg_bytes": []}
    try:
        for _ in range(ticks):
            d.tick()
            clock.advance(1.0)
            body = renderer.render(openmetrics=True)
            t0 = time.thread_time()
            one = gzip.compress(body, 3, mtime=0)
            one_s = time.thread_time() - t0
            segments = family_segments(body.decode(), group)  # an encoder would hand over its families' texts
            t1 = time.thread_time()
            seg = segmented_gzip(segments, [] if moved else kept)
            t2 = time.thread_time()
            assert gzip.decompress(seg) == body == gzip.decompress(one)
            for k, v in (("one_ms", one_s * 1e3), ("seg_ms", (t2 - t1) * 1e3), ("one_bytes", len(one)), ("seg_bytes", len(seg))):
                got[k].append(v)
    finally:
        d.stop()
    return {k: statistics.median(v[5:]) for k, v in got.items()}


def tick_parts(gpus: int, ticks: int = 300) -> dict[str, float]:
    """CPU per tick (us, all threads) of a monitoring daemon ticked on a virtual clock: by collector (its NVML
    workers included: the loop waits for them), the store's publishes, the rest; the scripted NVML's own apart."""
    d, clock = ticked_daemon(gpus)
    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0
        return call

    for r in d.loop.runners:
        r.collector.collect = timed(r.name, r.collector.collect)
    d.store.publish = timed("store", d.store.publish)
    for _ in range(30):
        d.tick()
        clock.advance(1.0)
    spent.clear()
    timer, p0 = SimCallTimer(sim_nvml), time.process_time()
    try:
        for _ in range(ticks):
            d.tick()
            clock.advance(1.0)
        total = time.process_time() - p0
    finally:
        timer.close()
        d.stop()
    out = {name: s / ticks * 1e6 for name, s in spent.items()}
    return {**out, "total": total / ticks * 1e6, "rest": (total - sum(spent.values())) / ticks * 1e6,
            "sim_nvml": timer.seconds / ticks * 1e6}
