"""The data-parallel mixed-precision trainer (run under torchrun; gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from gputuned.trainer_plugin.checkpoint import CheckpointManager, PartialWriteHook, gather_per_rank
from gputuned.trainer_plugin.compression import CompressionState
from gputuned.trainer_plugin.config import Config, ConfigError
from gputuned.trainer_plugin.data import Prefetcher, ResizableBatchSampler, load_digits
from gputuned.trainer_plugin.exchange import agreed_run_id
from gputuned.trainer_plugin.models import build_model
from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.process_group import init_distributed

logger = logging.getLogger(__name__)


@dataclass
class Callbacks:
    """Optional hooks into the loop (tests use them to script faults and observe steps)."""

    on_loss: Callable[[Trainer, torch.Tensor], torch.Tensor] | None = None
    on_step_end: Callable[[Trainer], None] | None = None
    on_partial_checkpoint: PartialWriteHook | None = None


@dataclass
class Result:
    """What a finished run reports."""

    steps: int
    epochs: int
    test_accuracy: float
    test_loss: float
    overflows: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    batch_log: list[tuple[int, int, list[int]]] = field(default_factory=list)


def resolve_precision(requested: str, device: torch.device) -> str:
    """Pick fp32/fp16/bf16 from the config and the hardware; enable TF32 on Ampere and later."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: bf16 is not supported by this GPU")
    return requested


class Trainer:
    """DDP training of a config's model with AMP, compression hooks, checkpoints and the plugin."""

    def __init__(self, config: Config, callbacks: Callbacks | None = None, record_batches: bool = False) -> None:
        self.cfg = config
        self.cb = callbacks or Callbacks()
        self.record_batches = record_batches
        self.distributed = init_distributed()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        want_cuda = config.train.device == "cuda" or (config.train.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda", torch.cuda.current_device()) if want_cuda else torch.device("cpu")
        self.precision = resolve_precision(config.train.precision, self.device)
        d = config.data
        accum = config.train.accumulation_steps
        if d.batch_size % (self.world * accum):
            raise ConfigError(f"data.batch_size: {d.batch_size} not divisible by world size x "
                              f"train.accumulation_steps ({self.world * accum})")
        torch.manual_seed(config.train.seed)
        self.x_train, self.y_train, self.x_test, self.y_test = load_digits(d.seed)
        self.model = build_model(config.model).to(self.device)
        # gradients as views of DDP's buckets: no copy from the reduced buckets back into .grad
        self.ddp = DDP(self.model, gradient_as_bucket_view=True) if self.distributed else None
        self.net = self.ddp or self.model
        o = config.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay)
        self.samples_seen = 0
        self.step = 0
        self.epoch = 0
        self.total_samples = config.train.epochs * len(self.y_train)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=config.train.init_loss_scale,
                                           growth_interval=config.train.loss_scale_growth_interval,
                                           enabled=self.precision == "fp16")
        # the compression hook's state (checkpointed), and the loss scale its residuals are unscaled by
        self.comm = CompressionState(self.scaler.get_scale, self.model.parameters())
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self.accumulation = accum
        self.sampler = ResizableBatchSampler(len(self.y_train), d.batch_size, self.rank, self.world, seed=d.seed)
        tensors: tuple[torch.Tensor, ...] = (self.x_train, self.y_train)
        if record_batches:  # carry each sample's index so tests can check coverage
            tensors = (*tensors, torch.arange(len(self.y_train)))
        self.prefetcher = Prefetcher(self.sampler, tensors, self.device, depth=d.prefetch,
                                     threaded=self.device.type == "cuda")
        self.plugin = self._make_plugin()
        self._set_lr()
        if self.ddp is not None:
            self._instrument(self.ddp)
        ck = config.checkpoint
        self.ckpt = (CheckpointManager(ck.dir, keep=ck.keep, asynchronous=ck.asynchronous,
                                       on_partial_write=self.cb.on_partial_checkpoint) if ck.dir else None)
        self.resumed_from: int | None = None
        self.stopped_by_signal = False
        self.batch_log: list[tuple[int, int, list[int]]] = []

    def _make_plugin(self) -> TrainingPlugin:
        """The tuning plugin for this run, set up from the config's data, optim and plugin sections."""
        d, o, p = self.cfg.data, self.cfg.optim, self.cfg.plugin
        # every rank must call it (a broadcast where torchrun was given no run id)
        job = p.job or f"gputuned-train-{agreed_run_id(self.distributed)}"[:128]
        return TrainingPlugin(
            job=job, batch_size=d.batch_size, socket_path=p.socket, batch_mode=d.batch_mode,
            accumulation_steps=self.cfg.train.accumulation_steps, on_batch_size=self._on_batch_size,
            lr_scaling=o.lr_scaling, min_batch_size=d.min_batch_size, max_batch_size=d.max_batch_size,
            sync_interval=p.sync_interval, norm_every=p.norm_every, sync_period_s=p.sync_period_s,
            norm_period_s=p.norm_period_s, connect=p.enabled, trace_dir=p.trace_dir,
            context={"precision": self.precision, "device": self.device.type})

    def _instrument(self, ddp: DDP) -> None:
        """Have the plugin measure the DDP model, with the config's gradient compression hook."""
        c = self.cfg.compression
        kw: dict[str, Any] = {"topk_ratio": c.topk_ratio} if c.hook == "topk" else {}
        if c.hook == "powersgd":
            kw = {"powersgd_rank": c.powersgd_rank, "powersgd_start_iter": c.powersgd_start_iter}
        self.plugin.instrument(ddp, c.hook, comm=self.comm, **kw)

    # -- schedule and decisions ------------------------------------------------------------

    def _set_lr(self) -> None:
        """Set the next step's learning rate: warm-up, cosine decay over the samples, the plugin's factor.

        A function of (steps done, samples seen, plugin factor), all checkpointed, set directly: an
        LR scheduler object around it cost about 10 us per step of Python for nothing more. It is
        set after the plugin's step end, where a batch-size decision takes effect, so the factor
        of a new batch size applies from the first step that runs with it.
        """
        o = self.cfg.optim
        factor = self.plugin.lr_factor
        if o.warmup_steps and self.step < o.warmup_steps:
            factor *= max(self.step, 1) / o.warmup_steps
        if o.schedule == "cosine":
            factor *= 0.5 * (1 + math.cos(math.pi * min(1.0, self.samples_seen / self.total_samples)))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _on_batch_size(self, global_batch: int, micro: int, accumulation: int) -> None:
        self.accumulation = accumulation
        self.prefetcher.rewind(global_batch)

    # -- checkpoints -----------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (RNG states of every rank included)."""
        rngs: list[Any] = [None] * self.world
        if self.distributed:
            dist.all_gather_object(rngs, self._rng_state())
        else:
            rngs = [self._rng_state()]
        return {"step": self.step, "epoch": self.epoch, "samples_seen": self.samples_seen,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "sampler": self.prefetcher.consumed_state, "accumulation": self.accumulation,
                "plugin": self.plugin.state_dict(), "rng": rngs, "world_size": self.world,
                "compression": gather_per_rank(self.comm.state_dict())}

    def save_checkpoint(self) -> None:
        """Collective: gather RNG states, then rank 0 writes (asynchronously by config)."""
        if self.plugin.settle():  # a decision in flight is applied before the snapshot, not lost
            self._set_lr()
        state = self.state_dict()
        if self.ckpt is not None and self.rank == 0:
            self.ckpt.save(self.step, state)

    def _resume(self) -> bool:
        if self.ckpt is None or not self.cfg.checkpoint.resume:
            return False
        chosen: list[Any] = [None]
        if self.rank == 0:
            self.ckpt.clean_temporaries()
            found = self.ckpt.latest()
            chosen = [str(self.ckpt.path_for(found[0])) if found else None]
        if self.distributed:
            dist.broadcast_object_list(chosen, src=0)
        if chosen[0] is None:
            return False
        st = CheckpointManager.read(self.ckpt.path_for(int(os.path.basename(chosen[0])[5:14])))
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        self.plugin.load_state_dict(st["plugin"])
        self.comm.load_from(st.get("compression"), self.rank, self.world)
        self.step, self.epoch, self.samples_seen = st["step"], st["epoch"], st["samples_seen"]
        self.accumulation = st["accumulation"]
        self.sampler.load_state_dict(st["sampler"])
        self.prefetcher.consumed_state = self.sampler.state_dict()
        rng = st["rng"][self.rank] if st["world_size"] == self.world else st["rng"][0]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.resumed_from = self.step
        self._set_lr()  # the same function of the restored state the interrupted run used
        logger.info("rank %d resumed from %s at step %d", self.rank, chosen[0], self.step)
        return True

    # -- the loop --------------------------------------------------------------------------

    def _train_step(self, parts: list[torch.Tensor], global_n: int) -> torch.Tensor:
        x, y = parts[0], parts[1]
        acc = self.accumulation
        if acc == 1:  # the common case: no split, no no_sync bookkeeping
            total = self._backward(x, y, global_n, whole=True)
        else:
            xs, ys = torch.tensor_split(x, acc), torch.tensor_split(y, acc)
            total = torch.stack([self._backward(xs[i], ys[i], global_n, whole=False, sync=i == acc - 1)
                                 for i in range(acc)]).sum()
        if (clip := self.cfg.train.max_grad_norm) is not None:
            # clip what the optimizer applies: the unscaled gradient (scaler.step then skips a
            # non-finite one as it would have); the plugin's norms were taken in backward, before
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.samples_seen += global_n
        return total

    def _backward(self, x: torch.Tensor, y: torch.Tensor, global_n: int, whole: bool, sync: bool = True) -> torch.Tensor:
        """Forward and backward of one micro-batch (gradients all-reduced when ``sync``); its detached loss.

        The loss is this rank's sum scaled so DDP's average is the exact global-batch mean;
        a whole, evenly split batch uses the plain mean, which is the same number.
        """
        if not sync and self.ddp is not None:
            with self.ddp.no_sync():  # DDP's forward already reads it: both passes go inside
                return self._backward(x, y, global_n, whole)
        if whole and len(y) * self.world == global_n:
            loss = self._loss(x, y, "mean")
        else:
            loss = self._loss(x, y, "sum") * (self.world / global_n)
        if self.cb.on_loss is not None:
            loss = self.cb.on_loss(self, loss)
        self.scaler.scale(loss).backward()
        return loss.detach()

    def _loss(self, x: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
        """Cross-entropy of a micro-batch, under autocast when training in fp16/bf16."""
        if self.amp_dtype is None:
            return F.cross_entropy(self.net(x), y, reduction=reduction)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            out = self.net(x)
        return F.cross_entropy(out.float(), y, reduction=reduction)

    def evaluate(self) -> tuple[float, float]:
        """Accuracy and mean loss on the held-out digits."""
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.x_test.to(self.device)).float()
            y = self.y_test.to(self.device)
            loss = float(F.cross_entropy(out, y))
            acc = float((out.argmax(1) == y).float().mean())
        self.model.train()
        return acc, loss

    def fit(self) -> Result:
        """Train to the configured epochs or steps; checkpoint; stop cleanly on SIGTERM or SIGINT.

        A run that finishes writes a last checkpoint and a done marker, so running it again
        resumes there and trains nothing more (raise ``epochs`` or ``max_steps`` to go on).
        """
        resumed = self._resume()
        start_step = self.step
        on_main = threading.current_thread() is threading.main_thread()
        restore_signals = self.plugin.stop_on_signals() if on_main else None
        history: list[dict[str, float]] = []
        self.stopped_by_signal = stopped = False
        self.prefetcher.start()
        logger.info("rank %d/%d training on %s in %s (resumed: %s)", self.rank, self.world, self.device,
                    self.precision, resumed)
        try:
            while self.epoch < self.cfg.train.epochs and not stopped:
                stopped = self._run_epoch()
                if not stopped:
                    self._next_epoch(history)
        finally:
            if restore_signals is not None:
                restore_signals()
        self.prefetcher.stop()
        if not self.stopped_by_signal:
            self._finish(trained=self.step > start_step or not resumed)
        if self.ckpt is not None:
            self.ckpt.wait()
        acc, tloss = self.evaluate()
        return Result(self.step, self.epoch, acc, tloss, self.plugin.overflow_count(), self.stopped_by_signal,
                      history, self.batch_log)

    def _run_epoch(self) -> bool:
        """Train the rest of this epoch; True when the run stops inside it (max_steps or a stop signal)."""
        tc = self.cfg.train
        plugin = self.plugin
        while True:
            if tc.max_steps is not None and self.step >= tc.max_steps:
                return True
            t = _now()
            item = self.prefetcher.next()
            plugin.add_data_wait(_now() - t)
            if item is None:
                return False
            parts, global_n = item
            if self.record_batches:
                self.batch_log.append((self.step, global_n, parts[2].tolist()))
            with plugin.step(samples=global_n):
                loss = self._train_step(parts, global_n)
                plugin.record(loss=loss, scaler=self.scaler)
            self.step += 1
            self._set_lr()  # after the step's end, where a new batch size (and its LR factor) takes effect
            if self.rank == 0 and self.step % tc.log_every == 0:
                logger.info("step %d loss %.4f lr %.4g batch %d", self.step, float(loss),
                            self.optimizer.param_groups[0]["lr"], plugin.batch_size)
            if self.cb.on_step_end is not None:
                self.cb.on_step_end(self)
            if plugin.stop_agreed or (plugin.stop_requested and self.world == 1):
                logger.info("rank %d: stop requested (SIGTERM or SIGINT); checkpointing at step %d",
                            self.rank, self.step)
                self.save_checkpoint()
                self.stopped_by_signal = True
                return True
            if self.ckpt is not None and self.step % self.cfg.checkpoint.every_steps == 0:
                self.save_checkpoint()

    def _finish(self, trained: bool) -> None:
        """A finished run: a last checkpoint and the done marker (collective; nothing when nothing was trained)."""
        if self.ckpt is None:
            return
        if not trained:
            logger.info("rank %d: run already finished at step %d (checkpoint %s); nothing to train",
                        self.rank, self.step, self.ckpt.dir)
            return
        self.save_checkpoint()
        if self.rank == 0 and self.ckpt.mark_done(self.step):
            logger.info("run finished at step %d; marked done in %s", self.step, self.ckpt.dir)

    def _next_epoch(self, history: list[dict[str, float]]) -> None:
        """End an epoch (evaluated when the config says so) and start the sampler's next one."""
        if self.cfg.train.eval_every_epoch:
            acc, tloss = self.evaluate()
            history.append({"epoch": self.epoch, "step": self.step, "test_accuracy": acc, "test_loss": tloss})
            if self.rank == 0:
                logger.info("epoch %d step %d test accuracy %.4f loss %.4f", self.epoch, self.step, acc, tloss)
        self.epoch += 1
        self.prefetcher.stop()
        self.sampler.new_epoch()
        self.prefetcher.consumed_state = self.sampler.state_dict()
        self.prefetcher.start()

    def close(self) -> None:
        """Close the plugin's connection (the process group is left to the caller)."""
        self.plugin.close()


_now = time.perf_counter
