"""Two parts of the exposition cost, measured apart: gzip codecs on /metrics bodies, and the host collector's reads.

``codecs``: the OpenMetrics body of each of 40 ticks of a monitoring daemon on ``--gpus`` scripted H100s,
compressed by zlib (the standard library's gzip, levels 1 and 3), ISA-L's igzip (python-isal, what the
exporter uses; levels 1 and 2) and zlib-ng's gzip_ng where it is installed (it is not a dependency; levels
1 and 3): CPU per body (the median of 5 passes over the 40) and the compressed size.

``host``: each /proc and /sys read of the host collector (kept descriptors, as it reads them) taken 30
times after a 0.1 s sleep each, as a tick takes them after its sleep ("cold"), and 30 times back to back
("warm"): CPU per read, this machine's own files.

Usage: .venv/bin/python bench/exposition_parts.py [--only codecs host] [--gpus 8 64]
"""

from __future__ import annotations

import gzip
import importlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _common import BenchParser
from exposition_daemon import ticked_daemon
from isal import igzip

from gputuned.collectors import host as H
from gputuned.collectors.network import KeptFiles, LinkReader


def bodies(gpus: int, ticks: int = 40) -> list[bytes]:
    """The OpenMetrics bodies of ``ticks`` ticks of a monitoring daemon on ``gpus`` scripted H100s."""
    d, clock = ticked_daemon(gpus)
    out = []
    try:
        for _ in range(ticks):
            d.tick()
            clock.advance(1.0)
            out.append(d.renderer.render(openmetrics=True))
    finally:
        d.stop()
    return out


def _at(compress: Callable[..., bytes], level: int) -> Callable[[bytes], bytes]:
    return lambda body: compress(body, level, mtime=0)


def codecs() -> dict[str, Callable[[bytes], bytes]]:
    """Each codec and level measured, by name (zlib-ng's where installed)."""
    out = {f"zlib {level}": _at(gzip.compress, level) for level in (1, 3)}
    out.update({f"isal {level}": _at(igzip.compress, level) for level in (1, 2)})
    try:
        gzip_ng = importlib.import_module("zlib_ng.gzip_ng")
    except ImportError:
        return out
    out.update({f"zlib-ng {level}": _at(gzip_ng.compress, level) for level in (1, 3)})
    return out


def codec_figures(gpus: int) -> tuple[int, dict[str, tuple[float, int]]]:
    """The last body's bytes, and (CPU us per body, the last body's compressed bytes) by codec."""
    texts = bodies(gpus)
    out = {}
    for name, compress in codecs().items():
        passes = []
        for _ in range(5):
            t0 = time.thread_time()
            for text in texts:
                packed = compress(text)
            passes.append((time.thread_time() - t0) / len(texts) * 1e6)
        assert gzip.decompress(packed) == texts[-1]
        out[name] = (statistics.median(passes), len(packed))
    return len(texts[-1]), out


def host_reads() -> dict[str, Callable[[], object]]:
    """The host collector's reads of this machine, as it makes them."""
    kept, proc = KeptFiles(), Path("/proc")
    links = LinkReader("/sys", {"lo"}, refresh_reads=5)  # as [collectors.host] refresh_ticks
    return {"stat": lambda: H.read_cpu_times("/proc", kept.read), "meminfo": lambda: H.read_memory("/proc", kept.read),
            "diskstats": lambda: H.read_diskstats("/proc", kept.read), "net/dev": lambda: H.read_net_dev("/proc", kept.read),
            "loadavg": os.getloadavg, "net/snmp (slow)": lambda: H.read_tcp_counters(proc, kept.read),
            "pressure (slow)": lambda: H.read_pressure(proc, kept.read), "vmstat (slow)": lambda: H.read_oom_kills(proc, kept.read),
            "statvfs /dev/shm (slow)": lambda: os.statvfs("/dev/shm"), "links (slow)": links.read}


def host_figures(n: int = 30) -> dict[str, tuple[float, float]]:
    """(cold, warm) CPU us per read, by read (on a 2-core VM the cold read is the costly one)."""
    reads = host_reads()
    cold = dict.fromkeys(reads, 0.0)
    for _ in range(n):
        time.sleep(0.1)
        for name, read in reads.items():
            t0 = time.thread_time()
            read()
            cold[name] += time.thread_time() - t0
    out = {}
    for name, read in reads.items():
        read()
        t0 = time.thread_time()
        for _ in range(n):
            read()
        out[name] = (cold[name] / n * 1e6, (time.thread_time() - t0) / n * 1e6)
    return out


def main() -> None:
    p = BenchParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=("codecs", "host"), default=["codecs", "host"])
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    args = p.parse_args()
    for gpus in args.gpus if "codecs" in args.only else ():
        size, figures = codec_figures(gpus)
        cut = ", ".join(f"{name} {us:.0f} us ({b / 1e3:.1f} kB)" for name, (us, b) in figures.items())
        print(f"gzip, {gpus} GPUs, OpenMetrics body of {size / 1e3:.1f} kB: {cut}")
    if "host" in args.only:
        reads = host_figures()
        print("host reads, CPU us cold (after 0.1 s) / warm: " + ", ".join(f"{k} {c:.0f}/{w:.0f}" for k, (c, w) in reads.items()))
        for slow in (False, True):
            c, w = (sum(v[i] for k, v in reads.items() if k.endswith("(slow)") == slow) for i in (0, 1))
            print(f"  {'read every 5 ticks' if slow else 'read every tick'}: {c:.0f} us cold, {w:.0f} us warm")


if __name__ == "__main__":
    main()
