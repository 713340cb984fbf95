"""The decision kernel: one tuner step over a node, the same in the daemon and in training.

Every decision interval the kernel reads the interval a :class:`Node` measured, records the
first one as the reference (the job's own settings), asks the :class:`SafetyGuard` to judge the
last move against the cost rate before it (a worse move is rolled back, every knob it changed),
builds the observation and, given a move, applies it through the guard: the batch size as a
request the job acknowledges (at once on a simulated job, a tick or so later over the control
socket), the power limit, the SM-clock lock ([f, f]) or the memory-clock lock on every GPU. A lock taking over from
unlocked lifts the power limit to its maximum (one move, judged and rolled back whole); unlocking
gives the GPUs back to the limit the lock took over from. With several ranks reporting compute
times, the Perseus controller lowers the GPUs with slack below the job-wide clock (or, where
clocks cannot be locked, below the job-wide power limit). The daemon's tuning component
(:mod:`gputuned.daemon.app.tuning`) and the training environment
(:mod:`gputuned.tuner.sim_env`) are adapters that give it a node and a clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gputuned.tuner.decision import moves
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.guard import SafetyGuard
from gputuned.tuner.decision.moves import Move, decode, power_step, power_target
from gputuned.tuner.decision.node import Ack, GPULimits, Node
from gputuned.tuner.decision.observe import Interval, LiveObserver, Observation
from gputuned.tuner.decision.perseus import plan_steps

__all__ = ["Ack", "DecisionKernel", "GPULimits", "Node", "Outcome"]  # the node's types, as adapters import them

logger = logging.getLogger(__name__)

#: The relative measurement noise the guard assumes when judging a move.
GUARD_NOISE = 0.02
#: Intervals a batch-size request may wait for the job's answer before it counts as failed.
ACK_TIMEOUT_INTERVALS = 3


@dataclass
class _Pending:
    ident: str
    batch: int
    previous: int
    sent_at: float
    rate_before: float | None  # None for a rollback: nothing to judge


@dataclass
class Outcome:
    """What one step did: ``skip``, ``reference``, ``rollback`` or ``choose`` (with its observation)."""

    kind: str
    interval: Interval | None = None
    obs: Observation | None = None
    action: int | None = None


class DecisionKernel:
    """One job's tuning: reference, judgement, observation and moves over a :class:`Node`."""

    def __init__(
        self, node: Node, config: TuningConfig, guard: SafetyGuard, *, b0: int, limit_w: float,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_rollback: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
        self.cfg = config
        self.guard = guard
        self.b0 = b0
        self.limit_w = limit_w
        self.on_event = on_event or (lambda e: None)
        self.on_rollback = on_rollback or (lambda knob: None)
        self.observer = LiveObserver(config.objective != "throughput", config.max_slowdown)
        self.ref: Interval | None = None
        self.last: Interval | None = None
        self.t = 0
        self.oom = False
        self.slack_w: dict[str, float] = {}  # Perseus: watts below the job-wide limit, per GPU
        self.lock_mhz: int | None = None  # the job-wide SM-clock lock (None: unlocked)
        self.takeover: tuple[float, int] | None = None  # (the limit, the clock) when the lock took over
        self.slack_mhz: dict[str, float] = {}  # Perseus: MHz below the job-wide clock, per GPU
        self.batch_max: int | None = None  # largest batch the job accepted before refusing a larger one
        self.pending: _Pending | None = None
        self.last_action_t = 0.0
        self._gpus = node.gpus()
        self.clocks = self._gpus[0].sm_clocks if config.tune_clocks and self._gpus else ()
        self.mem_clocks = self._gpus[0].memory_clocks if config.tune_clocks and self._gpus else ()
        self.mem_lock: int | None = None  # the job-wide memory-clock lock (None: unlocked)
        self.refused = False  # the last job-wide setting was refused by the node on some GPU
        self.locked_once = False  # a lock was applied: the GPUs can be locked

    # -- one step -----------------------------------------------------------------------
    def step(self, now: float, choose: Callable[[Observation], int]) -> Outcome:
        """Judge the last interval and, when a choice is due, make the move ``choose`` picks."""
        out = self.observe(now)
        if out.obs is not None:
            out.action = int(choose(out.obs))
            self.act(out.action, now)
        return out

    def observe(self, now: float) -> Outcome:
        """Read the interval just ended: reference, rollback, or the observation to choose from."""
        self.poll(now)
        m = self.node.measure(now)
        if m is None or m.samples <= 0 or m.energy_j <= 0:
            return Outcome("skip", m)
        self.last = m
        if self.ref is None:
            self.ref = m
            self.emit(now, "reference", "batch_size", "job", m.batch, eps_j=m.eps, goodput=m.goodput)
            return Outcome("reference", m)
        back = self.guard.evaluate(self.cost_rate(m), now, noise=GUARD_NOISE)
        if back:
            self._rollback(now, back)
            return Outcome("rollback", m)
        self.t += 1
        return Outcome("choose", m, obs=self.observation(m))

    def act(self, action: int, now: float) -> Move:
        """Apply a move through the guard; returns the (power, batch, clock, memory) move made."""
        m = self.last
        assert m is not None, "act() before an observation"
        rate = self.cost_rate(m)
        dp, db, dc, dm = decode(action)
        size = moves.share(action)
        self.oom = False
        done_b = self._batch_move(now, m, db, rate) if db else 0
        if (dp or dc) and db and not done_b:
            dp = dc = 0  # a two-knob move is made whole or not at all (half of one is how a policy oscillates)
        done_p = done_c = done_m = 0
        if dp and self.cfg.tune_power:
            g0 = self._gpus[0]
            target = power_target(self.limit_w, dp, m.busy_w, m.capped, g0.lo_w, g0.hi_w, size)
            if target != self.limit_w and self._set_power(now, target, rate):
                done_p = dp
        if dc and self.clocks and self._clock_move(now, m, dc, rate, size, action == moves.RELEASE):
            done_c = dc
        if dm and self.mem_clocks:
            target = moves.memory_target(self.mem_lock, dm, self.mem_clocks)
            if target != self.mem_lock and self._set_memory(now, target, rate):
                done_m = dm
        self.observer.moved(done_p, done_b, done_c, done_m)
        if self.cfg.perseus and (self.clocks or self.cfg.tune_power) and not (done_p or done_c or done_m):
            self._perseus(now)
        return Move(done_p, done_b, done_c, done_m)

    # -- what is measured ---------------------------------------------------------------
    def observation(self, m: Interval) -> Observation:
        """The observation of one measured interval (advances the observer's memory)."""
        ref = self.ref or m
        g0 = self._gpus[0]
        ref_eps = ref.eps if math.isfinite(ref.eps) and ref.eps > 0 else 1.0
        eps = m.eps if math.isfinite(m.eps) else 5.0 * ref_eps
        return self.observer.observe(
            limit_share=self.limit_w / g0.hi_w, power_w=m.power_w, limit_w=self.limit_w, max_w=g0.hi_w,
            sm_ratio=m.sm_ratio, capped=m.capped, batch=m.batch, b0=self.b0,
            throughput_ratio=m.throughput / max(ref.throughput, 1e-9), goodput_ratio=m.goodput / max(ref.goodput, 1e-9),
            eps_ratio=eps / ref_eps, eff=m.eff, oom=self.oom, clocks=bool(self.clocks),
            lock_share=moves.lock_share(self.lock_mhz, self.clocks),
            memory=bool(self.mem_clocks), memory_share=moves.lock_share(self.mem_lock, self.mem_clocks),
        )

    def cost_rate(self, m: Interval) -> float:
        """What the objective minimises, per effective sample (lower is better)."""
        ref = self.ref or m
        if self.cfg.objective == "throughput":
            return 1.0 / max(m.goodput, 1e-9)
        if self.cfg.objective == "cost":
            pmax = sum(g.hi_w for g in self._gpus)
            return self.cfg.eta * m.eps + (1.0 - self.cfg.eta) * pmax / max(m.goodput, 1e-9)
        short = max(0.0, (1.0 - self.cfg.max_slowdown) - m.goodput / max(ref.goodput, 1e-9))
        return m.eps * (1.0 + 10.0 * short)

    # -- the batch size -------------------------------------------------------------------
    def poll(self, now: float) -> Ack | None:
        """Take the job's answer to the batch-size request in flight, if it came; returns it."""
        p = self.pending
        if p is None:
            return None
        ack = self.node.batch_ack(p.ident)
        if ack is None:
            if now - p.sent_at > ACK_TIMEOUT_INTERVALS * self.cfg.interval_s:
                self.pending = None
                self.emit(now, "failed", "batch_size", "job", p.batch, reason="no ack")
            return None
        self.pending = None
        if ack.ok:
            if p.rate_before is not None:
                self.guard.commit("batch_size", "job", p.batch, now, baseline=p.rate_before, previous=p.previous)
            self.last_action_t = now
            self.emit(now, "applied", "batch_size", "job", p.batch, previous=p.previous)
            return ack
        last = self.observer.last
        self.observer.moved(last[0], 0, last[2], last[3])  # the next observation: no batch move made
        if "memory" in ack.error.lower():
            self.guard.record_oom(p.batch)
            self.oom = True
        elif p.batch > p.previous:  # the job refuses sizes this large (its max_batch_size)
            self.batch_max = p.previous if self.batch_max is None else min(self.batch_max, p.previous)
        self.emit(now, "nack", "batch_size", "job", p.batch, reason=ack.error)
        return ack

    def _batch_move(self, now: float, m: Interval, db: int, rate: float) -> int:
        """Ask for the batch move ``db``; returns it when asked (and not refused at once), else 0."""
        if not self.cfg.tune_batch or self.pending is not None or self._pinned("batch_size", "job"):
            return 0
        size = int(m.batch * (2.0 if db > 0 else 0.5))
        if db > 0 and self.batch_max is not None and size > self.batch_max:
            self.emit(now, "refused", "batch_size", "job", size, reason="batch_max")
            return 0
        d = self.guard.propose("batch_size", "job", size, now)
        if not d.allowed:
            self.emit(now, "refused", "batch_size", "job", size, reason=d.reason)
            return 0
        if not self._request_batch(now, size, m.batch, rate):
            return 0
        ack = self.poll(now)  # a simulated job answers at once; over the control socket it comes later
        return 0 if ack is not None and not ack.ok else db

    def _request_batch(self, now: float, size: int, previous: int, rate: float | None) -> bool:
        try:
            ident = self.node.request_batch(size)
        except (LookupError, ValueError) as e:
            self.emit(now, "failed", "batch_size", "job", size, reason=str(e))
            return False
        self.pending = _Pending(ident, size, previous, now, rate)
        self.emit(now, "rollback" if rate is None else "decision", "batch_size", "job", size, previous=previous,
                   ident=ident)
        return True

    # -- the power limit and the SM-clock lock -----------------------------------------------
    def _set_all(self, now: float, knob: str, value: float, previous: float, apply: Callable[[GPULimits], bool],
                 rate: float, rollback: bool) -> bool:
        """Set a job-wide knob on every GPU the operator did not pin, through the guard (not on a rollback)."""
        self.refused = False  # whether the node refused it on a GPU (not the guard, not a pin)
        if all(self._pinned(knob, g.key) for g in self._gpus):
            return False  # the operator holds it on every GPU: not a failure
        if not rollback:
            d = self.guard.propose(knob, "all", value, now)
            if not d.allowed:
                self.emit(now, "refused", knob, "all", value, reason=d.reason)
                return False
        tried = [g for g in self._gpus if not self._pinned(knob, g.key)]
        done = [g.key for g in tried if apply(g)]
        self.refused = len(done) < len(tried)
        if not done:
            self.emit(now, "failed", knob, "all", value)
            return False
        if not rollback:
            self.guard.commit(knob, "all", value, now, baseline=rate, previous=previous)
        self.last_action_t = now
        self.emit(now, "rollback" if rollback else "action", knob, "all", value, previous=previous,
                  gpus=[int(k) if k.isdigit() else k for k in done])
        return True

    def _set_power(self, now: float, watts: float, rate: float, rollback: bool = False) -> bool:
        def apply(g: GPULimits) -> bool:
            return self.node.set_power_limit(g.key, max(g.lo_w, watts - self.slack_w.get(g.key, 0.0)))

        if not self._set_all(now, "power_limit", watts, self.limit_w, apply, rate, rollback):
            return False
        self.limit_w = watts
        return True

    def _set_clock(self, now: float, mhz: int | None, rate: float, rollback: bool = False) -> bool:
        """Lock every GPU at ``mhz`` less its Perseus slack (None: unlock); 0 stands for unlocked in events."""
        def apply(g: GPULimits) -> bool:
            return self.node.set_sm_clock(g.key, self._gpu_clock(g.key, mhz))

        if not self._set_all(now, "sm_clock", float(mhz or 0), float(self.lock_mhz or 0), apply, rate, rollback):
            if mhz is not None and self.refused:  # the node refused it (a guard refusal says nothing of the GPUs)
                self._lock_refused()
            return False
        self.lock_mhz = mhz
        self.locked_once = self.locked_once or mhz is not None
        return True

    def _set_memory(self, now: float, mhz: int | None, rate: float, rollback: bool = False) -> bool:
        """Lock every GPU's memory clock at ``mhz`` (None: unlock); 0 stands for unlocked in events. A
        first lock the node refuses (NVML before Ampere) ends memory moves."""
        def apply(g: GPULimits) -> bool:
            return self.node.set_memory_clock(g.key, mhz)

        if not self._set_all(now, "memory_clock", float(mhz or 0), float(self.mem_lock or 0), apply, rate, rollback):
            if self.refused and self.mem_lock is None:
                logger.info("memory clocks cannot be locked on this node (the first lock was refused)")
                self.mem_clocks = ()
            return False
        self.mem_lock = mhz
        return True

    def _lock_refused(self) -> None:
        """A lock the node refused before any lock was applied: these GPUs cannot be locked (NVML
        lists their clocks but answers NOT_SUPPORTED, e.g. before Volta), so clock moves stop and
        Perseus slows by power limit from the next interval."""
        if self.locked_once or not self.clocks:
            return
        logger.info("SM clocks cannot be locked on this node (the first lock was refused): power limits only")
        self.clocks = ()

    def _gpu_clock(self, key: str, mhz: int | None) -> int | None:
        s = self.slack_mhz.get(key, 0.0)
        return moves.snap_clock((mhz or max(self.clocks)) - s, self.clocks) if s > 0 else mhz

    def _clock_move(self, now: float, m: Interval, dc: int, rate: float, size: float = 1.0,
                    release: bool = False) -> bool:
        """One clock move (:func:`~gputuned.tuner.decision.moves.clock_target`; ``release``: unlock from
        any lock); True when made.

        A lock taking over from unlocked lifts the power limit to its maximum: the lock, not the
        limit, then sets the clock. Unlocking puts back the limit the lock took over from.
        """
        top = max(self.clocks)
        target = None if release else moves.clock_target(
            self.lock_mhz, dc, m.sm_ratio * top, self.clocks, self.takeover[1] if self.takeover else None, size)
        if target == self.lock_mhz:
            return False
        previous, limit, hi = self.lock_mhz, self.limit_w, self._gpus[0].hi_w
        if not self._set_clock(now, target, rate):
            return False
        if previous is None and target is not None:  # the lock takes over from the limit
            self.takeover = (limit, target)
            if self.cfg.tune_power and limit < hi:
                self._set_power(now, hi, rate)
        elif target is None and self.takeover is not None and self.cfg.tune_power and self.takeover[0] < limit:
            self._set_power(now, self.takeover[0], rate)
        return True

    def _perseus(self, now: float) -> None:
        """Lower the GPUs off the critical path (Perseus): their SM clock below the job-wide one
        where clocks can be locked, else their power limit below the job-wide limit."""
        timings = self.node.rank_timings()
        if not timings:
            return
        by = {g.key: g for g in self._gpus}
        if self.clocks:
            top = float(max(self.clocks))
            base, slack, knob, step = float(self.lock_mhz or top), self.slack_mhz, "sm_clock", moves.clock_step(self.clocks)
            bounds = {k: (float(min(self.clocks)), base) for k in by}

            def apply(k: str, v: float) -> bool:
                unlock = self.lock_mhz is None and v >= top - 1e-6
                return self.node.set_sm_clock(k, None if unlock else moves.snap_clock(v, self.clocks), "perseus")
        else:
            base, slack, knob = self.limit_w, self.slack_w, "power_limit"
            step = power_step(self._gpus[0].lo_w, self._gpus[0].hi_w)
            bounds = {k: (g.lo_w, base) for k, g in by.items()}

            def apply(k: str, v: float) -> bool:
                return self.node.set_power_limit(k, v, "perseus")
        current = {k: base - slack.get(k, 0.0) for k in by}
        for k, value in plan_steps(timings, current, bounds, step).items():
            if abs(value - current[k]) < 1e-6 or self._pinned(knob, k):
                continue
            d = self.guard.propose(knob, k, value, now)
            if not d.allowed:
                self.emit(now, "refused", knob, k, value, reason=d.reason)
                continue
            if not apply(k, value):
                if knob == "sm_clock":
                    self._lock_refused()
                    return
                continue
            self.guard.commit(knob, k, value, now)
            slack[k] = base - value
            self.locked_once = self.locked_once or knob == "sm_clock"
            self.last_action_t = now
            self.emit(now, "action", knob, k, value, previous=current[k], reason="perseus_slack")

    def _pinned(self, knob: str, target: str) -> bool:
        held = getattr(self.node, "pinned", None)  # the daemon's node says (and logs once); training has no pins
        return bool(held is not None and held(knob, target))

    # -- rollback and output ------------------------------------------------------------------
    def _rollback(self, now: float, back: list[tuple[str, str, float]]) -> None:
        """Restore every knob the judged action changed."""
        for knob, gpu, value in back:
            self.on_rollback(knob)
            if knob == "power_limit" and gpu == "all":
                self._set_power(now, value, 0.0, rollback=True)
            elif knob == "sm_clock" and gpu == "all":
                self._set_clock(now, int(value) or None, 0.0, rollback=True)
            elif knob == "memory_clock" and gpu == "all":
                self._set_memory(now, int(value) or None, 0.0, rollback=True)
            elif (knob == "batch_size" and self.last is not None
                  and self._request_batch(now, int(value), self.last.batch, None)):
                self.poll(now)
        self.observer.rolled_back()

    def emit(self, t: float, kind: str, knob: str, target: str, value: float, **extra: Any) -> None:
        """Log one tuner event and hand it to ``on_event``."""
        event = {"t": t, "kind": kind, "knob": knob, "target": target, "value": value, **extra}
        logger.info("tuner %s %s=%s on %s%s", kind, knob, value, target,
                    "".join(f" {k}={v}" for k, v in extra.items()))
        self.on_event(event)
