"""Control-socket load: N simulated ranks report R times a second for T seconds to a real
`gputuned run` (simulated GPU node) while a scraper GETs /metrics S times a second.

Counts every report sent and compares with the daemon's gputuned_control_reports_total (no
lost reports), reads gputuned_tick_overruns_total (no overruns) and records scrape latency
percentiles and the daemon's CPU and RSS. Usage:

    .venv/bin/python bench/control_load.py [--ranks 64] [--rate 100] [--seconds 60] [--scrape-hz 10]
        [--client-nice N]

The summary also gives the tick durations the scrapes served and the host's 1-minute load average
(about once a second), and the daemon's log lines for each overrun tick.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import BenchParser, cpu_seconds, metrics_url, positive_float, positive_int, rss_bytes

from gputuned import protocol as P
from gputuned.daemon.record.child import DaemonProcess, read_frame, runtime_config


def ranks_main(path: str, ranks: int, rate: float, seconds: float, out: mp.Queue, nice: int = 0) -> None:  # type: ignore[type-arg]
    """Open one connection per rank, say hello, then send reports on a fixed schedule."""
    os.nice(nice)
    socks = []
    for r in range(ranks):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(P.encode({"v": 1, "type": "hello", "seq": 0, "job": f"load-{r // 8}", "rank": r % 8, "local_rank": r % 8,
                            "world_size": 8, "pid": os.getpid(), "leader": r % 8 == 0, "batch_size": 256,
                            "batch_mode": "global"}))
        assert read_frame(s)["type"] == "welcome"
        socks.append(s)
    sent = 0
    late = 0
    period = 1.0 / rate
    t0 = time.monotonic()
    k = 0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        k += 1
        for i, s in enumerate(socks):
            step = k * 10
            stats = {"step_time_s": 0.1 + 0.001 * (i % 7), "samples_per_s": 2560.0, "loss": 2.0 / (1 + k * 1e-3),
                     "loss_scale": 65536.0, "grad_norm": 1.2, "data_wait_s": 0.004, "comm_time_s": 0.02,
                     "batch_size": 256, "overflows_total": k // 1000, "samples_total": step * 256}
            s.sendall(P.encode({"v": 1, "type": "report", "seq": k, "step": step, "steps": 10, "time": time.time(),
                                "stats": stats}))
            sent += 1
        deadline = t0 + k * period
        wait = deadline - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
    elapsed = time.monotonic() - t0
    for s in socks:
        s.close()
    out.put({"sent": sent, "late_rounds": late, "rounds": k, "elapsed_s": elapsed})


def scraper_main(url: str, hz: float, seconds: float, out: mp.Queue, nice: int = 0) -> None:  # type: ignore[type-arg]
    """GET /metrics ``hz`` times a second; keep the latencies, the tick durations served and the host's load."""
    os.nice(nice)
    lat = []
    ticks: list[float] = []
    load: list[float] = []
    errors = 0
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        k += 1
        a = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
                body = r.read()
            lat.append(time.perf_counter() - a)
            if k % max(1, round(hz)) == 0:  # about once a second: the last tick's duration, the load average
                ticks.append(metric(body.decode(), "gputuned_tick_duration_seconds"))
                load.append(os.getloadavg()[0])
        except OSError:
            errors += 1
        wait = t0 + k / hz - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    out.put({"latencies": lat, "errors": errors, "tick_durations": ticks, "load": load})


def metric(text: str, name: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else float("nan")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def spread(xs: list[float]) -> dict[str, float]:
    """Median, 99th percentile and maximum of ``xs``, rounded."""
    return {"p50": round(pct(xs, 0.5), 2), "p99": round(pct(xs, 0.99), 2), "max": round(max(xs), 2) if xs else float("nan")}


def _parser() -> BenchParser:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--ranks", type=positive_int, default=64, help="simulated ranks, one connection each (8 per job)")
    ap.add_argument("--rate", type=positive_float, default=100.0, help="reports per second per rank")
    ap.add_argument("--seconds", type=positive_float, default=60.0, help="how long the ranks report")
    ap.add_argument("--scrape-hz", type=positive_float, default=10.0, help="GETs of /metrics per second")
    ap.add_argument("--gpus", type=positive_int, default=8, help="simulated GPUs of the daemon")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="niceness of the rank sender and the scraper (the daemon under test keeps its own)")
    ap.add_argument("--json", action="store_true", help="unused (the summary is always JSON); accepted so older command lines still run")
    return ap


def main() -> int:
    args = _parser().parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gputuned-load-"))
    jobs = -(-args.ranks // 8)  # one uid sends every rank: raise the per-uid bounds to fit (they are not measured here)
    bounds = {"max_jobs_per_uid": max(8, jobs), "max_jobs": max(64, jobs), "max_ranks_per_uid": max(256, args.ranks),
              "max_ranks": max(1024, args.ranks), "max_connections": max(256, args.ranks)}
    d = DaemonProcess(tmp, config=runtime_config(tmp, gpus=args.gpus, interval=1.0, control=bounds))
    try:
        status = d.wait_ready()
        url = metrics_url(status)
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        cpu0, w0, load0 = cpu_seconds(d.proc.pid), time.monotonic(), os.getloadavg()[0]
        overruns0 = metric(urllib.request.urlopen(url).read().decode(), "gputuned_tick_overruns_total")  # noqa: S310
        ranks = mp.Process(target=ranks_main, args=(str(d.socket_path), args.ranks, args.rate, args.seconds, q,
                                                      args.client_nice))
        scraper = mp.Process(target=scraper_main, args=(url, args.scrape_hz, args.seconds, q, args.client_nice))
        ranks.start()
        scraper.start()
        results = [q.get(timeout=args.seconds + 120) for _ in range(2)]
        ranks.join()
        scraper.join()
        cpu1, w1 = cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(2.5)  # let the last reports land and one more tick publish them
        final = urllib.request.urlopen(url).read().decode()  # noqa: S310
        rank_res = next(r for r in results if "sent" in r)
        scr = next(r for r in results if "latencies" in r)
        received = metric(final, "gputuned_control_reports_total")
        lat = scr["latencies"]
        summary = {
            "ranks": args.ranks, "rate_per_rank": args.rate, "seconds": args.seconds, "scrape_hz": args.scrape_hz,
            "reports_sent": rank_res["sent"], "reports_received": int(received),
            "lost_reports": rank_res["sent"] - int(received),
            "achieved_reports_per_s": round(rank_res["sent"] / rank_res["elapsed_s"], 1),
            "late_send_rounds": rank_res["late_rounds"],
            "rejected_total": metric(final, "gputuned_control_rejected_total"),
            "tick_overruns": metric(final, "gputuned_tick_overruns_total") - overruns0,
            "tick_duration_s_last": metric(final, "gputuned_tick_duration_seconds"),
            "scrapes": len(lat), "scrape_errors": scr["errors"],
            "scrape_p50_ms": round(pct(lat, 0.5) * 1e3, 2), "scrape_p99_ms": round(pct(lat, 0.99) * 1e3, 2),
            "scrape_max_ms": round(max(lat) * 1e3, 2) if lat else None,
            "metrics_bytes": len(final),
            "daemon_cpu_ratio": round((cpu1 - cpu0) / (w1 - w0), 3),
            "daemon_rss_mib": round(rss_bytes(d.proc.pid) / 2**20, 1),
            "tick_duration_ms": spread([t * 1e3 for t in scr["tick_durations"]]),
            "overrun_lines": [line[line.find("tick "):] for line in d.log().splitlines() if "overran its deadline" in line],
            "host_load_1m": {"at_start": round(load0, 2), **spread(scr["load"]), "at_end": round(os.getloadavg()[0], 2)},
        }
        if summary["rejected_total"] != summary["rejected_total"]:  # NaN: nothing rejected, family absent
            summary["rejected_total"] = 0.0
    finally:
        d.stop()
        d.close()
    print(json.dumps(summary, indent=1))
    ok = summary["lost_reports"] == 0 and summary["tick_overruns"] == 0 and summary["scrape_errors"] == 0
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
