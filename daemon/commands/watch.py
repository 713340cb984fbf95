"""``gputuned status --watch``: a live terminal view of the node, the job and the tuner.

It polls the daemon's ``/metrics`` (no privilege needed) every few seconds and, when the
caller may, the control socket's admin status (knob originals). It shows per GPU power,
limit versus its original, SM clock, temperature and utilisation; the job's throughput,
goodput, batch size and energy per sample; active alerts; the tuner's action counts, guard
interventions, rollbacks and the time of its last action.
"""

from __future__ import annotations

import argparse
import time
import urllib.request
from collections import defaultdict
from typing import Any

from gputuned.collectors import families as F
from gputuned.daemon.app import tuning
from gputuned.daemon.control.reports import STAT_FAMILIES as TRAINER
from gputuned.tuner.decision import guard
from gputuned.tuner.forecast.service import ALERT_ACTIVE

Metric = tuple[str, dict[str, str], float]


def fetch_metrics(url: str, timeout: float = 3.0) -> list[Metric]:
    """Every sample served at ``url`` as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback /metrics
        text = resp.read().decode()
    return [(s.name, dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text) for s in fam.samples]


def snapshot(metrics: list[Metric], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the view shows, from the scraped samples (and the admin status when there is one)."""
    by: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in metrics:
        by[name].append((labels, value))

    def per_gpu(name: str) -> dict[str, float]:
        return {lab.get("gpu", "?"): v for lab, v in by.get(name, [])}

    originals = {str(g["index"]): (g.get("originals") or {}).get("power_limit") for g in (status or {}).get("gpus", [])}
    power, limit, default = per_gpu(F.GPU_POWER), per_gpu(F.GPU_POWER_LIMIT), per_gpu(F.GPU_POWER_LIMIT_DEFAULT)
    clock, temp, util = per_gpu(F.GPU_SM_CLOCK), per_gpu(F.GPU_TEMP), per_gpu(F.GPU_UTIL)
    gpus = []
    for g in sorted(power, key=lambda k: int(k) if k.isdigit() else 0):
        orig = originals.get(g)
        gpus.append({"gpu": g, "power_w": power[g], "limit_w": limit.get(g), "original_limit_w": (orig / 1000.0) if orig else
                     default.get(g), "sm_mhz": clock.get(g, 0.0) / 1e6, "temp_c": temp.get(g), "util": util.get(g)})
    jobs: dict[str, dict[str, float]] = defaultdict(dict)
    for key in ("samples_per_s", "goodput", "batch_size", "step_time_s"):
        for lab, v in by.get(TRAINER[key], []):
            if lab.get("rank") == "0":
                jobs[lab.get("job", "?")][key] = v
    for lab, v in by.get(tuning.EPS, []):
        jobs[lab.get("job", "?")]["energy_per_sample_j"] = v
    for lab, v in by.get(tuning.EPS_REF, []):
        jobs[lab.get("job", "?")]["reference_energy_per_sample_j"] = v
    total_power = sum(power.values())
    for j in jobs.values():  # no tuner figure: board power over throughput, right now
        if "energy_per_sample_j" not in j and j.get("samples_per_s"):
            j["energy_per_sample_j"] = total_power / j["samples_per_s"]
    alerts = [lab for lab, v in by.get(ALERT_ACTIVE, []) if v > 0.5]
    tuner = {
        "actions": {lab.get("knob", "?"): v for lab, v in by.get(guard.ACTIONS, [])},
        "interventions": {lab.get("reason", "?"): v for lab, v in by.get(guard.INTERVENTIONS, [])},
        "rollbacks": sum(v for _, v in by.get(guard.ROLLBACKS, [])),
        "last_action": max((v for _, v in by.get(tuning.LAST_ACTION, [])), default=0.0),
        "paused": any(v > 0.5 for _, v in by.get(guard.PAUSED, [])),
        "knobs": {f"{lab.get('knob')}@{lab.get('gpu')}": v for lab, v in by.get(guard.KNOB_VALUE, [])},
    }
    return {"gpus": gpus, "jobs": dict(jobs), "alerts": alerts, "tuner": tuner}


def render(snap: dict[str, Any], source: str, now: float | None = None) -> Any:
    """The rich renderable of one snapshot."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    gpus = Table(title="GPUs", expand=False)
    for col in ("gpu", "power", "limit / original", "SM clock", "temp", "util"):
        gpus.add_column(col, justify="right")
    for g in snap["gpus"]:
        lim, orig = g["limit_w"], g["original_limit_w"]
        changed = lim is not None and orig is not None and abs(lim - orig) > 0.5
        lim_s = "-" if lim is None else (f"[bold yellow]{lim:.0f} W[/] / {orig:.0f} W" if changed else f"{lim:.0f} W")
        gpus.add_row(g["gpu"], f"{g['power_w']:.0f} W", lim_s, f"{g['sm_mhz']:.0f} MHz",
                     "-" if g["temp_c"] is None else f"{g['temp_c']:.0f} C",
                     "-" if g["util"] is None else f"{100 * g['util']:.0f}%")
    jobs = Table(title="Training jobs (rank 0)")
    for col in ("job", "samples/s", "goodput", "batch", "energy/sample", "vs reference"):
        jobs.add_column(col, justify="right")
    for name, j in sorted(snap["jobs"].items()):
        eps, ref = j.get("energy_per_sample_j"), j.get("reference_energy_per_sample_j")
        jobs.add_row(name, f"{j.get('samples_per_s', 0):.1f}", f"{j.get('goodput', 0):.1f}", f"{j.get('batch_size', 0):.0f}",
                     "-" if eps is None else f"{eps:.3f} J", f"{100 * (eps / ref - 1):+.1f}%" if eps and ref else "-")
    t = snap["tuner"]
    ago = f"{now - t['last_action']:.0f} s ago" if t["last_action"] > 0 else "never"
    lines = [
        Text.from_markup(f"[bold]tuner[/]: {'[red]PAUSED[/] ' if t['paused'] else ''}actions "
                         f"{', '.join(f'{k} {v:.0f}' for k, v in t['actions'].items()) or 'none'}; last {ago}; "
                         f"rollbacks {t['rollbacks']:.0f}; guard "
                         f"{', '.join(f'{k} {v:.0f}' for k, v in t['interventions'].items()) or 'no interventions'}"),
        Text.from_markup("[bold]alerts[/]: " + (", ".join(
            f"[red]{a.get('alert', a.get('kind', '?'))}[/] {a.get('series', '')} {a.get('gpu', '')}".strip()
            for a in snap["alerts"]) or "none active")),
    ]
    head = Text.from_markup(f"[bold]gputuned[/] {source} at {time.strftime('%H:%M:%S', time.localtime(now))}")
    return Group(head, gpus, jobs if snap["jobs"] else Text("no training job reporting"), *lines)


def watch(args: argparse.Namespace, cfg: Any) -> int:
    """Refresh the view every ``--watch-interval`` seconds until interrupted."""
    from rich.console import Console
    from rich.live import Live

    from gputuned.daemon.commands.status import AdminError, admin_request

    host = cfg.exporter.listen_address
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = getattr(args, "metrics_url", None) or f"http://{host}:{cfg.exporter.listen_port}/metrics"
    sock = args.socket or str(cfg.control.socket_path)
    count = getattr(args, "watch_count", 0) or 0
    console = Console()
    shown = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            try:
                metrics = fetch_metrics(url)
            except OSError as e:
                live.update(f"[red]cannot read {url}: {e}[/] (is the daemon running?)", refresh=True)
            else:
                try:
                    status = admin_request(sock, "status", timeout=1.0).get("status")
                except AdminError:
                    status = None  # not an admin: originals come from the default limits
                live.update(render(snapshot(metrics, status), url), refresh=True)
            shown += 1
            if count and shown >= count:
                return 0
            try:
                time.sleep(args.watch_interval)
            except KeyboardInterrupt:
                return 0
