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
        [--pause 2.5] [--job-ttl 60] [--rank-forget 120] [--history N] [--dump DIR]
        [--until-forgotten]
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


def measure(d: DaemonProcess, url: str, dump: Path | None = None) -> dict[str, Any]:
    """The daemon's RSS in MB, its children's (the forecaster's processes), and its /metrics size in KB.

    With ``dump``, the /metrics body is written there too (to diff the series between cycles)."""
    body = urllib.request.urlopen(url, timeout=10).read()  # noqa: S310 - loopback
    if dump is not None:
        dump.write_bytes(body)
    proc = psutil.Process(d.proc.pid)
    each: dict[str, float] = collections.Counter()
    for child in proc.children(recursive=True):
        each[_child_role(proc, child)] += round(child.memory_info().rss / 2**20, 1)
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 1), **_rss_parts(proc),
            "children_rss_mb": round(sum(each.values()), 1), "child_rss_mb": dict(sorted(each.items())),
            "metrics_kb": round(len(body) / 1024, 1), "flood_series": body.count(b'job="flood-')}


def _rss_parts(proc: psutil.Process) -> dict[str, float]:
    """Where the daemon's resident memory is: the brk heap, anonymous maps (allocator arenas, stacks), threads."""
    heap = anon = 0
    for m in proc.memory_maps(grouped=True):
        if m.path == "[heap]":
            heap += m.rss
        elif not m.path or m.path.startswith("[anon"):
            anon += m.rss
    return {"heap_mb": round(heap / 2**20, 2), "anon_maps_mb": round(anon / 2**20, 2), "threads": proc.num_threads()}


def wait_forgotten(d: DaemonProcess, url: str, at_least_s: float, timeout_s: float) -> float:
    """Seconds until /metrics names no flood rank any more (the daemon and the forecaster forgot the flood).

    Polled from ``at_least_s`` on: the forecaster's series of a flood appear some seconds after it."""
    t0 = time.monotonic()
    time.sleep(at_least_s)
    while time.monotonic() - t0 < timeout_s:
        if measure(d, url)["flood_series"] == 0:
            break
        time.sleep(1.0)
    return round(time.monotonic() - t0, 1)


def _child_role(daemon: psutil.Process, child: psutil.Process) -> str:
    """What a process under the daemon is: the detection child, its fit worker, or multiprocessing's tracker."""
    if "resource_tracker" in " ".join(child.cmdline()):
        return "resource_tracker"
    return "detect" if child.ppid() == daemon.pid else "fit_worker"


def idle_rss(d: DaemonProcess, url: str, samples: int = 6, every_s: float = 2.0) -> dict[str, Any]:
    """The daemon's measure before any flood, and its RSS over ``samples`` idle samples: their spread is the noise."""
    rss = []
    for _ in range(samples):
        time.sleep(every_s)
        rss.append(measure(d, url)["rss_mb"])
    return {**measure(d, url), "idle_rss_mb": rss, "idle_spread_mb": round(max(rss) - min(rss), 2)}


def _parser() -> BenchParser:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--ranks", type=positive_int, default=4095, help="fake ranks per cycle")
    ap.add_argument("--jobs", type=positive_int, default=16, help="jobs the ranks are spread over")
    ap.add_argument("--cycles", type=positive_int, default=5, help="floods in a row (each with new job names)")
    ap.add_argument("--pause", type=float, default=2.5,
                    help="seconds between floods; past --job-ttl the last flood's ranks have expired")
    ap.add_argument("--until-forgotten", action="store_true",
                    help="after --pause, wait until /metrics names no flood rank before measuring (and the next flood)")
    ap.add_argument("--job-ttl", type=float, default=60.0, help="the daemon's control.job_ttl_s")
    ap.add_argument("--rank-forget", type=float, default=120.0, help="the daemon's forecast.rank_forget_after_s")
    ap.add_argument("--history", type=positive_int,
                    help="the daemon's store.history_samples (default 600); the floods start once the rings are full")
    ap.add_argument("--dump", type=Path, metavar="DIR", help="write the /metrics body before and after each flood here")
    ap.add_argument("--worker", metavar="SOCKET", help="internal: run one flood against SOCKET and print its counts")
    ap.add_argument("--cycle", type=int, default=0, help="internal: the worker's cycle number")
    return ap


def main() -> int:
    args = _parser().parse_args()
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
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            measure(d, url, args.dump / "metrics-before.txt")
        cycles = []
        for cycle in range(args.cycles):
            result = run_flood(d.socket_path, args.ranks, args.jobs, cycle, as_other)
            time.sleep(args.pause)  # at least two ticks: the accepted ranks are published
            if args.until_forgotten:  # every cycle measured in the same state: the flood's ranks all forgotten
                # no rank is forgotten before its TTL and the forecaster's forget time have passed
                result["forgotten_after_s"] = wait_forgotten(d, url, args.job_ttl + args.rank_forget,
                                                             args.job_ttl + 2 * args.rank_forget + 60)
            cycles.append({**result, **measure(d, url, args.dump / f"metrics-{cycle + 1}.txt" if args.dump else None)})
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
