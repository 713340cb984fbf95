"""The tuning plugin: measures training steps, reports to the daemon, applies its decisions.

Usable from any loop::

    plugin = TrainingPlugin(job="resnet", batch_size=256, on_batch_size=resize)
    plugin.instrument(ddp_model)                  # comm timing, bytes, gradient norms
    for x, y in plugin.wrap_loader(loader):       # data-loader wait
        with plugin.step():
            loss = ...; scaler.scale(loss).backward(); ...
            plugin.record(loss=loss, scaler=scaler)

Rank 0 polls decisions and broadcasts them at agreed steps (about every ``sync_period_s``
seconds, or every ``sync_interval`` steps when that is set) so all ranks switch batch size at
the same step. Nothing here blocks on the daemon.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from gputuned.trainer_plugin import compression
from gputuned.trainer_plugin.client import DEFAULT_SOCKET, DaemonClient
from gputuned.trainer_plugin.ddp_probe import DDPProbe, HookProbe
from gputuned.trainer_plugin.exchange import DecisionExchange, batch_size_problem
from gputuned.trainer_plugin.noise_scale import LR_RULES, NoiseScaleEstimator, scaled_lr
from gputuned.trainer_plugin.profiling import ProfileCapture

logger = logging.getLogger(__name__)

#: Called on every rank with (global_batch, micro_batch, accumulation_steps) before the next step.
BatchSizeCallback = Callable[[int, int, int], None]
_NONE, _BATCH, _PROFILE = 0, 1, 2
#: Spacing, in steps, of the first exchange or norm sample, while the step time is not known yet.
_FIRST_SPACING = 10
#: DDP records its runtime statistics (read for the exposed comm time) every this many iterations
#: unless ``norm_every`` fixes the sampling; a sampled iteration costs it a few timer records.
_DDP_STATS_EVERY = 32
#: Longest spacing of exchanges and norm samples, in steps.
_MAX_SPACING = 10_000


class TrainingPlugin:
    """Step statistics, daemon reports and synchronised decisions for one rank."""

    def __init__(self, job: str, batch_size: int, socket_path: str = DEFAULT_SOCKET,
                 batch_mode: str = "global", accumulation_steps: int = 1,
                 on_batch_size: BatchSizeCallback | None = None, optimizer: torch.optim.Optimizer | None = None,
                 lr_scaling: str = "none", min_batch_size: int = 1, max_batch_size: int = 1 << 20,
                 sync_interval: int | None = None, connect: bool = True, client: DaemonClient | None = None,
                 context: dict[str, Any] | None = None, norm_every: int | None = None,
                 vet_batch_size: Callable[[int], str | None] | None = None,
                 sync_period_s: float = 1.0, norm_period_s: float = 0.5) -> None:
        if lr_scaling not in LR_RULES:
            raise ValueError(f"lr_scaling: unknown rule {lr_scaling!r} (expected one of {', '.join(LR_RULES)})")
        if batch_mode not in ("global", "micro"):
            raise ValueError(f"batch_mode: expected global or micro ({batch_mode!r})")
        for name, period in (("sync_period_s", sync_period_s), ("norm_period_s", norm_period_s)):
            if not period > 0:
                raise ValueError(f"{name}: must be positive, got {period!r}")
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
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
        self.base_lrs = [g["lr"] for g in optimizer.param_groups] if optimizer else []
        self.lr_scaling = lr_scaling
        self.lr_factor = 1.0
        self.min_batch_size, self.max_batch_size = min_batch_size, max_batch_size
        # Exchanges and gradient-norm samples are spaced in time, not steps: each costs about the
        # same whatever the step (a small all-reduce; two dot products over every gradient), so a
        # fixed step count made them several percent of a 2 ms CPU step and rare on a 1 s GPU step.
        # An explicit step count (tests, reproducible runs) overrides the period.
        self.sync_interval = max(1, sync_interval) if sync_interval else None
        self.sync_period_s = sync_period_s
        self._next_sync = self.sync_interval or _FIRST_SPACING
        self._sync_started = 0
        self.norm_every = max(1, norm_every) if norm_every else None
        self.norm_period_s = norm_period_s
        self._next_norm = 0
        self._step_ema: float | None = None
        self._measure = False
        self.context = dict(context or {})
        self.noise = NoiseScaleEstimator()
        self.counters = compression.CommCounters()
        self.step_count = 0
        self.samples_total = 0
        self.overflows_total = 0
        self.decisions_applied = 0
        self.decisions_refused = 0
        self.stop_requested = False
        self.stop_agreed = False
        self.client = client
        if client is None and connect:
            self.client = DaemonClient(socket_path, job=job, rank=self.rank, world_size=self.world_size,
                                       leader=self.leader, batch_size=batch_size, batch_mode=batch_mode)
        sync_device = torch.device("cpu")
        if self.distributed and dist.get_backend() == "nccl":
            sync_device = torch.device("cuda", torch.cuda.current_device())
        self._exchange = DecisionExchange(self.distributed and self.world_size > 1, self.leader, sync_device)
        self._profile: ProfileCapture | None = None
        self._pending_profile: dict[str, Any] | None = None
        self._pending_ack: dict[str, Any] | None = None
        self._reset_interval()
        self._last_report = time.monotonic()
        self._probe: DDPProbe | HookProbe | None = None
        self._t0 = 0.0
        self._armed = False
        self._data_wait = 0.0
        self._step_samples: int | None = None
        self._scale_before: torch.Tensor | None = None
        self._scale_used: torch.Tensor | None = None

    def _reset_interval(self) -> None:
        self._n = 0
        self._sum_step = self._sum_data = self._sum_comm = 0.0
        self._samples = 0
        self._losses: list[torch.Tensor] = []
        self._norms: list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None, int]] = []
        self._scale_last: torch.Tensor | None = None
        self._overflow_flags: list[torch.Tensor] = []

    # -- measurement --------------------------------------------------------------------

    def instrument(self, model: torch.nn.parallel.DistributedDataParallel, hook: str = "none",
                   **hook_kwargs: Any) -> None:
        """Measure a DDP model: comm time, bytes and gradient norms; ``hook`` picks a compression hook.

        With ``none`` DDP keeps its built-in all-reduce and :class:`DDPProbe` measures around
        it; a compression hook is wrapped in a timed, counted Python hook (:class:`HookProbe`).
        """
        self.context["compression"] = hook
        if hook == "none":
            self._probe = DDPProbe(model, self.norm_every or _DDP_STATS_EVERY, self.counters)
        else:
            self._probe = HookProbe(model, hook, self.counters, **hook_kwargs)

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
        self._measure = self.step_count >= self._next_norm
        if self._measure:
            self._next_norm = self.step_count + self._spacing(self.norm_every, self.norm_period_s)
            if self._probe is not None:
                self._probe.arm()
        self._step_samples = samples
        if self._pending_profile is not None and self._profile is None:
            d = self._pending_profile
            self._pending_profile = None
            self._profile = ProfileCapture(d["id"], d["profile_steps"])
        return self

    def record(self, loss: torch.Tensor | float | None = None, scaler: Any = None) -> None:
        """Record this step's loss (tensor, no sync) and loss-scaler state (after scaler.update())."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            self._losses.append(loss if loss.dtype == torch.float32 and loss.dim() == 0 else loss.float().reshape(()))
        elif loss is not None:
            self._losses.append(torch.tensor(float(loss)))
        if scaler is not None and scaler.is_enabled():
            scale = getattr(scaler, "_scale", None)
            scale = scale.detach().clone() if isinstance(scale, torch.Tensor) else torch.tensor(scaler.get_scale())
            before = self._scale_before
            if before is None and isinstance(getattr(scaler, "_init_scale", None), float):
                before = torch.tensor(scaler._init_scale, device=scale.device)
            if before is not None:
                self._overflow_flags.append(scale < before.to(scale.device))
            self._scale_used = before
            self._scale_before = scale
            self._scale_last = scale

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.end_step()

    def end_step(self) -> None:
        """Close the step: aggregate, maybe report, and at sync points poll/broadcast decisions."""
        now = time.perf_counter()
        self._armed = False
        step_time = now - self._t0
        ema = self._step_ema
        self._step_ema = step_time if ema is None else ema + 0.1 * (step_time - ema)
        comm = 0.0
        probe = self._probe
        if probe is not None:
            if self._measure:
                norms = probe.disarm()
                if norms is not None:
                    self._norms.append((*norms, self._scale_used, self.batch_size))
            comm = probe.end_step()
        samples = self._step_samples if self._step_samples is not None else self.batch_size
        self._n += 1
        self._sum_step += step_time
        self._sum_data += self._data_wait
        self._sum_comm += comm
        self._samples += samples
        self.samples_total += samples
        if self._profile is not None and self._profile.add_step(step_time, self._data_wait, comm):
            self._finish_profile()
        self._data_wait = 0.0
        self.step_count += 1
        if self._exchange.pending:
            self._finish_sync()
        if self.step_count >= self._next_sync and not self._exchange.pending:
            self._start_sync()
        if time.monotonic() - self._last_report >= (self.client.report_interval_s if self.client else 1.0):
            self._report()

    # -- reporting ----------------------------------------------------------------------

    def _report(self) -> None:
        self._last_report = time.monotonic()
        stats = self.interval_stats()
        if self.client is not None and self.client.connected:
            self.client.report(self.step_count, stats.pop("steps", 0), stats)
        self._reset_interval()

    def interval_stats(self) -> dict[str, Any]:
        """Means over the steps since the last report, in the protocol's stat names."""
        n = max(self._n, 1)
        stats: dict[str, Any] = {"steps": self._n}
        if self._n:
            stats.update(step_time_s=self._sum_step / n, data_wait_s=self._sum_data / n,
                         comm_time_s=self._sum_comm / n,
                         compute_time_s=max(0.0, (self._sum_step - self._sum_data - self._sum_comm) / n),
                         samples_per_s=self._samples / self._sum_step if self._sum_step > 0 else 0.0)
        if self._losses:
            stats["loss"] = float(torch.stack(self._losses).mean())
        if self._overflow_flags:
            self.overflows_total += int(torch.stack(self._overflow_flags).sum())
        if self._scale_last is not None:
            stats["loss_scale"] = float(self._scale_last)
        self._fold_norms(stats)
        stats.update(overflows_total=self.overflows_total, batch_size=self.batch_size,
                     micro_batch_size=self.micro_batch_size, accumulation_steps=self.accumulation_steps,
                     samples_total=self.samples_total, comm_bytes_total=self.counters.bytes_sent,
                     comm_bytes_uncompressed_total=self.counters.bytes_uncompressed)
        if "samples_per_s" in stats:
            eff = self.noise.efficiency(self.batch_size, self.base_batch_size)
            stats["goodput"] = stats["samples_per_s"] * eff
        return stats

    def _fold_norms(self, stats: dict[str, Any]) -> None:
        small_sum = big_sum = 0.0
        count = 0
        for local, glob, scale, batch in self._norms:
            if len(local) != len(glob):
                continue
            inv = 1.0 / float(scale) ** 2 if scale is not None else 1.0
            small = float(torch.stack(local).sum()) * inv
            big = float(torch.stack(glob).sum()) * inv
            if not (math.isfinite(small) and math.isfinite(big)):
                continue
            small_sum += small
            big_sum += big
            count += 1
            batch_used = batch
        if not count:
            return
        stats["grad_norm"] = math.sqrt(big_sum / count)
        if self.world_size > 1:
            self.noise.update(small_sum / count, batch_used / self.world_size, big_sum / count, batch_used)
            if self.noise.noise_scale is not None:
                stats["grad_noise_scale"] = self.noise.noise_scale

    # -- decisions ----------------------------------------------------------------------

    def _start_sync(self) -> None:
        """Poll (leader) and start exchanging the decision; it applies when the exchange ends."""
        kind, value = _NONE, 0
        decision = None
        if self.leader and self.client is not None:
            decision = self.client.poll_decision()
            if decision is not None:
                kind, value = self._vet(decision)
        if self.lr_scaling == "adascale" and self.batch_mode == "global":
            self.lr_factor = self.noise.adascale_gain(self.batch_size, self.base_batch_size)
        self._sync_started = self.step_count
        interval = self._spacing(self.sync_interval, self.sync_period_s)
        self._exchange.start(kind, value, self.lr_factor, interval, self.stop_requested, decision)
        if not self._exchange.distributed:
            self._finish_sync()

    def _finish_sync(self) -> None:
        agreed = self._exchange.finish()
        self.lr_factor, self.stop_agreed = agreed.lr_factor, agreed.stop
        self._next_sync = self._sync_started + max(1, agreed.interval)
        decision = agreed.decision
        if agreed.kind == _BATCH:
            self._apply_batch(agreed.value)
            if decision is not None and self.client is not None:
                self.client.ack(decision["id"], True, applied_step=self.step_count)
        elif agreed.kind == _PROFILE and decision is not None:
            self._pending_profile = decision
        self._set_lr()

    def _spacing(self, steps: int | None, period_s: float) -> int:
        """Steps to the next exchange or sample: the fixed count, else period_s at the recent step time."""
        if steps:
            return steps
        if not self._step_ema:
            return _FIRST_SPACING
        return max(1, min(_MAX_SPACING, round(period_s / self._step_ema)))

    def settle(self) -> None:
        """Finish a decision exchange in flight now (all ranks together, e.g. before a checkpoint)."""
        if self._exchange.pending:
            self._finish_sync()

    def request_stop(self) -> None:
        """Ask all ranks to stop together at the next sync point (e.g. on SIGTERM)."""
        self.stop_requested = True

    def overflow_count(self) -> int:
        """Overflows (loss-scale backoffs) so far, including those not yet reported."""
        pending = int(torch.stack(self._overflow_flags).sum()) if self._overflow_flags else 0
        return self.overflows_total + pending

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

    def _apply_batch(self, size: int) -> None:
        if self.batch_mode == "global":
            self.batch_size = size
            self.micro_batch_size = size // (self.world_size * self.accumulation_steps)
            if self.lr_scaling != "adascale":
                self.lr_factor = scaled_lr(self.lr_scaling, 1.0, size, self.base_batch_size, self.noise)
        else:
            self.micro_batch_size = size
            self.accumulation_steps = self.batch_size // (size * self.world_size)
        self.decisions_applied += 1
        logger.info("batch size now %d (micro %d x %d accumulation) from step %d", self.batch_size,
                    self.micro_batch_size, self.accumulation_steps, self.step_count)
        if self.on_batch_size is not None:
            self.on_batch_size(self.batch_size, self.micro_batch_size, self.accumulation_steps)

    def _set_lr(self) -> None:
        if self.optimizer is not None:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * self.lr_factor

    def _finish_profile(self) -> None:
        capture, self._profile = self._profile, None
        assert capture is not None
        summary = capture.finish(self.context)
        logger.info("profile %s: %s", capture.decision_id, summary["suggestions"])
        self.last_profile = summary
        if self.client is not None:
            self.client.profile_result(capture.decision_id, summary)
            self.client.ack(capture.decision_id, True, applied_step=self.step_count)

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume with the same batch size and LR factor."""
        return {"batch_size": self.batch_size, "micro_batch_size": self.micro_batch_size,
                "accumulation_steps": self.accumulation_steps, "lr_factor": self.lr_factor,
                "step_count": self.step_count, "samples_total": self.samples_total,
                "overflows_total": self.overflows_total,
                "noise": (self.noise.g2, self.noise.s)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.batch_size = int(state["batch_size"])
        self.micro_batch_size = int(state["micro_batch_size"])
        self.accumulation_steps = int(state["accumulation_steps"])
        self.lr_factor = float(state["lr_factor"])
        self.step_count = int(state["step_count"])
        self.samples_total = int(state["samples_total"])
        self.overflows_total = int(state["overflows_total"])
        self.noise.g2, self.noise.s = state["noise"]
        # every rank resumes at the same step, so they agree on the first exchange again
        self._next_sync = self.step_count + (self.sync_interval or _FIRST_SPACING)
        self._next_norm = self.step_count
        self._set_lr()

    def close(self) -> None:
        """Send a last report and close the daemon connection."""
        if self._n:
            self._report()
        if self.client is not None:
            self.client.close()
