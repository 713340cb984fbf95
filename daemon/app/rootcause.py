"""Root cause on trainer alerts: ask the job for a capture on every rank, name what the step waits for.

An alert on a trainer series (throughput, step, communication or data-loader time) asks that
job's leader for a capture (a ``profile_steps`` decision). Every rank of the job times its
steps and runs torch.profiler for a couple of seconds, keeps its trace file, and the leader
answers with every rank's timing; :func:`gputuned.trainer_plugin.rootcause.analyse` splits the
step into compute, data-loader wait, communication and waiting for a straggler, and names the
cause: the straggling rank and its GPU, the data loader, communication, or the tuner's own
recent move (the actuator's :class:`~gputuned.intent.Change` records, origin ``tuner``).

At most one capture per job is in flight. A job is asked again only after ``cooldown_s``,
except when the alert follows the tuner's own move: such a capture does not use up the
cooldown (so the real fault that comes later is still captured), and is asked at most every
``tuner_gap_s``. Nor does a capture that found nothing notable (no wait named, no tuner move):
it explained nothing, so the next alert, perhaps the real fault starting, is captured at once
(an alert that came while it was in flight is taken up when it is in). The last summary per job is in ``gputuned status`` and in the
``gputuned_root_cause_*`` series.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from gputuned.collectors.families import Sample, declare
from gputuned.daemon.core.store import Store
from gputuned.intent import Change
from gputuned.trainer_plugin.rootcause import PARTS, analyse, describe_shares, where

logger = logging.getLogger(__name__)

SHARE = declare("gputuned_root_cause_share", "gauge",
                "Share of a job's step time by part in its last root-cause capture (the parts sum to 1).")
CAUSE = declare("gputuned_root_cause_info", "gauge",
                "1 for the cause a job's last root-cause capture measured, with the straggling rank and GPU if any.")
CAPTURES = declare("gputuned_root_cause_captures_total", "counter",
                   "Root-cause captures asked of jobs, by trigger (alert, or tuner: after the tuner's own move).")

TRAINER_PREFIX = "gputuned_trainer_"
KEEP_CHANGES = 256
#: a capture not answered within this is forgotten (the job stopped, or refused it)
PENDING_S = 120.0


class RootCause:
    """The forecaster's alert hook and the actuator's change hook; a daemon component publishing summaries."""

    name = "rootcause"

    def __init__(self, control: Any, store: Store | None = None, steps: int = 20, cooldown_s: float = 600.0,
                 tuner_window_s: float = 60.0, tuner_gap_s: float = 60.0) -> None:
        self.control, self.store, self.steps = control, store, steps
        self.cooldown_s, self.tuner_window_s, self.tuner_gap_s = cooldown_s, tuner_window_s, tuner_gap_s
        self._lock = threading.Lock()
        self._changes: collections.deque[Change] = collections.deque(maxlen=KEEP_CHANGES)
        self._asked: dict[str, float] = {}  # job -> when a capture that uses the cooldown was asked
        self._asked_tuner: dict[str, float] = {}  # job -> when a tuner-caused capture was asked
        self._pending: dict[str, dict[str, Any]] = {}  # decision id -> what asked for it
        self._deferred: dict[str, Any] = {}  # job -> the latest alert that came while its capture was in flight
        self.latest: dict[str, dict[str, Any]] = {}  # job -> its last analysed summary
        self.captures: collections.Counter[str] = collections.Counter()

    # -- hooks -----------------------------------------------------------------------------
    def on_change(self, change: Change) -> None:
        """Remember an applied knob change (the actuator's hook; any thread)."""
        if change.origin == "tuner":
            with self._lock:
                self._changes.append(change)

    def tuner_move(self, job: str, t: float) -> Change | None:
        """The tuner's latest move that may explain a job's change at ``t`` (its GPUs' knobs, or the job's)."""
        with self._lock:
            moves = list(self._changes)
        for c in reversed(moves):
            if c.t <= t <= c.t + max(c.settle_s, self.tuner_window_s) and (c.job in (None, job) or c.gpu is not None):
                return c
        return None

    def __call__(self, alert: Any) -> None:
        """On an alert on a trainer series, ask its job for a capture (unless one is due later)."""
        if not str(alert.series).startswith(TRAINER_PREFIX):
            return
        job = dict(alert.labels).get("job")
        if not job:
            return
        if any(p["job"] == job for p in self._pending.values()):
            self._deferred[job] = alert  # judged once that capture is in: asked if it found nothing
            return
        move = self.tuner_move(job, alert.since)
        trigger = "tuner" if move is not None else "alert"
        last = (self._asked_tuner if move is not None else self._asked).get(job, float("-inf"))
        if alert.since - last < (self.tuner_gap_s if move is not None else self.cooldown_s):
            return
        try:
            ident = self.control.send_decision(job, {"profile_steps": self.steps})
        except (LookupError, ValueError) as e:
            logger.info("alert on %s: no capture from job %s: %s", alert.series, job, e)
            return
        (self._asked_tuner if move is not None else self._asked)[job] = alert.since
        self.captures[trigger] += 1
        self._pending[ident] = {"job": job, "t": alert.since, "trigger": trigger,
                                "alert": f"{alert.kind} on {alert.series} {dict(alert.labels)} ({alert.message})",
                                "tuner_move": move.to_dict() if move is not None else None,
                                "reports_suspect": self._suspect(job)}
        logger.info("alert on %s: capture %s asked of job %s (%s)", alert.series, ident, job, trigger)

    def _suspect(self, job: str) -> int | None:
        """The rank its latest reports show busiest (step time less communication wait), if any reported."""
        jobs = getattr(self.control, "jobs", None)
        latest = jobs.latest(job) if jobs is not None else {}
        busy = {r: s.get("step_time_s", 0.0) - s.get("comm_time_s", 0.0) for r, s in latest.items() if s}
        return max(busy, key=lambda r: busy[r]) if busy else None

    # -- component -------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to start: the hooks do the asking."""

    def tick(self, now: float) -> None:
        """Take the answers that arrived, forget requests never answered; publish the summaries."""
        self.collect()
        for ident in [i for i, p in self._pending.items() if now - p["t"] > PENDING_S]:
            logger.info("capture %s of job %s: no answer within %.0f s", ident, self._pending.pop(ident)["job"], PENDING_S)
        if self.store is not None:
            self.store.publish(self.name, now, self.samples())

    def stop(self) -> None:
        """Nothing to stop."""

    def collect(self) -> None:
        """Analyse the captures answered since the last call and log each."""
        results = self.control.profile_results
        for ident in [i for i in self._pending if i in results]:
            asked = self._pending.pop(ident)
            out = analyse(results[ident], asked["tuner_move"])
            out.update(id=ident, alert=asked["alert"], trigger=asked["trigger"], alert_t=asked["t"],
                       reports_suspect=asked["reports_suspect"])
            self.latest[asked["job"]] = out
            if out["cause"] == "compute" and asked["trigger"] == "alert":
                self._asked.pop(asked["job"], None)  # nothing notable found: the cooldown is not used up
            if (later := self._deferred.pop(asked["job"], None)) is not None:
                self(later)
            logger.warning("root cause for %s, job %s: %s (%s); %s", asked["alert"], asked["job"], cause_text(out),
                           describe_shares(out), "; ".join(out.get("suggestions", [])) or "no suggestion")

    def status(self) -> dict[str, Any]:
        """The last summary per job and the captures asked, for ``gputuned status``."""
        return {"captures": dict(self.captures), "pending": len(self._pending),
                "jobs": {job: _brief(s) for job, s in sorted(self.latest.items())}}

    def samples(self) -> list[Sample]:
        """Shares and cause of each job's last capture, and the captures asked."""
        out: list[Sample] = [(CAPTURES, (("trigger", t),), float(self.captures[t])) for t in ("alert", "tuner")]
        for job, s in sorted(self.latest.items()):
            for part in PARTS:
                out.append((SHARE, (("job", job), ("part", part)), float(s["shares"][part])))
            slow = s.get("straggler") or {}
            out.append((CAUSE, (("job", job), ("cause", s["cause"]), ("rank", str(slow.get("rank", ""))),
                                ("gpu", str(slow.get("gpu", "") if slow.get("gpu") is not None else ""))), 1.0))
        return out


def cause_text(s: dict[str, Any]) -> str:
    """The measured cause in words."""
    cause = s.get("cause", "compute")
    if cause == "straggler_wait" and s.get("straggler"):
        return f"straggler {where(s['straggler'])}"
    return {"data_loader": "data loader", "communication": "communication", "tuner": "the tuner's own move",
            "compute": "compute (no wait found)"}.get(cause, cause)


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    """What status shows of one summary."""
    return {"t": s.get("alert_t"), "alert": s.get("alert"), "trigger": s.get("trigger"), "cause": s.get("cause"),
            "cause_text": cause_text(s), "straggler": s.get("straggler"), "shares": s.get("shares"),
            "suggestions": s.get("suggestions", []), "traces": s.get("traces", {}), "top_ops": s.get("top_ops", [])[:5],
            "reports_suspect": s.get("reports_suspect")}


def root_cause_status(components: list[Any]) -> dict[str, Any] | None:
    """The root-cause section of ``gputuned status`` from the daemon's components (None when off)."""
    rc = next((c for c in components if isinstance(c, RootCause)), None)
    return rc.status() if rc is not None else None
