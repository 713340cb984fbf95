"""The tuning plugin: measures training steps, reports to the daemon, applies its decisions.

Usable from any loop::

    plugin = TrainingPlugin(job="resnet", batch_size=256, on_batch_size=resize)
    plugin.instrument(ddp_model)                  # comm timing, bytes, gradient norms
    for x, y in plugin.wrap_loader(loader):       # data-loader wait
        with plugin.step():
            loss = ...; scaler.scale(loss).backward(); ...
            plugin.record(loss=loss, scaler=scaler)

Rank 0 polls decisions and broadcasts them at agreed steps (about every ``sync_period_s`` seconds of wall time,
or every ``sync_interval`` steps) so all ranks switch batch size, capture, and stop at the same step, never blocking.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from gputuned.trainer_plugin import compression
from gputuned.trainer_plugin.cadence import SLOWDOWN_JUMP, STEP_EMA_WEIGHT, Cadence, CadenceSettings
from gputuned.trainer_plugin.client import DEFAULT_SOCKET, DaemonClient, cuda_device_uuid
from gputuned.trainer_plugin.exchange import DecisionExchange, batch_size_problem, sync_device
from gputuned.trainer_plugin.interval import IntervalStats, LossScaleWatch
from gputuned.trainer_plugin.lr_factor import OptimizerLrFactor
from gputuned.trainer_plugin.noise_scale import LR_RULES, NoiseScaleEstimator, scaled_lr
from gputuned.trainer_plugin.probes import Probe, make_probe
from gputuned.trainer_plugin.process_group import topology
from gputuned.trainer_plugin.profiling import ProfileCapture

logger = logging.getLogger(__name__)

#: Called on every rank with (global_batch, micro_batch, accumulation_steps) before the next step;
#: may return how many optimizer steps still run on batches of the old size (a loader's prefetch)
BatchSizeCallback = Callable[[int, int, int], "int | None"]
_NONE, _BATCH, _PROFILE = 0, 1, 2
#: DDP records its runtime statistics (read for the exposed comm time) every this many iterations
#: unless ``norm_every`` fixes the sampling; a sampled iteration costs it a few timer records.
_DDP_STATS_EVERY = 32


class TrainingPlugin(CadenceSettings):
    """Step statistics, daemon reports and synchronised decisions for one rank."""

    last_profile: dict[str, Any] | None = None  # the leader's last capture summary
    _profile: ProfileCapture | None = None  # this rank's capture in progress
    _pending_profile: dict[str, Any] | None = None  # a capture agreed on, starting at the next step

    def __init__(self, job: str, batch_size: int, socket_path: str = DEFAULT_SOCKET,
                 batch_mode: str = "global", accumulation_steps: int = 1,
                 on_batch_size: BatchSizeCallback | None = None, optimizer: torch.optim.Optimizer | None = None,
                 lr_scaling: str = "none", min_batch_size: int = 1, max_batch_size: int = 1 << 20,
                 sync_interval: int | None = None, connect: bool = True, client: DaemonClient | None = None,
                 context: dict[str, Any] | None = None, norm_every: int | None = None,
                 vet_batch_size: Callable[[int], str | None] | None = None,
                 sync_period_s: float = 1.0, norm_period_s: float = 0.5, trace_dir: str | None = None) -> None:
        if lr_scaling not in LR_RULES:
            raise ValueError(f"lr_scaling: unknown rule {lr_scaling!r} (expected one of {', '.join(LR_RULES)})")
        if batch_mode not in ("global", "micro"):
            raise ValueError(f"batch_mode: expected global or micro ({batch_mode!r})")
        # when exchanges and norm samples come; its four settings read as this plugin's attributes
        self._cadence = Cadence(sync_interval, sync_period_s, norm_every, norm_period_s)
        self.distributed, self.rank, self.world_size = topology()
        self.leader = self.rank == 0
        self.batch_mode = batch_mode
        self.batch_size = batch_size
        self.base_batch_size = batch_size
        self.accumulation_steps = accumulation_steps
        self.micro_batch_size = batch_size // (self.world_size * accumulation_steps)
        self.on_batch_size = on_batch_size
        # the loop's own veto: a reason why it cannot take a batch size now (refused, logged)
        self.vet_batch_size = vet_batch_size
        self.optimizer = optimizer
        # the batch-size rule's factor, applied on top of the loop's own LR at each optimizer step
        self._lr = OptimizerLrFactor(optimizer) if optimizer is not None else None
        self.lr_scaling = lr_scaling
        self.lr_factor = 1.0
        self.min_batch_size, self.max_batch_size = min_batch_size, max_batch_size
        self.context = dict(context or {})
        self.trace_dir = trace_dir  # where each rank keeps its capture traces (None: under the temp dir)
        self.noise = NoiseScaleEstimator()
        self.counters = compression.CommCounters()
        self.step_count = self.samples_total = self.overflows_total = 0
        self.decisions_applied = self.decisions_refused = 0
        self.stop_requested = self.stop_agreed = False
        self.client = client
        if client is None and connect:
            self.client = DaemonClient(socket_path, job=job, rank=self.rank, world_size=self.world_size,
                                       leader=self.leader, batch_size=batch_size, batch_mode=batch_mode,
                                       cuda_uuid=cuda_device_uuid())
        self._exchange = DecisionExchange(self.distributed and self.world_size > 1, self.leader,
                                          sync_device(self.distributed), self.rank, self.world_size)
        self._interval = IntervalStats()
        self._scales = LossScaleWatch()
        self._last_report = time.monotonic()
        self._probe: Probe | None = None
        # the step in progress: its start, whether it samples gradient norms, its data wait and samples
        self._t0 = 0.0
        self._last_end: float | None = None  # when the previous step ended: step-to-step wall time
        self._armed = False
        self._measure = False
        self._data_wait = 0.0
        self._step_samples: int | None = None

    # -- measurement --------------------------------------------------------------------

    def instrument(self, model: torch.nn.Module, hook: str = "none", **hook_kwargs: Any) -> None:
        """Measure a DDP, FSDP2 (``fully_shard``) or compiled model: comm time, bytes, gradient norms.

        ``hook`` picks a DDP compression hook; with ``none`` DDP keeps its built-in all-reduce and
        the probe measures around it (see :mod:`gputuned.trainer_plugin.probes`). An FSDP model's
        norm samples come every ``norm_every`` steps (default 32) on every rank at once.
        """
        self.context["compression"] = hook
        cadence = self._cadence
        self._probe = make_probe(model, hook, self.counters, cadence.norm_every or _DDP_STATS_EVERY, **hook_kwargs)
        if getattr(self._probe, "agreed_sampling", False) and not cadence.norm_every:
            cadence.norm_every = _DDP_STATS_EVERY

    def wrap_loader(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield from a loader, counting the time spent waiting for each batch."""
        it = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self._data_wait += time.perf_counter() - t
            yield item

    def add_data_wait(self, seconds: float) -> None:
        """Add data-loader wait measured by the caller for the coming step."""
        self._data_wait += seconds

    def __enter__(self) -> TrainingPlugin:
        return self if self._armed else self.step()

    def step(self, samples: int | None = None) -> TrainingPlugin:
        """Start timing a step (use as ``with plugin.step(): ...``); samples defaults to the global batch."""
        self._t0 = time.perf_counter()
        self._armed = True
        if self._interval.started is None:  # the first step after a start or resume opens the interval
            self._interval.started = self._t0
        cadence = self._cadence
        self._measure = self.step_count >= cadence.next_norm
        if self._measure:
            cadence.norm_sampled(self.step_count)
            if self._probe is not None:
                self._probe.arm()
        self._step_samples = samples
        if self._pending_profile is not None and self._profile is None:  # every rank starts at this step
            req, self._pending_profile = self._pending_profile, None
            self._profile = ProfileCapture(req["id"], int(req["profile_steps"]), self.rank, self.trace_dir,
                                           job=self.client.job if self.client else "local", probe=self._probe)
        return self

    def record(self, loss: torch.Tensor | float | None = None, scaler: Any = None) -> None:
        """Record this step's loss (tensor, no sync) and loss-scaler state (after scaler.update())."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            self._interval.losses.append(loss if loss.dtype == torch.float32 and loss.dim() == 0
                                         else loss.float().reshape(()))
        elif loss is not None:
            self._interval.losses.append(torch.tensor(float(loss)))
        if scaler is not None and scaler.is_enabled():
            self._interval.add_scale(*self._scales.update(scaler))

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.end_step()

    def end_step(self) -> None:
        """Close the step: aggregate, maybe report, and at sync points poll/broadcast decisions."""
        now = time.perf_counter()
        self._armed = False
        step_time = now - self._t0
        # exchanges and norm samples are spaced by the wall time from one step's end to the next
        last, self._last_end = self._last_end, now
        period = step_time if last is None else now - last
        cadence = self._cadence
        ema = cadence.step_ema
        if ema is None or period > SLOWDOWN_JUMP * ema:
            cadence.step_ema = period
        else:
            cadence.step_ema = ema + STEP_EMA_WEIGHT * (period - ema)
        comm = 0.0
        probe = self._probe
        if probe is not None:
            if self._measure:
                norms = probe.disarm()
                if norms is not None:
                    self._interval.norms.append((*norms, self._scales.used, self.batch_size))
            comm = probe.end_step()
        samples = self._step_samples if self._step_samples is not None else self.batch_size
        interval = self._interval  # summed here, not in a method: this runs on every step
        interval.steps += 1
        interval.step_time_s += step_time
        interval.data_wait_s += self._data_wait
        interval.comm_time_s += comm
        interval.samples += samples
        self.samples_total += samples
        if (capture := self._profile) is not None:
            capture.add_step(period, step_time, self._data_wait, comm)
        self._exchange.add_step(max(0.0, step_time - self._data_wait - comm), comm)
        self._data_wait = 0.0
        self.step_count += 1
        if self._exchange.pending:
            t = time.perf_counter()
            self._finish_sync()
            if capture is not None:  # waiting here is waiting for the other ranks, as in the all-reduce
                capture.add_wait(time.perf_counter() - t)
        if self.step_count >= cadence.next_sync and not self._exchange.pending:
            if capture is not None and capture.ends_here():
                self._finish_profile()
            self._start_sync()
        if time.monotonic() - self._last_report >= (self.client.report_interval_s if self.client else 1.0):
            self._report()

    # -- reporting ----------------------------------------------------------------------

    def _report(self) -> None:
        self._last_report = time.monotonic()
        now = time.perf_counter()
        stats = self.interval_stats(now)
        if self.client is not None and self.client.connected:
            self.client.report(self.step_count, stats.pop("steps", 0), stats, self._exchange.report_times())
        self._interval.reset(now)  # the next interval starts here: the time to the next step counts

    def interval_stats(self, end: float | None = None) -> dict[str, Any]:
        """Means over the steps since the last report (to ``end``, perf_counter s; now if None), in the protocol's stat names."""
        interval = self._interval
        stats = interval.means(time.perf_counter() if end is None else end)
        self.overflows_total += interval.overflows()
        stats.update(interval.fold_norms(self.noise, self.world_size))
        stats.update(overflows_total=self.overflows_total, batch_size=self.batch_size,
                     micro_batch_size=self.micro_batch_size, accumulation_steps=self.accumulation_steps,
                     samples_total=self.samples_total, comm_bytes_total=self.counters.bytes_sent,
                     comm_bytes_uncompressed_total=self.counters.bytes_uncompressed)
        if "samples_per_s" in stats:
            eff = self.noise.efficiency(self.batch_size, self.base_batch_size)
            stats["goodput"] = stats["samples_per_s"] * eff
        return stats

    # -- decisions ----------------------------------------------------------------------

    def _start_sync(self) -> None:
        """Poll (leader) and start exchanging the decision; it applies when the exchange ends."""
        kind, value = _NONE, 0
        decision = None
        if self.leader and self.client is not None:
            decision = self.client.poll_decision()
            if decision is not None:
                kind, value = self._vet(decision)
        interval = self._cadence.start_sync(self.step_count)
        factor = self._next_lr_factor(value if kind == _BATCH else self.batch_size, kind == _BATCH)
        self._exchange.start(kind, value, factor, interval, self.stop_requested, decision)
        if not self._exchange.distributed:
            self._finish_sync()

    def _next_lr_factor(self, size: int, resized: bool) -> float:
        """The LR factor for the batch in effect after this exchange (the leader's is the one agreed)."""
        if self.batch_mode != "global" or not (resized or self.lr_scaling == "adascale"):
            return self.lr_factor
        return scaled_lr(self.lr_scaling, 1.0, size, self.base_batch_size, self.noise)

    def _finish_sync(self) -> None:
        agreed = self._exchange.finish()
        resized = agreed.kind == _BATCH  # the factor waits for the batches of the old size still queued
        self._set_lr_factor(agreed.lr_factor, self._apply_batch(agreed.value) if resized else 0)
        self.stop_agreed = agreed.stop  # every rank sees it at the same step
        self._cadence.agree_sync(agreed.interval)
        decision = agreed.decision
        if resized:
            if decision is not None and self.client is not None:
                self.client.ack(decision["id"], True, applied_step=self.step_count)
        elif agreed.kind == _PROFILE:  # every rank captures, from the next step on
            self._pending_profile = {"id": decision["id"] if decision is not None else "", "profile_steps": agreed.value}

    @property
    def syncing(self) -> bool:
        """True while a decision exchange is in flight (started at one step's end, finished at the next)."""
        return self._exchange.pending

    def settle(self) -> bool:
        """Finish a decision exchange in flight now (all ranks together, e.g. before a checkpoint); True if one was."""
        pending = self._exchange.pending
        if pending:
            self._finish_sync()
        return pending

    def request_stop(self) -> None:
        """Ask all ranks to stop together at the next sync point (e.g. on SIGTERM)."""
        self.stop_requested = True

    def stop_on_signals(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> Callable[[], None]:
        """Make these signals call :meth:`request_stop` (main thread only); returns a function restoring the old handlers.

        All ranks then stop at the same step, at most about ``sync_period_s`` plus one step
        later; the loop checks ``stop_agreed`` after each step and checkpoints.
        """
        previous = {sig: signal.signal(sig, lambda signum, frame: self.request_stop()) for sig in signals}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def overflow_count(self) -> int:
        """Overflows (loss-scale backoffs) so far, including those not yet reported."""
        return self.overflows_total + self._interval.overflows()

    def _vet(self, decision: dict[str, Any]) -> tuple[int, int]:
        """Check a decision on the leader; refuse (ack ok=false) what cannot be applied."""
        if "profile_steps" in decision:
            if self._profile is not None or self._pending_profile is not None:
                return self._refuse(decision, "a profile capture is already running")
            return _PROFILE, min(int(decision["profile_steps"]), 1000)
        size = int(decision["batch_size"])
        why = batch_size_problem(size, self.batch_mode, self.batch_size, self.min_batch_size, self.max_batch_size,
                                 self.world_size, self.accumulation_steps)
        if why is None and self.vet_batch_size is not None:
            why = self.vet_batch_size(size)
        return self._refuse(decision, why) if why else (_BATCH, size)

    def _refuse(self, decision: dict[str, Any], why: str) -> tuple[int, int]:
        self.decisions_refused += 1
        logger.warning("refusing decision %s: %s", decision["id"], why)
        if self.client is not None:
            self.client.ack(decision["id"], False, error=why)
        return _NONE, 0

    def _apply_batch(self, size: int) -> int:
        if self.batch_mode == "global":
            self.batch_size = size
            self.micro_batch_size = size // (self.world_size * self.accumulation_steps)
        else:
            self.micro_batch_size = size
            self.accumulation_steps = self.batch_size // (size * self.world_size)
        self.decisions_applied += 1
        logger.info("batch size now %d (micro %d x %d accumulation) from step %d", self.batch_size,
                    self.micro_batch_size, self.accumulation_steps, self.step_count)
        queued = None if self.on_batch_size is None else self.on_batch_size(
            self.batch_size, self.micro_batch_size, self.accumulation_steps)
        return queued if isinstance(queued, int) and queued > 0 else 0

    def _set_lr_factor(self, factor: float, after_steps: int = 0) -> None:
        if self._lr is not None and (after_steps or factor != self.lr_factor):  # a deferred one stays so
            self._lr.set(factor, after_steps)  # the optimizer's hooks read it at each step
        self.lr_factor = factor

    def _finish_profile(self) -> None:
        capture, self._profile = self._profile, None
        assert capture is not None
        summary = capture.finish(self.distributed and self.world_size > 1, self.context, self.client, self.step_count)
        self.last_profile = summary or self.last_profile  # the leader's summary (None on other ranks)

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume with the same batch size and LR factor."""
        return {"batch_size": self.batch_size, "micro_batch_size": self.micro_batch_size,
                "accumulation_steps": self.accumulation_steps, "lr_factor": self.lr_factor,
                # a factor agreed while batches of the old size were still queued: the one they run with
                "lr_factor_now": self._lr.factor if self._lr is not None else self.lr_factor,
                "lr_factor_after_steps": self._lr.pending[1] if self._lr and self._lr.pending else 0,
                "step_count": self.step_count, "samples_total": self.samples_total,
                "overflows_total": self.overflow_count(),  # unreported overflows too
                "noise": (self.noise.g2, self.noise.s)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.batch_size = int(state["batch_size"])
        self.micro_batch_size = int(state["micro_batch_size"])
        self.accumulation_steps = int(state["accumulation_steps"])
        self._set_lr_factor(float(state.get("lr_factor_now", state["lr_factor"])))
        self._set_lr_factor(float(state["lr_factor"]), int(state.get("lr_factor_after_steps", 0)))
        self.step_count = int(state["step_count"])
        self.samples_total = int(state["samples_total"])
        self.overflows_total = int(state["overflows_total"])
        self.noise.g2, self.noise.s = state["noise"]
        # every rank resumes at the same step, so they agree on the first exchange again
        self._cadence.restart(self.step_count)

    def close(self) -> None:
        """Send a last report and close the daemon connection."""
        if self._interval.steps:
            self._report()
        if self._profile is not None:
            self._profile.abandon()
        if self.client is not None:
            self.client.close()
