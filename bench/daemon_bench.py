"""Monitoring-core benchmark: daemon CPU and RSS, /metrics latency, trace size and load rate.

Runs `gputuned run --sim --gpus 8 --interval 1` as a real subprocess and measures:
  1. CPU seconds per second and RSS over a quiet window (collection only, plus one
     Prometheus-like scrape every 15 s),
  2. /metrics latency p50/p99 over sequential scrapes from one client,
  3. trace bytes per sample and load rate for an hour of an 8-GPU node.

Usage: .venv/bin/python bench/daemon_bench.py [--seconds 60] [--scrapes 2000] [--trace-ticks 3600]
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import (
    BenchParser,
    cpu_seconds,
    free_port,
    positive_float,
    positive_int,
    rss_bytes,
    sim_nvml_on_clock,
)


def scrape(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
        r.read()
    return time.perf_counter() - t0


MONITORING_ONLY = """
[sim]
job = false
[forecast]
enabled = false
[tuner]
enabled = false
"""


def daemon_figures(seconds: float, scrapes: int, full: bool) -> dict[str, float]:
    """Figures of a `gputuned run` on 8 simulated H100s: monitoring only, or the full loop."""
    port = free_port()
    gputuned = Path(sys.executable).with_name("gputuned")
    tmp = Path(tempfile.mkdtemp())
    body = "" if full else MONITORING_ONLY
    (tmp / "g.toml").write_text(f'[daemon]\nstate_file = "{tmp}/state.json"\n[control]\nsocket_path = "{tmp}/c.sock"\n' + body)
    proc = subprocess.Popen(
        [str(gputuned), "--log-level", "warning", "run", "--config", str(tmp / "g.toml"), "--sim", "--gpus", "8",
         "--interval", "1", "--listen", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        proc.stdout.readline()  # the "serving ..." line: the first collection is done
        time.sleep(5)  # warm up
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        next_scrape = t0
        while time.monotonic() - t0 < seconds:
            if time.monotonic() >= next_scrape:
                scrape(url)
                next_scrape += 15
            time.sleep(0.2)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss = rss_bytes(proc.pid)
        latencies = sorted(scrape(url) for _ in range(scrapes))
        body = urllib.request.urlopen(url, timeout=5).read()  # noqa: S310
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "cpu_per_s": (c1 - c0) / (t1 - t0),
        "rss_mb": rss / 2**20,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * len(latencies)) - 1] * 1e3,
        "metrics_bytes": len(body),
        "series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
    }


def trace_figures(ticks: int) -> dict[str, float]:
    from gputuned.collectors.gpu import GPUCollector
    from gputuned.collectors.host import HostCollector
    from gputuned.collectors.nvml import open_gpus
    from gputuned.daemon.core.loop import CollectionLoop
    from gputuned.daemon.core.store import Store
    from gputuned.daemon.record.trace import Recorder, TraceWriter, read_trace

    nvml, clock = sim_nvml_on_clock(8)
    store = Store(0)
    loop = CollectionLoop([GPUCollector(open_gpus(nvml)), HostCollector()], store, 1.0, wallclock=lambda: 1.7e9 + clock.now())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hour.gttrace"
        writer = TraceWriter(path)
        store.subscribe(Recorder(writer))
        for _ in range(ticks):
            loop.tick()
            clock.advance(1.0)
        writer.close()
        size = path.stat().st_size
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            trace = read_trace(path)
            loads.append(time.perf_counter() - t0)
        n = trace.sample_count
        t0 = time.perf_counter()
        tuples = sum(len(trace.samples(e)) for e in trace.events if hasattr(e, "ids"))
        to_tuples = time.perf_counter() - t0
    return {
        "samples": n,
        "bytes_per_sample": size / n,
        "load_samples_per_s": n / statistics.median(loads),
        "load_to_tuples_samples_per_s": tuples / (statistics.median(loads) + to_tuples),
    }


def main() -> None:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--seconds", type=positive_float, default=60.0,
                    help="measurement window of each daemon run, after a 5 s warm-up")
    ap.add_argument("--scrapes", type=positive_int, default=2000, help="sequential /metrics GETs for the latency figures")
    ap.add_argument("--trace-ticks", type=positive_int, default=3600, help="1 s ticks of the recorded trace")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; date {time.strftime('%Y-%m-%d', time.gmtime())}")
    for full in (False, True):
        d = daemon_figures(args.seconds, args.scrapes, full)
        what = "full loop (simulated job, forecaster, tuner; physics in-process)" if full else "monitoring only"
        print(f"daemon, 8 simulated H100, 1 s interval, {what}, {args.seconds:.0f} s window: "
              f"CPU {d['cpu_per_s'] * 100:.3f}% of one core, RSS {d['rss_mb']:.1f} MB; /metrics {d['series']} series, {d['metrics_bytes']} bytes")
        print(f"  /metrics latency over {args.scrapes} sequential scrapes: p50 {d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms")
    t = trace_figures(args.trace_ticks)
    print(f"trace, {args.trace_ticks} ticks of 8 GPUs + host: {t['samples']:.0f} samples, {t['bytes_per_sample']:.2f} bytes/sample, "
          f"load {t['load_samples_per_s'] / 1e6:.1f} M samples/s (columnar), "
          f"{t['load_to_tuples_samples_per_s'] / 1e6:.2f} M samples/s (to store tuples)")


if __name__ == "__main__":
    main()
