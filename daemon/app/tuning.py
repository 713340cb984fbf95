"""The live tuner: a daemon component closing the loop from the store to the GPUs and the job.

Every ``interval_s`` it measures the last interval from the store (GPU energy counters, power,
clocks, limits; the job leader's reports: samples, goodput, batch size), builds the
observation (:class:`gputuned.tuner.decision.choosers.LiveObserver`, the one
:class:`gputuned.tuner.sim_env.SimNodeEnv` trains on) against a reference interval measured at
the job's own settings, asks the chooser (the learned policy, or the climber) for a move (power
limit one step of 5% of the range down/keep/up on every GPU, global batch size
halve/keep/double), passes each knob value through the :class:`SafetyGuard`, applies power
limits through the :class:`Actuator` and batch sizes as control-socket decisions, and asks the
guard to judge the previous move (rollback). With more than one rank reporting compute times,
the Perseus controller (:mod:`gputuned.tuner.decision.perseus`) lowers the limits of GPUs with slack
below the job-wide limit; the critical GPU keeps it. Every action, refusal and rollback becomes
an event (``on_event``) and a sample.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gputuned.collectors import families as F
from gputuned.collectors.device import ClockEventReason
from gputuned.collectors.families import Labels, Sample, declare
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.choosers import (
    Chooser,
    LiveObserver,
    busy_power,
    make_chooser,
    power_target,
    split,
)
from gputuned.tuner.decision.guard import DEFAULT_PAUSE_FILE, GuardConfig, SafetyGuard
from gputuned.tuner.decision.perseus import RankTiming, SlackConfig, plan_power_limits

logger = logging.getLogger(__name__)

OBJECTIVES = ("energy_slowdown", "energy", "throughput", "cost")
EPS = declare("gputuned_tuner_energy_per_sample_joules", "gauge",
              "GPU energy per effective (goodput) sample over the tuner's last interval.")
EPS_REF = declare("gputuned_tuner_reference_energy_per_sample_joules", "gauge",
                  "Energy per effective sample at the job's own settings (the tuner's reference interval).")
GOODPUT_RATIO = declare("gputuned_tuner_goodput_ratio", "gauge", "Goodput over the last interval / the reference interval's.")
LAST_ACTION = declare("gputuned_tuner_last_action_timestamp_seconds", "gauge", "When the tuner last changed a knob.")
DECISIONS = declare("gputuned_tuner_decisions_total", "counter", "Tuner decision intervals run, by chosen move.")
TRAINER_LABEL_RANK = "0"
CHOOSERS = ("learned", "climber")
POWER_CAP = int(ClockEventReason.SW_POWER_CAP)


@dataclass
class TuningConfig:
    """What the live tuner optimises and how often it acts."""

    objective: str = "energy_slowdown"
    interval_s: float = 20.0
    max_slowdown: float = 0.03
    job: str | None = None  # None: the first job with a connected leader
    # "learned" (the packaged numpy policy), "climber", or a policy file (.npz); None: ``chooser`` decides
    policy: str | Path | None = None
    chooser: str = "auto"  # auto (learned if the packaged policy loads and is the default), learned, climber
    perseus: bool = True  # lower GPUs with slack when several ranks report compute times
    tune_power: bool = True
    tune_batch: bool = True
    pause_file: Path | None = DEFAULT_PAUSE_FILE  # the kill switch `gputuned tuner pause` sets
    eta: float = 0.5  # weight of energy in the ``cost`` objective (Zeus)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"tuner.objective: unknown {self.objective!r} ({', '.join(OBJECTIVES)})")
        if not self.interval_s > 0:
            raise ValueError(f"tuner.interval_s: must be positive, got {self.interval_s}")
        if not 0.0 <= self.max_slowdown < 1.0:
            raise ValueError(f"tuner.max_slowdown: must be in [0, 1), got {self.max_slowdown}")
        if self.chooser not in ("auto", *CHOOSERS):
            raise ValueError(f"tuner.chooser: unknown {self.chooser!r} (auto, {', '.join(CHOOSERS)})")
        if isinstance(self.policy, str) and not self.policy.endswith(".npz") and self.policy not in CHOOSERS:
            raise ValueError(f"tuner.policy: expected \"learned\", \"climber\" or a .npz file, got {self.policy!r}")

    def chooser_kind(self) -> tuple[str, Path | None]:
        """(auto | learned | climber, policy file or None) from ``policy`` and ``chooser``."""
        if self.policy is None:
            return self.chooser, None
        if str(self.policy) in CHOOSERS:
            return str(self.policy), None
        return "learned", Path(self.policy)


class BatchDecider(Protocol):
    """Where batch-size decisions go (the control server in the daemon)."""

    def send_decision(self, job: str, payload: dict[str, Any]) -> str: ...

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None: ...

    def connected_jobs(self) -> dict[str, list[int]]: ...


class PowerActuator(Protocol):
    """What the tuner needs of :class:`gputuned.daemon.actuation.actuator.Actuator`."""

    def set_power_limit(self, gpu: int, watts: float) -> Any: ...

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]: ...


@dataclass
class Interval:
    """One decision interval as measured from the store."""

    energy_j: float
    samples: float
    seconds: float
    goodput: float
    power_w: float
    sm_ratio: float
    capped: bool
    batch: int
    busy_w: float  # the most any GPU draws while busy (:func:`busy_power`)

    @property
    def throughput(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def eff(self) -> float:
        return min(1.5, self.goodput / self.throughput) if self.throughput > 0 else 1.0

    @property
    def eps(self) -> float:
        """Energy per effective sample (J)."""
        good = self.goodput * self.seconds
        return self.energy_j / good if good > 0 else math.inf


@dataclass
class _Pending:
    ident: str
    batch: int
    previous: int
    sent_at: float


@dataclass
class _GPU:
    index: int
    labels: Labels
    lo_w: float
    hi_w: float
    max_sm_hz: float


@dataclass
class _Run:
    """What the tuner knows of the job it tunes."""

    job: str
    b0: int = 0
    ref: Interval | None = None
    limit_w: float = 0.0
    t: int = 0
    oom: bool = False
    mark_t: float = 0.0
    mark_energy: float = 0.0
    mark_samples: float = 0.0
    moves: dict[str, int] = field(default_factory=dict)


class JsonlEvents:
    """An ``on_event`` sink appending one JSON line per tuner event (``gputuned report`` reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: dict[str, Any]) -> None:
        import json

        with self.path.open("a") as f:
            f.write(json.dumps(event, default=float) + "\n")


class TuningComponent:
    """Daemon component running the tuner live (see module doc)."""

    name = "tuner"

    def __init__(
        self, store: Store, actuator: PowerActuator, decider: BatchDecider | None, gpus: list[int],
        config: TuningConfig | None = None, *, chooser: Chooser | None = None, guard: SafetyGuard | None = None,
        alerts: Callable[[], list[str]] | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.actuator = actuator
        self.decider = decider
        self.gpu_indices = list(gpus)
        self.cfg = config or TuningConfig()
        self._own_chooser = chooser is None
        self.chooser = chooser or self._new_chooser()
        # a batch size counts as changed when the job acks it, a tick or so after the decision
        half = self.cfg.interval_s * 0.5
        self.guard = guard or SafetyGuard(GuardConfig(pause_file=self.cfg.pause_file, min_interval_s={
            "power_limit": half, "sm_clock": half, "batch_size": half}, settle_s=half), alerts=alerts)
        self.on_event = on_event or (lambda e: None)
        self._mono = monotonic
        self._gpus: list[_GPU] = []
        self._run: _Run | None = None
        self._pending: _Pending | None = None
        self._last: Interval | None = None
        self._last_action_t = 0.0
        self.decisions: dict[str, int] = {}
        self.observer = self._new_observer()
        self._slack_w: dict[int, float] = {}  # Perseus: watts below the job-wide limit, per GPU
        self._batch_max: int | None = None  # largest batch the job accepted before refusing a larger one

    # -- component ------------------------------------------------------------------
    def start(self) -> None:
        logger.info("tuner: objective %s every %g s, chooser %s", self.cfg.objective, self.cfg.interval_s, self.chooser.name)

    def stop(self) -> None:
        """Give the job its own batch size back (the actuator restores the GPUs)."""
        run = self._run
        if run is None or self.decider is None or not run.b0 or self._last is None or self._last.batch == run.b0:
            return
        try:
            ident = self.decider.send_decision(run.job, {"batch_size": run.b0})
        except (LookupError, ValueError) as e:
            logger.info("tuner: batch size not restored: %s", e)
            return
        self._emit(self._last_t, "restore", "batch_size", "job", run.b0, ident=ident)

    def tick(self, now: float) -> None:
        self._last_t = now
        if not self._gpus:
            self._discover()
        self._check_pending(now)
        run = self._run
        if run is not None and self._job_gone(run):
            self._emit(now, "job_gone", "batch_size", "job", 0, job=run.job)
            restore = getattr(self.actuator, "restore_gpu", None)
            if restore is not None and run.limit_w and self.cfg.tune_power:  # no job left to tune for
                for g in self._gpus:
                    restore(g.index)
                self._emit(now, "restore", "power_limit", "all", 0)
            self._run = run = self._last = self._pending = None
        if run is None:
            self._start_run(now)
        elif now - run.mark_t >= self.cfg.interval_s - 1e-6:
            self._decide(now, run)
        self.store.publish(self.name, now, self.samples())

    _last_t = 0.0

    # -- reading the store ------------------------------------------------------------
    def _discover(self) -> None:
        for labels in self.store.series(F.GPU_POWER_LIMIT):
            idx = int(dict(labels).get("gpu", -1))
            if idx not in self.gpu_indices:
                continue
            lo = self.store.value(F.GPU_POWER_LIMIT_MIN, labels) or 0.0
            hi = self.store.value(F.GPU_POWER_LIMIT_MAX, labels) or 0.0
            sm = self.store.value(F.GPU_SM_CLOCK_MAX, labels) or 1.0
            b = self.actuator.bounds(idx).get("power_limit")
            if b is not None:  # config bounds intersected with NVML's
                lo, hi = max(lo, b[0] / 1000.0), min(hi, b[1] / 1000.0)
            self._gpus.append(_GPU(idx, labels, lo, hi, sm))
        self._gpus.sort(key=lambda g: g.index)

    def _job(self) -> str | None:
        if self.cfg.job is not None:
            return self.cfg.job
        jobs = self.decider.connected_jobs() if self.decider is not None else {}
        for job, ranks in jobs.items():
            if 0 in ranks:
                return job
        return None

    def _trainer(self, family: str, job: str) -> float | None:
        return self.store.value(family, (("job", job), ("rank", TRAINER_LABEL_RANK)))

    def _totals(self, job: str) -> tuple[float, float] | None:
        energy = [self.store.value(F.GPU_ENERGY, g.labels) for g in self._gpus]
        samples = self._trainer("gputuned_trainer_samples_total", job)
        if samples is None or not energy or any(e is None for e in energy):
            return None
        return float(sum(e for e in energy if e is not None)), samples

    def _measure(self, now: float, run: _Run) -> Interval | None:
        tot = self._totals(run.job)
        if tot is None:
            return None
        seconds = now - run.mark_t
        tps: list[float] = []
        gps: list[float] = []
        for name, out in (("gputuned_trainer_samples_per_second", tps), ("gputuned_trainer_goodput_samples_per_second", gps)):
            _, vs = self.store.window(name, (("job", run.job), ("rank", TRAINER_LABEL_RANK)), seconds, now)
            out.extend(vs)
        samples = tot[1] - run.mark_samples
        # the job's own rates: a counter delta between ticks jitters with report timing
        tput = float(np.mean(tps)) if tps else (samples / seconds if seconds > 0 else 0.0)
        eff = float(np.mean(gps)) / tput if gps and tput > 0 else 1.0
        power = [self.store.value(F.GPU_POWER, g.labels) or 0.0 for g in self._gpus]
        sm = [(self.store.value(F.GPU_SM_CLOCK, g.labels) or 0.0) / g.max_sm_hz for g in self._gpus]
        masks = [int(self.store.value(F.GPU_CLOCK_EVENT_MASK, g.labels) or 0) for g in self._gpus]
        batch = int(self._trainer("gputuned_trainer_batch_size", run.job) or run.b0)
        util = [self.store.value(F.GPU_UTIL, g.labels) or 0.0 for g in self._gpus]
        return Interval(tot[0] - run.mark_energy, tput * seconds, seconds, tput * eff, float(np.mean(power)),
                        float(np.mean(sm)), any(m & POWER_CAP for m in masks), batch,
                        busy_power(list(zip(power, util, strict=True))))

    def _mark(self, now: float, run: _Run) -> None:
        tot = self._totals(run.job)
        if tot is not None:
            run.mark_t, run.mark_energy, run.mark_samples = now, tot[0], tot[1]

    # -- deciding -----------------------------------------------------------------------
    def _new_chooser(self) -> Chooser:
        kind, path = self.cfg.chooser_kind()
        return make_chooser(kind, path, self.cfg.objective, self.cfg.max_slowdown)

    def _new_observer(self) -> LiveObserver:
        return LiveObserver(self.cfg.objective != "throughput", self.cfg.max_slowdown)

    def _job_gone(self, run: _Run) -> bool:
        """The tuned job's leader disconnected (a job named in the config is waited for instead)."""
        if self.cfg.job is not None or self.decider is None:
            return False
        return 0 not in self.decider.connected_jobs().get(run.job, [])

    def _start_run(self, now: float) -> None:
        job = self._job()
        if job is None or not self._gpus or self._totals(job) is None:
            return
        run = _Run(job)
        if self._own_chooser and self.decisions:  # a new job: a fresh chooser and OOM ceiling
            self.chooser = self._new_chooser()
            self.guard.oom_ceiling = None
        self.observer = self._new_observer()
        self._slack_w = {}
        self._batch_max = None
        run.b0 = int(self._trainer("gputuned_trainer_batch_size", job) or 0)
        run.limit_w = float(self.store.value(F.GPU_POWER_LIMIT, self._gpus[0].labels) or self._gpus[0].hi_w)
        self._mark(now, run)
        self._run = run
        self._emit(now, "job", "batch_size", "job", run.b0, job=job, power_limit_w=run.limit_w)

    def observation(self, m: Interval, run: _Run) -> np.ndarray:
        """The observation of one measured interval (advances the observer's memory)."""
        ref = run.ref or m
        g0 = self._gpus[0]
        ref_eps = ref.eps if math.isfinite(ref.eps) and ref.eps > 0 else 1.0
        eps = m.eps if math.isfinite(m.eps) else 5.0 * ref_eps
        return self.observer.observe(
            limit_share=run.limit_w / g0.hi_w, power_w=m.power_w, limit_w=run.limit_w, max_w=g0.hi_w,
            sm_ratio=m.sm_ratio, capped=m.capped, batch=m.batch, b0=run.b0,
            throughput_ratio=m.throughput / max(ref.throughput, 1e-9), goodput_ratio=m.goodput / max(ref.goodput, 1e-9),
            eps_ratio=eps / ref_eps, eff=m.eff, oom=run.oom,
        )

    def cost_rate(self, m: Interval, run: _Run) -> float:
        """What the objective minimises, per effective sample (lower is better)."""
        ref = run.ref or m
        if self.cfg.objective == "throughput":
            return 1.0 / max(m.goodput, 1e-9)
        if self.cfg.objective == "cost":
            pmax = sum(g.hi_w for g in self._gpus)
            return self.cfg.eta * m.eps + (1.0 - self.cfg.eta) * pmax / max(m.goodput, 1e-9)
        short = max(0.0, (1.0 - self.cfg.max_slowdown) - m.goodput / max(ref.goodput, 1e-9))
        return m.eps * (1.0 + 10.0 * short)

    def _decide(self, now: float, run: _Run) -> None:
        m = self._measure(now, run)
        self._mark(now, run)
        if m is None or m.samples <= 0 or m.energy_j <= 0:
            return
        if run.ref is None:
            run.ref = m
            self._last = m
            self._emit(now, "reference", "batch_size", "job", m.batch, eps_j=m.eps, goodput=m.goodput)
            return
        self._last = m
        rate = self.cost_rate(m, run)
        back = self.guard.evaluate(rate, now, noise=0.02)
        if back:
            self._rollback(now, run, back)
            return
        run.t += 1
        action = int(self.chooser(self.observation(m, run)))
        dp, db = split(action)
        key = f"p{dp:+d}b{db:+d}"
        self.decisions[key] = self.decisions.get(key, 0) + 1
        run.oom = False
        done_p = done_b = 0
        if db and self.cfg.tune_batch and self.decider is not None and self._pending is None:
            size = int(m.batch * (2.0 if db > 0 else 0.5))
            if db > 0 and self._batch_max is not None and size > self._batch_max:
                self._emit(now, "refused", "batch_size", "job", size, reason="batch_max")
            elif self._set_batch(now, run, size, m.batch, rate):
                done_b = db
        if dp and db and not done_b:
            dp = 0  # a two-knob move is made whole or not at all (half of one is how a policy oscillates)
        if dp and self.cfg.tune_power:
            g0 = self._gpus[0]
            target = power_target(run.limit_w, dp, m.busy_w, m.capped, g0.lo_w, g0.hi_w)
            if target != run.limit_w and self._set_power(now, run, target, rate):
                done_p = dp
        self.observer.moved(done_p, done_b)
        if self.cfg.perseus and self.cfg.tune_power and not done_p:
            self._perseus(now, run)

    # -- Perseus: GPUs off the critical path ----------------------------------------------
    def rank_timings(self, job: str) -> list[RankTiming]:
        """Per-rank compute time from the job's reports; the k-th rank reporting here runs on the k-th GPU."""
        ranks = []
        for labels in self.store.series("gputuned_trainer_compute_seconds"):
            d = dict(labels)
            if d.get("job") == job and "rank" in d:
                v = self.store.value("gputuned_trainer_compute_seconds", labels)
                if v is not None and v > 0:
                    ranks.append((int(d["rank"]), float(v)))
        ranks.sort()
        if len(ranks) < 2 or len(ranks) != len(self._gpus):
            return []
        return [RankTiming(r, str(g.index), c, 0.0) for (r, c), g in zip(ranks, self._gpus, strict=True)]

    def _perseus(self, now: float, run: _Run) -> None:
        timings = self.rank_timings(run.job)
        if not timings:
            return
        g0 = self._gpus[0]
        step = 0.05 * (g0.hi_w - g0.lo_w)
        by = {str(g.index): g for g in self._gpus}
        current = {k: run.limit_w - self._slack_w.get(g.index, 0.0) for k, g in by.items()}
        bounds = {k: (g.lo_w, run.limit_w) for k, g in by.items()}
        new = plan_power_limits(timings, current, bounds, SlackConfig(step_w=step))
        for k, watts in new.items():
            g = by[k]
            if abs(watts - current[k]) < 1e-6:
                continue
            d = self.guard.propose("power_limit", k, watts, now)
            if not d.allowed:
                self._emit(now, "refused", "power_limit", k, watts, reason=d.reason)
                continue
            if getattr(self.actuator.set_power_limit(g.index, watts), "ok", False):
                self.guard.commit("power_limit", k, watts, now)
                self._slack_w[g.index] = run.limit_w - watts
                self._last_action_t = now
                self._emit(now, "action", "power_limit", k, watts, previous=current[k], reason="perseus_slack")

    def _set_power(self, now: float, run: _Run, watts: float, rate: float, rollback: bool = False) -> bool:
        d = self.guard.propose("power_limit", "all", watts, now) if not rollback else None
        if d is not None and not d.allowed:
            self._emit(now, "refused", "power_limit", "all", watts, reason=d.reason)
            return False
        done = [g.index for g in self._gpus
                if getattr(self.actuator.set_power_limit(g.index, max(g.lo_w, watts - self._slack_w.get(g.index, 0.0))),
                           "ok", False)]
        if not done:
            self._emit(now, "failed", "power_limit", "all", watts)
            return False
        previous, run.limit_w = run.limit_w, watts
        if not rollback:
            self.guard.commit("power_limit", "all", watts, now, baseline=rate, previous=previous)
        self._last_action_t = now
        self._emit(now, "rollback" if rollback else "action", "power_limit", "all", watts, previous=previous, gpus=done)
        return True

    def _set_batch(self, now: float, run: _Run, batch: int, previous: int, rate: float, rollback: bool = False) -> bool:
        assert self.decider is not None
        if not rollback:
            d = self.guard.propose("batch_size", "job", batch, now)
            if not d.allowed:
                self._emit(now, "refused", "batch_size", "job", batch, reason=d.reason)
                return False
        try:
            ident = self.decider.send_decision(run.job, {"batch_size": batch})
        except (LookupError, ValueError) as e:
            self._emit(now, "failed", "batch_size", "job", batch, reason=str(e))
            return False
        self._pending = _Pending(ident, batch, previous, now)
        self._rate_before = None if rollback else rate
        self._emit(now, "rollback" if rollback else "decision", "batch_size", "job", batch, previous=previous, ident=ident)
        return True

    def _check_pending(self, now: float) -> None:
        p, run = self._pending, self._run
        if p is None or self.decider is None or run is None:
            return
        ack = self.decider.wait_ack(p.ident, 0.0)
        if ack is None:
            if now - p.sent_at > 3 * self.cfg.interval_s:
                self._pending = None
                self._emit(now, "failed", "batch_size", "job", p.batch, reason="no ack")
            return
        self._pending = None
        if ack.get("ok"):
            if self._rate_before is not None:
                self.guard.commit("batch_size", "job", p.batch, now, baseline=self._rate_before, previous=p.previous)
            self._last_action_t = now
            self._emit(now, "applied", "batch_size", "job", p.batch, previous=p.previous)
        else:
            err = str(ack.get("error") or "")
            self.observer.moved(self.observer.last[0], 0)  # the next observation: no batch move made
            if "memory" in err.lower():
                self.guard.record_oom(p.batch)
                run.oom = True
            elif p.batch > p.previous:  # the job refuses sizes this large (its max_batch_size)
                self._batch_max = p.previous if self._batch_max is None else min(self._batch_max, p.previous)
            self._emit(now, "nack", "batch_size", "job", p.batch, reason=err)

    _rate_before: float | None = None

    def _rollback(self, now: float, run: _Run, back: list[tuple[str, str, float]]) -> None:
        """Restore every knob the judged action changed."""
        hook = getattr(self.chooser, "rolled_back", None)
        for knob, gpu, value in back:
            if hook is not None:
                hook(knob)
            if knob == "power_limit" and gpu == "all":
                self._set_power(now, run, value, 0.0, rollback=True)
            elif knob == "batch_size" and self.decider is not None and self._last is not None:
                self._set_batch(now, run, int(value), self._last.batch, 0.0, rollback=True)
        self.observer.rolled_back()

    # -- output -----------------------------------------------------------------------
    def _emit(self, t: float, kind: str, knob: str, target: str, value: float, **extra: Any) -> None:
        event = {"t": t, "kind": kind, "knob": knob, "target": target, "value": value, **extra}
        logger.info("tuner %s %s=%s on %s %s", kind, knob, value, target, extra or "")
        self.on_event(event)

    def samples(self) -> list[Sample]:
        """Guard counters, knob values and the tuner's own measurements."""
        out = self.guard.samples()
        run, m = self._run, self._last
        if run is not None and m is not None and run.ref is not None and math.isfinite(m.eps):
            out.append((EPS, (("job", run.job),), m.eps))
            out.append((EPS_REF, (("job", run.job),), run.ref.eps))
            out.append((GOODPUT_RATIO, (("job", run.job),), m.goodput / max(run.ref.goodput, 1e-9)))
        out.append((LAST_ACTION, (), self._last_action_t))
        out += [(DECISIONS, (("move", k),), float(n)) for k, n in sorted(self.decisions.items())]
        return out
