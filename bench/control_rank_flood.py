"""Rank flood: one uid says hello for 4,095 fake ranks (each connects, says hello, sends one
report and leaves) to a real `gputuned run` (simulated node), in several cycles. Prints how many
hellos were welcomed and refused (by reason), the daemon's RSS (psutil) and /metrics size before
and after each cycle, its log lines about refusals (one per peer and reason per 10 s, not one per
hello), and whether a job of another uid still connects afterwards. Ranks stay known for
``control.job_ttl_s`` (60 s) after they leave, so later cycles within it are refused whole. The
forecaster tracks at most ``forecast.max_rank_series`` ranks' series and drops a departed rank's
``forecast.rank_forget_after_s`` after it expired (``--rank-forget``); the store drops its history
at expiry. The store's rings grow with their points up to ``store.history_samples`` (600: ten minutes
at the 1 s tick), so a run shorter than that also measures the GPUs' rings filling; ``--history 20``
fills them before the first flood. The spread of RSS over idle samples before the first flood is the
noise any flood's growth is read against.

Run as root it floods as uid 65534 (setpriv), so the job that must still connect is root's;
otherwise the flood and that job share the uid, and the job may be refused by the per-uid bounds.

    .venv/bin/python bench/control_rank_flood.py [--ranks 4095] [--jobs 16] [--cycles 5]
        [--pause 2.5] [--job-ttl 60] [--rank-forget 120] [--history N]
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from _common import BenchParser, metrics_url, positive_int

from gputuned import protocol as P
from gputuned.daemon.record.child import DaemonProcess, connect_client, runtime_config

FLOOD_UID = 65534
TARGET_RSS_GROWTH_MB = 50.0


def _read(sock: socket.socket) -> dict[str, Any]:
    """The daemon's answer, or ``{"type": "closed"}`` when it closed the connection instead."""
    try:
        return P.read_message(sock)
    except ConnectionError:
        return {"type": "closed"}


def flood(path: str, ranks: int, jobs: int, cycle: int) -> dict[str, Any]:
    """Say hello for ``ranks`` fake ranks spread over ``jobs`` jobs; count the answers."""
    answers: collections.Counter[str] = collections.Counter()
    world = -(-ranks // jobs)
    t0 = time.monotonic()
    for i in range(ranks):
        job, rank = f"flood-{cycle}-{i % jobs}", i // jobs
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(path)
            s.sendall(P.encode({"v": 1, "seq": 0, "type": "hello", "job": job, "rank": rank, "local_rank": rank,
                              "world_size": world, "pid": os.getpid(), "leader": rank == 0, "batch_size": 64,
                              "batch_mode": "global"}))
            reply = _read(s)
            if reply["type"] == "welcome":
                s.sendall(P.encode({"v": 1, "seq": 1, "type": "report", "step": 1, "steps": 1, "time": time.time(),
                                  "stats": {"step_time_s": 0.1, "loss": 1.0, "samples_per_s": 100.0}}))
                answers["welcome"] += 1
            else:
                answers[reply.get("error", reply["type"]).split(":")[0].split(" (")[0][:60]] += 1
        except OSError as e:
            answers[f"oserror {e.errno}"] += 1
        finally:
            s.close()
    return {"answers": dict(answers), "seconds": round(time.monotonic() - t0, 2)}


def run_flood(path: Path, ranks: int, jobs: int, cycle: int, as_other: bool) -> dict[str, Any]:
    """Run :func:`flood` in a child process, as uid 65534 when ``as_other``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(path), "--ranks", str(ranks), "--jobs", str(jobs),
           "--cycle", str(cycle)]
    if as_other:
        cmd = ["setpriv", "--reuid", str(FLOOD_UID), "--regid", str(FLOOD_UID), "--clear-groups", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout))


def measure(d: DaemonProcess, url: str) -> dict[str, float]:
    """The daemon's RSS in MB, its children's (the forecaster's processes), and its /metrics size in KB."""
    body = urllib.request.urlopen(url, timeout=10).read()  # noqa: S310 - loopback
    proc = psutil.Process(d.proc.pid)
    children = sum(c.memory_info().rss for c in proc.children(recursive=True))
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 1), "children_rss_mb": round(children / 2**20, 1),
            "metrics_kb": round(len(body) / 1024, 1)}


def idle_rss(d: DaemonProcess, url: str, samples: int = 6, every_s: float = 2.0) -> dict[str, Any]:
    """The daemon's measure before any flood, and its RSS over ``samples`` idle samples: their spread is the noise."""
    rss = []
    for _ in range(samples):
        time.sleep(every_s)
        rss.append(measure(d, url)["rss_mb"])
    return {**measure(d, url), "idle_rss_mb": rss, "idle_spread_mb": round(max(rss) - min(rss), 2)}


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--ranks", type=positive_int, default=4095, help="fake ranks per cycle")
    ap.add_argument("--jobs", type=positive_int, default=16, help="jobs the ranks are spread over")
    ap.add_argument("--cycles", type=positive_int, default=5, help="floods in a row (each with new job names)")
    ap.add_argument("--pause", type=float, default=2.5,
                    help="seconds between floods; past --job-ttl the last flood's ranks have expired")
    ap.add_argument("--job-ttl", type=float, default=60.0, help="the daemon's control.job_ttl_s")
    ap.add_argument("--rank-forget", type=float, default=120.0, help="the daemon's forecast.rank_forget_after_s")
    ap.add_argument("--history", type=positive_int,
                    help="the daemon's store.history_samples (default 600); the floods start once the rings are full")
    ap.add_argument("--worker", metavar="SOCKET", help="internal: run one flood against SOCKET and print its counts")
    ap.add_argument("--cycle", type=int, default=0, help="internal: the worker's cycle number")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(flood(args.worker, args.ranks, args.jobs, args.cycle)))
        return 0
    as_other = os.geteuid() == 0 and shutil.which("setpriv") is not None
    tmp = Path(tempfile.mkdtemp(prefix="gputuned-flood-"))
    control = {"socket_mode": 0o666, "allowed_uids": [FLOOD_UID], "job_ttl_s": args.job_ttl}
    forecast = {"rank_forget_after_s": args.rank_forget}
    store = {"history_samples": args.history} if args.history else {}
    d = DaemonProcess(tmp, config=runtime_config(tmp, gpus=4, interval=1.0, control=control, forecast=forecast,
                                                 store=store))
    for folder in (tmp, d.socket_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    try:
        url = metrics_url(d.wait_ready())
        time.sleep(3.0 + (args.history or 0))  # the first ticks settle (and the rings fill, one point a tick)
        before = idle_rss(d, url)
        cycles = []
        for cycle in range(args.cycles):
            result = run_flood(d.socket_path, args.ranks, args.jobs, cycle, as_other)
            time.sleep(args.pause)  # at least two ticks: the accepted ranks are published
            cycles.append({**result, **measure(d, url)})
        s, answer = connect_client(d.socket_path, job="real-job", rank=0)
        s.close()
        rss_growth = max(c["rss_mb"] for c in cycles) - before["rss_mb"]
        children_growth = max(c["children_rss_mb"] for c in cycles) - before["children_rss_mb"]
        log = d.log().splitlines()
        log_lines = {"refused": sum("too_many_" in line for line in log), "connected": sum(" connected (pid" in line for line in log)}
        summary = {"flood_uid": FLOOD_UID if as_other else os.geteuid(), "ranks_per_cycle": args.ranks,
                   "jobs_per_cycle": args.jobs, "before": before, "cycles": cycles,
                   "rss_growth_mb": round(rss_growth, 1), "children_rss_growth_mb": round(children_growth, 1),
                   "rss_flood_1_to_last_mb": round(cycles[-1]["rss_mb"] - cycles[0]["rss_mb"], 2),
                   "target_rss_growth_mb": TARGET_RSS_GROWTH_MB,
                   "daemon_log_lines": log_lines, "real_job_after_flood": answer["type"], "daemon_alive": d.proc.poll() is None}
    finally:
        d.stop()
        d.close()
    print(json.dumps(summary, indent=1))
    ok = summary["daemon_alive"] and rss_growth < TARGET_RSS_GROWTH_MB and (answer["type"] == "welcome" or not as_other)
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
