"""What ``gputuned top`` shows, gathered: the daemon's /metrics and its admin status, per poll.

:func:`build_state` turns one scrape (and the status reply, when the control socket answers)
into a :class:`TopState`; :class:`History` keeps the last minutes of a few series per GPU for
the sparklines; :class:`Source` polls a running daemon. Nothing here draws.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gputuned.collectors import families as F
from gputuned.collectors import host as H
from gputuned.daemon.app import tuner_families
from gputuned.daemon.commands.status import AdminError, admin_request
from gputuned.daemon.commands.top_tables import changed_knobs, short_model
from gputuned.daemon.control.reports import STAT_FAMILIES as TRAINER
from gputuned.tuner.decision import guard
from gputuned.tuner.forecast.service import ALERT_ACTIVE

Metric = tuple[str, dict[str, str], float]
HISTORY_POINTS = 60


def fetch_metrics(url: str, timeout: float = 3.0) -> list[Metric]:
    """Every sample served at ``url`` as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a /metrics URL the user gave
        text = resp.read().decode()
    return [(s.name, dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text) for s in fam.samples]


@dataclass
class GpuView:
    """One GPU's latest readings, in display units (W, MHz, bytes, °C, ratios 0-1)."""

    index: int
    model: str = "?"
    util: float | None = None
    mem_used: float | None = None
    mem_total: float | None = None
    power_w: float | None = None
    limit_w: float | None = None
    original_w: float | None = None
    sm_mhz: float | None = None
    sm_max_mhz: float | None = None
    mem_mhz: float | None = None
    locks: str = ""
    temp_c: float | None = None
    fan: float | None = None
    ecc_corrected: float = 0.0
    ecc_uncorrected: float = 0.0
    xid: float = 0.0
    pcie_bps: float | None = None
    nvlink_bytes: float | None = None
    alerts: int = 0


@dataclass
class JobView:
    """A training job as rank 0 reports it, with the tuner's energy figures."""

    name: str
    ranks: list[int] = field(default_factory=list)
    samples_per_s: float | None = None
    goodput: float | None = None
    batch_size: float | None = None
    energy_per_sample_j: float | None = None
    reference_j: float | None = None


@dataclass
class TunerView:
    """The tuner's state: on or not, paused, its moves and the guard's refusals."""

    on: bool = False
    paused: bool = False
    actions: dict[str, float] = field(default_factory=dict)
    moves: dict[str, float] = field(default_factory=dict)
    interventions: dict[str, float] = field(default_factory=dict)
    rollbacks: float = 0.0
    last_action: float = 0.0
    changed: list[str] = field(default_factory=list)


@dataclass
class TopState:
    """One frame's data."""

    source: str
    time: float
    gpus: list[GpuView] = field(default_factory=list)
    jobs: list[JobView] = field(default_factory=list)
    tuner: TunerView = field(default_factory=TunerView)
    alerts: list[str] = field(default_factory=list)
    host: dict[str, float] = field(default_factory=dict)
    history: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    node: str = ""
    error: str = ""
    admin: bool = False


def _index(labels: dict[str, str]) -> int:
    g = labels.get("gpu", "")
    return int(g) if g.isdigit() else -1


def _gpus(by: dict[str, list[tuple[dict[str, str], float]]], status: dict[str, Any] | None) -> list[GpuView]:
    views: dict[int, GpuView] = {}

    def put(name: str, attr: str, scale: float = 1.0, add: bool = False) -> None:
        for lab, v in by.get(name, []):
            g = views.setdefault(_index(lab), GpuView(_index(lab)))
            if lab.get("model"):
                g.model = lab["model"]
            setattr(g, attr, (getattr(g, attr) or 0.0) + v * scale if add else v * scale)

    for name, attr, scale in ((F.GPU_POWER, "power_w", 1.0), (F.GPU_UTIL, "util", 1.0), (F.GPU_MEM_USED, "mem_used", 1.0),
                              (F.GPU_MEM_TOTAL, "mem_total", 1.0), (F.GPU_POWER_LIMIT, "limit_w", 1.0),
                              (F.GPU_POWER_LIMIT_DEFAULT, "original_w", 1.0), (F.GPU_SM_CLOCK, "sm_mhz", 1e-6),
                              (F.GPU_SM_CLOCK_MAX, "sm_max_mhz", 1e-6), (F.GPU_MEM_CLOCK, "mem_mhz", 1e-6),
                              (F.GPU_TEMP, "temp_c", 1.0), (F.GPU_FAN, "fan", 1.0)):
        put(name, attr, scale)
    for name, attr in ((F.GPU_PCIE_TX, "pcie_bps"), (F.GPU_PCIE_RX, "pcie_bps"), (F.GPU_NVLINK_TX, "nvlink_bytes"),
                       (F.GPU_NVLINK_RX, "nvlink_bytes"), (F.GPU_XID, "xid")):
        put(name, attr, add=True)
    for lab, v in by.get(F.GPU_ECC, []):
        g = views.setdefault(_index(lab), GpuView(_index(lab)))
        if lab.get("type") == "uncorrected":
            g.ecc_uncorrected += v
        else:
            g.ecc_corrected += v
    for row in (status or {}).get("gpus", []):
        g = views.setdefault(int(row["index"]), GpuView(int(row["index"])))
        g.model = row.get("model") or g.model
        orig = (row.get("originals") or {}).get("power_limit")
        if orig:
            g.original_w = orig / 1000.0
        locks = [f"{k.replace('locked_', '').replace('_clocks', '')} {v[0]}-{v[1]}"
                 for k, v in row.get("current", {}).items() if k.startswith("locked_") and isinstance(v, list)]
        g.locks = ", ".join(locks)
    views.pop(-1, None)
    return [views[k] for k in sorted(views)]


def _jobs(by: dict[str, list[tuple[dict[str, str], float]]], status: dict[str, Any] | None) -> list[JobView]:
    jobs: dict[str, JobView] = {}
    for name, ranks in ((status or {}).get("jobs") or {}).items():
        jobs[name] = JobView(name, sorted(int(r) for r in ranks))
    for key, attr in (("samples_per_s", "samples_per_s"), ("goodput", "goodput"), ("batch_size", "batch_size")):
        for lab, v in by.get(TRAINER[key], []):
            if lab.get("rank") == "0":
                setattr(jobs.setdefault(lab.get("job", "?"), JobView(lab.get("job", "?"))), attr, v)
    for fam, attr in ((tuner_families.EPS, "energy_per_sample_j"), (tuner_families.EPS_REF, "reference_j")):
        for lab, v in by.get(fam, []):
            setattr(jobs.setdefault(lab.get("job", "?"), JobView(lab.get("job", "?"))), attr, v)
    total_power = sum(v for _, v in by.get(F.GPU_POWER, []))
    for j in jobs.values():  # no tuner figure: board power over throughput, right now
        if j.energy_per_sample_j is None and j.samples_per_s:
            j.energy_per_sample_j = total_power / j.samples_per_s
    return [jobs[k] for k in sorted(jobs)]


def _tuner(by: dict[str, list[tuple[dict[str, str], float]]], status: dict[str, Any] | None,
           pause_file: Path | None) -> TunerView:
    paused = any(v > 0.5 for _, v in by.get(guard.PAUSED, [])) or bool((status or {}).get("tuner", {}).get("paused"))
    if pause_file is not None and status is not None:
        paused = paused or pause_file.exists()
    return TunerView(
        on=bool(by.get(guard.PAUSED)) or "tuner" in (status or {}).get("components", []),
        paused=paused,
        actions={lab.get("knob", "?"): v for lab, v in by.get(guard.ACTIONS, [])},
        moves={lab.get("move", lab.get("action", "?")): v for lab, v in by.get(tuner_families.DECISIONS, []) if v > 0},
        interventions={lab.get("reason", "?"): v for lab, v in by.get(guard.INTERVENTIONS, []) if v > 0},
        rollbacks=sum(v for _, v in by.get(guard.ROLLBACKS, [])),
        last_action=max((v for _, v in by.get(tuner_families.LAST_ACTION, [])), default=0.0),
        changed=changed_knobs(status) if status else [],
    )


def alert_text(labels: dict[str, str]) -> str:
    """One active alert as a sentence: kind, GPU and model, series."""
    where = f" on gpu {labels['gpu']} ({short_model(labels.get('model', ''))})" if labels.get("gpu") else ""
    series = f": series {labels['series']}" if labels.get("series") else ""
    extra = ", ".join(f"{k} {v}" for k, v in sorted(labels.items())
                      if k not in ("alert", "gpu", "model", "series", "uuid", "pci_bus_id") and v)
    bus = f" at PCI {labels['pci_bus_id']}" if labels.get("pci_bus_id") else ""
    return f"{labels.get('alert', '?')}{where}{bus}{series}{' (' + extra + ')' if extra else ''}"


def build_state(metrics: list[Metric], status: dict[str, Any] | None, source: str, now: float | None = None,
                pause_file: Path | None = None) -> TopState:
    """One frame from a scrape of /metrics and (when there is one) the admin status reply."""
    by: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in metrics:
        by[name].append((labels, value))
    alerts = [lab for lab, v in by.get(ALERT_ACTIVE, []) if v > 0.5]
    gpus = _gpus(by, status)
    for g in gpus:
        g.alerts = sum(1 for a in alerts if a.get("gpu") == str(g.index))
    host = {key: v for key, name in (("mem_used", H.MEM_USED), ("mem_total", H.MEM_TOTAL), ("load1", H.LOAD1),
                                     ("cpus", H.CPU_COUNT)) for _, v in by.get(name, [])}
    return TopState(source=source, time=time.time() if now is None else now, gpus=gpus, jobs=_jobs(by, status),
                    tuner=_tuner(by, status, pause_file), alerts=[alert_text(a) for a in alerts], host=host,
                    node=(status or {}).get("node", ""), admin=status is not None)


class History:
    """The last :data:`HISTORY_POINTS` readings of utilisation, power and temperature per GPU."""

    KEYS = ("util", "power_w", "temp_c")

    def __init__(self, points: int = HISTORY_POINTS) -> None:
        self.series: dict[int, dict[str, deque[float]]] = {}
        self.points = points

    def add(self, state: TopState) -> TopState:
        """Append the frame's readings and attach the series to it."""
        for g in state.gpus:
            per = self.series.setdefault(g.index, {k: deque(maxlen=self.points) for k in self.KEYS})
            for key in self.KEYS:
                value = getattr(g, key)
                if value is not None:
                    per[key].append(float(value))
        state.history = {i: {k: list(d) for k, d in per.items()} for i, per in self.series.items()}
        return state


class Source:
    """Polls a daemon: /metrics at ``url``, and its admin status over ``socket`` when it answers."""

    def __init__(self, url: str, socket: str | None, pause_file: Path | None = None) -> None:
        self.url, self.socket, self.pause_file = url, socket, pause_file
        self.history = History()

    def poll(self) -> TopState:
        """One frame; on a failed scrape, a frame that says why."""
        status = None
        if self.socket:
            try:
                status = admin_request(self.socket, "status", timeout=1.0).get("status")
            except AdminError:
                status = None  # remote, or not allowed: originals from the default limits
        try:
            metrics = fetch_metrics(self.url)
        except OSError as e:
            return TopState(source=self.url, time=time.time(), error=f"cannot read {self.url}: {e} (is the daemon running?)")
        return self.history.add(build_state(metrics, status, self.url, pause_file=self.pause_file))
