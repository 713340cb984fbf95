"""Alerts a real Prometheus raises from the shipped rules over a live `gputuned run --sim`, tuner on.

Starts `gputuned run --sim` (simulated node, simulated job, forecaster and tuner on, as an operator
would start it) with its state and socket in a scratch folder, and a real Prometheus scraping it
and loading every shipped rule file (dashboards/rules/*.yml). After ``--duration`` seconds of wall
time it lists every alert that went to firing (Prometheus's ``ALERTS`` series over the whole run):
name, severity, labels and the first time it fired. ``GputunedSimulatedGPUs`` fires by design on
a simulated node (it is the rule that says the GPUs are not real) and is listed apart.

Usage: python bench/loop_pages.py [--duration 1800] [--gpus 4] [--profile h100] [--workload W]
       [--objective energy_slowdown] [--out DIR]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import BenchParser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from testkit import Prometheus, free_port, http_get  # noqa: E402

BY_DESIGN = {"GputunedSimulatedGPUs"}


def write_config(work: Path, port: int, args: Any) -> Path:
    """The operator's config: simulated node and job, forecaster and tuner on, state under ``work``."""
    cfg = work / "gputuned.toml"
    cfg.write_text(f"""
[daemon]
state_file = "{work / 'state.json'}"

[exporter]
listen_address = "127.0.0.1"
listen_port = {port}

[control]
socket_path = "{work / 'control.sock'}"

[sim]
profile = "{args.profile}"
gpus = {args.gpus}
workload = "{args.workload}"
seed = {args.seed}

[forecast]
enabled = true

[tuner]
enabled = true
objective = "{args.objective}"
""")
    return cfg


def firing(prom: Prometheus, duration_s: float) -> list[dict[str, Any]]:
    """Every alert that fired during the run, with the first time it did (seconds from the start)."""
    end = time.time()
    start = end - duration_s - 60
    q = {"query": 'ALERTS{alertstate="firing"}', "start": f"{start:.0f}", "end": f"{end:.0f}", "step": "5"}
    import urllib.parse

    body = json.loads(http_get(f"{prom.url}/api/v1/query_range?{urllib.parse.urlencode(q)}", 30.0))
    out = []
    for series in body["data"]["result"]:
        labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "alertstate")}
        first = float(series["values"][0][0]) if series["values"] else end
        out.append({"labels": labels, "first_s": first - (end - duration_s), "points": len(series["values"])})
    return sorted(out, key=lambda a: a["first_s"])


def main() -> int:
    """Run the daemon and Prometheus side by side, then print and save the alerts that fired."""
    p = BenchParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="wall seconds to run")
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--profile", default="h100")
    p.add_argument("--workload", default="resnet50")
    p.add_argument("--objective", default="energy_slowdown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scrape", default="5s", help="Prometheus scrape and rule evaluation interval")
    p.add_argument("--out", type=Path, default=None, help="folder for alerts.json and the daemon's log")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gputuned-pages-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = write_config(work, port, args)
    log = (out / "daemon.log").open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    daemon = subprocess.Popen([sys.executable, "-m", "gputuned", "run", "--sim", "--config", str(cfg)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    rules = sorted((ROOT / "dashboards" / "rules").glob("*.yml"))
    prom = Prometheus(work / "prom", [f"127.0.0.1:{port}"], scrape_interval=args.scrape, rule_files=rules)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            if daemon.poll() is not None:
                print(f"gputuned run exited with {daemon.returncode}; see {out / 'daemon.log'}", file=sys.stderr)
                return 1
            time.sleep(5)
        alerts = firing(prom, args.duration)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        prom.close()
    pages = [a for a in alerts if a["labels"].get("alertname") not in BY_DESIGN]
    (out / "alerts.json").write_text(json.dumps(alerts, indent=1))
    print(f"{args.gpus} x {args.profile}, {args.workload}, tuner on ({args.objective}), forecaster on, "
          f"{args.duration:.0f} s, rules {', '.join(r.name for r in rules)}")
    for a in alerts:
        lab = a["labels"]
        rest = ",".join(f"{k}={v}" for k, v in sorted(lab.items()) if k not in ("alertname", "severity"))
        tag = " (by design on a simulated node)" if lab.get("alertname") in BY_DESIGN else ""
        print(f"  t={a['first_s']:7.0f} s  {lab.get('severity', '?'):8s} {lab.get('alertname')} {rest}{tag}")
    print(f"pages (alerts fired, by-design ones aside): {len(pages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
