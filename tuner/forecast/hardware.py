"""Hardware alerts from collector samples: thermal slowdown, uncorrectable ECC, XID events.

* thermal: a thermal clock-event reason active; clears after ``thermal_clear_s`` without one;
* ecc: the uncorrected ECC counter grew, a row remap is pending or failed, or the corrected
  counter grew by ``corrected_burst`` or more within ``burst_window_s`` (a storm of corrected
  errors comes before the uncorrectable ones: a failing memory row);
* xid: the XID counter grew.
ECC and XID alerts clear ``hold_s`` after the last new event (and no pending remap).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from gputuned.collectors.families import Labels, Sample

logger = logging.getLogger(__name__)

GPU_LABELS = ("gpu", "uuid", "model", "pci_bus_id")
THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})
CLOCK_EVENT = "gputuned_gpu_clock_event_active"
ECC = "gputuned_gpu_ecc_errors_total"
REMAP_PENDING = "gputuned_gpu_row_remap_pending"
REMAP_FAILED = "gputuned_gpu_row_remap_failed"
XID = "gputuned_gpu_xid_events_total"
#: Families the watch reads; callers may pass only these.
FAMILIES = frozenset({CLOCK_EVENT, ECC, REMAP_PENDING, REMAP_FAILED, XID})


def gpu_labels(labels: Labels) -> Labels:
    """The identifying GPU labels of a sample's labels."""
    return tuple((k, v) for k, v in labels if k in GPU_LABELS)


@dataclass
class HardwareAlert:
    """State of one hardware alert of one GPU."""

    kind: str
    labels: Labels
    active: bool = False
    since: float = 0.0
    last_event: float = 0.0
    message: str = ""


class HardwareWatch:
    """Turns per-tick hardware samples into raised and cleared hardware alerts."""

    def __init__(
        self, hold_s: float, thermal_clear_s: float, corrected_burst: float = 10.0, burst_window_s: float = 60.0
    ) -> None:
        self.hold_s = hold_s
        self.thermal_clear_s = thermal_clear_s
        self.corrected_burst = corrected_burst
        self.burst_window_s = burst_window_s
        self.alerts: dict[tuple[str, Labels], HardwareAlert] = {}
        self._counters: dict[tuple[str, Labels], float] = {}
        self._corrected: dict[Labels, deque[tuple[float, float]]] = {}

    def observe(self, now: float, samples: list[Sample]) -> list[tuple[str, HardwareAlert]]:
        """Fold in one tick of samples; return ``(transition, alert)`` for each change."""
        events: dict[tuple[str, Labels], str] = {}
        pending: set[Labels] = set()
        for family, labels, value in samples:
            if family == CLOCK_EVENT:
                if value >= 1.0 and labels[-1][1] in THERMAL_REASONS and labels[-1][0] == "reason":
                    events[("thermal", gpu_labels(labels))] = f"clock event {labels[-1][1]}"
            elif family in (ECC, XID):
                if family == ECC and dict(labels).get("type") != "uncorrected":
                    if dict(labels).get("type") == "corrected":
                        self._corrected_burst(now, labels, value, events)
                    continue
                key = (family, labels)
                before = self._counters.get(key)
                self._counters[key] = value
                if before is not None and value > before:
                    kind = "ecc" if family == ECC else "xid"
                    what = "uncorrected ECC errors" if kind == "ecc" else f"XID {dict(labels).get('xid', '?')} events"
                    events[(kind, gpu_labels(labels))] = f"{value - before:g} new {what}"
            elif family in (REMAP_PENDING, REMAP_FAILED) and value >= 1.0:
                g = gpu_labels(labels)
                pending.add(g)
                events[("ecc", g)] = "row remap " + ("pending" if family == REMAP_PENDING else "failed")
        out: list[tuple[str, HardwareAlert]] = []
        for key, message in events.items():
            a = self.alerts.setdefault(key, HardwareAlert(key[0], key[1]))
            a.last_event, a.message = now, message
            if not a.active:
                a.active, a.since = True, now
                out.append(("raised", a))
        for a in self.alerts.values():
            if not a.active or (a.kind, a.labels) in events:
                continue
            hold = self.thermal_clear_s if a.kind == "thermal" else self.hold_s
            if now - a.last_event >= hold and a.labels not in pending:
                a.active = False
                out.append(("cleared", a))
        return out

    def _corrected_burst(self, now: float, labels: Labels, value: float, events: dict) -> None:
        """Note an ``ecc`` event when the corrected counter grew by the burst within the window."""
        hist = self._corrected.setdefault(labels, deque())
        hist.append((now, value))
        while len(hist) > 1 and hist[1][0] <= now - self.burst_window_s:
            hist.popleft()
        grown = value - hist[0][1]
        if grown >= self.corrected_burst:
            g = gpu_labels(labels)
            events.setdefault(("ecc", g), f"{grown:g} corrected ECC errors in {now - hist[0][0]:g} s")
