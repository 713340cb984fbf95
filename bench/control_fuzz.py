"""Fuzz a real `gputuned run` (simulated node) over its control socket with hypothesis-generated
malformed, oversized, truncated and deeply nested messages; then check the daemon is still up and
answers a well-formed client (hello, report counted, admin status).

    .venv/bin/python bench/control_fuzz.py [--messages 10000]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import BenchParser, metrics_url, nonnegative_int
from hypothesis import HealthCheck, given, settings

from gputuned import protocol as P
from gputuned.daemon.record.child import DaemonProcess, connect_client, runtime_config
from gputuned.daemon.record.trials import fuzz_strategies, send_fuzz_case


def scrape(url: str, name: str) -> dict[str, float]:
    out = {}
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():  # noqa: S310 - loopback
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--messages", type=nonnegative_int, default=10_000, help="malformed chunks to send, at least")
    ap.add_argument("--seed", type=int, default=0, help="unused (hypothesis draws its own cases); accepted so older command lines still run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gputuned-fuzz-"))
    d = DaemonProcess(tmp, config=runtime_config(tmp, gpus=2, interval=0.5))
    sent = [0]
    cases = [0]
    t0 = time.monotonic()
    try:
        status = d.wait_ready()
        url = metrics_url(status)

        @settings(max_examples=500, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(fuzz_strategies())
        def fuzz(case: tuple[bool, list[bytes]]) -> None:
            sent[0] += send_fuzz_case(d.socket_path, case, timeout=0.3)
            cases[0] += 1
            if d.proc.poll() is not None:
                raise AssertionError(f"daemon died: {d.log()[-2000:]}")

        while sent[0] < args.messages:
            fuzz()
        elapsed = time.monotonic() - t0
        alive = d.proc.poll() is None
        s, welcome = connect_client(d.socket_path, job="after-fuzz")
        before = d.admin("status")["status"]["control"]["reports_total"]
        s.sendall(P.encode({"v": 1, "type": "report", "seq": 1, "step": 1, "steps": 1, "stats": {"loss": 1.0}}))
        deadline = time.monotonic() + 5
        after = before
        while time.monotonic() < deadline and after == before:
            after = d.admin("status")["status"]["control"]["reports_total"]
            time.sleep(0.02)
        s.close()
        rejected = scrape(url, "gputuned_control_rejected_total")
        summary = {
            "messages_sent": sent[0], "connections": cases[0], "seconds": round(elapsed, 1),
            "daemon_alive": alive, "welcome_after": welcome["type"] == "welcome",
            "report_counted_after": after == before + 1,
            "rejected": {re.sub(r'.*reason="([^"]+)".*', r"\1", k): int(v) for k, v in rejected.items()},
        }
    finally:
        d.stop()
        d.close()
    print(json.dumps(summary, indent=1))
    ok = summary["daemon_alive"] and summary["welcome_after"] and summary["report_counted_after"]
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
