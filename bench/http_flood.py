"""Flood a real `gputuned run` (simulated node, loopback, soft and hard RLIMIT_NOFILE 1024 in the
daemon) with half-open HTTP connections: each sends the start of a GET and never finishes it, and
one closed by the daemon is reopened at once (unless --no-reopen), so --connections stay open
or in flight for the whole flood. Meanwhile /metrics is scraped and the control socket asked for status on a fixed
schedule, and a trainer says hello. Reports both latencies (p50/p99/max), how many answered, the
daemon's threads (/proc/PID/task) and open descriptors (/proc/PID/fd) at their highest, the host
collector's gputuned_collector_up and the daemon's log lines written during the flood.

    .venv/bin/python bench/http_flood.py [--connections 1100] [--seconds 20] [--fd-limit 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import BenchParser, metrics_url, positive_float, positive_int

from gputuned.daemon.record.child import DaemonProcess, admin, connect_client, runtime_config

HALF_GET = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nUser-Agent: half-open\r\n"


class Flood:
    """Keeps ``n`` half-open connections to ``port``, reopening each one the server closes."""

    def __init__(self, port: int, n: int, reopen: bool = True) -> None:
        self.port, self.n, self.reopen = port, n, reopen
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.opened = self.closed_by_server = self.connect_errors = 0
        self.open_now = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            self.connect_errors += 1
            s.close()
            return
        self.sel.register(s, selectors.EVENT_WRITE, "connecting")
        self.opened += 1
        self.open_now += 1

    def _event(self, key: selectors.SelectorKey) -> None:
        s = key.fileobj
        assert isinstance(s, socket.socket)
        try:
            if key.data == "connecting":
                s.send(HALF_GET)
                self.sel.modify(s, selectors.EVENT_READ, "held")
                return
            if s.recv(4096):
                return  # a 503 before the close: the close follows
        except OSError:
            pass
        self.sel.unregister(s)
        s.close()
        self.open_now -= 1
        self.closed_by_server += 1

    def _run(self) -> None:
        while not self.stop.is_set():
            while self.open_now < self.n and (self.reopen or self.opened < self.n) and not self.stop.is_set():
                self._open()
            for key, _ in self.sel.select(0.05):
                self._event(key)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def timed(fn: Any) -> float | None:
    """Seconds ``fn`` took, or None when it raised."""
    t0 = time.monotonic()
    try:
        fn()
    except Exception:  # noqa: BLE001 - a failed probe is counted, not fatal
        return None
    return time.monotonic() - t0


def probe(url: str, sock_path: Path, seconds: float, hz: float) -> dict[str, list[float | None]]:
    """Scrape and ask for status ``hz`` times a second for ``seconds``; latencies (None = failed)."""
    out: dict[str, list[float | None]] = {"scrape": [], "control": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        out["scrape"].append(timed(lambda: urllib.request.urlopen(url, timeout=5).read()))  # noqa: S310 - loopback
        out["control"].append(timed(lambda: admin(sock_path, "status", timeout=5)))
        time.sleep(max(0.0, 1 / hz - (time.monotonic() - t0)))
    return out


def summarize(lat: list[float | None]) -> dict[str, Any]:
    """Answered count and latency percentiles in milliseconds."""
    ok = sorted(x for x in lat if x is not None)
    q = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else ok * 99
    return {"tried": len(lat), "answered": len(ok), "p50_ms": round(q[49] * 1000, 1) if ok else None,
            "p99_ms": round(q[98] * 1000, 1) if ok else None, "max_ms": round(ok[-1] * 1000, 1) if ok else None}


def watch(pid: int, stop: threading.Event, peak: dict[str, int]) -> None:
    """Record the daemon's highest thread and descriptor counts until ``stop``."""
    while not stop.wait(0.1):
        try:
            peak["threads"] = max(peak["threads"], len(os.listdir(f"/proc/{pid}/task")))
            peak["fds"] = max(peak["fds"], len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            return


def collector_up(url: str) -> dict[str, float]:
    """gputuned_collector_up by collector, from one scrape."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback
    return {m.group(1): float(m.group(2)) for m in re.finditer(r'^gputuned_collector_up\{collector="([^"]+)"\} (\S+)', text, re.M)}


def start_daemon(tmp: Path, fd_limit: int, exporter: dict[str, Any]) -> DaemonProcess:
    """The daemon child, started under a soft and hard RLIMIT_NOFILE of ``fd_limit``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, hard))  # inherited by the child at exec
    try:
        d = DaemonProcess(tmp, config=runtime_config(tmp, gpus=4, interval=0.5, exporter=exporter))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
    return d


def flood_run(d: DaemonProcess, args: Any) -> dict[str, Any]:
    """Probe before the flood, then during it; the figures."""
    url = metrics_url(d.wait_ready())
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    calm = probe(url, d.socket_path, 3, args.hz)
    threads_before = len(os.listdir(f"/proc/{d.proc.pid}/task"))
    log_before = d.log().count("\n")
    flood = Flood(port, args.connections, args.reopen)
    flood.thread.start()
    time.sleep(2)  # let the flood fill up
    stop, peak = threading.Event(), {"threads": 0, "fds": 0}
    watcher = threading.Thread(target=watch, args=(d.proc.pid, stop, peak), daemon=True)
    watcher.start()
    held_min = flood.open_now
    during = probe(url, d.socket_path, args.seconds, args.hz)
    held_min = min(held_min, flood.open_now)
    hello_ok = timed(lambda: connect_client(d.socket_path, job="flood-check")[0].close()) is not None
    up = collector_up(url)
    stop.set()
    flood.stop.set()
    flood.thread.join(10)
    log_lines = d.log().count("\n") - log_before
    return {
        "fd_limit": args.fd_limit, "max_connections": args.max_connections or "default (64)",
        "half_open_connections": args.connections, "reopened": args.reopen,
        "flood_seconds": args.seconds, "flood_open_at_end": held_min,
        "flood_opened": flood.opened, "flood_closed_by_daemon": flood.closed_by_server,
        "flood_connect_errors": flood.connect_errors,
        "before": {"scrape": summarize(calm["scrape"]), "control_status": summarize(calm["control"])},
        "during": {"scrape": summarize(during["scrape"]), "control_status": summarize(during["control"])},
        "trainer_hello_during_flood": hello_ok,
        "threads_before": threads_before, "threads_peak": peak["threads"], "fds_peak": peak["fds"],
        "collector_up_during_flood": up, "daemon_log_lines_during_flood": log_lines,
    }


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--connections", type=positive_int, default=1100, help="half-open connections kept open")
    ap.add_argument("--seconds", type=positive_float, default=20.0, help="how long to probe during the flood")
    ap.add_argument("--fd-limit", type=positive_int, default=1024, help="the daemon's RLIMIT_NOFILE")
    ap.add_argument("--max-connections", type=positive_int, default=None,
                    help="the daemon's exporter.max_connections (default: the shipped one); set it past the fd "
                         "limit to see the descriptor reserve alone keep the control socket answering")
    ap.add_argument("--reopen", action=argparse.BooleanOptionalAction, default=True,
                    help="reopen each connection the daemon closes (--no-reopen: open them once)")
    ap.add_argument("--hz", type=positive_float, default=5.0, help="scrapes (and status requests) a second")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.connections + 256:
        print(f"http_flood: needs a hard fd limit of {args.connections + 256} here, have {hard}", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="gputuned-flood-"))
    exporter = {"max_connections": args.max_connections} if args.max_connections else {}
    d = start_daemon(tmp, args.fd_limit, exporter)
    try:
        summary = flood_run(d, args)
    finally:
        d.stop()
        d.close()
    print(json.dumps(summary, indent=1))
    during = summary["during"]
    ok = (during["scrape"]["answered"] == during["scrape"]["tried"]
          and during["control_status"]["answered"] == during["control_status"]["tried"]
          and summary["trainer_hello_during_flood"]
          and summary["threads_peak"] <= summary["threads_before"] + 2
          and all(v == 1.0 for v in summary["collector_up_during_flood"].values()))
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
