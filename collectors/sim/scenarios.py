"""Degradation scenarios: injectable faults with a start, a ramp and a magnitude, plus labels.

A scenario file (TOML) holds one or more ``[[event]]`` tables::

    name = "cooling-loss-gpu1"
    [[event]]
    kind = "cooling_loss"   # one of KINDS
    start_s = 600           # simulated seconds after the node starts
    ramp_s = 300            # linear ramp from 0 to full magnitude
    duration_s = 1800       # optional: the fault clears after this long (counters stay)
    magnitude = 1.5         # meaning per kind, see KINDS
    gpus = [1]              # optional: default all GPUs of the node

Every run can write a label file (JSON) naming, per event, its kind, start, end, the
affected series (metric family names) and GPU labels, so detectors can be scored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputuned.collectors.sim.state import read_toml, shipped_names

_T = "gputuned_trainer_"
#: kind -> (meaning of magnitude, default magnitude, affected metric families)
KINDS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "cooling_loss": ("relative rise of the thermal resistance (1.0 doubles it)", 1.0, (
        "gputuned_gpu_temperature_celsius", "gputuned_gpu_memory_temperature_celsius",
        "gputuned_gpu_fan_speed_ratio", "gputuned_gpu_sm_clock_hertz", "gputuned_gpu_clock_event_active",
        "gputuned_gpu_thermal_violation_seconds_total", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "power_brake": ("share of the clock range removed by the brake signal", 1.0, (
        "gputuned_gpu_sm_clock_hertz", "gputuned_gpu_power_watts", "gputuned_gpu_clock_event_active",
        f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "memory_leak": ("bytes leaked per second on each target GPU", 2.0e8, (
        "gputuned_gpu_memory_used_bytes", "gputuned_gpu_memory_free_bytes", f"{_T}oom_total")),
    "ecc_storm": ("corrected ECC errors per second (one row remap per 100)", 20.0, (
        "gputuned_gpu_ecc_errors_total", "gputuned_gpu_remapped_rows", "gputuned_gpu_row_remap_pending",
        "gputuned_gpu_xid_events_total")),
    "pcie_bandwidth_loss": ("share of PCIe bandwidth lost (0.75: x16 trained down to x4)", 0.75, (
        "gputuned_gpu_pcie_receive_bytes_per_second", "gputuned_gpu_pcie_transmit_bytes_per_second",
        "gputuned_gpu_utilization_ratio", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "nvlink_bandwidth_loss": ("share of NVLink bandwidth lost", 0.75, (
        "gputuned_gpu_nvlink_transmit_bytes_total", "gputuned_gpu_nvlink_receive_bytes_total",
        "gputuned_gpu_utilization_ratio", f"{_T}communication_seconds", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "nic_degradation": ("relative rise of peer RTT; inter-node bandwidth divided by (1 + m)", 4.0, (
        "gputuned_peer_rtt_seconds", f"{_T}communication_seconds", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "dataloader_stall": ("relative rise of data-loader time per sample", 20.0, (
        "gputuned_gpu_utilization_ratio", "gputuned_gpu_power_watts", f"{_T}dataloader_wait_seconds",
        f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "straggler": ("relative rise of the target GPU's kernel time", 0.5, (
        "gputuned_gpu_utilization_ratio", "gputuned_gpu_power_watts", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
    "clock_stuck_low": ("share of the clock range lost, no throttle reason reported", 0.7, (
        "gputuned_gpu_sm_clock_hertz", "gputuned_gpu_power_watts", f"{_T}step_time_seconds", f"{_T}samples_per_second")),
}
_NODE_WIDE = {"nic_degradation"}


@dataclass(frozen=True)
class Event:
    """One fault: kind, timing, magnitude and target GPUs (None: all)."""

    kind: str
    start_s: float
    ramp_s: float
    duration_s: float | None
    magnitude: float
    gpus: tuple[int, ...] | None

    def level(self, t: float) -> float:
        """Fraction of the magnitude in force at time t (0 before start and after the end)."""
        if t < self.start_s or (self.duration_s is not None and t >= self.start_s + self.duration_s):
            return 0.0
        if self.ramp_s <= 0:
            return 1.0
        return min(1.0, (t - self.start_s) / self.ramp_s)

    def strength(self, t: float) -> float:
        return self.magnitude * self.level(t)

    def targets(self, gpu_count: int) -> list[int]:
        return list(range(gpu_count)) if self.gpus is None else [g for g in self.gpus if g < gpu_count]


@dataclass(frozen=True)
class Scenario:
    """A named set of events."""

    name: str
    description: str
    events: tuple[Event, ...]

    def labels(self, gpu_count: int, origin_unix: float | None = None) -> dict[str, Any]:
        """The ground-truth label document for a run of this scenario."""
        out = []
        for e in self.events:
            end = None if e.duration_s is None else e.start_s + e.duration_s
            gpus = [] if e.kind in _NODE_WIDE else e.targets(gpu_count)
            if e.kind == "straggler":  # the others wait for it: their utilisation moves too
                gpus = list(range(gpu_count))
            out.append({
                "kind": e.kind, "start_s": e.start_s, "ramp_s": e.ramp_s, "end_s": end,
                "magnitude": e.magnitude, "target_gpus": e.targets(gpu_count),
                "series": list(KINDS[e.kind][2]), "labels": [{"gpu": str(g)} for g in gpus],
            })
        doc: dict[str, Any] = {"scenario": self.name, "time_unit": "seconds since node start", "events": out}
        if origin_unix is not None:
            doc["origin_unix"] = origin_unix
        return doc

    def write_labels(self, path: str | Path, gpu_count: int, origin_unix: float | None = None) -> Path:
        """Write the label file (JSON) and return its path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.labels(gpu_count, origin_unix), indent=1) + "\n")
        tmp.replace(p)
        return p


def _number(ev: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    if key not in ev:
        if default is None:
            raise ValueError(f"{where}: missing field {key!r}")
        return default
    v = ev[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}: field {key!r} must be a number >= 0, got {v!r}")
    return float(v)


_EVENT_KEYS = {"kind", "start_s", "ramp_s", "duration_s", "magnitude", "gpus"}


def parse_scenario(raw: dict[str, Any], where: str) -> Scenario:
    """Validate a scenario mapping; errors name the file, event and field."""
    bad = sorted(set(raw) - {"name", "description", "event"})
    if bad:
        raise ValueError(f"{where}: unknown field {bad[0]!r}")
    events_raw = raw.get("event")
    if not isinstance(events_raw, list) or not events_raw:
        raise ValueError(f"{where}: field 'event' must be a non-empty array of tables ([[event]])")
    events = []
    for i, ev in enumerate(events_raw):
        at = f"{where}: event[{i}]"
        if not isinstance(ev, dict):
            raise ValueError(f"{at}: must be a table")
        unknown = sorted(set(ev) - _EVENT_KEYS)
        if unknown:
            raise ValueError(f"{at}: unknown field {unknown[0]!r}")
        kind = ev.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{at}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        gpus = ev.get("gpus")
        if gpus is not None and (
            not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus)
        ):
            raise ValueError(f"{at}: field 'gpus' must be a list of GPU indices")
        duration = ev.get("duration_s")
        events.append(Event(
            kind=kind, start_s=_number(ev, "start_s", at), ramp_s=_number(ev, "ramp_s", at, 0.0),
            duration_s=None if duration is None else _number(ev, "duration_s", at),
            magnitude=_number(ev, "magnitude", at, KINDS[kind][1]),
            gpus=None if gpus is None else tuple(gpus),
        ))
    name = raw.get("name", Path(where).stem)
    if not isinstance(name, str):
        raise ValueError(f"{where}: field 'name' must be a string")
    return Scenario(name, str(raw.get("description", "")), tuple(events))


def available_scenarios() -> list[str]:
    """Scenario names shipped with the package."""
    return shipped_names("scenarios")


def load_scenario(name: str | Path) -> Scenario:
    """Load a scenario TOML by path, or a shipped one by name."""
    raw, where = read_toml(name, "scenarios", "scenario")
    return parse_scenario(raw, where)
